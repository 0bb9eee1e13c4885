"""`wolofmrl index DOCS --out INDEX --engine ray`: embed on a Ray cluster, index into a sharded IVF-PQ funnel.

    wolofmrl index DOCS --out INDEX --engine ray [--address ray://head:10001] [--shard-mb 64] [--actors N]

The same passages (the local splitter, `wolofmrl.cli.documents.read_passages`, files in the same order), the same
ids and the same embeddings (`wolofmrl.inference.encode_text`, passage prefix, full width) as `--engine local`;
`wolofmrl search` / `serve` open the result like any INDEX. Steps:

1. plan (driver): DOCS' files, sorted, grouped into input shards of consecutive files of about --shard-mb each
   (a file is never split: give many files for parallelism).
2. count (Ray Data `map`, CPU tasks): each shard not already done is read and split; its passage count and drops
   by reason decide every shard's first id.
3. embed (Ray Data `map_batches` over shard descriptors with a stateful `ShardEmbedder`: the model is loaded once
   per actor; `num_gpus=1` per actor when the cluster has GPUs, `num_cpus=--actor-cpus` otherwise; `batch_size=1`
   shard per call, `concurrency=--actors`): each actor reads, splits and embeds one shard (--batch-size passages
   per forward) and writes INDEX/shards/NNNNN.parquet (id, source, position, passage, vector: full-width float16)
   then NNNNN.json (its key, the Parquet file's sha256, rows, drops), each atomically.
4. index: IVF-PQ trained once on a sample of the shards (`wolofmrl.sharded.train_ivfpq`), every shard encoded
   in its own Ray task, merged in RAM or, when the codes would not fit comfortably, into on-disk inverted lists;
   full.npy (the fp16 re-rank store) and passages.parquet (id, text, source, position) written shard by shard;
   manifest.json last.

Resumable: a rerun of the same command reuses every shard whose .json matches (same files, sizes, mtimes, model,
splitting, first id) and whose Parquet file still has the recorded sha256; missing or corrupt shards are redone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent.parent

SHARDS = "shards"
PASSAGES_PARQUET = "passages.parquet"
ROW_GROUP = 4096


def add_arguments(ix) -> None:
    """The `index` subcommand's options for the Ray engine."""
    ix.add_argument("--engine", default="local", choices=["local", "ray"],
                    help="local: one process (flat/ivf/hnsw index); ray: a Ray cluster embeds shards in parallel "
                         "and builds a sharded IVF-PQ funnel (pip install 'wolofmrl[ray]')")
    ix.add_argument("--address", default=None, help="--engine ray: an existing Ray cluster (e.g. ray://head:10001 "
                                                    "or auto); default: start a local one")
    ix.add_argument("--shard-mb", type=float, default=64.0, help="--engine ray: input MiB per shard (default 64)")
    ix.add_argument("--actors", type=int, default=None, help="--engine ray: embedding actors (default: one per GPU, "
                                                             "else one per --actor-cpus CPUs)")
    ix.add_argument("--actor-cpus", type=float, default=1.0, help="--engine ray: CPUs per CPU actor (default 1)")
    ix.add_argument("--pq-m", type=int, default=None, help="--engine ray: PQ sub-codes per passage (default --dim/2)")
    ix.add_argument("--nlist", type=int, default=None, help="--engine ray: inverted lists (default ~4 sqrt(N))")
    ix.add_argument("--nprobe", type=int, default=None,
                    help="--engine ray: lists probed per query (default nlist / 4: 95 %% of exact Recall@10 at 1M with "
                         "`search --shortlist 2000`, docs/results/funnel_ivfpq.md)")
    ix.add_argument("--ondisk", default="auto", choices=["auto", "yes", "no"],
                    help="--engine ray: merge into on-disk inverted lists (auto: when the codes exceed 1/4 of RAM)")


