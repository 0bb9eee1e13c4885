"""A sharded IVF-PQ funnel index: built shard by shard, merged in RAM or into on-disk inverted lists.

    from wolofmrl.sharded import train_ivfpq, encode_shard, merge_shards, write_store, ShardedFunnelIndex
    trained = train_ivfpq(sample, coarse_dim=128, nlist=4096, m=64)            # sample (S, full_dim) float
    faiss.write_index(trained, "build/trained.faiss")
    encode_shard("build/trained.faiss", shard_vectors, first_id, "build/00000.faiss")   # one per shard, anywhere
    merge_shards("build/trained.faiss", shard_paths, "INDEX", count=N, full_dim=384, ondisk=True)
    index = ShardedFunnelIndex.load("INDEX")          # or wolofmrl.retrieval.FunnelIndex.load: same object
    scores, ids = index.search(queries, k=10, shortlist=1000)

The recipe is FAISS's for indexes larger than RAM (faiss wiki "Indexes that do not fit in RAM",
`faiss.contrib.ondisk.merge_ondisk`): train the IVF quantiser and the product quantiser once on a sample, add every
shard to its own copy of the trained (empty) index with global ids, then merge the shards' inverted lists, either in
RAM (`IndexIVF.merge_from`) or into one memory-mapped `coarse.ivfdata` file (`OnDiskInvertedLists`).

The shortlist index works on the first `coarse_dim` coordinates of each embedding, re-normalised (the Matryoshka
prefix, `wolofmrl.retrieval.prefix_normalize`), with inner product; the re-rank reads the full-width vectors from
`full.npy`, a (N, full_dim) float16 array memory-mapped at query time (`wolofmrl.retrieval.rerank`).

Folder (beside the INDEX's manifest and passages):
    funnel.json      {"kind": "ivfpq", "full_dim", "coarse_dim", "params": {nlist, m, nbits, nprobe}, "count",
                      "ondisk", "store_dtype": "float16"}
    coarse.faiss     faiss.IndexIVFPQ (inner product); its inverted lists inside, or in coarse.ivfdata (ondisk)
    coarse.ivfdata   the on-disk inverted lists (only when merged with ondisk=True), memory-mapped when opened
    full.npy         (N, full_dim) float16, row i = passage id i

Bytes per passage: m (PQ code) + 8 (the id FAISS keeps beside each code) + 2 * full_dim (fp16 re-rank store).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from wolofmrl.retrieval import META, _as_matrix, prefix_normalize, rerank, search_distance_counter

__all__ = ["ShardedFunnelIndex", "encode_shard", "merge_shards", "train_ivfpq", "write_store", "ivfpq_macs"]

KIND = "ivfpq"


def _check_params(full_dim: int, coarse_dim: int, nlist: int, m: int, nbits: int):
    if not 1 <= coarse_dim <= full_dim:
        raise ValueError(f"coarse_dim={coarse_dim} is not valid: use an int in 1..{full_dim}")
    if nlist < 1:
        raise ValueError(f"nlist={nlist}: an IVF index needs at least one inverted list")
    if m < 0 or (m and coarse_dim % m):
        raise ValueError(f"m={m} product-quantiser sub-vectors must divide coarse_dim={coarse_dim} "
                         f"(e.g. m={max(1, coarse_dim // 2)})")
    if not 1 <= nbits <= 16:
        raise ValueError(f"nbits={nbits}: use 1..16 bits per PQ sub-code (8 is FAISS's fast path)")


def train_ivfpq(sample, coarse_dim: int, nlist: int, m: int, nbits: int = 8, seed: int = 0):
    """A trained, empty `faiss.IndexIVFPQ` (inner product) over the `coarse_dim` prefix of `sample`'s rows; m=0
    gives a `faiss.IndexIVFFlat` instead (codes = the float32 prefix itself: for corpora too small to train PQ).

    sample: (S, full_dim) embeddings (any float dtype; re-normalised here). FAISS wants >= 39 * nlist and
    >= 39 * 2**nbits training vectors; fewer raise ValueError (they would train badly, with only a warning).
    """
    import faiss

    sample = _as_matrix(sample, "sample")
    _check_params(sample.shape[1], coarse_dim, nlist, m, nbits)
    need = 39 * max(nlist, 2 ** nbits if m else 1)
    if len(sample) < need:
        raise ValueError(f"training IVF-PQ with nlist={nlist}, nbits={nbits} needs at least {need} sample vectors, "
                         f"got {len(sample)}: lower nlist (~ N / 39 at most) or give a larger sample")
    coarse = prefix_normalize(sample, coarse_dim)
    if m:
        index = faiss.IndexIVFPQ(faiss.IndexFlatIP(coarse_dim), coarse_dim, int(nlist), int(m), int(nbits),
                                 faiss.METRIC_INNER_PRODUCT)
        index.pq.cp.seed = seed
    else:
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(coarse_dim), coarse_dim, int(nlist), faiss.METRIC_INNER_PRODUCT)
    index.cp.seed = seed
    index.train(coarse)
    return index


def encode_shard(trained_path: str | Path, vectors, first_id: int, out_path: str | Path) -> int:
    """Add one shard's (n, full_dim) vectors, ids first_id .. first_id + n - 1, to a copy of the trained index read
    from `trained_path`; write it to `out_path` (atomically). Returns n. Independent of every other shard, so shards
    can be encoded in parallel (Ray tasks) and re-encoded alone."""
    import faiss

    index = faiss.read_index(str(trained_path))
    if index.ntotal:
        raise ValueError(f"{trained_path} is not an empty trained index ({index.ntotal} vectors in it)")
    vectors = _as_matrix(vectors, "vectors")
    ids = np.arange(first_id, first_id + len(vectors), dtype=np.int64)
    for s in range(0, len(vectors), 65536):
        index.add_with_ids(prefix_normalize(vectors[s:s + 65536], index.d), ids[s:s + 65536])
    tmp = Path(str(out_path) + ".tmp")
    faiss.write_index(index, str(tmp))
    os.replace(tmp, out_path)
    return len(vectors)


def merge_shards(trained_path: str | Path, shard_paths: list, folder: str | Path, count: int, full_dim: int,
                 ondisk: bool = False, nprobe: int = 64) -> Path:
    """Merge encoded shards into `folder`/coarse.faiss (+ coarse.ivfdata when `ondisk`) and write funnel.json.

    ondisk=False: the shards' inverted lists are merged in RAM (`IndexIVF.merge_from`), the codes of all shards
    must fit in memory. ondisk=True: FAISS's `merge_ondisk` streams them into one `coarse.ivfdata` file that search
    memory-maps (RAM then only holds the quantiser and what the page cache keeps). Raises ValueError when the shards
    hold another number of vectors than `count`. full.npy (`write_store`) is written separately.
    """
    import faiss

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    index = faiss.read_index(str(trained_path))
    if ondisk:
        from faiss.contrib.ondisk import merge_ondisk

        ivfdata = folder / "coarse.ivfdata"
        ivfdata.unlink(missing_ok=True)
        # the index file records this name; opening with IO_FLAG_ONDISK_SAME_DIR finds it beside coarse.faiss
        merge_ondisk(index, [str(p) for p in shard_paths], str(ivfdata))
    else:
        for path in shard_paths:
            index.merge_from(faiss.read_index(str(path)), 0)
    if index.ntotal != count:
        raise ValueError(f"the encoded shards hold {index.ntotal} vectors, expected {count}: re-encode the shards")
    faiss.write_index(index, str(folder / "coarse.faiss.tmp"))
    os.replace(folder / "coarse.faiss.tmp", folder / "coarse.faiss")
    ivf = faiss.extract_index_ivf(index)
    meta = {"kind": KIND, "full_dim": int(full_dim), "coarse_dim": int(index.d), "count": int(count),
            "ondisk": bool(ondisk), "store_dtype": "float16",
            "params": {"nlist": int(ivf.nlist), "m": int(index.pq.M) if hasattr(index, "pq") else 0,
                       "nbits": int(index.pq.nbits) if hasattr(index, "pq") else 0, "nprobe": int(nprobe)}}
    (folder / META).write_text(json.dumps(meta, indent=1))
    return folder


def write_store(folder: str | Path, chunks, count: int, full_dim: int) -> Path:
    """Write `folder`/full.npy, the (count, full_dim) float16 re-rank store, from an iterable of (n_i, full_dim)
    chunks in id order (re-normalised here); never holds more than one chunk in RAM. Raises ValueError when the
    chunks do not add up to `count` rows."""
    folder = Path(folder)
    tmp = folder / "full.tmp.npy"
    store = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(count, full_dim))
    row = 0
    for chunk in chunks:
        chunk = prefix_normalize(_as_matrix(chunk, "vectors", full_dim), None)
        if row + len(chunk) > count:
            raise ValueError(f"the store chunks hold more than count={count} rows")
        store[row:row + len(chunk)] = chunk
        row += len(chunk)
    if row != count:
        raise ValueError(f"the store chunks hold {row} rows, expected count={count}")
    store.flush()
    del store
    os.replace(tmp, folder / "full.npy")
    return folder / "full.npy"


def ivfpq_macs(nlist: int, coarse_dim: int, m: int, nbits: int, codes_scanned: float, shortlist: int,
               full_dim: int) -> float:
    """Operations per query of an IVF-PQ funnel search, counted as multiply-adds: the coarse quantiser
    (nlist x coarse_dim), the query's inner-product look-up tables (2**nbits x coarse_dim, once per query for inner
    product), one look-up-and-add per sub-code of every scanned code (codes_scanned x m), and the full-width re-rank
    (shortlist x full_dim). m=0 (IVF-flat): codes_scanned x coarse_dim multiply-adds, no tables."""
    if not m:
        return nlist * coarse_dim + codes_scanned * coarse_dim + shortlist * full_dim
    return nlist * coarse_dim + 2 ** nbits * coarse_dim + codes_scanned * m + shortlist * full_dim


class ShardedFunnelIndex:
    """An opened sharded IVF-PQ funnel index (see the module docstring); read-only.

    Same face as `wolofmrl.retrieval.FunnelIndex` for search: `full_dim`, `coarse_dim`, `kind` ("ivfpq"),
    `params`, `len()`, `vectors` (the float16 store), `search`, `macs_per_query`, `nbytes`.
    """

    def __init__(self, folder: Path, meta: dict, coarse, full: np.ndarray):
        self.folder, self.meta, self.coarse, self._full = folder, meta, coarse, full
        self.full_dim, self.coarse_dim, self.kind = meta["full_dim"], meta["coarse_dim"], KIND
        self.params = dict(meta["params"])
        self.last_search_distances = 0

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = True) -> ShardedFunnelIndex:
        """Open `folder`. Raises FileNotFoundError naming a missing part, ValueError when the parts disagree."""
        import faiss

        folder = Path(folder)
        meta = json.loads((folder / META).read_text())
        for name in ["coarse.faiss", "full.npy"] + (["coarse.ivfdata"] if meta.get("ondisk") else []):
            if not (folder / name).is_file():
                raise FileNotFoundError(f"{folder / name} not found: the index is incomplete, rebuild it")
        flags = faiss.IO_FLAG_ONDISK_SAME_DIR if meta.get("ondisk") else 0
        coarse = faiss.read_index(str(folder / "coarse.faiss"), flags)
        full = np.load(folder / "full.npy", mmap_mode="r" if mmap else None)
        if coarse.ntotal != len(full) or len(full) != meta["count"] or full.shape[1] != meta["full_dim"]:
            raise ValueError(f"{folder} is inconsistent: coarse index has {coarse.ntotal} vectors, full.npy "
                             f"{full.shape}, funnel.json count {meta['count']}; rebuild the index")
        return cls(folder, meta, coarse, full)

    def __len__(self) -> int:
        return len(self._full)

    @property
    def vectors(self) -> np.ndarray:
        """The full-width re-rank store, (N, full_dim) float16 (memory-mapped when opened with mmap=True)."""
        return self._full

    def search(self, queries, k: int = 10, shortlist: int = 1000) -> tuple[np.ndarray, np.ndarray]:
        """Funnel search: (Q, full_dim) query embeddings -> (scores (Q, k') float32 full-width cosines, ids (Q, k')
        int64), best first, k' = min(k, len(self)). The IVF-PQ index proposes `shortlist` candidates (probing
        params["nprobe"] lists), re-scored against the fp16 store. Raises ValueError for a bad k or query width."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        queries = prefix_normalize(_as_matrix(queries, "queries", self.full_dim), None)
        k = min(k, len(self))
        shortlist = min(max(int(shortlist), k), len(self))
        self.coarse.nprobe = int(min(self.params["nprobe"], self.params["nlist"]))
        with search_distance_counter() as counter:
            _, cand = self.coarse.search(prefix_normalize(queries, self.coarse_dim), shortlist)
        self.last_search_distances = counter.count
        return rerank(queries, self._full, cand, k)

    def macs_per_query(self, n_queries: int, shortlist: int) -> float:
        """Operations per query of the last search (`ivfpq_macs`, codes scanned as FAISS counted them)."""
        p = self.params
        return ivfpq_macs(p["nlist"], self.coarse_dim, p["m"], p["nbits"],
                          self.last_search_distances / max(n_queries, 1), min(shortlist, len(self)), self.full_dim)

    def nbytes(self) -> dict[str, int]:
        """Bytes on disk: {"coarse": coarse.faiss (+ coarse.ivfdata), "full": the fp16 store}."""
        coarse = sum((self.folder / n).stat().st_size for n in ("coarse.faiss", "coarse.ivfdata")
                     if (self.folder / n).is_file())
        return {"coarse": int(coarse), "full": int((self.folder / "full.npy").stat().st_size)}
