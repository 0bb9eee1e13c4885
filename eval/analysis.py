"""Cost-accuracy analysis of WolofMRL embeddings across dims and ranks.

    python eval/analysis.py --model checkpoints/wolofmrl-base --data data/offline --out results/analysis

On one retrieval set (default: offline Wolof speech -> French text), from full-width embeddings computed once:

1. score vs dim: Matryoshka prefixes (first d coordinates, re-normalised).
2. score vs PCA rank: the same embeddings projected on the top-k principal components of the *corpus* side
   (centred on the corpus mean), re-normalised. Same k as the dims, so the two curves compare "the first k
   coordinates the model was trained to front-load" with "the best k-dim linear subspace of this corpus".
3. singular-value spectrum of the corpus embeddings (centred, full width) and effective rank
   (Roy & Vetterli 2007: exp of the Shannon entropy of the singular values normalised to sum 1), for the full
   embedding and for each Matryoshka prefix.
4. index bytes and search latency vs dim: a FAISS flat inner-product index (exact search) over the corpus, and over
   a larger corpus of random unit vectors of each dim (size --latency-n; labelled as random) since latency on a
   few hundred documents says little. One thread, median of repeats.
5. funnel retrieval: shortlist the top K at a small dim with FAISS, re-rank those K at full width. Recall@1/@10 vs
   cost, with cost = multiply-adds per query = N*d_small + K*d_full (exact full search: N*d_full).

Writes analysis.json, analysis.md and PNG plots (score_vs_dim_pca.png, spectrum.png, index_cost.png,
funnel.png) to --out. Every plot title carries `note` (e.g. "synthetic TTS audio; untrained adapter").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

EVAL_DIR = Path(__file__).resolve().parent
if str(EVAL_DIR) not in sys.path:
    sys.path.insert(0, str(EVAL_DIR))

ROOT = EVAL_DIR.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from wolofmrl.metrics import retrieval_scores, score_matrix_metrics, top_k  # noqa: E402

from wolofmrl.retrieval import FunnelIndex, build_index, index_bytes, prefix_normalize  # noqa: E402


# ============================================================================================== linear algebra
def l2n(x: np.ndarray) -> np.ndarray:
    """Rows L2-normalised, full width (the one truncate-and-normalise, `wolofmrl.retrieval.prefix_normalize`)."""
    return prefix_normalize(x, None)


def prefix(x: np.ndarray, d: int) -> np.ndarray:
    """Matryoshka prefix: first d coordinates, L2-normalised."""
    return prefix_normalize(x, d)


def singular_values(x: np.ndarray, center: bool = True) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if center:
        x = x - x.mean(0, keepdims=True)
    return np.linalg.svd(x, compute_uv=False)


def effective_rank(sv: np.ndarray) -> float:
    """Roy & Vetterli (2007): exp(H(p)), p_i = s_i / sum_j s_j over the singular values s (zeros ignored).
    Equals n for n equal non-zero values and 1 for a single one."""
    s = np.asarray(sv, dtype=np.float64)
    s = s[s > 0]
    if s.size == 0:
        return 0.0
    p = s / s.sum()
    return float(np.exp(-(p * np.log(p)).sum()))


def pca_fit(corpus: np.ndarray, k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mean, components (k, d)) of the corpus embeddings, components sorted by explained variance."""
    x = np.asarray(corpus, dtype=np.float64)
    mean = x.mean(0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean, vt[: (k or vt.shape[0])]


def pca_coordinates(x: np.ndarray, mean: np.ndarray, components: np.ndarray, k: int) -> np.ndarray:
    """Coordinates of (x - mean) on the top-k components: (n, k), not normalised."""
    if k > components.shape[0]:
        raise ValueError(f"k={k} > {components.shape[0]} fitted components (corpus rank)")
    return ((np.asarray(x, dtype=np.float64) - mean) @ components[:k].T).astype(np.float32)


def pca_project(x: np.ndarray, mean: np.ndarray, components: np.ndarray, k: int) -> np.ndarray:
    """Top-k PCA coordinates, L2-normalised (for cosine retrieval)."""
    return l2n(pca_coordinates(x, mean, components, k))


# ============================================================================================== retrieval
def relevant_indices(rset) -> list[set[int]]:
    pos = {d["id"]: i for i, d in enumerate(rset.corpus)}
    return [{pos[d] for d, g in rset.relevant[q["id"]].items() if g > 0} for q in rset.queries]


def scores_at(q: np.ndarray, d: np.ndarray, relevant: list[set[int]]) -> dict[str, float]:
    return score_matrix_metrics(q @ d.T, relevant, ks=(1, 10))


def flat_index(d: np.ndarray):
    """An exact FAISS inner-product index holding `d` (wolofmrl.retrieval)."""
    index = build_index(d.shape[1], "flat")
    index.add(np.ascontiguousarray(d, dtype=np.float32))
    return index


def search_latency_ms(index, queries: np.ndarray, k: int = 10, repeats: int = 5) -> float:
    """Median wall time per query (ms) of a batched exact search, after one warm-up."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    index.search(q, k)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        index.search(q, k)
        times.append(time.perf_counter() - t)
    return 1000.0 * float(np.median(times)) / len(q)


def funnel_search(q_full: np.ndarray, d_full: np.ndarray, d_small: int, shortlist: int, k: int = 10):
    """Shortlist `shortlist` documents per query at `d_small` (exact FAISS IP on prefixes), re-rank them at full
    width (`wolofmrl.retrieval.FunnelIndex`). Returns (top-k document indices (Q, k), multiply-adds per query)."""
    index = FunnelIndex(d_full.shape[1], d_small, "flat")
    index.add(d_full)
    shortlist = min(shortlist, len(d_full))
    _, ranked = index.search(q_full, k, shortlist)
    return ranked, index.macs_per_query(len(q_full), shortlist)


def recall_at(ranked: np.ndarray, relevant: list[set[int]], k: int) -> float:
    """Mean Recall@k of rankings (Q, >=k) against relevant index sets (wolofmrl/metrics.py)."""
    return retrieval_scores([r.tolist() for r in ranked], relevant, ks=(k,), ndcg_ks=(), mrr_ks=())[f"recall_at_{k}"]


# ============================================================================================== the study
def analyse(q_raw: np.ndarray, d_raw: np.ndarray, relevant: list[set[int]], out_dir: str | Path,
            matryoshka_dims: list[int] | None = None, shortlists=(10, 50, 100, 200), latency_n: int = 20000,
            latency_queries: int = 256, note: str = "", seed: int = 0) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)  # shared cores; and per-query latency is what a single-threaded service sees
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hidden = d_raw.shape[1]
    pow2 = [2 ** i for i in range(1, 12) if 2 ** i < hidden]
    dims = sorted({*pow2, hidden, *(matryoshka_dims or [])})
    report: dict = {"n_queries": len(q_raw), "n_documents": len(d_raw), "hidden": int(hidden),
                    "note": note, "dims": dims}

    # 1-2. score vs dim (prefix) and vs PCA rank (fitted on the corpus side)
    mean, comps = pca_fit(l2n(d_raw))
    rank = comps.shape[0]
    report["prefix"] = {d: scores_at(prefix(q_raw, d), prefix(d_raw, d), relevant) for d in dims}
    report["pca"] = {k: scores_at(pca_project(l2n(q_raw), mean, comps, k), pca_project(l2n(d_raw), mean, comps, k),
                                  relevant) for k in dims if k <= rank}
    report["pca_note"] = f"PCA fitted on {len(d_raw)} corpus embeddings: at most {rank} components"

    # 3. spectrum and effective rank
    sv_full = singular_values(l2n(d_raw))
    report["singular_values"] = sv_full.tolist()
    report["effective_rank"] = {d: effective_rank(singular_values(prefix(d_raw, d))) for d in dims}
    report["effective_rank_queries_full"] = effective_rank(singular_values(l2n(q_raw)))

    # 4. index bytes and latency
    rng = np.random.default_rng(seed)
    rand_q = l2n(rng.standard_normal((latency_queries, hidden)).astype(np.float32))
    rand_d = l2n(rng.standard_normal((latency_n, hidden)).astype(np.float32))
    cost = {}
    for d in dims:
        real = flat_index(prefix(d_raw, d))
        big = flat_index(prefix(rand_d, d))
        cost[d] = {"index_bytes": index_bytes(real), "index_bytes_per_vector": index_bytes(real) / len(d_raw),
                   "latency_ms_per_query": search_latency_ms(real, prefix(q_raw, d)),
                   f"random{latency_n}_index_bytes": index_bytes(big),
                   f"random{latency_n}_latency_ms_per_query": search_latency_ms(big, prefix(rand_q, d))}
    report["cost"] = cost
    report["latency_note"] = (f"FAISS IndexFlatIP, 1 thread, median of 5 batched searches; 'random{latency_n}' = "
                              f"{latency_n} random unit vectors (not model embeddings), for a latency at scale")

    # 5. funnel
    full_rank = top_k(l2n(q_raw) @ l2n(d_raw).T, 10)
    n = len(d_raw)
    report["funnel_full"] = {"recall_at_1": recall_at(full_rank, relevant, 1),
                             "recall_at_10": recall_at(full_rank, relevant, 10), "macs": n * hidden}
    funnel = []
    for d in [x for x in dims if x < hidden]:
        for k in sorted({min(s, n) for s in shortlists}):
            ranked, macs = funnel_search(q_raw, d_raw, d, k, 10)
            funnel.append({"d_small": d, "shortlist": k, "macs": macs, "relative_cost": macs / (n * hidden),
                           "recall_at_1": recall_at(ranked, relevant, 1),
                           "recall_at_10": recall_at(ranked, relevant, min(10, ranked.shape[1]))})
    report["funnel"] = funnel

    (out / "analysis.json").write_text(json.dumps(report, indent=1, default=float))
    (out / "analysis.md").write_text(analysis_markdown(report))
    plot_all(report, out, note)
    return report


def analysis_markdown(r: dict) -> str:
    lines = [f"# Cost-accuracy analysis ({r['note']})", "",
             f"{r['n_queries']} queries, {r['n_documents']} documents, width {r['hidden']}. Scores x 100.", "",
             "| dim / rank | nDCG@10 prefix | R@1 prefix | nDCG@10 PCA | R@1 PCA | effective rank (prefix) | "
             "index bytes | ms/query | ms/query (random N) |", "|---|---|---|---|---|---|---|---|---|"]
    for d in r["dims"]:
        p, c = r["prefix"][d], r["cost"][d]
        pca = r["pca"].get(d)
        rnd = next(v for k, v in c.items() if k.startswith("random") and k.endswith("latency_ms_per_query"))
        lines.append(f"| {d} | {100 * p['ndcg_at_10']:.1f} | {100 * p['recall_at_1']:.1f} | "
                     + (f"{100 * pca['ndcg_at_10']:.1f} | {100 * pca['recall_at_1']:.1f}" if pca else "– | –")
                     + f" | {r['effective_rank'][d]:.1f} | {c['index_bytes']} | {c['latency_ms_per_query']:.4f} | "
                       f"{rnd:.4f} |")
    lines += ["", r["pca_note"] + ".", r["latency_note"] + ".", "",
              "## Funnel (shortlist at d_small, re-rank at full width)", "",
              f"Exact full-width search: R@1 {100 * r['funnel_full']['recall_at_1']:.1f}, "
              f"R@10 {100 * r['funnel_full']['recall_at_10']:.1f}, {r['funnel_full']['macs']} multiply-adds/query.", "",
              "| d_small | K | multiply-adds/query | relative cost | R@1 | R@10 |", "|---|---|---|---|---|---|"]
    for f in r["funnel"]:
        lines.append(f"| {f['d_small']} | {f['shortlist']} | {f['macs']} | {f['relative_cost']:.3f} | "
                     f"{100 * f['recall_at_1']:.1f} | {100 * f['recall_at_10']:.1f} |")
    return "\n".join(lines) + "\n"


def _title(ax, text, size=8):
    import textwrap

    ax.set_title(textwrap.fill(text, 70), fontsize=size)


def plot_all(r: dict, out: Path, note: str):
    """score_vs_dim_pca.png, spectrum.png, index_cost.png and funnel.png from an `analyse` report."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sub = f" ({note})" if note else ""
    for plot in (_plot_scores, _plot_spectrum, _plot_cost, _plot_funnel):
        plot(plt, r, out, sub, r["dims"])


def _plot_scores(plt, r: dict, out: Path, sub: str, dims: list[int]):
    fig, ax = plt.subplots(figsize=(6.5, 4.4))
    for key, label, color, marker in (("prefix", "Matryoshka prefix", "C0", "o"),
                                      ("pca", "PCA rank (corpus)", "C1", "s")):
        xs = [d for d in dims if d in r[key]]
        ax.plot(xs, [100 * r[key][d]["ndcg_at_10"] for d in xs], "-", marker=marker, color=color,
                label=f"nDCG@10, {label}")
        ax.plot(xs, [100 * r[key][d]["recall_at_1"] for d in xs], "--", marker=marker, color=color, alpha=0.6,
                label=f"R@1, {label}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("dimensions kept (prefix dim / PCA rank)")
    ax.set_ylabel("score x 100")
    _title(ax, "Score vs dim and PCA rank" + sub, 9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "score_vs_dim_pca.png", dpi=120)
    plt.close(fig)


def _plot_spectrum(plt, r: dict, out: Path, sub: str, dims: list[int]):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    sv = np.asarray(r["singular_values"])
    a1.semilogy(np.arange(1, len(sv) + 1), np.maximum(sv, 1e-12))
    a1.set_xlabel("component index")
    a1.set_ylabel("singular value (log)")
    _title(a1, "Corpus embedding spectrum (centred, full width)" + sub)
    a1.grid(alpha=0.3)
    a2.plot(dims, [r["effective_rank"][d] for d in dims], "o-", label="effective rank of prefix")
    a2.plot(dims, dims, ":", color="gray", label="dim (upper bound)")
    a2.set_xscale("log", base=2)
    a2.set_yscale("log", base=2)
    a2.set_xlabel("prefix dim")
    a2.set_ylabel("effective rank (Roy & Vetterli)")
    _title(a2, "Effective rank vs dim" + sub)
    a2.grid(alpha=0.3)
    a2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "spectrum.png", dpi=120)
    plt.close(fig)


def _plot_cost(plt, r: dict, out: Path, sub: str, dims: list[int]):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4))
    c = r["cost"]
    rnd_b = next(k for k in c[dims[0]] if k.startswith("random") and k.endswith("index_bytes"))
    rnd_l = next(k for k in c[dims[0]] if k.startswith("random") and k.endswith("latency_ms_per_query"))
    a1.plot(dims, [c[d]["index_bytes"] for d in dims], "o-", label=f"corpus ({r['n_documents']} docs)")
    a1.plot(dims, [c[d][rnd_b] for d in dims], "s--", label=rnd_b.replace("_index_bytes", " (random vectors)"))
    a1.set_xscale("log", base=2)
    a1.set_yscale("log")
    a1.set_xlabel("embedding dim")
    a1.set_ylabel("FAISS flat index size (bytes)")
    _title(a1, "Index bytes vs dim" + sub)
    a1.legend(fontsize=7)
    a1.grid(alpha=0.3)
    a2.plot(dims, [c[d]["latency_ms_per_query"] for d in dims], "o-", label=f"corpus ({r['n_documents']} docs)")
    a2.plot(dims, [c[d][rnd_l] for d in dims], "s--", label=rnd_l.replace("_latency_ms_per_query", " (random vectors)"))
    a2.set_xscale("log", base=2)
    a2.set_yscale("log")
    a2.set_xlabel("embedding dim")
    a2.set_ylabel("search latency (ms / query, 1 thread)")
    _title(a2, "Exact search latency vs dim" + sub)
    a2.legend(fontsize=7)
    a2.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "index_cost.png", dpi=120)
    plt.close(fig)