# --------------------------------------------------------------------------- plan
def _fingerprint(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def model_fingerprint(model_path: str) -> str:
    """sha256 of the model folder's config and weight files' names, sizes and mtimes (a rebuilt model differs)."""
    folder = Path(model_path)
    parts = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir())
             if p.suffix in (".json", ".safetensors", ".bin")]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def plan_shards(files: list[Path], shard_mb: float, settings: dict) -> list[dict]:
    """Consecutive files grouped into shards of about `shard_mb` MiB; each {"shard", "files", "labels", "key"}
    where key = sha256 of the files' fingerprints and the splitting/model `settings` (not yet the first id)."""
    if shard_mb <= 0:
        raise ValueError(f"--shard-mb {shard_mb}: use a positive size in MiB (e.g. 64)")
    shards, current, size = [], [], 0
    for path in files:
        current.append(path)
        size += path.stat().st_size
        if size >= shard_mb * 2 ** 20:
            shards.append(current)
            current, size = [], 0
    if current:
        shards.append(current)
    out = []
    for i, group in enumerate(shards):
        key = hashlib.sha256(json.dumps([[_fingerprint(p) for p in group], settings], sort_keys=True).encode())
        out.append({"shard": i, "files": [str(p.resolve()) for p in group], "labels": [str(p) for p in group],
                    "key": key.hexdigest()})
    return out


def read_shard(item: dict, max_words: int, text_field: str) -> tuple[list, dict]:
    """(passages [(text, source, position)], dropped {reason: n}) of one shard, sources labelled as the driver
    names the files (the local engine's labels)."""
    from wolofmrl.cli.documents import DropStats, read_passages

    stats = DropStats()
    rows = []
    for path, label in zip(item["files"], item["labels"]):
        for p in read_passages(path, stats, max_words, text_field):
            rows.append((p.text, label + p.source[len(path):], p.position))
    return rows, dict(stats.dropped)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2 ** 22), b""):
            h.update(block)
    return h.hexdigest()


def valid_shard(folder: Path, item: dict, first_id: int | None = None) -> dict | None:
    """The shard's record if its .json matches `item`'s key (and `first_id`, when given) and its Parquet file has
    the recorded sha256; None otherwise (missing, stale or corrupt: redo it)."""
    record_path, data = folder / f"{item['shard']:05d}.json", folder / f"{item['shard']:05d}.parquet"
    try:
        record = json.loads(record_path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if record.get("key") != item["key"] or (first_id is not None and record.get("first_id") != first_id):
        return None
    if not data.is_file() or sha256_file(data) != record.get("sha256"):
        return None
    return record


# --------------------------------------------------------------------------- Ray stages
def _count(row: dict, max_words: int, text_field: str) -> dict:
    rows, dropped = read_shard(row, max_words, text_field)
    return {"shard": row["shard"], "rows": len(rows), "dropped": json.dumps(dropped)}


class ShardEmbedder:
    """Ray Data actor: loads the model once; each call embeds whole shards and writes their Parquet + .json."""

    def __init__(self, model_path: str, dtype: str, batch_size: int, out: str, max_words: int, text_field: str,
                 threads: int):
        import torch

        from wolofmrl.cli.store import load_model

        torch.set_num_threads(max(1, threads))
        self.model, self.processor, self.autocast = load_model(model_path, None, dtype)
        self.batch_size, self.out, self.max_words, self.text_field = batch_size, Path(out), max_words, text_field

    def __call__(self, batch: dict) -> dict:
        done = {"shard": [], "rows": [], "seconds": []}
        for i in range(len(batch["shard"])):
            item = {k: (batch[k][i].tolist() if hasattr(batch[k][i], "tolist") else batch[k][i]) for k in batch}
            t = time.perf_counter()
            rows = self.write_shard(item)
            done["shard"].append(item["shard"])
            done["rows"].append(rows)
            done["seconds"].append(time.perf_counter() - t)
        return {k: np.asarray(v) for k, v in done.items()}

    def write_shard(self, item: dict) -> int:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from wolofmrl.cli.store import embed_texts

        rows, dropped = read_shard(item, self.max_words, self.text_field)
        if len(rows) != item["rows"]:
            raise RuntimeError(f"shard {item['shard']} ({item['labels'][0]} ...) changed while indexing: "
                               f"{len(rows)} passages now, {item['rows']} when counted; rerun the command")
        vectors = embed_texts(self.model, self.processor, [r[0] for r in rows], "passage", None, self.autocast,
                              self.batch_size).astype(np.float16)
        width = vectors.shape[1] if len(rows) else int(self.model.config.embedding_dim)
        table = pa.table({"id": pa.array(np.arange(item["first_id"], item["first_id"] + len(rows)), pa.int64()),
                          "source": [r[1] for r in rows], "position": pa.array([r[2] for r in rows], pa.int32()),
                          "passage": [r[0] for r in rows],
                          "vector": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), width)})
        name = self.out / f"{item['shard']:05d}"
        pq.write_table(table, f"{name}.tmp.parquet", row_group_size=ROW_GROUP)
        os.replace(f"{name}.tmp.parquet", f"{name}.parquet")
        record = {"key": item["key"], "first_id": item["first_id"], "rows": len(rows), "dropped": dropped,
                  "files": item["labels"], "sha256": sha256_file(Path(f"{name}.parquet"))}
        Path(f"{name}.tmp.json").write_text(json.dumps(record, indent=1))
        os.replace(f"{name}.tmp.json", f"{name}.json")
        return len(rows)


