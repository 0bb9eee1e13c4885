"""Text side of the stage-2 speech corpus (issue 16): what is spoken, in which language, in which split.

Rows (one JSON object per line, gzip)::

    {"id", "sentence_id", "source", "source_key", "group", "license", "speech_lang", "transcript", "wo_text",
     "fr_text", "en_text", "split", "text_only"}

- every Wolof string the offline sources hold (read by the curation pipeline's own ingest + normalise stages),
  also those with no French twin (``fr_text`` null);
- speech <-> own-transcript strings in French and other languages (gettext catalogs and MediaWiki i18n of the
  fetched Debian packages), with the Wolof / French twin of the same message where one exists;
- text-only Wolof-French word pairs (CLDR display names and emoji names, Wolof numerals) for the text stage;
- Wolof word sequences from the lexicons for reading practice (`wordseq`, ``source: wolof_wordseq``, train only,
  when the config has a ``wordseq`` section).

``group`` names the row's source group (`unseen.source_group`: ``gettext/<package>:<domain>``,
``mediawiki/<i18n dir>``, ``debconf/<package>``, ...), so an evaluation can show where a row came from.

Whole sources named by `unseen.unseen_split` are ``unseen_dev`` / ``unseen_test`` (every language); the others
follow `pipeline.sentence_split` on `pipeline.sentence_id(source, group, key)`, so a message shares its
split with its Wolof pair in the existing corpus and with its translations in every language. A string whose
near-duplicates (`dedupe_key`) include a dev/test/intent sentence is held out with it. Leakage rule: a train row
whose transcript, Wolof or French text equals (after `dedupe_key`) any dev/test/intent text is dropped
(``leak_text``), and so is one translating the same English message as a held-out Wolof sentence or as any
unseen-source row (``leak_en_msgid``).
"""
from __future__ import annotations

import gzip
import json
import re
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterator

from . import offline_sources, pipeline, unseen
from .store import Drops, Stage, dumps, read_jsonl, unit_interval
from .text import clean, dedupe_key, junk_reason, n_words, normalize_french, strip_accelerators, wolof_number

# never trained on; order = preference when near-duplicates disagree (an unseen-source copy wins)
HELD = ("unseen_test", "unseen_dev", "test", "dev", "intent")


# --------------------------------------------------------------------------- other-language catalogs
def domain_packages(debs_dir: str | Path, packages: list[str]) -> dict[str, str]:
    """{gettext domain: Debian package} for the fetched .deb files of `packages` (any locale)."""
    out: dict[str, str] = {}
    for pkg in packages:
        debs = sorted(Path(debs_dir).glob(f"{pkg}_*.deb"))
        if not debs:
            continue
        listing = subprocess.run(["dpkg-deb", "-c", str(debs[-1])], check=True, capture_output=True, text=True).stdout
        for m in re.finditer(r"\./usr/share/locale/[^/\s]+/LC_MESSAGES/([^/\s]+)\.mo", listing):
            out.setdefault(m.group(1), pkg)
    return out


def iter_lang_segments(spec: dict, langs: list[str], domains: dict[str, str], licenses: dict[str, str],
                       drops: Drops, reserved: set) -> Iterator[dict]:
    """Segments (offline_sources' format) in `langs` from a gettext locale dir or a MediaWiki tree.

    Groups and keys are the Wolof readers' (``pkg:domain`` + msgid; i18n dir + message key), so a message's
    sentence id is the same in every language.
    """
    name = spec["name"]
    if spec["type"] == "gettext":
        locale = Path(spec["locale_dir"])
        for lang in langs:
            for mo in sorted((locale / lang / "LC_MESSAGES").glob("*.mo")):
                pkg = domains.get(mo.stem, "")
                if r := offline_sources.reserved_name(mo.stem, pkg, extra=reserved):
                    drops.drop("reserved_source", f"{mo.stem} ({r})")
                    continue
                lic = licenses.get(pkg) or "see Debian package copyright"
                for key, (english, text) in sorted(offline_sources.read_mo(mo).items()):
                    if key:
                        yield offline_sources._seg(name, f"{pkg or '?'}:{mo.stem}", key, lang, text, english, lic)
    elif spec["type"] == "mediawiki":
        root = Path(spec["root"])
        for en_json in sorted(root.rglob("en.json")):
            d = en_json.parent
            group = str(d.relative_to(root))
            if offline_sources.reserved_name(group, extra=reserved):
                drops.drop("reserved_source", group)
                continue
            en = json.loads(en_json.read_text(encoding="utf-8"))
            lic = offline_sources._ext_license(d, root) or spec.get("license", "GPL-2.0-or-later")
            for lang in langs:
                p = d / f"{lang}.json"
                if not p.exists():
                    continue
                for key, text in sorted(json.loads(p.read_text(encoding="utf-8")).items()):
                    if not key.startswith("@") and isinstance(text, str):
                        yield offline_sources._seg(name, group, key, lang, text, en.get(key, ""), lic)