def _plot_funnel(plt, r: dict, out: Path, sub: str, dims: list[int]):
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for d in sorted({f["d_small"] for f in r["funnel"]}):
        pts = sorted((f["relative_cost"], 100 * f["recall_at_1"]) for f in r["funnel"] if f["d_small"] == d)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=f"shortlist at d={d}")
    ax.plot([1.0], [100 * r["funnel_full"]["recall_at_1"]], "k*", markersize=12, label=f"exact, d={r['hidden']}")
    ax.plot([d / r["hidden"] for d in r["dims"]], [100 * r["prefix"][d]["recall_at_1"] for d in r["dims"]], ":",
            color="gray", label="prefix only (no re-rank)")
    ax.set_xscale("log")
    ax.set_xlabel("cost per query relative to exact full-width search\n(N·d_small + K·d_full) / (N·d_full)")
    ax.set_ylabel("Recall@1 x 100")
    _title(ax, "Funnel retrieval: recall vs compute" + sub, 9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "funnel.png", dpi=120)
    plt.close(fig)


def embed_set(embedder, rset) -> tuple[np.ndarray, np.ndarray]:
    """Raw full-width embeddings of a RetrievalSet's queries and corpus (query/passage prefixes for text)."""

    def side(items, modality, kind):
        if modality == "audio":
            return embedder.raw_audio([x["audio"] for x in items])
        return embedder.raw_text([x["text"] for x in items], kind)

    return side(rset.queries, rset.query_modality, "query"), side(rset.corpus, rset.doc_modality, "passage")