def _connect(address: str | None):
    import ray

    if not ray.is_initialized():
        # workers import this checkout's wolofmrl (a local cluster; an existing one needs the package installed)
        runtime_env = None if address else {"env_vars": {"PYTHONPATH": str(ROOT)}}
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    return ray


def embed_shards(todo: list[dict], folder: Path, model_path: str, dtype: str, batch_size: int, max_words: int,
                 text_field: str, actors: int | None, actor_cpus: float) -> list[dict]:
    """Run step 3 on the cluster for the shards in `todo` (each with "rows" and "first_id"); returns the actors'
    {"shard", "rows", "seconds"} rows."""
    import ray

    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        actors, placement = actors or gpus, {"num_gpus": 1}
    else:
        actors, placement = actors or max(1, int(resources.get("CPU", 1) // actor_cpus)), {"num_cpus": actor_cpus}
    actors = max(1, min(actors, len(todo)))
    ds = ray.data.from_items(todo, override_num_blocks=len(todo))
    ds = ds.map_batches(ShardEmbedder, batch_size=1, concurrency=actors, **placement,
                        fn_constructor_kwargs={"model_path": model_path, "dtype": dtype, "batch_size": batch_size,
                                               "out": str(folder), "max_words": max_words,
                                               "text_field": text_field, "threads": max(1, int(actor_cpus))})
    return ds.take_all()


# --------------------------------------------------------------------------- step 4: the sharded IVF-PQ funnel
def _vectors(path: Path) -> np.ndarray:
    """A shard's (rows, full_dim) float16 vectors."""
    import pyarrow.parquet as pq

    column = pq.read_table(path, columns=["vector"])["vector"].combine_chunks()
    return np.asarray(column.flatten().to_numpy(zero_copy_only=False)).reshape(len(column), column.type.list_size)


def _encode_task(trained: str, shard: str, first_id: int, out: str) -> int:
    from wolofmrl.sharded import encode_shard

    return encode_shard(trained, _vectors(Path(shard)), first_id, out)


def ivfpq_settings(n: int, coarse_dim: int, pq_m: int | None, nlist: int | None) -> dict:
    """nlist (~4 sqrt(N), at most N / 39), PQ sub-codes m (default coarse_dim / 2) and bits (8, fewer when the
    corpus is too small to train 256 centroids per sub-quantiser; IVF-flat, m = 0, below 16), training sample."""
    from wolofmrl.retrieval import default_nlist

    nlist = nlist or default_nlist(n)
    sample = min(n, max(64 * nlist, 39 * 256), 2_000_000)
    nbits = min(8, int(math.log2(max(sample, 1) / 39))) if sample >= 39 * 16 else 0
    m = (pq_m or max(1, coarse_dim // 2)) if nbits else 0
    return {"nlist": nlist, "m": m, "nbits": nbits, "sample": sample}


def build_index(out: Path, records: list[dict], full_dim: int, coarse_dim: int, settings: dict, nprobe: int,
                ondisk: str, log=print) -> dict:
    """Train on a sample, encode each shard in a Ray task, merge, write full.npy and passages.parquet."""
    import faiss
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    from wolofmrl.sharded import merge_shards, train_ivfpq, write_store

    paths = [out / SHARDS / f"{r['shard']:05d}.parquet" for r in records]
    n = sum(r["rows"] for r in records)
    times, t = {}, time.perf_counter()
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(n, settings["sample"], replace=False))
    sample, start = [], 0
    for path, r in zip(paths, records):
        mine = picks[(picks >= start) & (picks < start + r["rows"])] - start
        if len(mine):
            sample.append(_vectors(path)[mine])
        start += r["rows"]
    trained = train_ivfpq(np.concatenate(sample), coarse_dim, settings["nlist"], settings["m"], settings["nbits"] or 8)
    build = out / "build"
    build.mkdir(exist_ok=True)
    faiss.write_index(trained, str(build / "trained.faiss"))
    times["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    encode = ray.remote(num_cpus=1)(_encode_task)
    coded = [build / f"{r['shard']:05d}.faiss" for r in records]
    ray.get([encode.remote(str(build / "trained.faiss"), str(p), r["first_id"], str(c))
             for p, r, c in zip(paths, records, coded)])
    times["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    code_bytes = n * ((settings["m"] or 4 * coarse_dim) + 8)
    if ondisk == "auto":
        ondisk = "yes" if code_bytes > os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 4 else "no"
    merge_shards(build / "trained.faiss", coded, out, n, full_dim, ondisk=ondisk == "yes", nprobe=nprobe)
    times["merge_s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_store(out, (_vectors(p) for p in paths), n, full_dim)
    schema = pa.schema([("id", pa.int64()), ("text", pa.string()), ("source", pa.string()), ("position", pa.int32())])
    with pq.ParquetWriter(out / (PASSAGES_PARQUET + ".tmp"), schema) as writer:
        for p in paths:
            table = pq.read_table(p, columns=["id", "passage", "source", "position"])
            writer.write_table(table.rename_columns(schema.names).cast(schema), row_group_size=ROW_GROUP)
    os.replace(out / (PASSAGES_PARQUET + ".tmp"), out / PASSAGES_PARQUET)
    times["store_s"] = time.perf_counter() - t
    shutil.rmtree(build)
    return {k: round(v, 2) for k, v in times.items()} | {"ondisk": ondisk == "yes"}


class ParquetPassages:
    """The passages of a Ray-built INDEX as a read-only sequence of {"id", "text", "source", "position"} dicts,
    read lazily from passages.parquet one row group at a time (a few groups cached): RAM does not grow with N."""

    def __init__(self, path: str | Path, cache_groups: int = 64):
        import threading

        import pyarrow.parquet as pq

        self.file = pq.ParquetFile(path)
        meta = self.file.metadata
        self.starts = np.cumsum([0] + [meta.row_group(g).num_rows for g in range(meta.num_row_groups)])
        self._cache, self._size, self._lock = {}, cache_groups, threading.Lock()

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"passage id {i} out of range 0..{len(self) - 1}")
        i = int(i) % len(self)
        group = int(np.searchsorted(self.starts, i, side="right") - 1)
        with self._lock:
            rows = self._cache.pop(group, None)
            if rows is None:
                rows = self.file.read_row_group(group).to_pylist()
            self._cache[group] = rows  # most recent last
            if len(self._cache) > self._size:
                self._cache.pop(next(iter(self._cache)))
        return rows[i - int(self.starts[group])]


# --------------------------------------------------------------------------- the command
# probe a quarter of the lists: at 1M (IVF4096,PQ64 at d=128) 95.2 % of exact Recall@10 at 22.9x less compute with a
# 2,000 shortlist, 96.9 % with 4,000 (docs/results/funnel_ivfpq.md)
DEFAULT_PROBED_FRACTION = 4


def check_ray_out(out: Path, docs) -> None:
    """The local engine's rules (`wolofmrl.cli.folder.check_out`: never a file, inside DOCS or a foreign folder; a
    folder this command owns resumes), and never DOCS itself. Writes nothing: `fs.claim` marks the folder once every
    argument has been checked. Raises ValueError / FileExistsError naming --out and the fix."""
    from wolofmrl.cli import folder as fs

    if Path(docs).is_dir() and Path(out).resolve() == Path(docs).resolve():  # its shards would be read as documents
        raise ValueError(f"--out {str(out)!r} is DOCS: --engine ray writes its shards as Parquet files; put the "
                         "INDEX folder outside DOCS")
    if fs.check_out(out, docs, add=False) == "index":  # unreachable without add; kept explicit
        raise FileExistsError(f"--out {out} is already an index: --engine ray builds a new index; pass another --out")


def index_checksums(out: Path) -> dict[str, dict]:
    """{name: {"size", "sha256"}} of every index file `--engine ray` wrote at the top of `out` (the shards carry
    their own SHA-256 in the manifest): `DocumentIndex.open` checks them as it checks a local index's."""
    from wolofmrl.cli import folder as fs

    skip = {fs.MANIFEST, fs.INDEX_MARKER}
    return {f.name: {"size": f.stat().st_size, "sha256": fs.sha256_file(f)}
            for f in sorted(out.iterdir()) if f.is_file() and f.name not in skip and not f.name.endswith(".tmp")}


def index_with_ray(docs, out, model_path, coarse_dim: int = 128, max_words: int = 120, text_field: str = "text",
                   batch_size: int | None = None, dtype: str = "auto", address: str | None = None,
                   shard_mb: float = 64.0, actors: int | None = None, actor_cpus: float = 1.0, pq_m: int | None = None,
                   nlist: int | None = None, nprobe: int | None = None, ondisk: str = "auto", log=print) -> dict:
    """Build the INDEX folder `out` from `docs` on a Ray cluster (module docstring). Returns a summary dict
    {"count", "dropped", "shards", "embedded", "reused", "seconds", "build"}.

    Raises FileExistsError for an existing index / foreign folder at `out`, FileNotFoundError / ValueError for
    bad DOCS, model, --dim, --pq-m, --shard-mb; RuntimeError when a shard still fails its checksum after a run.
    """
    from wolofmrl.cli.documents import iter_document_files
    from wolofmrl.cli.store import MANIFEST

    start, out = time.perf_counter(), Path(out)
    check_ray_out(out, docs)
    model_path = str(Path(model_path).resolve())
    if not (Path(model_path) / "config.json").is_file():
        raise FileNotFoundError(f"--model {model_path!r} is not a model folder (no config.json): build one with "
                                "`python -m wolofmrl.build --out checkpoints/wolofmrl-base`")
    config = json.loads((Path(model_path) / "config.json").read_text())
    hidden = int(config["text_config"]["hidden_size"])  # WolofMRLConfig.embedding_dim
    if not 1 <= coarse_dim <= hidden:
        raise ValueError(f"--dim {coarse_dim}: the shortlist width must be in 1..{hidden} (this model's width)")
    if pq_m is not None and (pq_m < 1 or coarse_dim % pq_m):
        raise ValueError(f"--pq-m {pq_m} must divide --dim {coarse_dim} (e.g. --pq-m {max(1, coarse_dim // 2)})")
    files = iter_document_files(docs)
    settings = {"model": model_path, "model_files": model_fingerprint(model_path), "max_words": max_words,
                "text_field": text_field, "dtype": dtype}
    plan = plan_shards(files, shard_mb, settings)
    from wolofmrl.cli import folder as fs

    fs.claim(out)  # arguments and inputs checked: the folder becomes an INDEX folder before anything else is written
    folder = out / SHARDS
    folder.mkdir(parents=True, exist_ok=True)
    ray = _connect(address)

    known = {item["shard"]: valid_shard(folder, item) for item in plan}
    counts = {s: (r["rows"], r["dropped"]) for s, r in known.items() if r is not None}
    need = [item for item in plan if known[item["shard"]] is None]
    if need:
        rows = ray.data.from_items(need, override_num_blocks=len(need)).map(
            _count, fn_kwargs={"max_words": max_words, "text_field": text_field}).take_all()
        counts.update({r["shard"]: (r["rows"], json.loads(r["dropped"])) for r in rows})
    first, todo = 0, []
    for item in plan:
        item.update(rows=counts[item["shard"]][0], first_id=first)
        first += item["rows"]
        record = known[item["shard"]]
        if record is None or record["first_id"] != item["first_id"]:
            todo.append(item)
    if first == 0:
        raise ValueError(f"DOCS {str(docs)!r} holds no passage (every document was empty or dropped)")
    log(f"{len(plan)} shards, {first} passages: embedding {len(todo)}, reusing {len(plan) - len(todo)}")
    if todo:
        embed_shards(todo, folder, model_path, dtype, batch_size, max_words, text_field, actors, actor_cpus)
    records = []
    for item in plan:
        record = valid_shard(folder, item, item["first_id"])
        if record is None:
            raise RuntimeError(f"shard {item['shard']} failed its checksum after embedding: rerun the command")
        records.append(record | {"shard": item["shard"]})

    choice = ivfpq_settings(first, coarse_dim, pq_m, nlist)
    nprobe = nprobe or max(1, choice["nlist"] // DEFAULT_PROBED_FRACTION)
    build = build_index(out, records, hidden, coarse_dim, choice, nprobe, ondisk, log)
    dropped = Counter()
    for r in records:
        dropped.update(r["dropped"])
    from wolofmrl.cli import folder as fs

    manifest = {"format": fs.FORMAT, "checksums": index_checksums(out), "engine": "ray", "model": model_path, "full_dim": hidden, "coarse_dim": coarse_dim,
                "kind": "ivfpq", "ivfpq": choice, "passage_prefix": config.get("passage_prefix"),
                "query_prefix": config.get("query_prefix"), "max_words": max_words, "count": first,
                "files": {str(f.resolve()): dict(zip(("size", "mtime_ns"), _fingerprint(f)[1:])) for f in files},
                "dropped": dict(dropped), "passages_file": PASSAGES_PARQUET,
                "shards": [{"file": f"{SHARDS}/{r['shard']:05d}.parquet", "sha256": r["sha256"], "rows": r["rows"],
                            "first_id": r["first_id"]} for r in records], "build": build}
    (out / (MANIFEST + ".tmp")).write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
    os.replace(out / (MANIFEST + ".tmp"), out / MANIFEST)
    seconds = time.perf_counter() - start
    drops = ", ".join(f"{n} {reason}" for reason, n in sorted(dropped.items())) or "none"
    log(f"indexed {first} passages from {len(files)} files into {out} in {seconds:.1f} s ({len(todo)} shards "
        f"embedded, {len(plan) - len(todo)} reused; IVF{choice['nlist']},PQ{choice['m']}x{choice['nbits']} at "
        f"d={coarse_dim}, {'on-disk' if build['ondisk'] else 'in-RAM'} lists); dropped: {drops}")
    return {"count": first, "dropped": dict(dropped), "shards": len(plan), "embedded": len(todo),
            "reused": len(plan) - len(todo), "seconds": round(seconds, 1), "build": build}


def index_from_args(args) -> dict:
    """`wolofmrl index ... --engine ray` (argparse namespace of `wolofmrl.cli.parser`)."""
    if args.add:
        raise ValueError("--add is not supported with --engine ray: index everything into a new --out "
                         "(unchanged shards of an unfinished run are reused)")
    if args.kind != "flat":
        raise ValueError(f"--kind {args.kind} is for --engine local: --engine ray always builds an IVF-PQ funnel "
                         "(tune it with --pq-m / --nlist / --nprobe)")
    if args.device not in (None, "cuda", "cpu"):
        raise ValueError(f"--device {args.device}: with --engine ray each actor picks its own device; leave it out")
    return index_with_ray(args.docs, args.out, args.model, coarse_dim=args.dim, max_words=args.max_words,
                          text_field=args.text_field, batch_size=args.batch_size, dtype=args.dtype,
                          address=args.address, shard_mb=args.shard_mb, actors=args.actors,
                          actor_cpus=args.actor_cpus, pq_m=args.pq_m, nlist=args.nlist, nprobe=args.nprobe,
                          ondisk=args.ondisk)