def normalise_segment(seg: dict, max_chars: int, drops: Drops) -> dict | None:
    """The curation normalise rules for a non-Wolof string (clean, accelerators, junk, length); None if dropped."""
    text, _ = strip_accelerators(clean(seg["text"]))
    if reason := junk_reason(text):
        drops.drop(reason, f"{seg['lang']}:{seg['key'][:40]}")
        return None
    if len(text) > max_chars:
        drops.drop("too_long_text", f"{seg['lang']}:{seg['key'][:40]}")
        return None
    return {**seg, "text": normalize_french(text), "en": clean(strip_accelerators(seg.get("en") or "")[0])}


# --------------------------------------------------------------------------- text-only word pairs
def _cldr_entries(path: Path) -> dict[str, str]:
    root = ET.parse(path).getroot()
    out = {}
    for el in root.iter("annotation"):
        if el.get("type") == "tts" and el.text:
            out[f"emoji/{el.get('cp')}"] = el.text.strip()
    for kind in ("language", "territory", "script", "currency", "month", "day"):
        for el in root.iter(kind):
            if el.text and el.text.strip() and not el.get("alt") and el.get("type"):
                out.setdefault(f"{kind}/{el.get('type')}", el.text.strip())
    return out


def iter_word_pairs(cfg: dict, drops: Drops) -> Iterator[tuple[str, str, str, str, str]]:
    """(source, group, key, wo, fr) Wolof-French word pairs: CLDR names (display + emoji) and Wolof numerals."""
    wp = cfg.get("word_pairs") or {}
    if d := wp.get("cldr_dir"):
        d = Path(d)
        for group in ("annotations", "main"):
            wo_p, fr_p = d / group / "wo.xml", d / group / "fr.xml"
            if not (wo_p.exists() and fr_p.exists()):
                drops.drop("missing_source_file", str(wo_p))
                continue
            wo, fr = _cldr_entries(wo_p), _cldr_entries(fr_p)
            for key in sorted(wo):
                if key in fr:
                    yield "cldr", group, key, wo[key], fr[key]
                else:
                    drops.drop("no_fr_twin", f"cldr/{group}/{key}")
    if rng := wp.get("numbers"):
        import wolof_numbers

        for n in range(int(rng[0]), int(rng[1]) + 1):
            words = wolof_number(n)
            if wolof_numbers.parse_number(words).value != n:  # only numerals the parser reads back
                drops.drop("number_roundtrip_failed", str(n))
                continue
            yield "wolof_numbers", "numbers", str(n), words, str(n)


# --------------------------------------------------------------------------- build
def _collect(cfg: dict, work: Path, drops: Drops) -> dict[str, dict]:
    """{sentence_id: {source, group, key, license, rank, en, texts: {lang: text}}} over every source."""
    specs = pipeline.source_specs(cfg)
    pipeline.run(cfg, out=work, until="normalise")  # Wolof + French: the curation pipeline's own stages
    sents: dict[str, dict] = {}

    def add(seg: dict) -> None:
        sid = pipeline.sentence_id(seg["source"], seg["group"], seg["key"])
        s = sents.setdefault(sid, {"source": seg["source"], "group": seg["group"], "key": seg["key"],
                                   "license": seg["license"], "rank": specs.get(seg["source"], {}).get("_rank", 99),
                                   "en": seg.get("en") or "", "texts": {}})
        s["en"] = s["en"] or seg.get("en") or ""
        if seg["lang"] in s["texts"] and s["texts"][seg["lang"]] != seg["text"]:
            drops.drop(f"conflicting_same_key_{seg['lang']}", sid)
            return
        s["texts"][seg["lang"]] = seg["text"]

    for seg in read_jsonl(Stage(work, "normalise").path("segments.jsonl")):
        add(seg)
    ml = cfg.get("multilingual") or {}
    langs = [lg for lg in ml.get("langs", []) if lg != "wo"]
    if langs:
        root = Path(cfg["fetch"]["root"])
        manifest = json.loads((root / "manifest.json").read_text()) if (root / "manifest.json").exists() else {}
        licenses = {p: v.get("license") for p, v in manifest.get("packages", {}).items()}
        domains = domain_packages(root / "debs", list(cfg["fetch"].get("debian", [])))
        reserved = {r.lower() for r in cfg.get("reserved", [])}  # reserved_name adds offline_sources.RESERVED
        for spec in specs.values():
            if spec["type"] in ("gettext", "mediawiki"):
                for seg in iter_lang_segments(spec, langs, domains, licenses, drops, reserved):
                    if seg := normalise_segment(seg, ml.get("max_chars", 200), drops):
                        add(seg)
    return sents


