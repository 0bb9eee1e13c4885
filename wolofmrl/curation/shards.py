"""Corpus shards (docs/CONTRACT.md) and the data card.

Shards are Parquet files whose schema metadata carries the `datasets` features, so

    datasets.load_dataset("parquet", data_dir="data/offline", split="train")   # "validation" = dev/

gives an `Audio(sampling_rate=16000)` column over ``{"bytes", "path"}`` structs
(FLAC or Ogg Opus bytes). `datasets` 5.x decodes Audio only through torchcodec;
without it, `load_split(..., decode=False)` + `decode_audio` (soundfile) work.

``<out>/checksums.json`` (`MANIFEST`) records each shard's size, SHA-256 and row count, and a BLAKE2b digest of
each row's audio bytes; `verify_split` checks them (`load_split` does by default) and names the damaged shard and
rows. Parquet has no page checksums: without this, flipped bytes surface only as a FLAC error naming nothing.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from .store import file_record, sha256_file

MANIFEST = "checksums.json"
MANIFEST_FORMAT = "wolofmrl-shards/1"


class ShardIntegrityError(ValueError):
    """A corpus shard does not match the checksums recorded when it was written."""


def audio_digest(data: bytes | None) -> str:
    """16-hex BLAKE2b digest of one row's encoded audio bytes (what `MANIFEST` records per row)."""
    return hashlib.blake2b(data or b"", digest_size=8).hexdigest()

COLUMNS = ["id", "sentence_id", "source", "source_key", "license", "wo_text", "fr_text", "speech_lang", "audio",
           "voice", "duration_s", "synthetic", "split"]


def features():
    from datasets import Audio, Features, Value

    return Features({
        "id": Value("string"), "sentence_id": Value("string"), "source": Value("string"),
        "source_key": Value("string"), "license": Value("string"), "wo_text": Value("string"),
        "fr_text": Value("string"), "speech_lang": Value("string"), "audio": Audio(sampling_rate=16000),
        "voice": Value("string"), "duration_s": Value("float64"), "synthetic": Value("bool"), "split": Value("string"),
    })


class ShardWriter:
    def __init__(self, directory: Path, split: str, rows_per_shard: int = 1000):
        self.dir, self.split, self.rows = Path(directory), split, rows_per_shard
        if self.dir.exists():
            import shutil

            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True)
        self.schema = features().arrow_schema
        self.buf: list[dict] = []
        self.files: list[str] = []
        self.records: dict[str, dict] = {}  # shard name -> file_record + {"audio": {row id: audio_digest}}

    def add(self, r: dict) -> None:
        self.buf.append({
            "id": r["id"], "sentence_id": r["sentence_id"], "source": r["source"], "source_key": r["source_key"],
            "license": r["license"], "wo_text": r["wo_text"], "fr_text": r["fr_text"], "speech_lang": r["speech_lang"],
            "audio": {"bytes": r["audio_bytes"], "path": f"{r['id']}.{r['audio_ext']}"}, "voice": r["voice"],
            "duration_s": float(r["duration_s"]), "synthetic": bool(r["synthetic"]), "split": self.split,
        })
        if len(self.buf) >= self.rows:
            self.flush()

    def flush(self) -> None:
        if not self.buf:
            return
        name = f"{self.split}-{len(self.files):05d}.parquet"
        pq.write_table(pa.Table.from_pylist(self.buf, schema=self.schema), self.dir / name)
        self.files.append(name)
        audio = {r["id"]: audio_digest(r["audio"]["bytes"]) for r in self.buf}
        self.records[name] = {**file_record(self.dir / name), "audio": audio}
        self.buf = []

    def close(self) -> list[str]:
        self.flush()
        return self.files


def write_manifest(out: Path, records: dict[str, dict[str, dict]]) -> Path:
    """``<out>/checksums.json`` from ``{split: {shard name: record}}`` (`ShardWriter.records`)."""
    path = Path(out) / MANIFEST
    path.write_text(json.dumps({"format": MANIFEST_FORMAT, "splits": records}, indent=1, sort_keys=True))
    return path


