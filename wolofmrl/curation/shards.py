"""Corpus shards (docs/CONTRACT.md) and the data card.

Shards are Parquet files whose schema metadata carries the `datasets` features, so

    datasets.load_dataset("parquet", data_dir="data/offline", split="train")   # "validation" = dev/

gives an `Audio(sampling_rate=16000)` column over ``{"bytes", "path"}`` structs
(FLAC or Ogg Opus bytes). `datasets` 5.x decodes Audio only through torchcodec;
without it, `load_split(..., decode=False)` + `decode_audio` (soundfile) work.
"""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

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
        self.buf = []

    def close(self) -> list[str]:
        self.flush()
        return self.files


def load_split(data_dir: str | Path, split: str, decode: bool = True):
    """`datasets.load_dataset("parquet", ...)` on a built corpus; decode=False keeps raw bytes
    (works without torchcodec)."""
    import datasets

    # with data_dir=, `datasets` names the dev/ folder's split "validation"; data_files keeps "dev"
    files = {split: str(Path(data_dir) / split / "*.parquet")}
    ds = datasets.load_dataset("parquet", data_files=files, split=split)
    if not decode:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    return ds


def decode_audio(value: dict):
    """``{"bytes", "path"}`` → ``{"array", "sampling_rate"}`` with soundfile (no torchcodec)."""
    from .audio import decode

    x, sr = decode(value["bytes"])
    return {"array": x, "sampling_rate": sr}


# --------------------------------------------------------------------------- data card
def _hours(s: float) -> float:
    return round(s / 3600, 3)


def write_card(cfg: dict, out: Path, stats: dict, reports: dict, files: dict) -> dict:
    splits = ("train", "dev", "test")
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
              "and dev/test voices are held out of train. `test` is the benchmark split for `eval/`.", "",
              f"Unique Wolof sentences (after dedupe, each with its French): {summary['unique_wolof_sentences']}. "
              "Sentences after dedupe: "
              f"{summary['pairs_after_dedupe']} ({summary['sentence_kinds_after_dedupe']}); "
              f"Wolof sentences with speech in this build: {summary['unique_wolof_sentences_voiced']}.", "",
              "## Per source", "", "| source | licence | train rows / h | dev rows / h | test rows / h |", "|---|---|---|---|---|"]
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
