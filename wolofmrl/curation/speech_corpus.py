"""The speech corpora (issues 16, 23): build the texts here, voice them with espeak-ng and MBROLA where cores are many.

    python -m wolofmrl.curation.speech_corpus texts --config train/configs/data/reading.yaml [--fetch]
    python -m wolofmrl.curation.speech_corpus synth --texts T.jsonl.gz --out DIR --workers N [--max-train-hours H]
    python -m wolofmrl.curation.speech_corpus text-shards --texts T.jsonl.gz --out DIR   # stage 1: text pairs only

`synth` writes corpus shards in the schema of `shards.py` plus a ``transcript`` column (the text spoken; for
Wolof the CLAD text, not its respelling): ``DIR/<split>/<split>-<chunk>.parquet``, Audio ``{bytes, path}`` FLAC
16 kHz, so ``load_split(DIR, "train")`` reads them; a ``group`` column names the row's source group (splits:
train, dev, test and the whole-source unseen_dev / unseen_test of `unseen`). Each chunk is written atomically with a JSON record
(``DIR/_chunks/``) holding its sha256 and counts: a killed run resumes at the first unfinished chunk, a chunk
whose bytes no longer match its checksum is redone. ``DIR/DATACARD.md`` / ``card.json``: hours per language,
engine, voice, reader, variant, source and split; counts kept and dropped per reason. ``--max-train-hours`` voices a
deterministic subset of the train clips (estimated from text length), every held-out clip still voiced.
All audio is synthetic (espeak-ng, MBROLA).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from .store import dumps, stable_hash
from .speech_voices import VOICED_SPLITS, check_voice_config, parse_voice, plan_row

SPLITS = VOICED_SPLITS
EXTRA_COLUMNS = ["transcript", "group"]
CHARS_PER_S = 14.0  # espeak-ng at 100 % speed, measured on this corpus: plans --max-train-hours before voicing


# --------------------------------------------------------------------------- schema
def corpus_schema() -> pa.Schema:
    """`shards.features()` + a ``transcript`` string column, as an Arrow schema carrying the `datasets` metadata.

    Without `datasets` installed (the GPU machine) the same schema is built from `_FALLBACK_FEATURES`;
    tests/test_speech_corpus.py checks that both agree.
    """
    try:
        from datasets import Value

        from .shards import features
    except ImportError:
        feats = _FALLBACK_FEATURES
        fields = [(k, pa.struct([("bytes", pa.binary()), ("path", pa.string())]) if v["_type"] == "Audio"
                   else {"string": pa.string(), "float64": pa.float64(), "bool": pa.bool_()}[v["dtype"]])
                  for k, v in feats.items()]
        meta = {b"huggingface": json.dumps({"info": {"features": feats}}).encode()}
        return pa.schema(fields, metadata=meta)
    f = features()
    for c in EXTRA_COLUMNS:
        f[c] = Value("string")
    return f.arrow_schema


_S = {"dtype": "string", "_type": "Value"}
_FALLBACK_FEATURES = {
    "id": _S, "sentence_id": _S, "source": _S, "source_key": _S, "license": _S, "wo_text": _S, "fr_text": _S,
    "speech_lang": _S, "audio": {"sampling_rate": 16000, "_type": "Audio"}, "voice": _S,
    "duration_s": {"dtype": "float64", "_type": "Value"}, "synthetic": {"dtype": "bool", "_type": "Value"},
    "split": _S, "transcript": _S, "group": _S,
}


# --------------------------------------------------------------------------- plan
def plan_chunks(rows, vc: dict, chunk_size: int, sample_every: int = 1, max_train_hours: float | None = None,
                max_heldout_hours: float | None = None) -> list[tuple[str, int, list[dict]]]:
    """[(split, index, clips)] in a fixed order. A clip carries its row's shard fields and its voice.

    `sample_every` > 1 keeps every n-th clip (a deterministic sample for timing a build). `max_train_hours` keeps
    the train clips, in a salted hash order, until their estimated audio (text length / `CHARS_PER_S`, speed-scaled)
    reaches it; `max_heldout_hours` likewise caps dev and test each; unseen_dev / unseen_test are kept whole.
    """
    check_voice_config(vc)
    per_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    n = 0
    for row in rows:
        for clip in plan_row(row, vc):
            n += 1
            if (n - 1) % sample_every:
                continue
            per_split[row["split"]].append({**{k: row[k] for k in ("sentence_id", "source", "source_key", "license",
                                                                    "speech_lang", "transcript", "wo_text", "fr_text",
                                                                    "split")}, "group": row.get("group") or "", **clip})
    for split, cap in (("train", max_train_hours), ("dev", max_heldout_hours), ("test", max_heldout_hours)):
        if cap is not None:
            per_split[split] = _budget(per_split[split], cap)
    return [(split, i // chunk_size, clips[i: i + chunk_size]) for split, clips in per_split.items()
            for i in range(0, len(clips), chunk_size)]


def estimated_s(clip: dict) -> float:
    """Seconds of audio a clip will hold, estimated from its text (before voicing)."""
    return len(clip["espeak_text"]) / CHARS_PER_S * 100.0 / parse_voice(clip["voice"])[3] + 0.3


def _budget(clips: list[dict], max_hours: float) -> list[dict]:
    order = sorted(range(len(clips)), key=lambda i: stable_hash("train-budget", clips[i]["clip_id"]))
    keep, total = set(), 0.0
    for i in order:
        if total >= max_hours * 3600:
            break
        keep.add(i)
        total += estimated_s(clips[i])
    return [c for i, c in enumerate(clips) if i in keep]


def plan_fingerprint(texts_path: str | Path, vc: dict, synth: dict, sample_every: int, *caps) -> str:
    h = hashlib.sha256(Path(texts_path).read_bytes()).hexdigest()
    return f"{stable_hash(h, dumps(vc), dumps(synth), str(sample_every), *map(str, caps)):016x}"


# --------------------------------------------------------------------------- one chunk
def _synth_clip(clip: dict, synth: dict) -> tuple[dict | None, str | None]:
    """(shard row, None) or (None, drop reason)."""
    from .audio import encode, measures
    from .voice import espeak, to_16k

    reader, variant, pitch, speed = parse_voice(clip["voice"])
    mb = variant if clip["engine"] == "mbrola" else None
    amp = (synth.get("mbrola_amplitude") or {}).get(variant, 100) if mb else 100
    try:  # lang=None: the text is already respelled for its reader
        x, sr = espeak(clip["espeak_text"], None, variant, pitch, speed / 100.0, reader=reader, mbrola=mb,
                       amplitude=amp)
    except Exception as e:  # espeak-ng missing, crashed, or wrote no audio
        return None, f"tts_failed:{type(e).__name__}"
    x = to_16k(x, sr)
    m = measures(x)
    if x.size == 0:
        return None, "empty_audio"
    if not m["finite"]:
        return None, "non_finite_audio"
    if m["duration_s"] < synth["min_duration_s"]:
        return None, "too_short"
    if m["duration_s"] > synth["max_duration_s"]:
        return None, "too_long"
    if m["rms"] < synth["min_rms"]:
        return None, "silence"
    if float(np.mean(np.abs(x) >= 0.999)) > synth.get("max_clip_fraction", 0.001):
        return None, "clipped"
    data, ext = encode(x, "flac")
    row = {k: clip[k] for k in ("sentence_id", "source", "source_key", "license", "speech_lang", "voice", "split",
                                "transcript", "group")}
    row.update(id=clip["clip_id"], wo_text=clip["wo_text"] or "", fr_text=clip["fr_text"] or "",
               audio={"bytes": data, "path": f"{clip['clip_id']}.{ext}"}, duration_s=float(m["duration_s"]),
               synthetic=True)
    return row, None


def _chunk_paths(out: Path, split: str, idx: int) -> tuple[Path, Path]:
    return out / split / f"{split}-{idx:05d}.parquet", out / "_chunks" / f"{split}-{idx:05d}.json"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def synth_chunk(args: tuple) -> dict:
    """Worker: voice one chunk and write it atomically (Parquet, then its JSON record with the checksum)."""
    out, split, idx, clips, synth = args
    out = Path(out)
    cpu0, kids0 = time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    rows, dropped, seconds = [], Counter(), Counter()
    for clip in clips:
        row, reason = _synth_clip(clip, synth)
        if reason:
            dropped[reason] += 1
            continue
        rows.append(row)
        r, variant = parse_voice(row["voice"])[:2]
        for key in (f"lang:{row['speech_lang']}", f"voice:{row['voice']}", f"reader:{r}", f"variant:{variant}",
                    f"source:{row['source']}", f"engine:{clip['engine']}"):
            seconds[key] += row["duration_s"]
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = time.process_time() - cpu0 + (kids.ru_utime - kids0.ru_utime) + (kids.ru_stime - kids0.ru_stime)
    parquet, record = _chunk_paths(out, split, idx)
    parquet.parent.mkdir(parents=True, exist_ok=True)
    record.parent.mkdir(parents=True, exist_ok=True)
    tmp = parquet.with_suffix(".parquet.tmp")
    schema = corpus_schema()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table(), tmp)
    os.replace(tmp, parquet)
    wo_voices = Counter(r["sentence_id"] for r in rows if r["speech_lang"] == "wo")
    meta = {"split": split, "chunk": idx, "clips": len(clips), "kept": len(rows), "dropped": dict(dropped),
            "audio_s": round(sum(r["duration_s"] for r in rows), 3), "cpu_s": round(cpu_s, 3),
            "seconds": {k: round(v, 3) for k, v in sorted(seconds.items())}, "wo_voices_per_sentence": dict(wo_voices),
            "sha256": _sha256(parquet)}
    rec_tmp = record.with_suffix(".json.tmp")
    rec_tmp.write_text(dumps(meta))
    os.replace(rec_tmp, record)
    return meta


def chunk_done(out: Path, split: str, idx: int) -> tuple[bool, str]:
    """(finished and intact, why not): a chunk counts only with its record and a matching checksum."""
    parquet, record = _chunk_paths(out, split, idx)
    if not record.exists():
        return False, "missing"
    if not parquet.exists():
        return False, "corrupt"
    return (True, "") if _sha256(parquet) == json.loads(record.read_text())["sha256"] else (False, "corrupt")


# --------------------------------------------------------------------------- the run
def check_espeak(vc: dict) -> str:
    """espeak-ng's data folder; raises RuntimeError when espeak-ng or a configured variant is missing."""
    import re
    import shutil
    import subprocess

    if not shutil.which("espeak-ng"):
        raise RuntimeError("espeak-ng is not on PATH: install it, or unpack its .deb files and set PATH, "
                           "LD_LIBRARY_PATH and ESPEAK_DATA_PATH (train/device_speech_corpus.sh does)")
    out = subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True, text=True).stdout
    data = re.search(r"Data at:\s*(\S+)", out).group(1)
    variants = [*vc["train_variants"], *vc["heldout_variants"]]
    missing = [v for v in variants if not (Path(data) / "voices" / "!v" / v).exists()]
    if missing:  # espeak-ng silently falls back to its default voice for an unknown variant
        raise RuntimeError(f"espeak-ng variants {missing} are not in {data}/voices/!v: remove them from voices:")
    if float(vc.get("mbrola_share", 0)) > 0:
        from ..voices import HELD_OUT_MBROLA, TRAIN_MBROLA

        if not shutil.which("mbrola"):
            raise RuntimeError("voices.mbrola_share > 0 but mbrola is not on PATH: unpack the mbrola .deb "
                               "(train/device_speech_corpus.sh run does) or set mbrola_share: 0")
        names = [*vc.get("mbrola_train", TRAIN_MBROLA), *vc.get("mbrola_heldout", HELD_OUT_MBROLA)]
        gone = [m for m in names if not ((Path(data) / "mbrola" / m).exists() or Path(f"/usr/share/mbrola/{m}").exists())]
        if gone:  # espeak-ng would fail on every clip of these voices
            raise RuntimeError(f"MBROLA voices {gone} are in neither {data}/mbrola/ nor /usr/share/mbrola/: "
                               "install mbrola-<voice> (bash train/device_speech_corpus.sh prepare fetches them)")
    return data