def _damaged_rows(shard: Path, expected: dict) -> str:
    """Which rows of a shard that failed its checksum changed: their ids, or why that cannot be told."""
    try:
        table = pq.read_table(shard, columns=["id", "audio"])
    except Exception as e:
        return f"the shard no longer reads as Parquet ({type(e).__name__}: {str(e)[:160]})"
    bad, seen = [], set()
    for i, (rid, audio) in enumerate(zip(table.column("id").to_pylist(), table.column("audio").to_pylist())):
        seen.add(rid)
        if expected.get(rid) != audio_digest((audio or {}).get("bytes")):
            bad.append(f"{rid!r} (row {i})" if rid in expected else f"row {i} (id {rid!r}, not a row it was written with)")
    bad += [f"{rid!r} (missing)" for rid in expected if rid not in seen]
    if not bad:
        return "every row's audio bytes still match: the damage is in the text columns or the Parquet metadata"
    more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
    return f"rows with changed audio: {', '.join(bad[:10])}{more}"


def verify_split(data_dir: str | Path, split: str) -> int:
    """Check every shard of `split` against ``<data_dir>/checksums.json``; returns the number of shards checked
    (0 when the corpus has no manifest: one built before checksums were recorded, or not by this pipeline).

    Raises:
        ShardIntegrityError: a recorded shard is missing, or has changed bytes (the message names the shard and
            the rows whose audio changed), or an unrecorded shard sits in the split folder.
    """
    data_dir = Path(data_dir)
    manifest = data_dir / MANIFEST
    if not manifest.is_file():
        return 0
    recorded = json.loads(manifest.read_text())["splits"].get(split, {})
    fix = (f"the corpus at {data_dir} is damaged: rebuild it (`python -m wolofmrl.curation --config <its config> "
           f"--out {data_dir}` redoes what fails its checksum) or restore the shard from a copy")
    for name, rec in sorted(recorded.items()):
        shard = data_dir / split / name
        if not shard.is_file():
            raise ShardIntegrityError(f"shard {shard} is missing ({rec['rows']} rows); {fix}")
        if shard.stat().st_size != rec["bytes"] or sha256_file(shard) != rec["sha256"]:
            raise ShardIntegrityError(f"shard {shard} fails its SHA-256 checksum; {_damaged_rows(shard, rec['audio'])}"
                                      f"; {fix}")
    extra = sorted(p.name for p in (data_dir / split).glob("*.parquet") if p.name not in recorded)
    if extra:
        raise ShardIntegrityError(f"{data_dir / split} holds shards {extra} that {manifest} does not list; "
                                  f"remove them or rebuild the corpus")
    return len(recorded)


def load_split(data_dir: str | Path, split: str, decode: bool = True, verify: bool = True):
    """`datasets.load_dataset("parquet", ...)` on a built corpus; decode=False keeps raw bytes
    (works without torchcodec). `verify`: check the shards' checksums first (`verify_split`).

    Raises:
        ShardIntegrityError: a shard fails its checksum (named, with the damaged rows)."""
    import datasets

    if verify:
        verify_split(data_dir, split)

    # with data_dir=, `datasets` names the dev/ folder's split "validation"; data_files keeps "dev"
    files = {split: str(Path(data_dir) / split / "*.parquet")}
    ds = datasets.load_dataset("parquet", data_files=files, split=split)
    if not decode:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    return ds


def decode_audio(value: dict):
    """``{"bytes", "path"}`` → ``{"array", "sampling_rate"}`` through ``processing_wolofmrl.decode_audio``.

    Raises:
        ValueError: the bytes do not decode; the message names the row (its ``path`` is ``<row id>.<ext>``)."""
    from processing_wolofmrl import decode_audio as decode_bytes

    try:
        x, sr = decode_bytes(bytes(value["bytes"]))
    except Exception as e:
        row = Path(value.get("path") or "?").stem
        raise ValueError(f"audio of corpus row {row!r} does not decode ({type(e).__name__}: {e}); its shard is "
                         f"damaged: `wolofmrl.curation.shards.verify_split(<corpus>, <split>)` names it") from e
    return {"array": x, "sampling_rate": sr}


# --------------------------------------------------------------------------- data card
def _hours(s: float) -> float:
    return round(s / 3600, 3)


