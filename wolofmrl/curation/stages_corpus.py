"""The corpus stages: filter (judge the audio) → split (disjoint by sentence and voice) → write (shards + card)."""
from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
from tqdm.auto import tqdm

from .splits import HELD_OUT, VOICE_SET, splits_of, voice_split
from .stages_voice import iter_voice_meta
from .store import Drops, JsonlWriter, Stage, read_jsonl
from .text import dedupe_key


# =========================================================================== filter
def filter_reason(r: dict, f: dict) -> str | None:
    """Why a voice row's audio is unusable (non-finite, too short/long, silent, clipped, implausible speech
    rate in characters per second), or None. `f` is the config's ``filter:`` section."""
    text = r["wo_text"] if r["speech_lang"] == "wo" else r["fr_text"]
    cps = len(text) / r["duration_s"] if r["duration_s"] > 0 else float("inf")
    if not r["finite"]:
        return "non_finite_audio"
    if r["duration_s"] < f["min_duration_s"]:
        return "too_short_audio"
    if r["duration_s"] > f["max_duration_s"]:
        return "too_long_audio"
    if r["rms"] < f["min_rms"]:
        return "silence"
    if r["clip_fraction"] > f["max_clip_fraction"]:
        return "clipping"
    if not (f["min_chars_per_s"] <= cps <= f["max_chars_per_s"]):
        return "speech_rate_implausible"
    return None


def stage_filter(cfg: dict, voice: Stage, st: Stage) -> dict:
    """One keep/drop decision per voice row, in voice order (``decisions.jsonl``)."""
    tmp = st.begin()
    drops = Drops()
    cols = ["id", "wo_text", "fr_text", "speech_lang", "duration_s", "rms", "clip_fraction", "finite"]
    kept = 0
    with JsonlWriter(tmp / "decisions.jsonl") as w:
        for r in tqdm(iter_voice_meta(voice, cols), desc="filter", unit="row", leave=False):
            reason = filter_reason(r, cfg["filter"])
            if reason:
                drops.drop(reason, r["id"])
            else:
                kept += 1
            w.write({"id": r["id"], "keep": reason is None, "reason": reason or ""})
    return st.finish(kept, drops)


# =========================================================================== split
def _kept_rows(voice: Stage, filt: Stage, cols: list[str]):
    for r, d in zip(iter_voice_meta(voice, cols), read_jsonl(filt.path("decisions.jsonl")), strict=True):
        if r["id"] != d["id"]:
            raise RuntimeError(f"filter decisions out of step with voice chunks at {r['id']}: rerun the pipeline")
        if d["keep"]:
            yield r


def _split_problem(r: dict, cfg: dict, held_wo: set, held_fr: set) -> str | None:
    """Why a kept row cannot go to its sentence's split: a known speaker of another split, or (train) a Wolof or
    French text that a held-out split holds."""
    split = r["split_hint"]
    if r["speaker_known"] and voice_split(r["voice"], cfg) != VOICE_SET[split]:
        return "voice_split_conflict"
    if split == "train":
        if r["wo_text"] and dedupe_key(r["wo_text"]) in held_wo:
            return "leak_wo_text"
        if dedupe_key(r["fr_text"]) in held_fr:
            return "leak_fr_text"
    return None


def stage_split(cfg: dict, voice: Stage, filt: Stage, st: Stage) -> dict:
    """Splits disjoint by sentence (both sides, after normalisation) and by voice (``assign.jsonl``)."""
    tmp = st.begin()
    drops = Drops()
    cols = ["id", "wo_text", "fr_text", "voice", "speaker_known", "split_hint", "synthetic"]
    held_wo, held_fr, held_voices = set(), set(), {s: set() for s in HELD_OUT if s in splits_of(cfg)}
    for r in _kept_rows(voice, filt, cols):  # pass 1: what the held-out splits hold
        if r["split_hint"] in HELD_OUT:
            if r["wo_text"]:
                held_wo.add(dedupe_key(r["wo_text"]))
            held_fr.add(dedupe_key(r["fr_text"]))
            held_voices[r["split_hint"]].add(r["voice"])
    counts: Counter = Counter()
    train_voices: set = set()
    with JsonlWriter(tmp / "assign.jsonl") as w:
        for r in tqdm(_kept_rows(voice, filt, cols), desc="split", unit="row", leave=False):
            if reason := _split_problem(r, cfg, held_wo, held_fr):
                drops.drop(reason, r["id"])
                continue
            if r["split_hint"] == "train":
                train_voices.add(r["voice"])
            w.write({"id": r["id"], "split": r["split_hint"]})
            counts[r["split_hint"]] += 1
    overlap = sorted(train_voices & set().union(*held_voices.values()))
    checks = {"train_voices_in_dev_or_test": overlap[:20], "n_train_voices_in_dev_or_test": len(overlap),
              "voices": {"train": len(train_voices), **{s: len(v) for s, v in held_voices.items()}}}
    return st.finish(sum(counts.values()), drops, {"per_split": dict(counts), "checks": checks})


# =========================================================================== write
def _new_stats(splits: tuple[str, ...]) -> dict:
    return {"rows": Counter(), "seconds": Counter(), "sentences": {}, "wo_keys": set(), "licenses": {},
            "speech_lang": Counter(), "synthetic": Counter(), "voices": {s: set() for s in splits}}


def _count(stats: dict, r: dict, s: str) -> None:
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


def _write_assigned(voice: Stage, split: Stage, writers: dict, stats: dict) -> None:
    """Every assigned voice row into its split's shard writer (voice order; rows without an assignment were
    dropped by filter or split and are counted there)."""
    assign = read_jsonl(split.path("assign.jsonl"))
    nxt = next(assign, None)
    for p in tqdm(sorted(voice.final.glob("chunk-*.parquet")), desc="write", unit="chunk", leave=False):
        for r in pq.read_table(p).to_pylist():
            if nxt is None or r["id"] != nxt["id"]:
                continue
            s = nxt["split"]
            nxt = next(assign, None)
            writers[s].add(r)
            _count(stats, r, s)
    if nxt is not None:
        raise RuntimeError(f"split assignment {nxt['id']} has no voiced row: rerun the pipeline")


def stage_write(cfg: dict, voice: Stage, split: Stage, st: Stage, out: Path, reports: dict) -> dict:
    """Shards ``<out>/<split>/<split>-NNNNN.parquet``, their checksums (``<out>/checksums.json``, verified by
    `shards.verify_split`), ``report.json`` and ``DATACARD.md``. `reports`: the earlier stages' reports."""
    from .shards import MANIFEST, ShardWriter, write_card, write_manifest

    st.begin()
    splits = splits_of(cfg)
    writers = {s: ShardWriter(out / f"{s}.tmp", s, cfg["write"]["rows_per_shard"]) for s in splits}
    stats = _new_stats(splits)
    _write_assigned(voice, split, writers, stats)
    files = {s: wr.close() for s, wr in writers.items()}
    for s in ("intent",) if "intent" not in splits else ():
        shutil.rmtree(out / s, ignore_errors=True)  # an earlier config's intent split is not this corpus's
    for s in splits:
        if (out / s).exists():
            shutil.rmtree(out / s)
        os.replace(out / f"{s}.tmp", out / s)
    write_manifest(out, {s: wr.records for s, wr in writers.items()})
    report = write_card(cfg, out, stats, reports, files)
    shards = [out / s / name for s in splits for name in files[s]]
    return st.finish(sum(stats["rows"].values()), Drops(), {"files": files, "summary": report["summary"]},
                     outputs=[*shards, out / MANIFEST])