def synth(texts: str | Path, out: str | Path, vc: dict, synth_cfg: dict, workers: int = 1, sample_every: int = 1,
          stop_after_chunks: int | None = None, log=print, max_train_hours: float | None = None,
          max_heldout_hours: float | None = None, splits: list[str] | None = None) -> dict:
    """Voice every planned clip of `texts` into `out` (resumable); returns the data card dict.

    `splits`: voice only these splits (default: all of `SPLITS`), e.g. leave unseen_test for the session that
    evaluates; a split's chunks are numbered the same either way, so a later call with more splits resumes.
    Raises ValueError for an unknown split."""
    from .speech_texts import read_texts

    out = Path(out)
    if splits is not None and not splits:
        raise ValueError(f"splits is empty: name some of {list(SPLITS)}, or leave it out for all")
    unknown = sorted(set(splits or ()) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits {unknown} are not corpus splits; use some of {list(SPLITS)}")
    check_espeak(vc)
    fp = plan_fingerprint(texts, vc, synth_cfg, sample_every, max_train_hours, max_heldout_hours)
    out.mkdir(parents=True, exist_ok=True)
    stamp = out / "_plan_fingerprint"
    if stamp.exists() and stamp.read_text() != fp:
        raise ValueError(f"--out {out} holds chunks of another text file or voice plan: use a new --out or delete it")
    stamp.write_text(fp)
    chunks = plan_chunks(read_texts(texts), vc, int(synth_cfg["chunk_size"]), sample_every, max_train_hours,
                         max_heldout_hours)
    chunks = [c for c in chunks if splits is None or c[0] in splits]
    todo, redone = [], Counter()
    for split, idx, clips in chunks:
        ok, why = chunk_done(out, split, idx)
        if not ok:
            redone[why] += 1
            todo.append((str(out), split, idx, clips, synth_cfg))
    n_clips = sum(len(c) for *_, c in chunks)
    log(f"plan: {n_clips} clips in {len(chunks)} chunks; {len(chunks) - len(todo)} done already, "
        f"{redone['corrupt']} corrupt (redone), {len(todo)} to voice with {workers} workers")
    t0, done, clips_done, audio_s = time.perf_counter(), 0, 0, 0.0
    pool = None
    if workers > 1 and len(todo) > 1:
        import multiprocessing as mp

        from . import speech_corpus  # by its import name: pickles also when this file runs as __main__

        pool = mp.get_context("fork").Pool(workers)
        results = pool.imap_unordered(speech_corpus.synth_chunk, todo)
    else:
        results = map(synth_chunk, todo)
    try:
        for meta in results:
            done += 1
            clips_done += meta["clips"]
            audio_s += meta["audio_s"]
            el = time.perf_counter() - t0
            if done == len(todo) or done % max(1, len(todo) // 40) == 0:
                log(f"[{done}/{len(todo)} chunks] {clips_done / el:.1f} clips/s, {audio_s / 3600:.2f} h audio, "
                    f"{audio_s / el:.0f}x real time, eta {el / done * (len(todo) - done):.0f} s")
            if stop_after_chunks is not None and done >= stop_after_chunks:
                raise KeyboardInterrupt(f"stopped after {done} chunks (simulated kill)")
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
    wall = time.perf_counter() - t0
    run = {"workers": workers, "wall_s": round(wall, 1), "chunks_voiced": done, "clips_voiced": clips_done,
           "clips_per_s": round(clips_done / wall, 2) if wall and done else None,
           "corrupt_chunks_redone": redone["corrupt"], "sample_every": sample_every,
           "max_train_hours": max_train_hours, "max_heldout_hours": max_heldout_hours,
           "splits": list(splits) if splits else list(SPLITS)}
    return write_card(out, chunks, vc, run)


# --------------------------------------------------------------------------- data card
def _hours(s: float) -> float:
    return round(s / 3600, 3)


def write_card(out: Path, chunks: list, vc: dict, run: dict) -> dict:
    """Aggregate the chunk records into ``card.json`` and ``DATACARD.md``; returns the card."""
    from ..voices import is_held_out

    per_split = {s: Counter() for s in SPLITS}
    seconds: dict[str, Counter] = {s: Counter() for s in SPLITS}
    dropped, wo_voices, cpu_s = Counter(), Counter(), 0.0
    for split, idx, clips in chunks:
        ok, _ = chunk_done(out, split, idx)
        if not ok:
            per_split[split]["chunks_missing"] += 1
            continue
        meta = json.loads(_chunk_paths(out, split, idx)[1].read_text())
        per_split[split].update(clips=meta["clips"], kept=meta["kept"], chunks=1)
        seconds[split].update(meta["seconds"])
        dropped.update(meta["dropped"])
        cpu_s += meta["cpu_s"]
        if split == "train":
            wo_voices.update(meta["wo_voices_per_sentence"])
    train_voices = {k[6:] for k in seconds["train"] if k.startswith("voice:")}
    held_voices = {k[6:] for s in SPLITS if s != "train" for k in seconds[s] if k.startswith("voice:")}
    audio_s = sum(v for s in SPLITS for k, v in seconds[s].items() if k.startswith("lang:"))
    checks = {"train_voices_held_out": sorted(v for v in train_voices if is_held_out(v)),
              "dev_test_voices_not_held_out": sorted(v for v in held_voices if not is_held_out(v)),
              "wo_train_sentences": len(wo_voices),
              "wo_train_sentences_below_target": sum(1 for n in wo_voices.values() if n < vc["wo_train"]),
              "wo_voices_per_train_sentence_min": min(wo_voices.values()) if wo_voices else None}
    if checks["train_voices_held_out"] or checks["dev_test_voices_not_held_out"]:
        raise AssertionError(f"held-out voice rule broken: {checks}")

    def table(prefix: str) -> dict:
        keys = sorted({k for s in SPLITS for k in seconds[s] if k.startswith(prefix)})
        return {k[len(prefix):]: {s: _hours(seconds[s][k]) for s in SPLITS} for k in keys}

    engines = sorted({k[7:] for s in SPLITS for k in seconds[s] if k.startswith("engine:")})
    card = {"all_audio_synthetic": True, "engine": ", ".join(engines) or "espeak", "hours": _hours(audio_s),
            "splits": {s: {**per_split[s], "hours": _hours(sum(v for k, v in seconds[s].items()
                                                                if k.startswith("lang:")))} for s in SPLITS},
            "hours_per_language": table("lang:"), "hours_per_source": table("source:"),
            "hours_per_engine": table("engine:"),
            "hours_per_reader": table("reader:"), "hours_per_variant": table("variant:"),
            "hours_per_voice": table("voice:"), "dropped": dict(sorted(dropped.items())), "checks": checks,
            "cpu_s": round(cpu_s, 1), "real_time_factor_per_core": round(audio_s / cpu_s, 1) if cpu_s else None,
            "run": run}
    (out / "card.json").write_text(json.dumps(card, indent=1, sort_keys=True, ensure_ascii=False))
    (out / "DATACARD.md").write_text(_card_markdown(card))
    return card


def _card_markdown(card: dict) -> str:
    lines = ["# Data card: speech corpus (issues 16, 23)", "",
             f"**All audio here is synthetic** (engines: {card['engine']}; Wolof is respelled Wolof read by the "
             "Swahili, Indonesian, Malay and Spanish voices and MBROLA's Spanish diphones: neither engine has Wolof). "
             "It is not Wolof speakers: every number measured on it says how a model does on synthetic speech.", "",
             f"Total: {card['hours']} h. Train voices never include a held-out voice (`wolofmrl.voices.is_held_out`); "
             "dev/test/unseen_dev/unseen_test clips are spoken only by held-out voices; intent-bucket sentences are "
             "not voiced. unseen_* hold whole sources out (`wolofmrl.curation.unseen`).", "",
             "| split | clips planned | kept | hours |", "|---|---:|---:|---:|"]
    for s, v in card["splits"].items():
        lines.append(f"| {s} | {v.get('clips', 0)} | {v.get('kept', 0)} | {v['hours']} |")
    for title, key in (("engine", "hours_per_engine"), ("language", "hours_per_language"),
                       ("source", "hours_per_source"), ("reading voice language", "hours_per_reader"),
                       ("espeak-ng variant / MBROLA voice", "hours_per_variant")):
        lines += ["", f"## Hours per {title}", "", f"| {title} | {' | '.join(SPLITS)} |",
                  "|---|" + "---:|" * len(SPLITS)]
        lines += [f"| {k} | {' | '.join(str(v.get(s, 0)) for s in SPLITS)} |" for k, v in card.get(key, {}).items()]
    voices = card["hours_per_voice"]
    tr = sorted(v["train"] for v in voices.values() if v["train"])
    lines += ["", f"## Voices: {len(voices)} distinct", "",
              f"Train voices {len(tr)}, hours per voice min {tr[0] if tr else 0} / median "
              f"{tr[len(tr) // 2] if tr else 0} / max {tr[-1] if tr else 0}; every voice's hours are in card.json.", "",
              "## Dropped clips", "", ", ".join(f"{k} {v}" for k, v in card["dropped"].items()) or "none", "",
              "## Checks", "", "```", json.dumps(card["checks"], indent=1), "```", "",
              f"Build: {card['run']}; CPU {card['cpu_s']} s, {card['real_time_factor_per_core']}x real time per core.",
              ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- text-only shards (stage 1)
TEXT_COLUMNS = ["id", "sentence_id", "source", "wo_text", "fr_text", "speech_lang", "transcript", "duration_s",
                "synthetic"]


def write_text_shards(texts: str | Path, out: str | Path) -> dict:
    """Every Wolof–French pair of the text JSONL (sentences and the text-only word pairs) as audio-less shards
    ``out/<split>/<split>-00000.parquet`` with the columns the text stage reads; one row per sentence id.

    Returns {split: rows written} plus the counts dropped per reason (no_pair: a row without both a Wolof and a
    French text; duplicate_sentence: a second row of a sentence already written; split_<name>: a split the
    text stage does not read, e.g. the intent bucket)."""
    from .speech_texts import read_texts

    out, seen, kept, dropped = Path(out), set(), {s: [] for s in SPLITS}, Counter()
    for row in read_texts(texts):
        if not (row.get("wo_text") and row.get("fr_text")):
            dropped["no_pair"] += 1
        elif row["split"] not in kept:
            dropped[f"split_{row['split']}"] += 1
        elif row["sentence_id"] in seen:
            dropped["duplicate_sentence"] += 1
        else:
            seen.add(row["sentence_id"])
            kept[row["split"]].append({"id": row["id"], "sentence_id": row["sentence_id"], "source": row["source"],
                                       "wo_text": row["wo_text"], "fr_text": row["fr_text"], "speech_lang": "wo",
                                       "transcript": row["wo_text"], "duration_s": 0.0, "synthetic": True})
    schema = pa.schema([(c, pa.float64() if c == "duration_s" else pa.bool_() if c == "synthetic" else pa.string())
                        for c in TEXT_COLUMNS])
    for split, rows in kept.items():
        (out / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), out / split / f"{split}-00000.parquet")
    return {**{s: len(r) for s, r in kept.items()}, "dropped": dict(dropped)}


# --------------------------------------------------------------------------- CLI
def main(argv=None) -> int:
    from .config import load_config

    ap = argparse.ArgumentParser(prog="python -m wolofmrl.curation.speech_corpus", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("texts", help="build the text JSONL (needs the fetched sources; --fetch pulls them)")
    t.add_argument("--config", default="train/configs/data/quality.yaml")
    t.add_argument("--out", help="text JSONL path (default: the config's `texts`)")
    t.add_argument("--fetch", action="store_true", help="first apt-get download / npm install the config's packages")
    s = sub.add_parser("synth", help="voice the texts into corpus shards (resumable)",
                       description="Voice the texts JSONL into corpus shards with espeak-ng / MBROLA (all audio "
                                   "synthetic); resumable: a rerun verifies finished chunks and voices the rest.")
    s.add_argument("--texts", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--config", default="train/configs/data/quality.yaml", help="its voices: and synth: sections")
    s.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    s.add_argument("--sample-every", type=int, default=1, help="voice every n-th clip only (timing a build)")
    s.add_argument("--max-train-hours", type=float, help="voice a deterministic subset of the train clips of about "
                   "this many hours (estimated from text length); held-out splits whole")
    s.add_argument("--max-heldout-hours", type=float, help="likewise for dev and test each (unseen_* stay whole)")
    s.add_argument("--splits", type=lambda v: [x.strip() for x in v.split(",") if x.strip()], default=None,
                   help=f"comma-separated splits to voice (default: all, {','.join(SPLITS)})")
    s.add_argument("--stop-after-chunks", type=int, help=argparse.SUPPRESS)  # tests: a simulated kill
    ts = sub.add_parser("text-shards", help="the Wolof-French text pairs as audio-less shards (stage 1)")
    ts.add_argument("--texts", required=True)
    ts.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.cmd == "text-shards":
        print(json.dumps(write_text_shards(args.texts, args.out), indent=1))
        return 0
    cfg = load_config(args.config)
    if args.cmd == "texts":
        from .speech_texts import build_texts, write_texts

        if args.fetch:
            from .fetch import fetch

            fetch(cfg)
        rows, report = build_texts(cfg)
        path = write_texts(rows, args.out or cfg["texts"])
        report_path = Path(path).with_suffix("").with_suffix(".report.json")
        report_path.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        report.pop("dropped_samples", None)
        print(json.dumps({"texts": path, **report}, indent=1, ensure_ascii=False))
        return 0
    if not Path(args.texts).exists():
        raise SystemExit(f"--texts {args.texts}: no such file; build it with `... speech_corpus texts`")
    try:
        card = synth(args.texts, args.out, cfg["voices"], cfg["synth"], args.workers, args.sample_every,
                     args.stop_after_chunks, log=lambda m: print(m, flush=True), max_train_hours=args.max_train_hours,
                     max_heldout_hours=args.max_heldout_hours, splits=args.splits)
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}; rerun the same command to resume", file=sys.stderr)
        return 130
    except ValueError as e:
        raise SystemExit(f"synth: {e}") from e
    print(json.dumps({k: card[k] for k in ("hours", "splits", "hours_per_engine", "hours_per_language", "dropped", "checks", "cpu_s",
                                           "real_time_factor_per_core", "run")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
