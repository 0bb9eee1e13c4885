"""The curation pipeline: ingest → normalise → pair → dedupe → voice → filter → split → write.

Dedupe runs on text, before voicing: voicing is the one expensive stage (hours of
TTS), so near-duplicate sentences are removed before they are spoken. Filter then
judges the audio (duration, silence, clipping, speech rate).

Each stage streams its input and writes ``<out>/_stages/<stage>/`` with a ``_DONE``
report ``{kept, dropped: {reason: n}, dropped_samples, notes, seconds}``; a rerun
skips finished stages. The voice stage works in deterministic chunks, so a killed
run resumes where it stopped and ends byte-identical to an uninterrupted one.
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from . import hub_sources, offline_sources
from .store import Drops, JsonlWriter, Stage, count_lines, dumps, group_by, read_jsonl, stable_hash, unit_interval
from .text import (clean, dedupe_key, junk_reason, length_ratio, n_words, normalize_french, normalize_wolof,
                   strip_accelerators)

log = logging.getLogger("wolofmrl.curation")

STAGES = ("ingest", "normalise", "pair", "dedupe", "voice", "filter", "split", "write")
SPLITS = ("train", "dev", "test")


def _readers() -> dict:
    return {**offline_sources.READERS, **hub_sources.READERS}


def source_specs(cfg: dict) -> dict[str, dict]:
    specs = {}
    for i, s in enumerate(cfg["sources"]):
        s = dict(s)
        s.setdefault("name", s["type"])
        s["_rank"] = i
        specs[s["name"]] = s
    return specs


def _reserved(cfg) -> set:
    return set(offline_sources.RESERVED) | {r.lower() for r in cfg.get("reserved", [])}


def sentence_id(source: str, group: str, key: str) -> str:
    return f"{source}-{stable_hash(source, group, key):016x}"


def sentence_split(sent: dict, cfg: dict, specs: dict) -> str:
    """Deterministic split of a sentence: its source's own split where the config keeps
    it (real corpora with official splits), else a salted hash of the sentence id."""
    spec = specs.get(sent["source"], {})
    if spec.get("split_from_source") and sent.get("source_split") in SPLITS:
        return sent["source_split"]
    u = unit_interval(cfg["split"]["salt"], sent["sentence_id"])
    if u < cfg["split"]["test"]:
        return "test"
    if u < cfg["split"]["test"] + cfg["split"]["dev"]:
        return "dev"
    # sentences reserved for the spoken-intent benchmark: never in training, never in the retrieval test split
    if u < cfg["split"]["test"] + cfg["split"]["dev"] + cfg["split"].get("intent", 0.0):
        return "intent"
    return "train"


def voice_split(voice: str, cfg: dict) -> str:
    """Held-out voices: the synthetic ones per engine/language group (fixed sets), real
    speakers by a salted hash."""
    from .voice import list_voices

    salt = cfg["split"]["salt"]
    if voice.startswith(("kokoro-", "espeak-")):
        lang = "fr" if voice.startswith("espeak-fr") else "wo"
        group = [v for v in list_voices(lang) if v.split("-")[0] == voice.split("-")[0]]
        ranked = sorted(group, key=lambda v: stable_hash(salt, "voice", v))
        k = max(1, round(0.15 * len(ranked)))
        if voice in ranked[:k]:
            return "test"
        if voice in ranked[k:2 * k]:
            return "dev"
        return "train"
    u = unit_interval(salt, "speaker", voice)
    if u < cfg["split"]["test"] * 2:
        return "test"
    if u < (cfg["split"]["test"] + cfg["split"]["dev"]) * 2:
        return "dev"
    return "train"


# =========================================================================== ingest
class AudioItemWriter:
    """Source audio (encoded bytes as the source had them) in Parquet chunks."""

    def __init__(self, directory: Path, rows: int = 256):
        self.dir, self.rows, self.buf, self.n_files, self.n = directory, rows, [], 0, 0
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, item: dict) -> None:
        self.buf.append(item)
        self.n += 1
        if len(self.buf) >= self.rows:
            self.flush()

    def flush(self) -> None:
        if self.buf:
            pq.write_table(pa.Table.from_pylist(self.buf), self.dir / f"items-{self.n_files:05d}.parquet")
            self.n_files += 1
            self.buf = []


def iter_audio_items(directory: Path) -> Iterator[dict]:
    for p in sorted(directory.glob("items-*.parquet")):
        for batch in pq.ParquetFile(p).iter_batches(batch_size=64):
            yield from batch.to_pylist()


def stage_ingest(cfg: dict, out: Path, st: Stage, limit: int | None = None) -> dict:
    tmp = st.begin()
    readers, reserved = _readers(), _reserved(cfg)
    drops = Drops()
    per_source: dict = {}
    with JsonlWriter(tmp / "segments.jsonl") as w:
        audio_w = AudioItemWriter(tmp / "audio")
        for spec in source_specs(cfg).values():
            if spec.get("enabled", True) is False:
                continue
            if r := offline_sources.reserved_name(spec["name"], spec.get("path", ""), extra=reserved):
                drops.drop("reserved_source", f"{spec['name']} ({r})")
                continue
            reader = readers[spec["type"]]
            src_drops = Drops()
            counts: Counter = Counter()
            keys: set = set()
            is_hub = spec["type"] in hub_sources.READERS
            lim = spec.get("limit", limit)
            events = reader(spec, src_drops, reserved, lim) if is_hub else (("seg", s) for s in reader(spec, src_drops, reserved))
            for kind, ev in tqdm(events, desc=f"ingest {spec['name']}", unit="row", leave=False):
                if kind == "audio":
                    audio_w.add(ev)
                    counts["audio"] += 1
                    continue
                ev["source"] = spec["name"]
                seg_id = f"{ev['source']}/{ev['group']}/{ev['lang']}/{ev['key']}"
                if r := offline_sources.reserved_name(ev["group"], extra=reserved):
                    src_drops.drop("reserved_source", seg_id)
                    continue
                if lim and not is_hub and ev["key"] not in keys:
                    if len(keys) >= lim:
                        src_drops.drop("limit", seg_id)
                        continue
                    keys.add(ev["key"])
                ev["seg_id"] = seg_id
                ev.setdefault("source_split", "")
                w.write(ev)
                counts[ev["lang"]] += 1
            per_source[spec["name"]] = {"segments": dict(counts), **src_drops.as_dict()}
            drops.merge(src_drops.as_dict())
        audio_w.flush()
        n = w.n
    return st.finish(n, drops, {"per_source": per_source, "audio_items": audio_w.n})


# =========================================================================== normalise
def stage_normalise(cfg: dict, out: Path, ingest: Stage, st: Stage) -> dict:
    tmp = st.begin()
    drops = Drops()
    max_chars = cfg["text"]["max_chars"]
    src = ingest.path("segments.jsonl")
    with JsonlWriter(tmp / "segments.jsonl") as w:
        for seg in tqdm(read_jsonl(src), total=count_lines(src), desc="normalise", unit="seg", leave=False):
            raw = seg["text"]
            text = clean(raw)
            text, changed = strip_accelerators(text)
            if changed:
                drops.note("accelerator_stripped")
            if reason := junk_reason(text):
                drops.drop(f"{reason}", seg["seg_id"])
                continue
            if len(text) > max_chars:
                drops.drop("too_long_text", seg["seg_id"])
                continue
            if seg["lang"] == "wo":
                norm = normalize_wolof(text)
                if norm != text:
                    drops.note("wolof_respelled_to_clad")
                text = norm
            else:
                text = normalize_french(text)
            seg["raw"], seg["text"] = raw, text
            seg["en"] = clean(strip_accelerators(seg.get("en") or "")[0])
            w.write(seg)
        n = w.n
    return st.finish(n, drops)


# =========================================================================== pair
def stage_pair(cfg: dict, out: Path, normalise: Stage, st: Stage) -> dict:
    tmp = st.begin()
    drops = Drops()
    specs = source_specs(cfg)
    tcfg = cfg["text"]
    translator, mt_why = None, None
    if any(s.get("mt") for s in specs.values()):
        translator, mt_why = hub_sources.get_translator(cfg.get("mt"))
        if translator is None:
            log.warning("MT: %s; Wolof-only rows are dropped as no_mt", mt_why)
    src = normalise.path("segments.jsonl")
    n_rows = count_lines(src)
    kinds: Counter = Counter()
    mt_queue: list[dict] = []

    def key_of(s):
        return f"{s['source']}\x1f{s['group']}\x1f{s['key']}"

    def check_pair(s: dict) -> str | None:
        spec = specs[s["source"]]
        mw = spec.get("min_words", tcfg["min_words"])
        wo, fr, en = s["wo_text"], s["fr_text"], s.get("en_text", "")
        kwo, kfr = dedupe_key(wo), dedupe_key(fr)
        if kwo == kfr or (en and kwo == dedupe_key(en)):
            return "untranslated_copy"
        if n_words(wo) < mw or n_words(fr) < mw:
            return "too_short"
        if min(len(wo), len(fr)) >= tcfg["ratio_min_chars"] and length_ratio(wo, fr) > tcfg["max_length_ratio"]:
            return "length_ratio"
        return None

    with JsonlWriter(tmp / "sentences.jsonl") as w:

        def emit(s: dict) -> None:
            if reason := check_pair(s):
                drops.drop(reason, s["sentence_id"])
                return
            kinds[s["kind"]] += 1
            w.write(s)

        def flush_mt() -> None:
            if not mt_queue:
                return
            if translator is None:
                for s in mt_queue:
                    drops.drop("no_mt", s["sentence_id"])
            else:
                for s, fr in zip(mt_queue, translator.translate([s["wo_text"] for s in mt_queue]), strict=True):
                    if not fr:
                        drops.drop("mt_failed", s["sentence_id"])
                        continue
                    s["fr_text"], s["fr_origin"] = normalize_french(fr), translator.name
                    emit(s)
            mt_queue.clear()

        for _, segs in tqdm(group_by(read_jsonl(src), key_of, tmp / "_buckets", n_rows), desc="pair", unit="key", leave=False):
            segs.sort(key=lambda s: s["seg_id"])
            first = segs[0]
            spec = specs[first["source"]]
            sid = sentence_id(first["source"], first["group"], first["key"])
            by_lang: dict[str, list[dict]] = {"wo": [], "fr": []}
            for s in segs:
                by_lang[s["lang"]].append(s)
            for lang, lst in by_lang.items():
                if len(lst) > 1:
                    if len({s["text"] for s in lst}) == 1:
                        drops.note(f"merged_same_key_{lang}", len(lst) - 1)
                    else:
                        for s in lst[1:]:
                            drops.drop(f"conflicting_same_key_{lang}", s["seg_id"])
            wo, fr = (by_lang["wo"] or [None])[0], (by_lang["fr"] or [None])[0]
            base = {"sentence_id": sid, "source": first["source"], "group": first["group"], "source_key": first["key"],
                    "license": first["license"], "source_split": first.get("source_split", ""),
                    "en_text": (wo or fr)["en"]}
            if wo and fr:
                emit({**base, "wo_text": wo["text"], "fr_text": fr["text"], "kind": "pair"})
            elif wo:
                if spec.get("mt"):
                    mt_queue.append({**base, "wo_text": wo["text"], "fr_text": "", "kind": "pair"})
                    if len(mt_queue) >= 64:
                        flush_mt()
                else:
                    drops.drop("no_fr_twin", wo["seg_id"])
            else:
                if not spec.get("fr_only"):
                    drops.drop("no_wo_twin", fr["seg_id"])
                    continue
                if fr["en"] and dedupe_key(fr["text"]) == dedupe_key(fr["en"]):
                    drops.drop("untranslated_copy", fr["seg_id"])
                elif n_words(fr["text"]) < spec.get("fr_only_min_words", tcfg["fr_only_min_words"]):
                    drops.drop("too_short", fr["seg_id"])
                elif unit_interval("fr_only", sid) >= tcfg["fr_only_fraction"]:
                    drops.drop("fr_only_sampled_out", fr["seg_id"])
                else:
                    kinds["fr_only"] += 1
                    w.write({**base, "wo_text": "", "fr_text": fr["text"], "kind": "fr_only"})
        flush_mt()
        n = w.n
    return st.finish(n, drops, {"kinds": dict(kinds), "mt": translator.name if translator else mt_why})


# =========================================================================== dedupe
def stage_dedupe(cfg: dict, out: Path, pair: Stage, st: Stage) -> dict:
    """Near-duplicates (same text after case/accent/punctuation folding) removed on the
    Wolof side, then on the French side: afterwards every Wolof and every French text
    is unique, so a sentence-level split cannot leak either side."""
    tmp = st.begin()
    drops = Drops()
    specs = source_specs(cfg)
    audio_sources = {n for n, s in specs.items() if s["type"] in hub_sources.AUDIO_TYPES}

    def priority(s):
        return (s["kind"] != "pair", specs.get(s["source"], {}).get("_rank", 99), s["sentence_id"])

    src = pair.path("sentences.jsonl")
    n_rows = count_lines(src)
    aliases = JsonlWriter(tmp / "aliases.jsonl")
    mid = JsonlWriter(tmp / "_pass1.jsonl")
    rows = read_jsonl(src)
    # pass 1: Wolof side (French-only rows have none and pass straight through)
    for _, group in tqdm(group_by(rows, lambda s: dedupe_key(s["wo_text"]) or "\x00" + s["sentence_id"], tmp / "_b1", n_rows),
                         desc="dedupe wo", unit="key", leave=False):
        group.sort(key=priority)
        mid.write(group[0])
        for s in group[1:]:
            drops.drop("duplicate_wo", s["sentence_id"])
            if s["source"] in audio_sources:
                aliases.write({"from": s["sentence_id"], "to": group[0]["sentence_id"]})
    mid.close()
    kinds: Counter = Counter()
    per_source: Counter = Counter()
    with JsonlWriter(tmp / "sentences.jsonl") as w:
        for _, group in tqdm(group_by(read_jsonl(mid.path), lambda s: dedupe_key(s["fr_text"]), tmp / "_b2", mid.n),
                             desc="dedupe fr", unit="key", leave=False):
            group.sort(key=priority)
            w.write(group[0])
            kinds[group[0]["kind"]] += 1
            per_source[f"{group[0]['source']}:{group[0]['kind']}"] += 1
            for s in group[1:]:
                drops.drop("duplicate_fr", s["sentence_id"])
                if s["source"] in audio_sources:
                    aliases.write({"from": s["sentence_id"], "to": group[0]["sentence_id"]})
        n = w.n
    aliases.close()
    mid.path.unlink()
    return st.finish(n, drops, {"kinds": dict(kinds), "per_source": dict(sorted(per_source.items()))})


# =========================================================================== voice
VOICE_COLUMNS = ["id", "sentence_id", "source", "source_key", "license", "wo_text", "fr_text", "speech_lang", "voice",
                 "synthetic", "speaker_known", "split_hint", "audio_bytes", "audio_ext", "duration_s", "rms", "peak",
                 "clip_fraction", "finite", "orig_sr", "augment"]


def _pick_voices(sent_id: str, lang: str, k: int, split: str, cfg: dict) -> list[str]:
    from .voice import list_voices

    weights = cfg["voice"]["engines"][lang]
    pools = {e: [v for v in list_voices(lang) if v.split("-")[0] == e and voice_split(v, cfg) == split]
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
    vc = cfg["voice"]
    frac = float(vc.get("sample_fraction", 1.0))
    for s in sentences:
        spec = specs.get(s["source"], {})
        if not spec.get("voice", spec["type"] in offline_sources.READERS):
            continue
        if frac < 1.0 and unit_interval("voice-sample", s["sentence_id"]) >= frac:
            drops.drop("not_in_voice_sample", s["sentence_id"])  # a partial build, on purpose
            continue
        split = sentence_split(s, cfg, specs)
        plan = []
        if s["kind"] == "pair":
            plan += [("wo", n) for n in range(vc["wo_voices_per_sentence"])]
            plan += [("fr", n) for n in range(vc["fr_voices_per_paired_sentence"])]
        else:
            plan += [("fr", n) for n in range(vc["fr_voices_per_fr_only_sentence"])]
        for lang in ("wo", "fr"):
            k = sum(1 for lg, _ in plan if lg == lang)
            for voice in _pick_voices(s["sentence_id"], lang, k, split, cfg) if k else []:
                yield {"task": "tts", "sentence": s, "lang": lang, "voice": voice, "split": split,
                       "id": f"{s['sentence_id']}-{lang}-{voice}"}


def _audio_tasks(items: Iterator[dict], sents: dict, aliases: dict, cfg: dict, specs: dict) -> Iterator[dict]:
    for it in items:
        sid = sentence_id(it["source"], it["group"], it["key"])
        seen = set()
        while sid in aliases and sid not in seen:
            seen.add(sid)
            sid = aliases[sid]
        s = sents.get(sid)
        yield {"task": "audio", "item": it, "sentence": s, "split": sentence_split(s, cfg, specs) if s else "",
               "id": f"{it['source']}-{stable_hash(it['source'], it['audio_id']):016x}"}


def _row_base(task: dict) -> dict:
    s = task["sentence"]
    return {"id": task["id"], "sentence_id": s["sentence_id"], "source": s["source"], "source_key": s["source_key"],
            "license": s["license"], "wo_text": s["wo_text"], "fr_text": s["fr_text"], "split_hint": task["split"]}


def _run_task(task: dict, cfg: dict, drops: Drops) -> dict | None:
    from . import voice as tts
    from .audio import encode, load_16k, measures

    vc = cfg["voice"]
    if task["task"] == "tts":
        s = task["sentence"]
        text = s["wo_text"] if task["lang"] == "wo" else s["fr_text"]
        rng = np.random.default_rng(stable_hash("row", task["id"]))
        speed = float(rng.uniform(*vc["speed"]))
        try:
            x = tts.synthesize(text, task["lang"], task["voice"], speed=speed, seed=int(stable_hash(task["id"]) % 2**31))
        except Exception as e:
            drops.drop(f"tts_failed:{type(e).__name__}", task["id"])
            return None
        if x.size == 0:
            drops.drop("empty_audio", task["id"])
            return None
        x, aug = tts.augment(x, rng, vc.get("augment", {}))
        row = {**_row_base(task), "speech_lang": task["lang"], "voice": task["voice"], "synthetic": True,
               "speaker_known": True, "orig_sr": tts.SAMPLE_RATE, "augment": f"speed{speed:.2f},{aug}"}
    else:
        it, s = task["item"], task["sentence"]
        if s is None:
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
        if sr != tts.SAMPLE_RATE:
            drops.note(f"resampled_from_{sr}")
        if x.size == 0:
            drops.drop("empty_audio", task["id"])
            return None
        speaker = it.get("speaker") or ""
        row = {**_row_base(task), "speech_lang": "wo", "voice": speaker or f"{it['source']}-utt-{task['id'][-8:]}",
               "synthetic": False, "speaker_known": bool(speaker) and not speaker.startswith("fleurs-"),
               "orig_sr": int(sr), "augment": ""}
    m = measures(x)
    data, ext = encode(np.nan_to_num(x), vc.get("audio_format", "flac"))
    row.update(m, audio_bytes=data, audio_ext=ext)
    return row


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
    directory = Path(directory)
    meta = {"chunk": idx, "tasks": len(tasks), "rows": len(rows), **drops.as_dict(),
            "audio_s": round(sum(r["duration_s"] for r in rows), 3), "cpu_s": round(cpu_s, 2), "wall_s": round(wall_s, 2),
            "engines": dict(Counter(r["voice"].split("-")[0] for r in rows))}
    (directory / f"chunk-{idx:06d}.json").write_text(dumps(meta))
    table = pa.Table.from_pylist(rows, schema=_voice_schema()) if rows else _voice_schema().empty_table()
    tmp = directory / f".chunk-{idx:06d}.parquet.tmp"
    pq.write_table(table, tmp)
    os.replace(tmp, directory / f"chunk-{idx:06d}.parquet")
    return idx, meta


def _voice_schema() -> pa.Schema:
    t = {"synthetic": pa.bool_(), "speaker_known": pa.bool_(), "finite": pa.bool_(), "audio_bytes": pa.binary(),
         "duration_s": pa.float64(), "rms": pa.float64(), "peak": pa.float64(), "clip_fraction": pa.float64(),
         "orig_sr": pa.int64()}
    return pa.schema([(c, t.get(c, pa.string())) for c in VOICE_COLUMNS])


def _init_worker(threads: int) -> None:
    os.environ["WOLOFMRL_TTS_THREADS"] = str(threads)


def _bounded_imap(pool, fn, items, window: int):
    """Ordered results, at most `window` chunks in flight (Pool.imap would queue every
    chunk, audio bytes included, at once)."""
    from collections import deque

    pending: deque = deque()
    for item in items:
        pending.append(pool.apply_async(fn, (item,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def stage_voice(cfg: dict, out: Path, ingest: Stage, dedupe: Stage, st: Stage, workers: int | None = None,
                stop_after_chunks: int | None = None) -> dict:
    fp = getattr(st, "fingerprint", None) or config_fingerprint(cfg)
    stamp = st.tmp / "_config_fingerprint"
    if st.tmp.exists() and (not stamp.exists() or stamp.read_text() != fp):
        import shutil

        shutil.rmtree(st.tmp)  # chunks of another config are not this run's to resume
    tmp = st.begin(keep_tmp=True)  # finished chunks survive a kill
    stamp.write_text(fp)
    specs = source_specs(cfg)
    vc = cfg["voice"]
    workers = workers or vc.get("workers") or os.cpu_count() or 1
    chunk = int(vc["chunk_size"])
    audio_sources = {n for n, s in specs.items() if s["type"] in hub_sources.AUDIO_TYPES}
    sents_path = dedupe.path("sentences.jsonl")
    # sentences of audio-bearing sources (and their aliases) are looked up by id
    sents = {s["sentence_id"]: s for s in read_jsonl(sents_path) if s["source"] in audio_sources}
    aliases = {a["from"]: a["to"] for a in read_jsonl(dedupe.path("aliases.jsonl"))}

    sample_drops = Drops()

    def tasks():
        sample_drops.__init__()  # counted afresh on each pass over the tasks
        yield from _tts_tasks(read_jsonl(sents_path), cfg, specs, sample_drops)
        yield from _audio_tasks(iter_audio_items(ingest.path("audio")), sents, aliases, cfg, specs)

    def chunks():
        buf, idx = [], 0
        for t in tasks():
            buf.append(t)
            if len(buf) == chunk:
                yield idx, buf
                buf, idx = [], idx + 1
        if buf:
            yield idx, buf

    def todo():
        for idx, ts in chunks():
            if not (tmp / f"chunk-{idx:06d}.parquet").exists():
                yield idx, ts, cfg, str(tmp)

    t0 = time.perf_counter()
    done_now = 0
    pbar = tqdm(desc="voice", unit="chunk", leave=False)
    if workers <= 1:
        results = map(_voice_chunk, todo())
        pool = None
    else:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")  # onnxruntime and fork do not mix
        pool = ctx.Pool(workers, initializer=_init_worker, initargs=(max(1, (os.cpu_count() or 1) // workers),))
        results = _bounded_imap(pool, _voice_chunk, todo(), 2 * workers)
    clips, made_s = 0, 0.0
    try:
        for _idx, meta in results:
            done_now += 1
            clips += meta["rows"]
            made_s += meta["audio_s"]
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
    drops, rows, audio_s, n_chunks = Drops(), 0, 0.0, 0
    drops.merge(sample_drops.as_dict())
    cpu_s = 0.0
    for meta_path in sorted(tmp.glob("chunk-*.json")):
        meta = json.loads(meta_path.read_text())
        drops.merge(meta)
        cpu_s += meta.get("cpu_s", 0.0)
        rows += meta["rows"]
        audio_s += meta["audio_s"]
        n_chunks += 1
    extra = {"chunks": n_chunks, "workers": workers, "audio_hours": round(audio_s / 3600, 4),
             "clips_per_s_this_run": round(clips / elapsed, 3) if elapsed > 0 and clips else None,
             "audio_s_per_s_this_run": round(made_s / elapsed, 3) if elapsed > 0 and clips else None,
             "clips_this_run": clips, "voice_seconds_this_run": round(elapsed, 1),
             # load-independent cost: CPU seconds per clip, all threads of the worker counted
             "cpu_seconds": round(cpu_s, 1), "clips_per_cpu_second": round(rows / cpu_s, 3) if cpu_s else None}
    return st.finish(rows, drops, extra)


def iter_voice_meta(voice: Stage, columns: list[str]) -> Iterator[dict]:
    for p in sorted(voice.final.glob("chunk-*.parquet")):
        for batch in pq.ParquetFile(p).iter_batches(batch_size=256, columns=columns):
            yield from batch.to_pylist()


# =========================================================================== filter
def stage_filter(cfg: dict, out: Path, voice: Stage, st: Stage) -> dict:
    tmp = st.begin()
    f = cfg["filter"]
    drops = Drops()
    cols = ["id", "wo_text", "fr_text", "speech_lang", "duration_s", "rms", "clip_fraction", "finite"]
    kept = 0
    with JsonlWriter(tmp / "decisions.jsonl") as w:
        for r in tqdm(iter_voice_meta(voice, cols), desc="filter", unit="row", leave=False):
            text = r["wo_text"] if r["speech_lang"] == "wo" else r["fr_text"]
            cps = len(text) / r["duration_s"] if r["duration_s"] > 0 else float("inf")
            reason = None
            if not r["finite"]:
                reason = "non_finite_audio"
            elif r["duration_s"] < f["min_duration_s"]:
                reason = "too_short_audio"
            elif r["duration_s"] > f["max_duration_s"]:
                reason = "too_long_audio"
            elif r["rms"] < f["min_rms"]:
                reason = "silence"
            elif r["clip_fraction"] > f["max_clip_fraction"]:
                reason = "clipping"
            elif not (f["min_chars_per_s"] <= cps <= f["max_chars_per_s"]):
                reason = "speech_rate_implausible"
            if reason:
                drops.drop(reason, r["id"])
            else:
                kept += 1
            w.write({"id": r["id"], "keep": reason is None, "reason": reason or ""})
    return st.finish(kept, drops)


# =========================================================================== split
def stage_split(cfg: dict, out: Path, voice: Stage, filt: Stage, st: Stage) -> dict:
    """Splits disjoint by sentence (both sides, after normalisation) and by voice."""
    tmp = st.begin()
    drops = Drops()
    cols = ["id", "wo_text", "fr_text", "voice", "speaker_known", "split_hint", "synthetic"]

    def rows():
        for r, d in zip(iter_voice_meta(voice, cols), read_jsonl(filt.path("decisions.jsonl")), strict=True):
            if r["id"] != d["id"]:
                raise RuntimeError(f"filter decisions out of step with voice chunks at {r['id']}")
            if d["keep"]:
                yield r

    # pass 1: what dev/test hold
    held_wo, held_fr, held_voices = set(), set(), {"dev": set(), "test": set()}
    for r in rows():
        if r["split_hint"] in ("dev", "test"):
            if r["wo_text"]:
                held_wo.add(dedupe_key(r["wo_text"]))
            held_fr.add(dedupe_key(r["fr_text"]))
            held_voices[r["split_hint"]].add(r["voice"])
    counts: Counter = Counter()
    train_voices: set = set()
    with JsonlWriter(tmp / "assign.jsonl") as w:
        for r in tqdm(rows(), desc="split", unit="row", leave=False):
            split = r["split_hint"]
            if r["speaker_known"] and voice_split(r["voice"], cfg) != split:
                drops.drop("voice_split_conflict", r["id"])
                continue
            if split == "train":
                if r["wo_text"] and dedupe_key(r["wo_text"]) in held_wo:
                    drops.drop("leak_wo_text", r["id"])
                    continue
                if dedupe_key(r["fr_text"]) in held_fr:
                    drops.drop("leak_fr_text", r["id"])
                    continue
                train_voices.add(r["voice"])
            w.write({"id": r["id"], "split": split})
            counts[split] += 1
    overlap = sorted(train_voices & (held_voices["dev"] | held_voices["test"]))
    checks = {"train_voices_in_dev_or_test": overlap[:20], "n_train_voices_in_dev_or_test": len(overlap),
              "voices": {"train": len(train_voices), "dev": len(held_voices["dev"]), "test": len(held_voices["test"])}}
    return st.finish(sum(counts.values()), drops, {"per_split": dict(counts), "checks": checks})


# =========================================================================== write
def stage_write(cfg: dict, out: Path, voice: Stage, split: Stage, reports: dict, st: Stage) -> dict:
    from .shards import ShardWriter, write_card

    st.begin()
    assign = read_jsonl(split.path("assign.jsonl"))
    nxt = next(assign, None)
    writers = {s: ShardWriter(out / f"{s}.tmp", s, cfg["write"]["rows_per_shard"]) for s in SPLITS}
    stats = {"rows": Counter(), "seconds": Counter(), "sentences": {}, "wo_keys": set(), "licenses": {},
             "speech_lang": Counter(), "synthetic": Counter(), "voices": {s: set() for s in SPLITS}}
    for p in tqdm(sorted(voice.final.glob("chunk-*.parquet")), desc="write", unit="chunk", leave=False):
        for r in pq.read_table(p).to_pylist():
            if nxt is None or r["id"] != nxt["id"]:
                continue  # dropped by filter or split (counted there)
            s = nxt["split"]
            nxt = next(assign, None)
            writers[s].add(r)
            key = (r["source"], s)
            stats["rows"][key] += 1
            stats["seconds"][key] += r["duration_s"]
            stats["sentences"].setdefault(key, set()).add(r["sentence_id"])
            if r["wo_text"]:
                stats["wo_keys"].add(dedupe_key(r["wo_text"]))
            stats["licenses"].setdefault(r["source"], set()).add(r["license"])
            stats["speech_lang"][(r["speech_lang"], s)] += 1
            stats["synthetic"][(r["synthetic"], s)] += 1
            stats["voices"][s].add(r["voice"])
    if nxt is not None:
        raise RuntimeError(f"split assignment {nxt['id']} has no voiced row")
    files = {}
    for s, wr in writers.items():
        files[s] = wr.close()
        final = out / s
        if final.exists():
            import shutil

            shutil.rmtree(final)
        os.replace(out / f"{s}.tmp", final)
    report = write_card(cfg, out, stats, reports, files)
    return st.finish(sum(stats["rows"].values()), Drops(), {"files": files, "summary": report["summary"]})


# =========================================================================== driver
def config_fingerprint(cfg: dict, limit: int | None = None) -> str:
    """What the outputs depend on (not `out`, not the worker count)."""
    keep = {k: v for k, v in cfg.items() if not k.startswith("_") and k not in ("out",)}
    keep["voice"] = {k: v for k, v in keep.get("voice", {}).items() if k != "workers"}
    return f"{stable_hash(dumps(keep), str(limit)):016x}"


def run(cfg: dict, out: str | Path | None = None, limit: int | None = None, workers: int | None = None,
        stop_after_chunks: int | None = None, until: str | None = None) -> dict:
    out = Path(out or cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    st = {name: Stage(out, name) for name in STAGES}
    reports: dict = {}
    last = STAGES.index(until) if until else len(STAGES) - 1
    fp = config_fingerprint(cfg, limit)
    for i, name in enumerate(STAGES):
        if st[name].done and st[name].report.get("config_fingerprint") != fp:
            import shutil

            log.warning("%s and later stages were built with another config: redone", name)
            for later in STAGES[i:]:
                shutil.rmtree(st[later].final, ignore_errors=True)
            break
    for name in STAGES[: last + 1]:
        stage = st[name]
        stage.fingerprint = fp
        if stage.done:
            reports[name] = stage.report
            log.info("%s: done already (kept %d), skipped", name, reports[name]["kept"])
            continue
        t0 = time.perf_counter()
        if name == "ingest":
            rep = stage_ingest(cfg, out, stage, limit)
        elif name == "normalise":
            rep = stage_normalise(cfg, out, st["ingest"], stage)
        elif name == "pair":
            rep = stage_pair(cfg, out, st["normalise"], stage)
        elif name == "dedupe":
            rep = stage_dedupe(cfg, out, st["pair"], stage)
        elif name == "voice":
            rep = stage_voice(cfg, out, st["ingest"], st["dedupe"], stage, workers, stop_after_chunks)
        elif name == "filter":
            rep = stage_filter(cfg, out, st["voice"], stage)
        elif name == "split":
            rep = stage_split(cfg, out, st["voice"], st["filter"], stage)
        else:
            rep = stage_write(cfg, out, st["voice"], st["split"], reports, stage)
        reports[name] = rep
        log.info("%s: kept %d, dropped %d %s in %.1fs", name, rep["kept"], rep["dropped_total"],
                 dict(rep["dropped"]), time.perf_counter() - t0)
    return reports
