"""The real-speech task: isolated words recorded by people, as Debian's `qabcs-data` ships them.

    python eval/recorded_words.py fetch                                  # apt-get download + dpkg -x into build/qabcs
    python eval/recorded_words.py --model checkpoints/wolofmrl-base --cascade build/backbones/whisper-base \
        --out results/recorded_words                                      # model vs Whisper cascade, every language

`qabcs-data` (GPL-3+, an alphabet game for children) holds `abcs/<lang>/sounds/words/<word>.ogg`: one recorded word
per file, the file name is the word (`_` for a space). For each language (French, German, English, Russian,
Ukrainian, Polish, Belarusian) the task is spoken word -> written word among all words of that language: each clip
is a query, every distinct written word a document (a passage), its own word the one relevant document.

Benchmark only: never training data. The same clips go through a cascade (Whisper greedy transcription with the
language forced, then the model's text side as a query), so both rows rest on the same recordings.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

EVAL_DIR = Path(__file__).resolve().parent
if str(EVAL_DIR) not in sys.path:
    sys.path.insert(0, str(EVAL_DIR))

from benchmark_data import RetrievalSet, SourceUnavailable, audio_dict, doc_id, keep_sentences  # noqa: E402

LANGS = {"fr": "fra-Latn", "de": "deu-Latn", "en": "eng-Latn", "ru": "rus-Cyrl", "uk": "ukr-Cyrl",
         "pl": "pol-Latn", "be": "bel-Cyrl"}
DEFAULT_ROOT = Path("build/qabcs")
WORDS_DIR = "root/usr/share/qabcs/abcs/{lang}/sounds/words"


def fetch_qabcs(root: str | Path = DEFAULT_ROOT) -> Path:
    """`apt-get download qabcs-data` and `dpkg -x` it under `root` (skipped when already there); returns root."""
    root = Path(root)
    if (root / WORDS_DIR.format(lang="fr")).is_dir():
        return root
    root.mkdir(parents=True, exist_ok=True)
    if not list(root.glob("qabcs-data_*.deb")):
        subprocess.run(["apt-get", "download", "qabcs-data"], cwd=root, check=True)
    deb = sorted(root.glob("qabcs-data_*.deb"))[-1]
    subprocess.run(["dpkg", "-x", str(deb), str(root / "root")], check=True)
    return root


def word_of(path: Path) -> str:
    """The written word a recording says: its file name, `_` read as a space, NFC-normalised."""
    return unicodedata.normalize("NFC", path.stem.replace("_", " ").strip())


def recorded_words(lang: str, root: str | Path = DEFAULT_ROOT, limit: int | None = None) -> RetrievalSet:
    """Spoken word -> written word set of one language: queries {"id", "audio": {"array", "sampling_rate"}},
    corpus {"id", "text"} (distinct words), one relevant word per clip.

    Raises ValueError for an unknown language and SourceUnavailable when the recordings are not under `root`
    (run `python eval/recorded_words.py fetch`)."""
    if lang not in LANGS:
        raise ValueError(f"lang must be one of {sorted(LANGS)}, got {lang!r}")
    folder = Path(root) / WORDS_DIR.format(lang=lang)
    files = sorted(folder.glob("*.ogg"))
    if not files:
        raise SourceUnavailable(f"no recordings under {folder}: run `python eval/recorded_words.py fetch "
                                f"--root {root}` (apt-get download qabcs-data)")
    keep = keep_sentences([f.stem for f in files], limit)
    files = [f for f in files if f.stem in keep]
    words = {f: word_of(f) for f in files}
    corpus = [{"id": doc_id(lang, w), "text": w} for w in sorted(set(words.values()))]
    queries = [{"id": f"qabcs-{lang}-{f.stem}", "audio": audio_dict(f)} for f in files]
    relevant = {q["id"]: {doc_id(lang, words[f]): 1} for q, f in zip(queries, files)}
    gold = {q["id"]: words[f] for q, f in zip(queries, files)}
    return RetrievalSet(f"qabcs-{lang}", queries, corpus, relevant, "audio", "text", gold, synthetic_audio=False)


def run(models: dict[str, str], out: Path, root: Path, langs: list[str], cascade: str | None,
        limit: int | None = None) -> dict:
    """Per language, each model's speech side and the Whisper cascade (language forced): strategies tables."""
    from strategies import strategy_table

    tables = {}
    for lang in langs:
        rset = recorded_words(lang, root, limit)
        tables[lang] = strategy_table(models, rset, out / lang, cascade=cascade, cascade_language=lang,
                                      note=f"qabcs-data recorded {lang} words (real speech), {len(rset.queries)} "
                                           f"clips vs {len(rset.corpus)} words", topline=False)
    (out / "recorded_words.json").write_text(json.dumps(tables, indent=1))
    return tables


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["fetch"]:
        p = argparse.ArgumentParser(prog="recorded_words.py fetch")
        p.add_argument("--root", default=str(DEFAULT_ROOT))
        print(fetch_qabcs(p.parse_args(argv[1:]).root))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="label=folder (repeat)")
    p.add_argument("--cascade", default=None, help="a Whisper folder with its decoder (build/backbones/whisper-base)")
    p.add_argument("--root", default=str(DEFAULT_ROOT))
    p.add_argument("--langs", default=",".join(LANGS))
    p.add_argument("--limit", type=int, default=None, help="at most this many words per language")
    p.add_argument("--out", default="results/recorded_words")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in args.model)
    run(models, Path(args.out), Path(args.root), [x for x in args.langs.split(",") if x], args.cascade, args.limit)
    for lang in args.langs.split(","):
        print((Path(args.out) / lang / "strategies.md").read_text())


if __name__ == "__main__":
    main()
