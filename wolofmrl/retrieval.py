"""The one home for FAISS indexes and funnel search over WolofMRL embeddings.

    from wolofmrl.retrieval import FunnelIndex
    index = FunnelIndex(full_dim=384, coarse_dim=64, kind="hnsw")     # shortlist at 64 d, re-rank at 384 d
    index.add(passage_embeddings)                                     # (N, 384) float32, L2-normalised
    scores, ids = index.search(query_embeddings, k=10, shortlist=100)  # (Q, 10) float32, (Q, 10) int64
    index.save("my_index/");  index = FunnelIndex.load("my_index/")

Funnel search (Matryoshka "adaptive retrieval", Kusupati et al. 2022): the first `coarse_dim` coordinates of every
embedding, re-normalised (`modeling_wolofmrl.normalize_dim`), go into a FAISS inner-product index; a query finds its
`shortlist` nearest passages there, and those are re-scored with the full-width embeddings (exact cosine). Cost per
query, in multiply-adds: N * coarse_dim + shortlist * full_dim for a flat coarse index (exact search at full width:
N * full_dim); IVF and HNSW replace the N * coarse_dim term by the distances they actually compute
(`last_search_distances`).

Index kinds (all inner product = cosine on unit vectors):
- "flat": `faiss.IndexFlatIP`, exact.
- "ivf":  `faiss.IndexIVFFlat` with `nlist` inverted lists (default ~4 sqrt(N) at the first add, trained on it),
          probing `nprobe` lists per query.
- "hnsw": `faiss.IndexHNSWFlat` (graph, `hnsw_m` links per node), `ef_search` candidates per query.

Everything here works on numpy float32 arrays on the CPU; ids are the rows' insertion order (0..N-1).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from modeling_wolofmrl import normalize_dim  # noqa: E402

__all__ = ["KINDS", "FunnelIndex", "build_index", "exact_search", "index_bytes", "prefix_normalize", "rerank",
           "set_search_params", "search_distance_counter"]

KINDS = ("flat", "ivf", "hnsw")
META = "funnel.json"


# --------------------------------------------------------------------------- vectors
def _as_matrix(x, name: str, width: int | None = None) -> np.ndarray:
    """(N, D) contiguous float32 copy-free view of `x`, or a ValueError naming `name`."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be a (N, D) matrix of embeddings, got shape {x.shape}")
    if width is not None and x.shape[1] != width:
        raise ValueError(f"{name} has width {x.shape[1]} but the index expects {width}: embed at full width "
                         f"(dim=None) with the model that built the index")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return x


def prefix_normalize(x, dim: int | None) -> np.ndarray:
    """First `dim` coordinates of each row, L2-normalised: (N, D) -> (N, dim) float32 (dim=None keeps D).

    The numpy face of `modeling_wolofmrl.normalize_dim` (the one truncate-and-normalise). Raises ValueError for a
    dim outside 1..D.
    """
    x = _as_matrix(x, "embeddings")
    out = normalize_dim(torch.from_numpy(x), dim, x.shape[1], [])
    return np.ascontiguousarray(out.numpy(), dtype=np.float32)


