"""The voice stage: every sentence spoken by TTS voices, every recording decoded, in deterministic chunks.

Tasks (one clip each) are cut into chunks of ``voice.chunk_size``; a worker writes ``chunk-<i>.parquet`` and its
``chunk-<i>.json`` (rows, drops, SHA-256 of the Parquet file, a digest of its task ids) atomically. A killed or
damaged run resumes: a chunk whose file is missing, fails its checksum or was made from other tasks is made again,
the others are kept, and the stage ends byte-identical to an uninterrupted run (same input → same bytes, whatever
the worker count).
"""
from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections import Counter, deque
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from ..voices import engine
from .sources import audio_sources, is_voiced, source_specs
from .splits import VOICE_SET, sentence_id, sentence_split, voice_split
from .stages_text import iter_audio_items
from .store import Drops, Stage, dumps, file_record, read_jsonl, stable_hash, unit_interval

VOICE_COLUMNS = ["id", "sentence_id", "source", "source_key", "license", "wo_text", "fr_text", "speech_lang", "voice",
                 "synthetic", "speaker_known", "split_hint", "audio_bytes", "audio_ext", "duration_s", "rms", "peak",
                 "clip_fraction", "finite", "orig_sr", "augment"]


# --------------------------------------------------------------------------- tasks
def _pick_voices(sent_id: str, lang: str, k: int, split: str, cfg: dict) -> list[str]:
    """`k` distinct voices of the split's voice set, engines drawn by the config's weights (seeded by the id)."""
    from .voice import list_voices

    weights = cfg["voice"]["engines"][lang]
    pools = {e: [v for v in list_voices(lang) if engine(v) == e and voice_split(v, cfg) == VOICE_SET[split]]
             for e, wgt in weights.items() if wgt > 0}
    rng = np.random.default_rng(stable_hash(cfg["split"]["salt"], sent_id, lang, "voices"))
    engines = sorted(e for e in pools if pools[e])
    p = np.array([weights[e] for e in engines], float)
    chosen: list[str] = []
    for _ in range(k):
        e = engines[int(rng.choice(len(engines), p=p / p.sum()))]
        left = [v for v in pools[e] if v not in chosen] or [v for e2 in engines for v in pools[e2] if v not in chosen]
        if not left:
            break
        chosen.append(left[int(rng.integers(len(left)))])
    return chosen


def _tts_tasks(sentences: Iterator[dict], cfg: dict, specs: dict, drops: Drops) -> Iterator[dict]:
    """One task per (sentence, language, voice) of the TTS-voiced sources."""
    vc = cfg["voice"]
    frac = float(vc.get("sample_fraction", 1.0))
    for s in sentences:
        if not is_voiced(specs[s["source"]]):
            continue
        if frac < 1.0 and unit_interval("voice-sample", s["sentence_id"]) >= frac:
            drops.drop("not_in_voice_sample", s["sentence_id"])  # a partial build, on purpose
            continue
        split = sentence_split(s, cfg, specs)
        if s["kind"] == "pair":
            per_lang = {"wo": vc["wo_voices_per_sentence"], "fr": vc["fr_voices_per_paired_sentence"]}
        else:
            per_lang = {"wo": 0, "fr": vc["fr_voices_per_fr_only_sentence"]}
        for lang in ("wo", "fr"):
            k = per_lang[lang]
            for voice in _pick_voices(s["sentence_id"], lang, k, split, cfg) if k else []:
                yield {"task": "tts", "sentence": s, "lang": lang, "voice": voice, "split": split,
                       "id": f"{s['sentence_id']}-{lang}-{voice}"}


def _audio_tasks(items: Iterator[dict], sents: dict, aliases: dict, cfg: dict, specs: dict) -> Iterator[dict]:
    """One task per source recording, matched to its (kept, or aliased) sentence."""
    for it in items:
        sid = sentence_id(it["source"], it["group"], it["key"])
        seen = set()
        while sid in aliases and sid not in seen:
            seen.add(sid)
            sid = aliases[sid]
        s = sents.get(sid)
        yield {"task": "audio", "item": it, "sentence": s, "split": sentence_split(s, cfg, specs) if s else "",
               "id": f"{it['source']}-{stable_hash(it['source'], it['audio_id']):016x}"}


