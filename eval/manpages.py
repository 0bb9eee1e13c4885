"""French prose that Debian ships, as retrieval passages: the French man pages of `manpages-fr`.

    python eval/manpages.py --out /tmp/mp --split test      # print a few (query, passage) pairs

The package is fetched by name (`apt-get download`, as the corpus fetcher does) into `<debs>/`, unpacked with
`dpkg-deb -x`, and each page rendered to plain text by groff (`groff -K utf8 -man -Tutf8`, no hyphenation, one
long line per paragraph). A passage is a body paragraph (indented 7 columns: not a heading, synopsis or option
item) of 15-120 words, mostly letters; a query is one of its sentences (6-30 words), chosen by a stable hash.
Whole pages go to dev or test by a stable hash of the page name, so the two splits share no page.

No training corpus reads `manpages-fr` (keep it so: it is benchmark-only). License: GPL-3+ (debian/copyright).
"""
from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

PACKAGE = "manpages-fr"
LICENSE = "GPL-3+ (Debian manpages-fr)"
# sections shared by many pages (translation credits, bug addresses, licences): not content passages
BOILERPLATE_SECTIONS = {"TRADUCTION", "SIGNALER DES BOGUES", "BOGUES", "COPYRIGHT", "AUTEURS", "AUTEUR", "COLOPHON",
                        "VOIR AUSSI", "DISPONIBILITÉ", "LICENCE", "HISTORIQUE"}
SENTENCE = re.compile(r"(?<=[.!?])(?<!\s[A-Z]\.)(?<!ex\.)\s+(?=[A-ZÀ-ÖØ-Ý«])")  # not after "E." or "p. ex."


def _hash(*parts) -> int:
    from wolofmrl.curation.store import stable_hash

    return stable_hash(*map(str, parts))


def fetch(debs: Path, package: str = PACKAGE) -> Path:
    """`apt-get download <package>` into `debs` (kept: a second call reuses the file); returns the .deb.

    Raises RuntimeError naming the package when apt-get cannot get it (run `apt-get update` first)."""
    debs.mkdir(parents=True, exist_ok=True)
    have = sorted(debs.glob(f"{package}_*.deb"))
    if not have:
        res = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        have = sorted(debs.glob(f"{package}_*.deb"))
        if res.returncode or not have:
            raise RuntimeError(f"apt-get download {package} failed ({res.stderr.strip()[-300:]}); "
                               "run `apt-get update` (Debian archive reachable) and retry")
    return have[-1]


def unpack(deb: Path, into: Path) -> list[Path]:
    """The French man pages (`usr/share/man/fr/man*/*.gz`) of `deb`, unpacked under `into`, sorted."""
    if not (into / "usr").is_dir():
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return sorted(into.glob("usr/share/man/fr/man*/*.gz"))


def render(roff: bytes) -> str:
    """A man page's roff source (uncompressed) as plain UTF-8 text through groff."""
    res = subprocess.run(["groff", "-K", "utf8", "-man", "-Tutf8", "-rLL=400n", "-rHY=0", "-P-cbou"],
                         input=roff, capture_output=True, check=False)
    return res.stdout.decode("utf-8", "replace")


def paragraphs(text: str, min_words: int = 15, max_words: int = 120) -> list[str]:
    """Body paragraphs of rendered man-page text (7-column indent, not an option item, not in a
    BOILERPLATE_SECTIONS section, prose: >= 80 % letters/spaces, ends with a
    full stop) of min_words..max_words words."""
    out, section = [], ""
    for block in re.split(r"\n\s*\n", text):
        lines = [ln for ln in block.split("\n") if ln.strip()]
        while lines and re.match(r"^\S", lines[0]):  # a section heading runs into its first paragraph
            section, lines = lines[0].strip(), lines[1:]
        if section in BOILERPLATE_SECTIONS:
            continue
        if not lines or not all(re.match(r"^ {7}\S", ln) for ln in lines):
            continue
        para = " ".join(ln.strip() for ln in lines)
        if para.startswith("-") or "   " in para:  # an option item (tag, then a column gap)
            continue
        words = para.split()
        letters = sum(c.isalpha() or c.isspace() for c in para) / max(len(para), 1)
        if min_words <= len(words) <= max_words and letters >= 0.8 and para.endswith("."):
            out.append(para)
    return out


def query_sentence(para: str, min_words: int = 6, max_words: int = 30) -> str | None:
    """One sentence of `para` (6-30 words), chosen by a stable hash of the paragraph; None if none fits."""
    sents = [s.strip() for s in SENTENCE.split(para) if min_words <= len(s.split()) <= max_words]
    return sents[_hash("query", para) % len(sents)] if sents else None


def page_split(name: str, dev_share: float = 0.5) -> str:
    return "dev" if (_hash("manpage-split", name) % 1000) / 1000 < dev_share else "test"


def manpage_items(root: Path, split: str, n_queries: int, max_passages: int,
                  per_page: int = 12) -> tuple[list[dict], list[dict], dict]:
    """(queries, passages, dropped counts) of `split` ("dev" / "test"): pages of that split, in stable-hash order,
    at most `per_page` paragraphs each (stable hash), until `max_passages` passages; `n_queries` of them (stable
    hash) get a spoken query. Query rows:
    {"id", "text", "doc", "group", "source"}; passages {"id", "text", "group", "source"}."""
    deb = fetch(root / "debs")
    pages = [p for p in unpack(deb, root / "manpages-fr") if page_split(p.name) == split]
    pages.sort(key=lambda p: _hash("page", p.name))
    import gzip

    docs, queries, drops, seen = [], [], Counter(), set()
    for page in pages:
        if len(docs) >= max_passages:
            break
        name = page.name.removesuffix(".gz")
        paras = paragraphs(render(gzip.decompress(page.read_bytes())))
        if len(paras) > per_page:
            drops["over_per_page_cap"] += len(paras) - per_page
        for para in sorted(paras, key=lambda x: _hash("para", x))[:per_page]:
            if len(docs) >= max_passages:
                break
            if para in seen:
                drops["duplicate_paragraph"] += 1
                continue
            seen.add(para)
            did = f"manpage-{_hash('doc', para):016x}"
            docs.append({"id": did, "text": para, "group": f"manpage:{name}", "source": PACKAGE})
    for d in sorted(docs, key=lambda d: _hash("pick", d["id"])):
        if len(queries) >= n_queries:
            break
        q = query_sentence(d["text"])
        if q is None:
            drops["no_sentence_of_6_30_words"] += 1
            continue
        queries.append({"id": f"q-{d['id']}", "text": q, "doc": d["id"], "group": d["group"], "source": PACKAGE})
    return queries, docs, dict(drops)


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/unseen")
    p.add_argument("--split", default="test", choices=["dev", "test"])
    a = p.parse_args()
    qs, ds, dr = manpage_items(Path(a.out), a.split, 5, 100)
    for q in qs:
        print(q["text"], "->", next(d["text"][:120] for d in ds if d["id"] == q["doc"]))
    print(len(ds), "passages; dropped", dr)
