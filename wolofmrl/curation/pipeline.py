"""The curation pipeline: ingest → normalise → pair → dedupe → voice → filter → split → write.

Dedupe runs on text, before voicing: voicing is the one expensive stage (hours of
TTS), so near-duplicate sentences are removed before they are spoken. Filter then
judges the audio (duration, silence, clipping, speech rate).

Each stage streams its input and writes ``<out>/_stages/<stage>/`` with a ``_DONE``
report ``{kept, dropped: {reason: n}, dropped_samples, notes, seconds}`` and the
checksums of its files (``_FILES.json``); a rerun skips finished stages whose files
still verify, and redoes a damaged one and everything after it (the voice stage
keeps its sound chunks and remakes the rest). The voice stage works in deterministic
chunks, so a killed run resumes where it stopped and ends byte-identical to an
uninterrupted one.

The stages live in `stages_text`, `stages_voice` and `stages_corpus`; `STAGE_TABLE` says
what each one reads. Their names are re-exported here.
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .sources import audio_sources, is_voiced, reserved_names, source_specs, source_types  # noqa: F401
from .splits import SPLITS, sentence_id, sentence_split, splits_of, voice_split  # noqa: F401
from .stages_corpus import filter_reason, stage_filter, stage_split, stage_write  # noqa: F401
from .stages_text import (AudioItemWriter, iter_audio_items, pair_problem, stage_dedupe, stage_ingest,  # noqa: F401
                          stage_normalise, stage_pair)
from .stages_voice import VOICE_COLUMNS, config_fingerprint, iter_voice_meta, stage_voice  # noqa: F401
from .store import Stage

log = logging.getLogger("wolofmrl.curation")


@dataclass(frozen=True)
class StageDef:
    """A pipeline stage: ``run(cfg, *input stages, st, **options)``.

    inputs: the finished stages it reads, in argument order. options: the run arguments it takes
    (``limit``, ``workers``, ``stop_after_chunks``, ``out``, ``reports``)."""

    name: str
    run: Callable[..., dict]
    inputs: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


STAGE_TABLE: tuple[StageDef, ...] = (
    StageDef("ingest", stage_ingest, (), ("limit",)),
    StageDef("normalise", stage_normalise, ("ingest",)),
    StageDef("pair", stage_pair, ("normalise",)),
    StageDef("dedupe", stage_dedupe, ("pair",)),
    StageDef("voice", stage_voice, ("ingest", "dedupe"), ("workers", "stop_after_chunks")),
    StageDef("filter", stage_filter, ("voice",)),
    StageDef("split", stage_split, ("voice", "filter")),
    StageDef("write", stage_write, ("voice", "split"), ("out", "reports")),
)
STAGES = tuple(s.name for s in STAGE_TABLE)


def _invalidate(st: dict[str, Stage], fp: str) -> None:
    """Finished stages that cannot be reused are redone, with everything after them: built with another config
    (fingerprint), or damaged (a file missing or failing its checksum — named in the warning). After damage (same
    config) a finished voice stage is reopened rather than deleted: its chunks that still verify, made from the
    same tasks, are kept (hours of TTS), the rest are made again."""
    for i, name in enumerate(STAGES):
        stage = st[name]
        if not stage.done:
            continue
        if stage.report.get("config_fingerprint") != fp:
            log.warning("%s and later stages were built with another config: redone", name)
            damaged = False
        elif problems := stage.damage():
            more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
            log.warning("%s is damaged, so it and later stages are redone: %s%s", name, "; ".join(problems[:5]), more)
            damaged = True
        else:
            continue
        for later in STAGES[i:]:
            if damaged and later == "voice" and st[later].done:
                st[later].reopen()
            else:
                shutil.rmtree(st[later].final, ignore_errors=True)
        return


def run(cfg: dict, out: str | Path | None = None, limit: int | None = None, workers: int | None = None,
        stop_after_chunks: int | None = None, until: str | None = None) -> dict:
    """Run (or resume) the pipeline into `out` (default ``cfg["out"]``); returns ``{stage: report}``.

    Raises:
        ValueError: a source with an unknown ``type`` (named with the valid ones), or an unknown `until`.
    """
    if until is not None and until not in STAGES:
        raise ValueError(f"until={until!r} is not a stage; stages: {', '.join(STAGES)}")
    source_specs(cfg)  # a bad source fails here, before any work
    out = Path(out or cfg["out"])
    out.mkdir(parents=True, exist_ok=True)
    st = {name: Stage(out, name) for name in STAGES}
    fp = config_fingerprint(cfg, limit)
    _invalidate(st, fp)
    reports: dict = {}
    options = {"limit": limit, "workers": workers, "stop_after_chunks": stop_after_chunks, "out": out,
               "reports": reports}
    for sd in STAGE_TABLE[: STAGES.index(until or STAGES[-1]) + 1]:
        stage = st[sd.name]
        stage.fingerprint = fp
        if stage.done:
            reports[sd.name] = stage.report
            log.info("%s: done already (kept %d), skipped", sd.name, reports[sd.name]["kept"])
            continue
        t0 = time.perf_counter()
        rep = sd.run(cfg, *(st[i] for i in sd.inputs), stage, **{k: options[k] for k in sd.options})
        reports[sd.name] = rep
        log.info("%s: kept %d, dropped %d %s in %.1fs", sd.name, rep["kept"], rep["dropped_total"],
                 dict(rep["dropped"]), time.perf_counter() - t0)
    return reports