# --------------------------------------------------------------------------- one task → one row
def _row_base(task: dict) -> dict:
    s = task["sentence"]
    return {"id": task["id"], "sentence_id": s["sentence_id"], "source": s["source"], "source_key": s["source_key"],
            "license": s["license"], "wo_text": s["wo_text"], "fr_text": s["fr_text"], "split_hint": task["split"]}


def _tts_clip(task: dict, vc: dict, drops: Drops) -> tuple[np.ndarray, dict] | None:
    """A sentence spoken by a TTS voice at a seeded speed, augmented: (16 kHz wave, row fields), or None."""
    from . import voice as tts

    s = task["sentence"]
    text = s["wo_text"] if task["lang"] == "wo" else s["fr_text"]
    rng = np.random.default_rng(stable_hash("row", task["id"]))
    speed = float(rng.uniform(*vc["speed"]))
    try:
        x = tts.synthesize(text, task["lang"], task["voice"], speed=speed)
    except Exception as e:
        drops.drop(f"tts_failed:{type(e).__name__}", task["id"])
        return None
    if x.size == 0:
        drops.drop("empty_audio", task["id"])
        return None
    x, aug = tts.augment(x, rng, vc.get("augment", {}))
    return x, {"speech_lang": task["lang"], "voice": task["voice"], "synthetic": True, "speaker_known": True,
               "orig_sr": tts.SAMPLE_RATE, "augment": f"speed{speed:.2f},{aug}"}


def _recorded_clip(task: dict, cfg: dict, drops: Drops) -> tuple[np.ndarray, dict] | None:
    """A source recording decoded and resampled to 16 kHz: (wave, row fields), or None (dropped with a reason)."""
    from .audio import load_16k
    from .voice import SAMPLE_RATE

    it = task["item"]
    if task["sentence"] is None:
        drops.drop("text_dropped_upstream", task["id"])
        return None
    data = it.get("bytes")
    if not data:
        p = it.get("path") or ""
        if not p or not os.path.isfile(p):
            drops.drop("missing_audio_file", task["id"])
            return None
        data = Path(p).read_bytes()
    try:
        x, sr = load_16k(data)
    except Exception:
        drops.drop("corrupt_audio", task["id"])
        return None
    if sr < cfg["filter"]["min_source_sr"]:
        drops.drop("sample_rate_too_low", task["id"])
        return None
    if sr != SAMPLE_RATE:
        drops.note(f"resampled_from_{sr}")
    if x.size == 0:
        drops.drop("empty_audio", task["id"])
        return None
    speaker = it.get("speaker") or ""
    return x, {"speech_lang": "wo", "voice": speaker or f"{it['source']}-utt-{task['id'][-8:]}", "synthetic": False,
               "speaker_known": bool(speaker) and not speaker.startswith("fleurs-"), "orig_sr": int(sr), "augment": ""}


def _run_task(task: dict, cfg: dict, drops: Drops) -> dict | None:
    """One voice row (``VOICE_COLUMNS``) for a task, or None when it is dropped (counted on `drops`)."""
    from .audio import encode, measures

    made = _tts_clip(task, cfg["voice"], drops) if task["task"] == "tts" else _recorded_clip(task, cfg, drops)
    if made is None:
        return None
    x, fields = made
    data, ext = encode(np.nan_to_num(x), cfg["voice"].get("audio_format", "flac"))
    return {**_row_base(task), **fields, **measures(x), "audio_bytes": data, "audio_ext": ext}


# --------------------------------------------------------------------------- chunks
def _voice_schema() -> pa.Schema:
    t = {"synthetic": pa.bool_(), "speaker_known": pa.bool_(), "finite": pa.bool_(), "audio_bytes": pa.binary(),
         "duration_s": pa.float64(), "rms": pa.float64(), "peak": pa.float64(), "clip_fraction": pa.float64(),
         "orig_sr": pa.int64()}
    return pa.schema([(c, t.get(c, pa.string())) for c in VOICE_COLUMNS])


def chunk_paths(directory: Path, idx: int) -> tuple[Path, Path]:
    """(``chunk-<idx>.parquet``, ``chunk-<idx>.json``) in `directory`."""
    return directory / f"chunk-{idx:06d}.parquet", directory / f"chunk-{idx:06d}.json"


def tasks_digest(tasks: list[dict]) -> str:
    """16-hex digest of a chunk's task ids: a kept chunk must have been made from the same tasks."""
    return f"{stable_hash(*(t['id'] for t in tasks)):016x}"


