"""The text stages: ingest → normalise → pair → dedupe (JSON Lines in, JSON Lines out, streamed)."""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from . import hub_sources, offline_sources
from .sources import audio_sources, events, reserved_names, source_specs
from .splits import sentence_id
from .store import Drops, JsonlWriter, Stage, count_lines, group_by, read_jsonl, unit_interval
from .text import (clean, dedupe_key, junk_reason, length_ratio, n_words, normalize_french, normalize_wolof,
                   strip_accelerators)

log = logging.getLogger("wolofmrl.curation")


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
    """The ingest stage's audio items, in the order they were read."""
    for p in sorted(directory.glob("items-*.parquet")):
        for batch in pq.ParquetFile(p).iter_batches(batch_size=64):
            yield from batch.to_pylist()


def _ingest_source(spec: dict, reserved: set, limit: int | None, w: JsonlWriter, audio_w: AudioItemWriter) -> dict:
    """One source's segments into `w`, its recordings into `audio_w`; returns its report."""
    src_drops = Drops()
    counts: Counter = Counter()
    for kind, ev in tqdm(events(spec, src_drops, reserved, limit), desc=f"ingest {spec['name']}", unit="row",
                         leave=False):
        if kind == "audio":
            audio_w.add(ev)
            counts["audio"] += 1
            continue
        ev["source"] = spec["name"]
        ev["seg_id"] = f"{ev['source']}/{ev['group']}/{ev['lang']}/{ev['key']}"
        ev.setdefault("source_split", "")
        w.write(ev)
        counts[ev["lang"]] += 1
    return {"segments": dict(counts), **src_drops.as_dict()}


def stage_ingest(cfg: dict, st: Stage, limit: int | None = None) -> dict:
    """Every enabled source's segments (``segments.jsonl``) and recordings (``audio/items-*.parquet``).

    `limit`: at most this many keys per source (a spec's own ``limit:`` wins)."""
    tmp = st.begin()
    reserved = reserved_names(cfg)
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
            per_source[spec["name"]] = _ingest_source(spec, reserved, limit, w, audio_w)
            drops.merge(per_source[spec["name"]])
        audio_w.flush()
        n = w.n
    return st.finish(n, drops, {"per_source": per_source, "audio_items": audio_w.n})


# =========================================================================== normalise
def _normalised(seg: dict, max_chars: int, drops: Drops) -> dict | None:
    """A segment cleaned and respelled, or None (dropped with its reason)."""
    raw = seg["text"]
    text, changed = strip_accelerators(clean(raw))
    if changed:
        drops.note("accelerator_stripped")
    if reason := junk_reason(text):
        drops.drop(reason, seg["seg_id"])
        return None
    if len(text) > max_chars:
        drops.drop("too_long_text", seg["seg_id"])
        return None
    if seg["lang"] == "wo":
        norm = normalize_wolof(text)
        if norm != text:
            drops.note("wolof_respelled_to_clad")
        text = norm
    else:
        text = normalize_french(text)
    seg["raw"], seg["text"] = raw, text
    seg["en"] = clean(strip_accelerators(seg.get("en") or "")[0])
    return seg


def stage_normalise(cfg: dict, ingest: Stage, st: Stage) -> dict:
    """Clean, drop junk (format strings, markup, symbols), respell Wolof to CLAD orthography."""
    tmp = st.begin()
    drops = Drops()
    src = ingest.path("segments.jsonl")
    with JsonlWriter(tmp / "segments.jsonl") as w:
        for seg in tqdm(read_jsonl(src), total=count_lines(src), desc="normalise", unit="seg", leave=False):
            if (seg := _normalised(seg, cfg["text"]["max_chars"], drops)) is not None:
                w.write(seg)
        n = w.n
    return st.finish(n, drops)


# =========================================================================== pair
def pair_problem(s: dict, spec: dict, tcfg: dict) -> str | None:
    """Why a (Wolof, French) sentence is no pair — an untranslated copy, too short, lengths too unequal — or None."""
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


def _by_language(segs: list[dict], drops: Drops) -> tuple[dict | None, dict | None]:
    """The Wolof and the French segment of one key; repeats merged when equal, else dropped as conflicting."""
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
    return (by_lang["wo"] or [None])[0], (by_lang["fr"] or [None])[0]


def _fr_only_problem(fr: dict, sid: str, spec: dict, tcfg: dict) -> str | None:
    """Why a French string without a Wolof twin is not kept as a French-only sentence, or None."""
    if not spec.get("fr_only"):
        return "no_wo_twin"
    if fr["en"] and dedupe_key(fr["text"]) == dedupe_key(fr["en"]):
        return "untranslated_copy"
    if n_words(fr["text"]) < spec.get("fr_only_min_words", tcfg["fr_only_min_words"]):
        return "too_short"
    if unit_interval("fr_only", sid) >= tcfg["fr_only_fraction"]:
        return "fr_only_sampled_out"
    return None


