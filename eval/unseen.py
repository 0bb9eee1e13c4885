"""The unseen-source benchmark (issue 23): sources no training split draws on, spoken by voices training never uses.

    python eval/unseen.py build --out data/unseen                   # dev + test, every subset (resumable)
    python eval/run.py --model fusion=checkpoints/wolofmrl-base --unseen data/unseen --out results/

Subsets (each with a dev and a test split; dev only fits the length-only floor):
- `wo`: Wolof speech -> French text. Queries: Wolof rows of `train/data/speech_texts.jsonl.gz` in split
  `unseen_dev` / `unseen_test` (whole held-out sources: the rule is `wolofmrl/curation/unseen.py`'s) that have a
  French twin. Passages: the French texts of ALL rows of that split (the twins, plus French-only strings of the
  same sources as distractors).
- `fr-strings`: French speech -> French text. Queries: French strings (`speech_lang == "fr"`) of the same unseen
  split, never voiced in training; passages as in `wo` (the query's passage is the string itself).
- `fr-manpages`: French speech -> French text on French prose Debian ships (`manpages-fr`, fetched by package
  name; eval/manpages.py): the query is one sentence of a paragraph, the passage the paragraph.

Each query is spoken once by a held-out voice (`wolofmrl.voices`): Kokoro (the engine training never hears) for
`--kokoro-share` of the clips, else espeak-ng's held-out variants at held-out pitches (eval/hard.py's pools).
Two conditions: `clean` (as voiced) and `hard` (eval/hard.py's `degrade_clips`: speed, noise, room / telephone /
codec / rate). Written to `<out>/<split>/<subset>/queries.parquet` (id, text, doc, group, source, voice, clean,
hard, hard_tag, clean_seconds, hard_seconds) and `corpus.parquet` (id, text, group, source); `<out>/unseen.json`
counts queries, passages, voices, degradations and dropped rows by reason. Deterministic for a given --seed.
All audio is synthetic TTS, not people: every score on it is a synthetic-speech score.
"""
from __future__ import annotations

import argparse
import gzip
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

EVAL_DIR = Path(__file__).resolve().parent
ROOT = EVAL_DIR.parent
for p in (str(EVAL_DIR), str(ROOT)):
    if p not in sys.path:
        sys.path.insert(0, p)

import hard  # noqa: E402
from benchmark_data import RetrievalSet, audio_dict, doc_id  # noqa: E402
from wolofmrl.voices import HELD_OUT_ESPEAK_VARIANTS, is_held_out  # noqa: E402

TEXTS = "train/data/speech_texts.jsonl.gz"
SPLITS = {"dev": "unseen_dev", "test": "unseen_test"}
SUBSETS = ("wo", "fr-strings", "fr-manpages")
CONDITIONS = ("clean", "hard")
LANG_OF = {"wo": "wo", "fr-strings": "fr", "fr-manpages": "fr"}
DEFAULT_QUERIES = {"wo": 200, "fr-strings": 150, "fr-manpages": 150}


