"""Streaming row stores, drop accounting and resumable stage directories.

Every stage writes into ``<out>/_stages/<name>.tmp/`` and renames it to
``<out>/_stages/<name>/`` once complete, with a ``_DONE`` marker holding its report
and ``_FILES.json`` holding the size, SHA-256 and row count of every file it made;
a rerun skips a finished stage only when its files still match (`Stage.damage`).
Rows stream through JSON Lines (text stages) and Parquet chunks (audio); nothing
holds a whole corpus in memory.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Callable, Iterable, Iterator

SAMPLE_IDS = 10  # dropped ids kept per reason in a report


def dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def count_lines(path: str | Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


class JsonlWriter:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "w", encoding="utf-8")
        self.n = 0

    def write(self, row: dict) -> None:
        self._f.write(dumps(row) + "\n")
        self.n += 1

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def stable_hash(*parts: str) -> int:
    """A 64-bit hash that does not change between runs or machines (unlike hash())."""
    h = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def unit_interval(*parts: str) -> float:
    return stable_hash(*parts) / 2**64


class Drops:
    """Counts every dropped row by reason, with a few sample ids per reason."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.samples: dict[str, list[str]] = defaultdict(list)
        self.notes: Counter = Counter()  # things changed but not dropped (e.g. resampled)

    def drop(self, reason: str, row_id: str = "") -> None:
        self.counts[reason] += 1
        if len(self.samples[reason]) < SAMPLE_IDS:
            self.samples[reason].append(str(row_id))

    def note(self, what: str, n: int = 1) -> None:
        self.notes[what] += n

    def merge(self, other: dict) -> None:
        for k, v in other.get("dropped", {}).items():
            self.counts[k] += v
        for k, ids in other.get("dropped_samples", {}).items():
            room = SAMPLE_IDS - len(self.samples[k])
            self.samples[k].extend(ids[: max(0, room)])
        for k, v in other.get("notes", {}).items():
            self.notes[k] += v

    def as_dict(self) -> dict:
        return {
            "dropped": dict(sorted(self.counts.items())),
            "dropped_samples": {k: v for k, v in sorted(self.samples.items())},
            "notes": dict(sorted(self.notes.items())),
        }

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def count_rows(path: str | Path) -> int | None:
    """Rows of a JSON Lines (lines) or Parquet (footer) file; None for other files."""
    path = Path(path)
    if path.suffix == ".jsonl":
        return count_lines(path)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.ParquetFile(path).metadata.num_rows
    return None


def file_record(path: str | Path) -> dict:
    """``{"bytes", "sha256", "rows"}`` of a finished file, as `Stage` records and verifies them."""
    return {"bytes": Path(path).stat().st_size, "sha256": sha256_file(path), "rows": count_rows(path)}


def file_problem(path: Path, record: dict) -> str | None:
    """What is wrong with `path` against its `file_record`, or None when it matches."""
    if not path.is_file():
        return f"{path} is missing" + (f" ({record['rows']} rows)" if record.get("rows") is not None else "")
    if path.stat().st_size != record["bytes"]:
        return f"{path} has {path.stat().st_size} bytes, {record['bytes']} when it was written"
    if sha256_file(path) != record["sha256"]:
        return f"{path} fails its SHA-256 checksum (same size, changed bytes)"
    return None