def _pick(members: list[tuple], split_of: dict) -> tuple:
    """The representative of near-duplicates: a held-out member if any (it keeps its split), else the first."""
    for split in HELD:
        for m in members:
            if split_of[m[-1]] == split:
                return m
    return members[0]


def _speech_rows(sents: dict, split_of: dict, cfg: dict, drops: Drops) -> list[dict]:
    specs = pipeline.source_specs(cfg)
    ml = cfg.get("multilingual") or {}
    keep = ml.get("keep_fraction", {})
    rows = []
    for lang in ["wo", *[lg for lg in ml.get("langs", []) if lg != "wo"]]:
        groups: dict[str, list[tuple]] = defaultdict(list)
        for sid, s in sents.items():
            text = s["texts"].get(lang)
            if not text:
                continue
            k = dedupe_key(text)
            if k == dedupe_key(s["en"]) or (lang != "fr" and k == dedupe_key(s["texts"].get("fr", ""))):
                drops.drop(f"untranslated_copy_{lang}", sid)
                continue
            if lang == "wo":
                mw = specs.get(s["source"], {}).get("min_words", cfg["text"]["min_words"])
            else:
                mw = ml.get("min_words", 2)
            if n_words(text) < mw:
                drops.drop(f"too_short_{lang}", sid)
                continue
            groups[k].append(("fr" not in s["texts"], s["rank"], sid))
        for k in sorted(groups):
            if lang != "wo" and unit_interval("speech-keep", lang, k) >= float(keep.get(lang, 1.0)):
                drops.drop(f"sampled_out_{lang}", k)
                continue
            members = sorted(groups[k])
            sid = _pick(members, split_of)[-1]
            drops.note(f"near_duplicates_merged_{lang}", len(members) - 1)
            s = sents[sid]
            rows.append({"id": f"{sid}-{lang}", "sentence_id": sid, "source": s["source"], "source_key": s["key"],
                         "group": unseen.source_group(s["source"], s["group"]), "license": s["license"], "speech_lang": lang, "transcript": s["texts"][lang],
                         "wo_text": s["texts"].get("wo"), "fr_text": s["texts"].get("fr"), "en_text": s["en"] or None,
                         "split": split_of[sid], "text_only": False})
    return rows


def _text_only_rows(cfg: dict, drops: Drops, seen_wo: set) -> list[dict]:
    split_cfg = {"split": cfg["split"]}
    rows, keys = [], set()
    for source, group, key, wo, fr in iter_word_pairs(cfg, drops):
        k = dedupe_key(wo)
        if not k or k in keys or k in seen_wo or k == dedupe_key(fr):
            drops.drop("text_pair_duplicate_or_copy", f"{source}/{key}")
            continue
        keys.add(k)
        sid = pipeline.sentence_id(source, group, key)
        rows.append({"id": f"{sid}-pair", "sentence_id": sid, "source": source, "source_key": key,
                     "group": unseen.source_group(source, group), "license": "Unicode-3.0 (CLDR)" if source == "cldr" else "MIT (wolof-numbers 0.3.0 checks)",
                     "speech_lang": None, "transcript": None, "wo_text": wo, "fr_text": fr, "en_text": None,
                     "split": pipeline.sentence_split({"source": source, "sentence_id": sid}, split_cfg, {}),
                     "text_only": True})
    return rows


def _apply_leakage(rows: list[dict], sents: dict, split_of: dict, drops: Drops) -> list[dict]:
    held_text, held_en = set(), set()
    for sid, s in sents.items():
        if split_of[sid] in HELD:
            held_text |= {dedupe_key(s["texts"][lg]) for lg in ("wo", "fr") if s["texts"].get(lg)}
            if s["en"] and (s["texts"].get("wo") or split_of[sid] in unseen.UNSEEN_SPLITS):
                held_en.add(dedupe_key(s["en"]))
    for r in rows:
        if r["split"] in HELD:
            held_text |= {dedupe_key(t) for t in (r["transcript"], r["wo_text"], r["fr_text"]) if t}
    held_text.discard("")
    held_en.discard("")
    out = []
    for r in rows:
        if r["split"] == "train":
            if any(t and dedupe_key(t) in held_text for t in (r["transcript"], r["wo_text"], r["fr_text"])):
                drops.drop(f"leak_text_{r['speech_lang'] or 'pair'}", r["id"])
                continue
            if r["en_text"] and dedupe_key(r["en_text"]) in held_en:
                drops.drop(f"leak_en_msgid_{r['speech_lang'] or 'pair'}", r["id"])
                continue
        out.append(r)
    return out