def log(msg: str):
    print(f"[unseen {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ============================================================================================== texts
def read_texts(path: str | Path) -> list[dict]:
    """Rows of a speech-texts file (gzip JSON lines, wolofmrl/curation/speech_texts.py's schema + `group`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--texts {path}: no such file; build it with the corpus's speech-texts stage")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_unseen(rows: list[dict]) -> dict:
    """The held-out-source rule as data: {"groups": {split: sorted groups}, "rows": {split: n}}.

    Raises ValueError when the file has no unseen rows (built before the unseen split existed), when an unseen
    row has no `group`, or when a group of an unseen split also has rows in another split (a source leaking)."""
    groups: dict[str, set] = {s: set() for s in SPLITS.values()}
    for r in rows:
        if r.get("split") in groups:
            if not r.get("group"):
                raise ValueError(f"texts row {r.get('id')}: split {r['split']} but no `group`: rebuild the texts")
            groups[r["split"]].add(r["group"])
    if not any(groups.values()):
        raise ValueError("the texts file has no unseen_dev / unseen_test rows: rebuild it with the corpus helper's "
                         "unseen-source split (wolofmrl/curation/unseen.py)")
    owner = {g: s for s, gs in groups.items() for g in gs}
    if len(owner) != sum(len(gs) for gs in groups.values()):
        raise ValueError("a group is in both unseen_dev and unseen_test")
    leaks = Counter((r["split"], r.get("group")) for r in rows if r.get("group") in owner
                    and r.get("split") != owner[r["group"]])
    if leaks:
        raise ValueError(f"held-out groups with rows in other splits (split, group): {sorted(leaks)[:5]}")
    return {"groups": {s: sorted(g) for s, g in groups.items()},
            "rows": dict(Counter(r["split"] for r in rows if r.get("split") in groups))}


def _pick(items: list[dict], n: int | None) -> list[dict]:
    keyed = sorted(items, key=lambda x: hard._hash("pick", x["id"]))
    return keyed if n is None else keyed[:n]


def text_items(rows: list[dict], split: str, subset: str, n: int | None) -> tuple[list[dict], list[dict], dict]:
    """(queries, passages, dropped by reason) of the `wo` or `fr-strings` subset of `split` ("dev" / "test")."""
    want = SPLITS[split]
    sel = sorted((r for r in rows if r.get("split") == want), key=lambda r: r["id"])
    docs: dict[str, dict] = {}
    for r in sel:
        fr = (r.get("fr_text") or "").strip()
        if fr:
            docs.setdefault(doc_id("fr", fr), {"id": doc_id("fr", fr), "text": fr, "group": r["group"],
                                               "source": r["source"]})
    queries, drops, seen = [], Counter(), set()
    for r in sel:
        if subset == "wo":
            if r.get("speech_lang") not in ("wo", None) or not (r.get("wo_text") or "").strip():
                continue
            text, fr = r["wo_text"].strip(), (r.get("fr_text") or "").strip()
            if not fr:
                drops["no_french_twin"] += 1
                continue
        else:
            if r.get("speech_lang") != "fr":
                continue
            text = fr = (r.get("transcript") or r.get("fr_text") or "").strip()
            if len(text.split()) < 2:
                drops["single_word"] += 1
                continue
        key = (text, doc_id("fr", fr))
        if key in seen:
            drops["duplicate_query"] += 1
            continue
        seen.add(key)
        queries.append({"id": f"{r['id']}-{subset}", "text": text, "doc": doc_id("fr", fr), "group": r["group"],
                        "source": r["source"]})
    if n is not None and len(queries) > n:
        drops["over_limit"] += len(queries) - n
    return _pick(queries, n), list(docs.values()), dict(drops)


# ============================================================================================== voicing
def voice_plan(queries: list[dict], lang: str, kokoro_share: float, seed: int) -> list[dict]:
    """One held-out voice per query (Kokoro for ~kokoro_share of them), drawn from a hash of (seed, id)."""
    espeak = [f"espeak-{lang}-{v}-p{p}" for v in HELD_OUT_ESPEAK_VARIANTS for p in hard.HELD_OUT_PITCHES]
    pools = {True: hard.held_out_voices(True), False: espeak}
    plan = []
    for q in queries:
        rng = np.random.default_rng(hard._hash(seed, q["id"], "voice"))
        pool = pools[bool(rng.random() < kokoro_share)]
        voice = pool[int(rng.integers(len(pool)))]
        assert is_held_out(voice), voice
        plan.append({"id": q["id"], "text": q["text"], "lang": lang, "voice": voice,
                     "sentence": {"sentence_id": q["doc"]}})
    return plan


def _seconds(flac: bytes) -> float:
    import soundfile as sf
    import io

    info = sf.info(io.BytesIO(flac))
    return info.frames / info.samplerate


def _write(path: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.rename(path)


def build_subset(out: Path, split: str, subset: str, queries: list[dict], docs: list[dict], kokoro_share: float,
                 seed: int, chunk: int) -> dict:
    """Voice, degrade and write one (split, subset); returns its card entry."""
    plan = voice_plan(queries, LANG_OF[subset], kokoro_share, seed)
    clips = hard.voice_clips(plan, out / "_clips" / split / subset, chunk)
    dropped = Counter(c["dropped"].split(":")[0] for c in clips if c["dropped"])
    clips = [c for c in clips if c["flac"]]
    degraded = hard.degrade_clips(clips, seed) if clips else []
    by_id = {q["id"]: q for q in queries}
    rows = [by_id[c["id"]] | {"voice": c["voice"], "clean": c["flac"], "hard": b, "hard_tag": tag,
                              "clean_seconds": _seconds(c["flac"]), "hard_seconds": _seconds(b)}
            for c, (b, tag) in zip(clips, degraded)]
    _write(out / split / subset / "queries.parquet", rows)
    _write(out / split / subset / "corpus.parquet", docs)
    return {"queries": len(rows), "passages": len(docs), "dropped_clips": dict(dropped),
            "voices": dict(Counter(r["voice"].split("-")[0] for r in rows)),
            "groups": len({r["group"] for r in rows}),
            "degradations": dict(Counter(re.sub(r"[\d.]+s?$", "", r["hard_tag"].split(",")[-1]) for r in rows))}


def build(out: Path, texts: str | Path | None = TEXTS, subsets=SUBSETS, n_queries: dict | None = None,
          max_passages: int = 600, kokoro_share: float = 0.25, seed: int = 0, chunk: int = 32) -> dict:
    """Build every (split, subset) under `out` (see the module docstring); returns the card (also unseen.json)."""
    import manpages

    t0, n_queries = time.time(), DEFAULT_QUERIES | (n_queries or {})
    card = {"texts": str(texts), "seed": seed, "kokoro_share": kokoro_share, "splits": {},
            "synthetic": "all audio is synthetic TTS (held-out voices), not people"}
    rows = None
    if any(s != "fr-manpages" for s in subsets):
        rows = read_texts(texts)
        card["unseen_rule"] = {k: (v if k == "rows" else {s: len(g) for s, g in v.items()})
                               for k, v in check_unseen(rows).items()}
    for split in SPLITS:
        for subset in subsets:
            if subset == "fr-manpages":
                qs, docs, drops = manpages.manpage_items(out, split, n_queries[subset], max_passages)
            else:
                qs, docs, drops = text_items(rows, split, subset, n_queries[subset])
            if not qs:
                raise SystemExit(f"{split}/{subset}: no queries (dropped {drops})")
            log(f"{split}/{subset}: {len(qs)} queries, {len(docs)} passages; voicing")
            entry = build_subset(out, split, subset, qs, docs, kokoro_share, seed, chunk)
            card["splits"][f"{split}/{subset}"] = entry | {"dropped_rows": drops}
            log(f"{split}/{subset}: {json.dumps(entry)}")
    card["seconds"] = round(time.time() - t0, 1)
    (out / "unseen.json").write_text(json.dumps(card, indent=1))
    return card


# ============================================================================================== loading
def _read(path: Path, columns=None) -> list[dict]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise FileNotFoundError(f"{path}: not built; run `python eval/unseen.py build --out {path.parents[2]}`")
    return pq.read_table(path, columns=columns).to_pylist()


def available(root: str | Path, split: str = "test") -> list[str]:
    return [s for s in SUBSETS if (Path(root) / split / s / "queries.parquet").is_file()]


def retrieval_set(root: str | Path, split: str, subset: str, condition: str | None) -> RetrievalSet:
    """The (split, subset) as a RetrievalSet: spoken queries of `condition` ("clean" / "hard"), or with
    condition None the written queries (the text topline, through the text side as `query:`)."""
    folder = Path(root) / split / subset
    cols = ["id", "text", "doc"] + ([condition] if condition else [])
    qrows, corpus = _read(folder / "queries.parquet", cols), _read(folder / "corpus.parquet", ["id", "text"])
    relevant = {q["id"]: {q["doc"]: 1} for q in qrows}
    gold = {q["id"]: q["text"] for q in qrows}
    name = f"unseen-{subset}-{split}-{condition or 'text'}"
    if condition is None:
        return RetrievalSet(name, [{"id": q["id"], "text": q["text"]} for q in qrows], corpus, relevant, "text",
                            "text", gold)
    if condition not in CONDITIONS:
        raise ValueError(f"condition must be one of {CONDITIONS} or None, got {condition!r}")
    queries = [{"id": q["id"], "audio": audio_dict({"bytes": q[condition], "path": None})} for q in qrows]
    return RetrievalSet(name, queries, corpus, relevant, "audio", "text", gold, synthetic_audio=True)


def baselines(root: str | Path, subset: str, condition: str, split: str = "test") -> dict:
    """Chance and the length-only floor of (split, subset, condition): {"chance": {...}, "floor": {...}, "fit":
    (offset, slope)}. The floor's offset / slope are fitted on the dev split (relevant passage length in characters
    against clip duration) and applied to `split`."""
    from wolofmrl.metrics import chance_scores, fit_length_floor, length_floor_scores, score_matrix_metrics

    def load(s):
        folder = Path(root) / s / subset
        q = _read(folder / "queries.parquet", ["doc", f"{condition}_seconds"])
        c = _read(folder / "corpus.parquet", ["id", "text"])
        return [r[f"{condition}_seconds"] for r in q], [r["doc"] for r in q], c

    dev_dur, dev_doc, dev_corpus = load("dev")
    dev_len = {d["id"]: len(d["text"]) for d in dev_corpus}
    fit = fit_length_floor(dev_dur, [dev_len[d] for d in dev_doc])
    dur, docs, corpus = load(split)
    index = {d["id"]: i for i, d in enumerate(corpus)}
    relevant = [{index[d]: 1} for d in docs]
    scores = length_floor_scores(dur, [len(d["text"]) for d in corpus], fit)
    return {"chance": chance_scores(relevant, len(corpus)), "floor": score_matrix_metrics(scores, relevant),
            "fit": fit, "queries": len(docs), "passages": len(corpus)}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the unseen-source benchmark (dev + test, clean + hard)")
    b.add_argument("--out", default="data/unseen")
    b.add_argument("--texts", default=TEXTS, help="the speech-texts file holding unseen_dev / unseen_test rows")
    b.add_argument("--subsets", default=",".join(SUBSETS), help=f"comma list of {SUBSETS}")
    for s in SUBSETS:
        b.add_argument(f"--n-{s}", type=int, default=DEFAULT_QUERIES[s], help=f"queries per split for {s}")
    b.add_argument("--max-passages", type=int, default=600, help="fr-manpages passages per split")
    b.add_argument("--kokoro-share", type=float, default=0.25, help="share of clips voiced by Kokoro (slow: ~2x "
                                                                    "real time on 2 cores)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--chunk", type=int, default=32)
    a = p.parse_args(argv)
    subsets = [s for s in a.subsets.split(",") if s]
    bad = [s for s in subsets if s not in SUBSETS]
    if bad:
        p.error(f"--subsets {bad}: unknown; choose from {SUBSETS}")
    if not 0.0 <= a.kokoro_share <= 1.0:
        p.error(f"--kokoro-share must be in [0, 1], got {a.kokoro_share}")
    n = {s: getattr(a, f"n_{s.replace('-', '_')}") for s in SUBSETS}
    card = build(Path(a.out), a.texts, subsets, n, a.max_passages, a.kokoro_share, a.seed, a.chunk)
    log(f"done in {card['seconds']} s: {Path(a.out) / 'unseen.json'}")


if __name__ == "__main__":
    main()