# --------------------------------------------------------------------------- FAISS indexes
def build_index(dim: int, kind: str = "flat", nlist: int | None = None, hnsw_m: int = 32,
                ef_construction: int = 80):
    """An empty FAISS inner-product index of width `dim`. kind: "flat", "ivf" (needs `nlist`; train before add)
    or "hnsw". Raises ValueError for an unknown kind or a bad parameter."""
    import faiss

    if kind not in KINDS:
        raise ValueError(f"kind={kind!r} is not an index kind: use one of {KINDS}")
    if not isinstance(dim, int) or dim < 1:
        raise ValueError(f"dim must be a positive int, got {dim!r}")
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "ivf":
        if not nlist or nlist < 1:
            raise ValueError(f"an IVF index needs nlist >= 1 inverted lists, got {nlist!r}")
        # the Python wrapper keeps a reference to the quantizer (do not set own_fields: it would be freed twice)
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, int(nlist), faiss.METRIC_INNER_PRODUCT)
    if hnsw_m < 2:
        raise ValueError(f"hnsw_m must be >= 2, got {hnsw_m}")
    index = faiss.IndexHNSWFlat(dim, int(hnsw_m), faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = int(ef_construction)
    return index


def default_nlist(n: int) -> int:
    """Inverted lists for an IVF index over n vectors: ~4 sqrt(n), at most n // 39 (FAISS wants >= 39 per list)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def set_search_params(index, nprobe: int | None = None, ef_search: int | None = None):
    """Set the speed/recall knob of an IVF (`nprobe`) or HNSW (`ef_search`) index; ignored for other kinds."""
    import faiss

    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = int(min(nprobe, index.nlist))
    if ef_search is not None and isinstance(index, faiss.IndexHNSW):
        index.hnsw.efSearch = int(ef_search)


def index_bytes(index) -> int:
    """Serialised size of a FAISS index in bytes (what `faiss.write_index` writes)."""
    import faiss

    return int(faiss.serialize_index(index).size)


class search_distance_counter:
    """Context manager counting the vector distances an IVF/HNSW/flat search computes: `.count` after exit.

    Reads FAISS's global statistics (IVF: `indexIVF_stats.ndis`, HNSW: `hnsw_stats.ndis`); a flat index computes
    ntotal distances per query, added by `FunnelIndex`. Not thread-safe (FAISS's counters are global).
    """

    def __enter__(self):
        import faiss

        faiss.cvar.indexIVF_stats.reset()
        faiss.cvar.hnsw_stats.reset()
        self.count = 0
        return self

    def __exit__(self, *exc):
        import faiss

        self.count = int(faiss.cvar.indexIVF_stats.ndis) + int(faiss.cvar.hnsw_stats.ndis)
        return False


def exact_search(queries, vectors, k: int = 10, batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact inner-product top-k: queries (Q, D), vectors (N, D) -> (scores (Q, k) float32, ids (Q, k) int64).

    k larger than N returns N columns. Uses a FAISS flat index (no copy of `vectors` beyond float32).
    """
    vectors = _as_matrix(vectors, "vectors")
    queries = _as_matrix(queries, "queries", vectors.shape[1])
    index = build_index(vectors.shape[1], "flat")
    index.add(vectors)
    k = min(int(k), len(vectors))
    scores, ids = zip(*(index.search(queries[s:s + batch], k) for s in range(0, len(queries), batch))) \
        if len(queries) else ((np.zeros((0, k), np.float32),), (np.zeros((0, k), np.int64),))
    return np.concatenate(scores), np.concatenate(ids)


def rerank(queries_full: np.ndarray, vectors_full: np.ndarray, candidates: np.ndarray, k: int = 10,
           chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Re-score shortlisted candidates at full width and keep the best k.

    queries_full (Q, D) and vectors_full (N, D) are L2-normalised; candidates (Q, K) int64 row ids (-1 = none,
    as FAISS pads). Returns (scores (Q, min(k, K)) float32, ids (Q, min(k, K)) int64), best first; padded slots
    score -inf with id -1.
    """
    q_n, width = candidates.shape
    k = min(k, width)
    out_s = np.full((q_n, k), -np.inf, dtype=np.float32)
    out_i = np.full((q_n, k), -1, dtype=np.int64)
    for s in range(0, q_n, chunk):
        cand = candidates[s:s + chunk]
        valid = cand >= 0
        scores = np.einsum("qd,qkd->qk", queries_full[s:s + chunk], vectors_full[np.where(valid, cand, 0)])
        scores = np.where(valid, scores, -np.inf).astype(np.float32)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        out_s[s:s + chunk] = np.take_along_axis(scores, order, axis=1)
        out_i[s:s + chunk] = np.where(np.isfinite(out_s[s:s + chunk]), np.take_along_axis(cand, order, axis=1), -1)
    return out_s, out_i


# --------------------------------------------------------------------------- the funnel index
class FunnelIndex:
    """A coarse FAISS index over `coarse_dim`-wide prefixes + the full-width vectors for re-ranking.

    full_dim: the embeddings' width (e.g. 384). coarse_dim: shortlist width (1..full_dim; equal = no funnel).
    kind: "flat" | "ivf" | "hnsw". nlist (IVF; default from the first add), nprobe (IVF), hnsw_m, ef_search (HNSW).
    Raises ValueError for a bad kind, dim or knob.
    """

    def __init__(self, full_dim: int, coarse_dim: int | None = None, kind: str = "flat", nlist: int | None = None,
                 nprobe: int = 16, hnsw_m: int = 32, ef_search: int = 128, ef_construction: int = 80):
        coarse_dim = full_dim if coarse_dim is None else coarse_dim
        if not isinstance(full_dim, int) or full_dim < 1:
            raise ValueError(f"full_dim must be a positive int, got {full_dim!r}")
        if not isinstance(coarse_dim, int) or not 1 <= coarse_dim <= full_dim:
            raise ValueError(f"coarse_dim={coarse_dim!r} is not valid: use an int in 1..{full_dim}")
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r} is not an index kind: use one of {KINDS}")
        self.full_dim, self.coarse_dim, self.kind = full_dim, coarse_dim, kind
        self.params = {"nlist": nlist, "nprobe": int(nprobe), "hnsw_m": int(hnsw_m), "ef_search": int(ef_search),
                       "ef_construction": int(ef_construction)}
        self.coarse = None if kind == "ivf" else build_index(coarse_dim, kind, hnsw_m=hnsw_m,
                                                             ef_construction=ef_construction)
        self._full = np.zeros((0, full_dim), dtype=np.float32)
        self.last_search_distances = 0  # coarse distances computed by the last search (all queries)

    def __len__(self) -> int:
        return len(self._full)

    @property
    def vectors(self) -> np.ndarray:
        """The full-width, L2-normalised vectors (N, full_dim) float32, in id order."""
        return self._full

    def add(self, vectors) -> np.ndarray:
        """Add (M, full_dim) embeddings (re-normalised here); returns their ids (M,) int64.

        An IVF index is trained on its first add (which then needs >= nlist vectors; raises ValueError otherwise).
        """
        vectors = prefix_normalize(_as_matrix(vectors, "vectors", self.full_dim), None)
        ids = np.arange(len(self._full), len(self._full) + len(vectors), dtype=np.int64)
        if not len(vectors):
            return ids
        coarse = prefix_normalize(vectors, self.coarse_dim)
        if self.coarse is None:  # IVF: created and trained on the first add
            nlist = self.params["nlist"] or default_nlist(len(vectors))
            if len(vectors) < nlist:
                raise ValueError(f"an IVF index with nlist={nlist} needs at least {nlist} vectors at its first add, "
                                 f"got {len(vectors)}: add more at once, lower nlist, or use kind='flat'")
            self.params["nlist"] = nlist
            self.coarse = build_index(self.coarse_dim, "ivf", nlist=nlist)
            self.coarse.train(coarse)
        self.coarse.add(coarse)
        self._full = vectors if not len(self._full) else np.concatenate([self._full, vectors])
        return ids

    def search(self, queries, k: int = 10, shortlist: int = 100) -> tuple[np.ndarray, np.ndarray]:
        """Funnel search: (Q, full_dim) query embeddings -> (scores (Q, k') float32, ids (Q, k') int64), best first,
        with k' = min(k, len(self)). Scores are full-width cosines. shortlist >= k candidates come from the coarse
        index (shortlist is raised to k if smaller). Raises ValueError on an empty index or a bad k."""
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        if not len(self):
            raise ValueError("the index is empty: add passages first")
        queries = prefix_normalize(_as_matrix(queries, "queries", self.full_dim), None)
        k = min(k, len(self))
        shortlist = min(max(int(shortlist), k), len(self))
        set_search_params(self.coarse, self.params["nprobe"], self.params["ef_search"])
        with search_distance_counter() as counter:
            _, cand = self.coarse.search(prefix_normalize(queries, self.coarse_dim), shortlist)
        self.last_search_distances = counter.count if self.kind != "flat" else len(queries) * len(self)
        if self.coarse_dim == self.full_dim and self.kind == "flat":
            cand = cand[:, :k]  # exact at full width already: re-ranking would not change the order
        return rerank(queries, self._full, cand, k)

    def macs_per_query(self, n_queries: int, shortlist: int) -> float:
        """Multiply-adds per query of the last search: coarse distances * coarse_dim (+ nlist * coarse_dim for the IVF
        quantiser) + shortlist * full_dim (the re-rank)."""
        coarse = self.last_search_distances / max(n_queries, 1) * self.coarse_dim
        if self.kind == "ivf":
            coarse += self.params["nlist"] * self.coarse_dim
        return coarse + (0 if self.coarse_dim == self.full_dim else min(shortlist, len(self)) * self.full_dim)

    def nbytes(self) -> dict[str, int]:
        """{"coarse": serialised coarse index bytes, "full": full-width vectors bytes}."""
        return {"coarse": index_bytes(self.coarse) if self.coarse is not None else 0, "full": int(self._full.nbytes)}

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path) -> Path:
        """Write funnel.json, coarse.faiss and full.npy into `folder` (created). Returns the folder."""
        import faiss

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "full.npy", self._full)
        if self.coarse is not None:
            faiss.write_index(self.coarse, str(folder / "coarse.faiss"))
        meta = {"full_dim": self.full_dim, "coarse_dim": self.coarse_dim, "kind": self.kind, "params": self.params,
                "count": len(self)}
        (folder / META).write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | Path, mmap: bool = False) -> FunnelIndex:
        """Read an index written by `save` (or, for kind "ivfpq", a `wolofmrl.sharded.ShardedFunnelIndex`). Raises
        FileNotFoundError naming the missing file, ValueError if the parts disagree. `mmap=True` maps the full-width
        vectors instead of reading them."""
        import faiss

        folder = Path(folder)
        if not (folder / META).is_file():
            raise FileNotFoundError(f"{folder / META} not found: {folder} is not a funnel index "
                                    "(build one with `wolofmrl index DOCS --out INDEX`)")
        meta = json.loads((folder / META).read_text())
        if meta["kind"] == "ivfpq":  # a sharded IVF-PQ index (`wolofmrl index --engine ray`): same search face
            from wolofmrl.sharded import ShardedFunnelIndex

            return ShardedFunnelIndex.load(folder, mmap=mmap)
        p = meta["params"]
        index = cls(meta["full_dim"], meta["coarse_dim"], meta["kind"], nlist=p.get("nlist"),
                    nprobe=p["nprobe"], hnsw_m=p["hnsw_m"], ef_search=p["ef_search"],
                    ef_construction=p["ef_construction"])
        index._full = np.load(folder / "full.npy", mmap_mode="r" if mmap else None)
        if (folder / "coarse.faiss").is_file():
            index.coarse = faiss.read_index(str(folder / "coarse.faiss"))
        ntotal = index.coarse.ntotal if index.coarse is not None else 0
        if ntotal != len(index._full) or len(index._full) != meta["count"]:
            raise ValueError(f"{folder} is inconsistent: coarse index has {ntotal} vectors, full.npy "
                             f"{len(index._full)}, funnel.json {meta['count']}; rebuild the index")
        return index