class Stage:
    """A stage directory: ``tmp`` while running, renamed when done, skipped on rerun while its files verify."""

    MANIFEST = "_FILES.json"

    def __init__(self, root: str | Path, name: str):
        self.name = name
        self.root = Path(root)
        self.final = self.root / "_stages" / name
        self.tmp = self.root / "_stages" / f"{name}.tmp"
        self.marker = self.final / "_DONE"

    @property
    def done(self) -> bool:
        return self.marker.exists()

    @property
    def report(self) -> dict:
        return json.loads(self.marker.read_text())

    def path(self, name: str) -> Path:
        """Where a finished stage's file lies."""
        return self.final / name

    def begin(self, keep_tmp: bool = False) -> Path:
        if self.final.exists() and not self.done:
            shutil.rmtree(self.final)
        if self.tmp.exists() and not keep_tmp:
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True, exist_ok=True)
        self._t0 = time.perf_counter()
        return self.tmp

    def damage(self) -> list[str]:
        """Why a finished stage cannot be trusted: files missing, changed or unexpected (empty list: it verifies).

        Files outside the stage folder that it recorded (the write stage's shards) are checked too."""
        manifest = self.final / self.MANIFEST
        if not manifest.is_file():
            return [f"{manifest} is missing (no checksums recorded: an older build or a damaged stage)"]
        try:
            records = json.loads(manifest.read_text())
        except ValueError as e:
            return [f"{manifest} is not valid JSON ({e})"]
        problems = [p for rel, rec in records.items() if (p := file_problem(self.root / rel, rec))]
        listed = {self.root / rel for rel in records}
        problems += [f"{p} was not written by this stage" for p in sorted(self.final.rglob("*"))
                     if p.is_file() and p.name not in ("_DONE", self.MANIFEST) and p not in listed]
        return problems

    def reopen(self) -> None:
        """Turn a finished stage back into its ``tmp`` folder (markers removed), so a resumable stage keeps what
        still verifies and rebuilds the rest."""
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        for marker in (self.marker, self.final / self.MANIFEST):
            marker.unlink(missing_ok=True)
        os.replace(self.final, self.tmp)

    def finish(self, kept: int, drops: Drops, extra: dict | None = None, seconds: float | None = None,
               outputs: Iterable[Path] = ()) -> dict:
        """Record the report and the checksums of every file in ``tmp`` (plus `outputs`, files this stage wrote
        outside its folder), then rename ``tmp`` into place. Returns the report."""
        report = {
            "stage": self.name,
            "config_fingerprint": getattr(self, "fingerprint", None),
            "kept": kept,
            **drops.as_dict(),
            "dropped_total": drops.total,
            "seconds": round(seconds if seconds is not None else time.perf_counter() - self._t0, 3),
            **(extra or {}),
        }
        inside = [p for p in sorted(self.tmp.rglob("*")) if p.is_file()]
        records = {str((self.final / p.relative_to(self.tmp)).relative_to(self.root)): file_record(p) for p in inside}
        records.update({str(Path(p).relative_to(self.root)): file_record(p) for p in outputs})
        (self.tmp / self.MANIFEST).write_text(json.dumps(records, indent=1, sort_keys=True))
        (self.tmp / "_DONE").write_text(json.dumps(report, ensure_ascii=False, indent=1, sort_keys=True))
        os.replace(self.tmp, self.final)
        return report


class Partitioner:
    """Grace-hash partitioning: rows with the same key land in the same bucket file,
    so a group-by needs only one bucket in memory at a time."""

    def __init__(self, directory: Path, n_buckets: int):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.n = max(1, n_buckets)
        self._files = [open(self.dir / f"b{i:04d}.jsonl", "w", encoding="utf-8") for i in range(self.n)]

    def add(self, key: str, row: dict) -> None:
        self._files[stable_hash(key) % self.n].write(dumps({"k": key, "r": row}) + "\n")

    def buckets(self) -> Iterator[Iterator[tuple[str, dict]]]:
        for f in self._files:
            f.close()
        for i in range(self.n):
            path = self.dir / f"b{i:04d}.jsonl"
            yield ((d["k"], d["r"]) for d in read_jsonl(path))
        shutil.rmtree(self.dir, ignore_errors=True)


def n_buckets_for(n_rows: int, rows_per_bucket: int = 4000) -> int:
    return min(512, max(1, -(-n_rows // rows_per_bucket)))


def group_by(rows: Iterable[dict], key: Callable[[dict], str], tmpdir: Path, n_rows: int) -> Iterator[tuple[str, list[dict]]]:
    """Streams (key, rows) groups, bucket by bucket, keys sorted inside a bucket."""
    part = Partitioner(tmpdir, n_buckets_for(n_rows))
    for r in rows:
        part.add(key(r), r)
    for bucket in part.buckets():
        groups: dict[str, list[dict]] = defaultdict(list)
        for k, r in bucket:
            groups[k].append(r)
        for k in sorted(groups):
            yield k, groups[k]