def chunk_is_sound(directory: Path, idx: int, tasks: list[dict]) -> bool:
    """True when chunk `idx` is finished, was made from these `tasks`, and its Parquet file matches the size and
    SHA-256 its JSON recorded (a chunk of an older build, without them, must at least have its row count)."""
    parquet, meta_path = chunk_paths(directory, idx)
    if not (parquet.is_file() and meta_path.is_file()):
        return False
    try:
        meta = json.loads(meta_path.read_text())
        if "sha256" not in meta:
            return pq.ParquetFile(parquet).metadata.num_rows == meta["rows"]
    except Exception:  # unreadable JSON or Parquet footer: remake the chunk
        return False
    return meta.get("tasks_digest") == tasks_digest(tasks) and file_record(parquet) == {
        "bytes": meta["bytes"], "sha256": meta["sha256"], "rows": meta["rows"]}


def _voice_chunk(args) -> tuple[int, dict]:
    """Worker: synthesise/load one chunk, write it atomically. Same input → same bytes."""
    idx, tasks, cfg, directory = args
    from . import voice as tts

    drops = Drops()
    before = Counter(tts.UNMAPPED)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    rows = [r for r in (_run_task(t, cfg, drops) for t in tasks) if r is not None]
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    for sym, n in (tts.UNMAPPED - before).items():
        drops.note(f"ipa_unmapped:{sym}", n)
    parquet, meta_path = chunk_paths(Path(directory), idx)
    table = pa.Table.from_pylist(rows, schema=_voice_schema()) if rows else _voice_schema().empty_table()
    tmp = parquet.with_name(f".{parquet.name}.tmp")
    pq.write_table(table, tmp)
    record = file_record(tmp)
    meta = {"chunk": idx, "tasks": len(tasks), "tasks_digest": tasks_digest(tasks), **drops.as_dict(), "bytes": record["bytes"], "sha256": record["sha256"],
            "rows": len(rows), "audio_s": round(sum(r["duration_s"] for r in rows), 3), "cpu_s": round(cpu_s, 2),
            "wall_s": round(wall_s, 2), "engines": dict(Counter(engine(r["voice"]) for r in rows))}
    meta_tmp = meta_path.with_name(f".{meta_path.name}.tmp")
    meta_tmp.write_text(dumps(meta))
    os.replace(meta_tmp, meta_path)
    os.replace(tmp, parquet)  # last: a chunk counts as made only once both files are in place
    return idx, meta


def _init_worker(threads: int) -> None:
    os.environ["WOLOFMRL_TTS_THREADS"] = str(threads)