def run_analysis(embedder, rset, out_dir, note: str = "", **kwargs) -> dict:
    q, d = embed_set(embedder, rset)
    return analyse(q, d, relevant_indices(rset), out_dir, matryoshka_dims=embedder.matryoshka_dims,
                   note=note or rset.name, **kwargs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="data/offline")
    p.add_argument("--set", default="a2t", choices=["a2t", "t2a", "t2t"], help="which offline retrieval set")
    p.add_argument("--out", default="results/analysis")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--latency-n", type=int, default=20000)
    p.add_argument("--note", default="", help="added to plot titles (e.g. 'untrained adapter')")
    args = p.parse_args(argv)
    from benchmark_data import OfflineBenchmark
    from wolofmrl_mteb import WolofMRLEmbedder

    embedder = WolofMRLEmbedder(args.model)
    bench = OfflineBenchmark(args.data, "test", args.limit)
    rset = getattr(bench, args.set)()
    note = ", ".join(x for x in (f"offline {args.set}", "synthetic TTS audio" if bench.synthetic and args.set != "t2t"
                                 else "", args.note) if x)
    run_analysis(embedder, rset, args.out, note=note, latency_n=args.latency_n)
    print((Path(args.out) / "analysis.md").read_text())


if __name__ == "__main__":
    main()
