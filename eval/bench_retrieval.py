"""eval/bench.py's retrieval scaling: exact FAISS indexes of real + synthetic passages at each Matryoshka dim, and
funnel search (shortlist at a small dim, re-rank at full width through `wolofmrl.retrieval`)."""
from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import bench_env  # noqa: E402
from bench_env import log, sync  # noqa: E402
from wolofmrl.metrics import mean_recall_at_k, overlap_at_k  # noqa: E402
from wolofmrl.retrieval import build_index, prefix_normalize, rerank  # noqa: E402


def synthetic_like(real: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n vectors from a Gaussian fitted to `real` (mean + covariance, ridge 5 % of the mean variance): (n, D) fp32."""
    out = np.empty((n, real.shape[1]), dtype=np.float32)
    s = 0
    for chunk in synthetic_chunks(real, n, seed):
        out[s:s + len(chunk)] = chunk
        s += len(chunk)
    return out


def synthetic_chunks(real: np.ndarray, n: int, seed: int, chunk: int = 200_000):
    """`synthetic_like`'s n vectors as (<= chunk, D) fp32 pieces, in order (never all n in RAM): the same values."""
    real = real.astype(np.float64)
    mu = real.mean(0)
    cov = np.cov(real, rowvar=False)
    cov += np.eye(cov.shape[0]) * 0.05 * np.trace(cov) / cov.shape[0]
    chol = torch.from_numpy(np.linalg.cholesky(cov).T.astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    for s in range(0, n, chunk):
        z = torch.randn(min(chunk, n - s), real.shape[1], generator=gen)
        yield (z @ chol).numpy() + mu.astype(np.float32)


def search_threads(n: int):
    torch.set_num_threads(n)  # the torch stand-in for faiss searches with torch's threads
    try:
        import faiss

        faiss.omp_set_num_threads(n)
    except ImportError:
        pass

def search_flat(index, q, k):
    return index.search(np.ascontiguousarray(q, dtype=np.float32), k)

def make_index(x: np.ndarray):
    try:
        index = build_index(x.shape[1], "flat")
        index.add(x)
        return index, "faiss.IndexFlatIP"
    except ImportError:
        return TorchFlatIP(x), "torch exact inner product (faiss not installed)"

class TorchFlatIP:
    """Stand-in for faiss.IndexFlatIP when faiss is missing (same results, labelled in the output)."""

    def __init__(self, x):
        self.x, self.ntotal, self.code_size = torch.from_numpy(x), len(x), x.shape[1] * 4

    def search(self, q, k):
        scores, ids = torch.topk(torch.from_numpy(np.asarray(q)) @ self.x.T, k, dim=1)
        return scores.numpy(), ids.numpy()



def _latencies_ms(search, queries: np.ndarray, sync_device: str | None = None) -> tuple[float, float]:
    """(batched ms per query, median single-query ms over 15 calls) of `search(q)`, after a warm-up."""
    def timed(q):
        t = time.perf_counter()
        search(q)
        if sync_device:
            sync(sync_device)
        return 1000 * (time.perf_counter() - t)

    search(queries[:8])
    batch = timed(queries) / len(queries)
    return batch, float(np.median([timed(queries[i:i + 1]) for i in range(15)]))


def index_row(full_n: np.ndarray, d: int, batch_q: np.ndarray, threads: int, device_cpu_label: str, cuda: bool):
    """Build the exact index of `full_n`'s d-prefixes and time it: (row, index)."""
    x = prefix_normalize(full_n, d)
    t = time.perf_counter()
    index, kind = make_index(x)
    build_s = time.perf_counter() - t
    qd = prefix_normalize(batch_q, d)
    batch_ms, _ = _latencies_ms(lambda q: search_flat(index, q, 10), qd)
    search_threads(1)  # one query per call on one thread, as a server answering many users would
    _, single_ms = _latencies_ms(lambda q: search_flat(index, q, 10), qd)
    search_threads(threads)
    row = {"N": len(full_n), "dim": d, "index": kind, "index_bytes": int(index.ntotal * index.code_size),
           "build_s": round(build_s, 3), "batch_ms_per_query": round(batch_ms, 4),
           "single_query_ms_1_thread": round(single_ms, 3), "device": device_cpu_label}
    if cuda:
        xg, qg = torch.from_numpy(x).to(bench_env.ACCEL), torch.from_numpy(qd).to(bench_env.ACCEL)
        batch_ms, single_ms = _latencies_ms(lambda q: torch.topk(q @ xg.T, 10), qg, bench_env.ACCEL)
        row.update(torch_cuda_batch_ms_per_query=round(batch_ms, 5), torch_cuda_single_query_ms=round(single_ms, 4),
                   torch_cuda_device=torch.cuda.get_device_name())
    return row, index


def pca_proxy_rows(passages, full_n, queries, shortlist_dims, shortlists, ref_top) -> list:
    """Funnel rows on the same vectors rotated onto the real passages' principal axes: an orthogonal map, so
    full-dim scores and the reference top 10 are unchanged, while prefixes hold the most variance. A proxy for what
    a Matryoshka-trained head can reach, NOT a property of this checkpoint."""
    centred = passages - passages.mean(0)
    _, vecs = np.linalg.eigh(centred.T @ centred)
    rot = np.ascontiguousarray(vecs[:, ::-1], dtype=np.float32)
    full_rot = full_n @ rot
    q_rot = {name: (q @ rot, gold) for name, (q, gold) in queries.items()}
    rows = []
    for d in shortlist_dims:
        index, _ = make_index(prefix_normalize(full_rot, d))
        rows += funnel_rows(index, d, shortlists, full_rot, q_rot, ref_top, "PCA-rotated proxy")
    return rows


def _search_threads_now() -> int:
    try:
        import faiss

        return faiss.omp_get_max_threads()
    except ImportError:
        return torch.get_num_threads()


def retrieval_scaling(passages: np.ndarray, queries: dict, sizes: list[int], dims: list[int], shortlist_dims,
                      shortlists, budget, reserve, seed, device_cpu_label, cuda: bool, out_sink) -> dict:
    """Index size/latency per (N, dim) and funnel recall per (N, d_small, K). passages: real, normalised, full dim;
    queries: name -> ((Q, D) embeddings, (Q,) gold passage rows)."""
    full_dim, n_real = passages.shape[1], len(passages)
    t = time.perf_counter()
    synth = synthetic_like(passages, max(0, max(sizes) - n_real), seed)
    gen_s = time.perf_counter() - t
    corpus_full = prefix_normalize(np.concatenate([passages, synth]), None)  # real rows first: gold ids hold
    del synth
    q_all = np.concatenate([q for q, _ in queries.values()])
    batch_q = np.concatenate([q_all] * math.ceil(256 / len(q_all)))[:256]
    threads = _search_threads_now()
    res = {"n_real_passages": n_real, "synthetic_generation_s": round(gen_s, 1), "index_rows": [], "funnel_rows": [],
           "search_threads": threads, "search_device": device_cpu_label, "batch_queries": len(batch_q),
           "queries": {name: len(q) for name, (q, _) in queries.items()}}
    for n in sorted(sizes):
        full_n, ref_top = corpus_full[:n], {}
        for d in sorted(dims, reverse=True):  # full dim first: its top 10 is the funnel's reference
            if budget.left() < reserve:
                res["index_rows"].append({"N": n, "dim": d, "skipped": "time budget"})
                continue
            row, index = index_row(full_n, d, batch_q, threads, device_cpu_label, cuda)
            for name, (q, gold) in queries.items():
                _, top = search_flat(index, prefix_normalize(q, d), 10)
                row[f"recall@10_{name}"] = round(mean_recall_at_k(top, gold, 10), 4)
                if d == full_dim:
                    ref_top[name] = top
            res["index_rows"].append(row)
            if d in shortlist_dims and ref_top:
                res["funnel_rows"] += funnel_rows(index, d, shortlists, full_n, queries, ref_top, "as is")
        if n == max(sizes) and ref_top and budget.left() > reserve:
            res["funnel_rows"] += pca_proxy_rows(passages, full_n, queries, shortlist_dims, shortlists, ref_top)
        log(f"retrieval N={n}: done ({budget.used():.0f} s used)")
        out_sink()
    return res


def funnel_rows(index, d: int, shortlists, full: np.ndarray, queries: dict, ref_top: dict, variant: str) -> list:
    """Shortlist K with `index` (prefixes of width d), re-rank at full width; recall and overlap vs `ref_top`."""
    n, full_dim = full.shape
    rows = []
    for k_short in shortlists:
        if k_short >= n // 2:
            continue
        row = {"variant": variant, "N": n, "d_small": d, "K": k_short, "d_full": full_dim,
               "compute_ratio": round(n * full_dim / (n * d + k_short * full_dim), 2)}
        for name, (q, gold) in queries.items():
            t = time.perf_counter()
            _, cand = search_flat(index, prefix_normalize(q, d), k_short)
            top = rerank(prefix_normalize(q, None), full, cand)[1]
            row[f"ms_per_query_{name}"] = round(1000 * (time.perf_counter() - t) / len(q), 3)
            full_r = mean_recall_at_k(ref_top[name], gold, 10)
            row[f"recall@10_{name}"] = round(mean_recall_at_k(top, gold, 10), 4)
            row[f"recall@10_full_{name}"] = round(full_r, 4)
            row[f"recall_fraction_{name}"] = round(mean_recall_at_k(top, gold, 10) / full_r, 4) if full_r else None
            row[f"overlap@10_vs_full_{name}"] = round(overlap_at_k(top, ref_top[name]), 4)
        rows.append(row)
    return rows