def build_texts(cfg: dict, work: str | Path | None = None) -> tuple[list[dict], dict]:
    """All rows (sorted by id) and a report {counts, dropped, ...}. Needs the fetched sources (`fetch.fetch(cfg)`)."""
    work = Path(work or cfg["out"])
    drops = Drops()
    sents = _collect(cfg, work, drops)
    specs = pipeline.source_specs(cfg)
    split_of = {sid: unseen.unseen_split(s["source"], s["group"])
                or pipeline.sentence_split({"source": s["source"], "sentence_id": sid}, cfg, specs)
                for sid, s in sents.items()}
    rows = _speech_rows(sents, split_of, cfg, drops)
    rows += _text_only_rows(cfg, drops, {dedupe_key(r["transcript"]) for r in rows if r["speech_lang"] == "wo"})
    rows = _apply_leakage(rows, sents, split_of, drops)
    if cfg.get("wordseq"):
        rows += _wordseq_rows(cfg, rows, drops)
    rows.sort(key=lambda r: r["id"])
    return rows, texts_report(rows, drops)


def texts_report(rows: list[dict], drops: Drops) -> dict:
    """Counts per language / split / source / unseen group, distinct spoken strings, drops by reason."""
    counts = Counter((r["speech_lang"] or "text_only", r["split"]) for r in rows)
    distinct = {(r["speech_lang"], dedupe_key(r["transcript"])) for r in rows if not r["text_only"]}
    return {"rows": len(rows), "distinct_spoken_strings": len(distinct),
            "per_split": dict(sorted(Counter(r["split"] for r in rows).items())),
            "per_lang": dict(sorted(Counter(r["speech_lang"] or "text_only" for r in rows).items())),
            "per_lang_split": {f"{lg}/{sp}": n for (lg, sp), n in sorted(counts.items())},
            "per_source": dict(sorted(Counter(f"{r['source']}:{r['speech_lang'] or 'text_only'}"
                                              for r in rows).items())),
            "unseen_groups": dict(sorted(Counter(f"{r['split']}|{r['group']}|{r['speech_lang'] or 'text_only'}"
                                                 for r in rows if r["split"] in unseen.UNSEEN_SPLITS).items())),
            "wo_with_fr_twin": {sp: sum(1 for r in rows if r["split"] == sp and r["speech_lang"] == "wo"
                                        and r["fr_text"]) for sp in ("train", "dev", "test", *unseen.UNSEEN_SPLITS)},
            **drops.as_dict()}


def _wordseq_rows(cfg: dict, rows: list[dict], drops: Drops) -> list[dict]:
    """Train-only Wolof word sequences (`wordseq`) from FreeDict, CLDR, wolof-normalizer and wolof-numbers units."""
    from .wordseq import normalizer_vocabulary, word_sequences

    lexicon_rows = [r for r in rows if r["split"] == "train" and r["source"] in ("freedict", "cldr", "wolof_numbers")]
    units = [r["wo_text"] for r in lexicon_rows] + normalizer_vocabulary()
    license = "; ".join(sorted({r["license"] for r in lexicon_rows} | {"MIT (wolof-normalizer 0.2.0)"}))
    held = {dedupe_key(t) for r in rows if r["split"] != "train" for t in (r["wo_text"], r["transcript"])
            if t and (r["speech_lang"] in ("wo", None))}
    seen = {dedupe_key(r["transcript"]) for r in rows if r["speech_lang"] == "wo"}
    out = []
    for i, text in enumerate(word_sequences(units, held - {""}, seen, cfg["wordseq"], drops)):
        sid = pipeline.sentence_id("wolof_wordseq", "lexicons", str(i))
        out.append({"id": f"{sid}-wo", "sentence_id": sid, "source": "wolof_wordseq", "source_key": str(i),
                    "group": unseen.source_group("wolof_wordseq", "lexicons"),
                    "license": license, "speech_lang": "wo", "transcript": text, "wo_text": text,
                    "fr_text": None, "en_text": None, "split": "train", "text_only": False})
    return out


def write_texts(rows: list[dict], path: str | Path) -> str:
    """gzip JSON Lines, byte-identical for the same rows (no gzip timestamp); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        for r in rows:
            f.write((dumps(r) + "\n").encode("utf-8"))
    return str(path)


def read_texts(path: str | Path) -> Iterator[dict]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)