def write_card(cfg: dict, out: Path, stats: dict, reports: dict, files: dict) -> dict:
    """``report.json`` and ``DATACARD.md`` from the write stage's counts; returns the report."""
    splits = tuple(stats["voices"])  # train, dev, test (+ intent)
    sources = sorted({k[0] for k in stats["rows"]})
    table = {src: {s: {"rows": stats["rows"][(src, s)], "sentences": len(stats["sentences"].get((src, s), ())),
                       "hours": _hours(stats["seconds"][(src, s)])} for s in splits} for src in sources}
    per_split = {s: {"rows": sum(stats["rows"][(src, s)] for src in sources),
                     "sentences": sum(len(stats["sentences"].get((src, s), ())) for src in sources),
                     "hours": _hours(sum(stats["seconds"][(src, s)] for src in sources)),
                     "voices": len(stats["voices"][s]),
                     "speech_wo": stats["speech_lang"][("wo", s)], "speech_fr": stats["speech_lang"][("fr", s)],
                     "synthetic_rows": stats["synthetic"][(True, s)], "real_rows": stats["synthetic"][(False, s)]}
                 for s in splits}
    drops = {name: rep.get("dropped", {}) for name, rep in reports.items()}
    summary = {
        "unique_wolof_sentences": reports.get("dedupe", {}).get("kinds", {}).get("pair"),
        "unique_wolof_sentences_voiced": len(stats["wo_keys"]),
        "pairs_after_dedupe": reports.get("dedupe", {}).get("kept"),
        "sentence_kinds_after_dedupe": reports.get("dedupe", {}).get("kinds", {}),
        "sentences_per_source_after_dedupe": reports.get("dedupe", {}).get("per_source", {}),
        "per_split": per_split,
        "all_audio_synthetic": all(stats["synthetic"][(False, s)] == 0 for s in splits),
    }
    report = {
        "name": cfg.get("name"),
        "summary": summary,
        "per_source": table,
        "licenses": {k: sorted(v) for k, v in stats["licenses"].items()},
        "drops_by_stage": drops,
        "stage_seconds": {n: r.get("seconds") for n, r in reports.items()},
        "stage_reports": reports,
        "files": files,
        "config": {k: v for k, v in cfg.items() if not k.startswith("_")},
    }
    (out / "report.json").write_text(json.dumps(report, ensure_ascii=False, indent=1, sort_keys=True, default=list))

    lines = [f"# Data card: {cfg.get('name')}", "",
             "French–Wolof speech–text triples (Wolof speech, Wolof text, French text) plus French speech ↔ French text.",
             "Load: `datasets.load_dataset(\"parquet\", data_dir=\"" + str(out) + "\", split=\"train\")` "
             "(columns: docs/CONTRACT.md).", ""]
    if summary["all_audio_synthetic"]:
        lines += ["**All audio here is synthetic** (text-to-speech: Kokoro-82M voices reading IPA from africa-g2p, and",
                  "espeak-ng). It is not Wolof speakers; any number measured on it says how a model does on TTS speech.",
                  "Wolof espeak voices are espeak-ng's Swahili voice reading respelled Wolof (espeak-ng has no Wolof).", ""]
    lines += ["## Splits", "", "| split | rows | sentences | hours | voices | wo speech | fr speech | synthetic | real |",
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in splits:
        p = per_split[s]
        lines.append(f"| {s} | {p['rows']} | {p['sentences']} | {p['hours']} | {p['voices']} | {p['speech_wo']} | "
                     f"{p['speech_fr']} | {p['synthetic_rows']} | {p['real_rows']} |")
    lines += ["", "Splits are disjoint by sentence (no dev/test Wolof or French text, after normalisation, in train) "
              "and dev/test voices are held out of train. `test` is the benchmark split for `eval/`."
              + (" `intent` holds sentences kept for the spoken-intent benchmark, out of train and test, spoken by "
                 "the held-out test voices." if "intent" in splits else ""), "",
              f"Unique Wolof sentences (after dedupe, each with its French): {summary['unique_wolof_sentences']}. "
              "Sentences after dedupe: "
              f"{summary['pairs_after_dedupe']} ({summary['sentence_kinds_after_dedupe']}); "
              f"Wolof sentences with speech in this build: {summary['unique_wolof_sentences_voiced']}.", "",
              "## Per source", "", "| source | licence | " + " | ".join(f"{s} rows / h" for s in splits) + " |",
              "|---|---|" + "---|" * len(splits)]
    for src in sources:
        lic = "; ".join(sorted(stats["licenses"].get(src, [])))
        cells = " | ".join(f"{table[src][s]['rows']} / {table[src][s]['hours']}" for s in splits)
        lines.append(f"| {src} | {lic} | {cells} |")
    lines += ["", "## Dropped rows, by stage and reason", ""]
    for name, d in drops.items():
        if d:
            lines.append(f"- **{name}**: " + ", ".join(f"{k} {v}" for k, v in sorted(d.items(), key=lambda kv: -kv[1])))
    lines += ["", "## Stage times (s)", "", ", ".join(f"{n} {r.get('seconds')}" for n, r in reports.items()), "",
              "Reserved sources (klavaro, tuxpaint, tuxtype catalogs) are excluded everywhere.", ""]
    (out / "DATACARD.md").write_text("\n".join(lines))
    return report