def _bounded_imap(pool, fn, items, window: int):
    """Ordered results, at most `window` chunks in flight (Pool.imap would queue every
    chunk, audio bytes included, at once)."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def _chunked(tasks: Iterator[dict], size: int) -> Iterator[tuple[int, list[dict]]]:
    buf, idx = [], 0
    for t in tasks:
        buf.append(t)
        if len(buf) == size:
            yield idx, buf
            buf, idx = [], idx + 1
    if buf:
        yield idx, buf


def _make_chunks(todo: Iterator, workers: int, stop_after_chunks: int | None) -> dict:
    """Run the chunk worker over `todo` (in a spawn pool when `workers` > 1); this run's throughput."""
    t0 = time.perf_counter()
    pbar = tqdm(desc="voice", unit="chunk", leave=False)
    pool = None
    if workers <= 1:
        results = map(_voice_chunk, todo)
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # onnxruntime and fork do not mix
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(max(1, (os.cpu_count() or 1) // workers),))
        results = _bounded_imap(pool, _voice_chunk, todo, 2 * workers)
    done_now, clips, made_s = 0, 0, 0.0
    try:
        for _idx, meta in results:
            done_now, clips, made_s = done_now + 1, clips + meta["rows"], made_s + meta["audio_s"]
            pbar.update(1)
            pbar.set_postfix(clips_s=f"{clips / max(1e-9, time.perf_counter() - t0):.2f}")
            if stop_after_chunks is not None and done_now >= stop_after_chunks:
                raise KeyboardInterrupt(f"stopped after {done_now} chunks (simulated kill)")
    finally:
        pbar.close()
        if pool is not None:
            pool.terminate()
            pool.join()
    elapsed = time.perf_counter() - t0
    fast = elapsed > 0 and clips
    return {"clips_per_s_this_run": round(clips / elapsed, 3) if fast else None,
            "audio_s_per_s_this_run": round(made_s / elapsed, 3) if fast else None,
            "clips_this_run": clips, "voice_seconds_this_run": round(elapsed, 1)}


def _chunk_totals(directory: Path, n_chunks: int, drops: Drops) -> tuple[int, dict]:
    """Rows and report fields summed over the chunks' JSON (their drops merged into `drops`)."""
    rows, audio_s, cpu_s = 0, 0.0, 0.0
    for idx in range(n_chunks):
        meta = json.loads(chunk_paths(directory, idx)[1].read_text())
        drops.merge(meta)
        cpu_s += meta.get("cpu_s", 0.0)
        rows += meta["rows"]
        audio_s += meta["audio_s"]
    return rows, {"chunks": n_chunks, "audio_hours": round(audio_s / 3600, 4),
                  # load-independent cost: CPU seconds per clip, all threads of the worker counted
                  "cpu_seconds": round(cpu_s, 1), "clips_per_cpu_second": round(rows / cpu_s, 3) if cpu_s else None}


def _stale_chunks_removed(directory: Path, n_chunks: int) -> None:
    """Chunks past the last one of this task list (another config's leftovers) would be read as rows: remove."""
    for p in list(directory.glob("chunk-*.parquet")) + list(directory.glob("chunk-*.json")):
        if int(p.stem.split("-")[1]) >= n_chunks:
            p.unlink()


def stage_voice(cfg: dict, ingest: Stage, dedupe: Stage, st: Stage, workers: int | None = None,
                stop_after_chunks: int | None = None) -> dict:
    """Speak every sentence and decode every recording into voice rows (``chunk-*.parquet``), resumably.

    `workers`: processes (default ``voice.workers``, else the CPU count); `stop_after_chunks`: a simulated kill
    (tests) — raises KeyboardInterrupt after that many chunks."""
    fp = getattr(st, "fingerprint", None) or config_fingerprint(cfg)
    stamp = st.tmp / "_config_fingerprint"
    if st.tmp.exists() and (not stamp.exists() or stamp.read_text() != fp):
        shutil.rmtree(st.tmp)  # chunks of another config are not this run's to resume
    tmp = st.begin(keep_tmp=True)  # finished chunks survive a kill
    stamp.write_text(fp)
    specs = source_specs(cfg)
    workers = workers or cfg["voice"].get("workers") or os.cpu_count() or 1
    with_audio = audio_sources(specs)
    sents_path = dedupe.path("sentences.jsonl")
    # sentences of audio-bearing sources (and their aliases) are looked up by id
    sents = {s["sentence_id"]: s for s in read_jsonl(sents_path) if s["source"] in with_audio}
    aliases = {a["from"]: a["to"] for a in read_jsonl(dedupe.path("aliases.jsonl"))}
    sample_drops = Drops()
    n_chunks = 0

    def todo():
        nonlocal n_chunks
        spoken = _tts_tasks(read_jsonl(sents_path), cfg, specs, sample_drops)
        recorded = _audio_tasks(iter_audio_items(ingest.path("audio")), sents, aliases, cfg, specs)
        for idx, ts in _chunked(itertools.chain(spoken, recorded), int(cfg["voice"]["chunk_size"])):
            n_chunks = idx + 1
            if not chunk_is_sound(tmp, idx, ts):
                yield idx, ts, cfg, str(tmp)

    this_run = _make_chunks(todo(), workers, stop_after_chunks)
    _stale_chunks_removed(tmp, n_chunks)
    drops = Drops()
    drops.merge(sample_drops.as_dict())
    rows, totals = _chunk_totals(tmp, n_chunks, drops)
    return st.finish(rows, drops, {**totals, "workers": workers, **this_run})


def iter_voice_meta(voice: Stage, columns: list[str]) -> Iterator[dict]:
    """The voice rows' `columns`, chunk by chunk, in order."""
    for p in sorted(voice.final.glob("chunk-*.parquet")):
        for batch in pq.ParquetFile(p).iter_batches(batch_size=256, columns=columns):
            yield from batch.to_pylist()


def config_fingerprint(cfg: dict, limit: int | None = None) -> str:
    """What the outputs depend on (not `out`, not the worker count)."""
    keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("out",)}
    keep["voice"] = {k: v for k, v in keep.get("voice", {}).items() if k != "workers"}
    return f"{stable_hash(dumps(keep), str(limit)):016x}"