class _Pairer:
    """Writes checked pairs; Wolof-only sentences of `mt:` sources wait in a queue for machine translation."""

    def __init__(self, cfg: dict, specs: dict, w: JsonlWriter, drops: Drops):
        self.specs, self.tcfg, self.w, self.drops = specs, cfg["text"], w, drops
        self.kinds: Counter = Counter()
        self.queue: list[dict] = []
        self.translator, self.mt_why = None, None
        if any(s.get("mt") for s in specs.values()):
            self.translator, self.mt_why = hub_sources.get_translator(cfg.get("mt"))
            if self.translator is None:
                log.warning("MT: %s; Wolof-only rows are dropped as no_mt", self.mt_why)

    def emit(self, s: dict) -> None:
        if reason := pair_problem(s, self.specs[s["source"]], self.tcfg):
            self.drops.drop(reason, s["sentence_id"])
            return
        self.kinds[s["kind"]] += 1
        self.w.write(s)

    def flush_mt(self) -> None:
        if not self.queue:
            return
        if self.translator is None:
            for s in self.queue:
                self.drops.drop("no_mt", s["sentence_id"])
        else:
            frs = self.translator.translate([s["wo_text"] for s in self.queue])
            for s, fr in zip(self.queue, frs, strict=True):
                if not fr:
                    self.drops.drop("mt_failed", s["sentence_id"])
                    continue
                s["fr_text"], s["fr_origin"] = normalize_french(fr), self.translator.name
                self.emit(s)
        self.queue.clear()

    def key_group(self, segs: list[dict]) -> None:
        """All segments of one (source, group, key): a pair, a Wolof-only row for MT, or a French-only row."""
        segs.sort(key=lambda s: s["seg_id"])
        first = segs[0]
        spec = self.specs[first["source"]]
        sid = sentence_id(first["source"], first["group"], first["key"])
        wo, fr = _by_language(segs, self.drops)
        base = {"sentence_id": sid, "source": first["source"], "group": first["group"], "source_key": first["key"],
                "license": first["license"], "source_split": first.get("source_split", ""),
                "en_text": (wo or fr)["en"]}
        if wo and fr:
            self.emit({**base, "wo_text": wo["text"], "fr_text": fr["text"], "kind": "pair"})
        elif wo and spec.get("mt"):
            self.queue.append({**base, "wo_text": wo["text"], "fr_text": "", "kind": "pair"})
            if len(self.queue) >= 64:
                self.flush_mt()
        elif wo:
            self.drops.drop("no_fr_twin", wo["seg_id"])
        elif reason := _fr_only_problem(fr, sid, spec, self.tcfg):
            self.drops.drop(reason, fr["seg_id"])
        else:
            self.kinds["fr_only"] += 1
            self.w.write({**base, "wo_text": "", "fr_text": fr["text"], "kind": "fr_only"})


def stage_pair(cfg: dict, normalise: Stage, st: Stage) -> dict:
    """Join each key's Wolof and French segments into sentences (``sentences.jsonl``); French-only strings and
    machine-translated Wolof where the source allows them."""
    tmp = st.begin()
    drops = Drops()
    src = normalise.path("segments.jsonl")
    with JsonlWriter(tmp / "sentences.jsonl") as w:
        pairer = _Pairer(cfg, source_specs(cfg), w, drops)
        groups = group_by(read_jsonl(src), lambda s: f"{s['source']}\x1f{s['group']}\x1f{s['key']}",
                          tmp / "_buckets", count_lines(src))
        for _, segs in tqdm(groups, desc="pair", unit="key", leave=False):
            pairer.key_group(segs)
        pairer.flush_mt()
        n = w.n
    mt = pairer.translator.name if pairer.translator else pairer.mt_why
    return st.finish(n, drops, {"kinds": dict(pairer.kinds), "mt": mt})


# =========================================================================== dedupe
def stage_dedupe(cfg: dict, pair: Stage, st: Stage) -> dict:
    """Near-duplicates (same text after case/accent/punctuation folding) removed on the
    Wolof side, then on the French side: afterwards every Wolof and every French text
    is unique, so a sentence-level split cannot leak either side. Dropped sentences of
    audio-bearing sources are kept as aliases (``aliases.jsonl``), so their recordings find the kept twin."""
    tmp = st.begin()
    drops = Drops()
    specs = source_specs(cfg)
    with_audio = audio_sources(specs)

    def priority(s):
        return (s["kind"] != "pair", specs.get(s["source"], {}).get("_rank", 99), s["sentence_id"])

    def keep_first(groups, reason: str, out: JsonlWriter, aliases: JsonlWriter) -> Iterator[dict]:
        for _, group in groups:
            group.sort(key=priority)
            out.write(group[0])
            yield group[0]
            for s in group[1:]:
                drops.drop(reason, s["sentence_id"])
                if s["source"] in with_audio:
                    aliases.write({"from": s["sentence_id"], "to": group[0]["sentence_id"]})

    src = pair.path("sentences.jsonl")
    kinds: Counter = Counter()
    per_source: Counter = Counter()
    with JsonlWriter(tmp / "aliases.jsonl") as aliases:
        with JsonlWriter(tmp / "_pass1.jsonl") as mid:  # pass 1: Wolof side (French-only rows pass straight through)
            wo_groups = group_by(read_jsonl(src), lambda s: dedupe_key(s["wo_text"]) or "\x00" + s["sentence_id"],
                                 tmp / "_b1", count_lines(src))
            for _ in keep_first(tqdm(wo_groups, desc="dedupe wo", unit="key", leave=False), "duplicate_wo", mid,
                                aliases):
                pass
        with JsonlWriter(tmp / "sentences.jsonl") as w:
            fr_groups = group_by(read_jsonl(mid.path), lambda s: dedupe_key(s["fr_text"]), tmp / "_b2", mid.n)
            for kept in keep_first(tqdm(fr_groups, desc="dedupe fr", unit="key", leave=False), "duplicate_fr", w,
                                   aliases):
                kinds[kept["kind"]] += 1
                per_source[f"{kept['source']}:{kept['kind']}"] += 1
            n = w.n
    mid.path.unlink()
    return st.finish(n, drops, {"kinds": dict(kinds), "per_source": dict(sorted(per_source.items()))})
