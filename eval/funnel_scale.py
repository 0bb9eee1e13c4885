"""Funnel search at scale: FAISS flat / IVF / HNSW shortlists at a small Matryoshka dim, re-ranked at full width.

    python eval/funnel_scale.py --model checkpoints/wolofmrl-base --sizes 10000 100000 --out results/funnel_scale

Corpus: REAL French passages (the gettext catalogs' French side: ~700 Wolof-paired strings + ~3,000 French UI
sentences), embedded by the model at full width with the passage prefix, then PADDED to N with SYNTHETIC vectors
(a Gaussian fitted to the real passages' embeddings, `eval/bench_retrieval.py:synthetic_like`). Queries: the paired Wolof
strings, written (query prefix) and spoken (SYNTHETIC espeak-ng Wolof speech of the first --spoken of them).

For every N, index kind and (shortlist dim d, shortlist K): Recall@10 against full-dim exact search (the overlap of
the funnel's top 10 with exact 384-d search's top 10: 1.0 = identical), gold Recall@10 (the paired French string in
the top 10) beside exact search's, multiply-adds per query (coarse distances FAISS actually computed x d, + IVF
quantiser, + K x full dim for the re-rank) and the ratio to exact full-dim search (N x full dim), single-query latency
on one thread, index bytes (coarse index + full-width vectors kept for the re-rank). Writes funnel_scale.json/.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

EVAL = Path(__file__).resolve().parent
sys.path[:0] = [str(EVAL), str(EVAL.parent)]

from bench_inputs import read_mo_pairs  # noqa: E402
from bench_retrieval import synthetic_like  # noqa: E402
from wolofmrl.metrics import mean_recall_at_k, overlap_at_k  # noqa: E402
from wolofmrl.retrieval import FunnelIndex, exact_search, prefix_normalize  # noqa: E402

GRID = {"flat": [(32, 200), (32, 400), (64, 200), (128, 500)],
        "ivf": [(64, 200), (64, 1000), (128, 1000), (128, 2000)],
        "hnsw": [(64, 200), (64, 1000), (128, 1000), (128, 2000)]}


def real_embeddings(model_path: str, spoken: int, cache: Path) -> dict:
    """Embeddings of the real passages and queries (cached in `cache`, an .npz)."""
    if cache.is_file():
        data = dict(np.load(cache, allow_pickle=False))
        return {k: data[k] for k in data}
    from wolofmrl.cli.store import embed_audio, embed_texts, load_model
    from wolofmrl.curation.voice import synthesize

    pairs, french, _ = read_mo_pairs()
    fr_of = {}
    for wo, fr in pairs:
        fr_of.setdefault(fr, wo)
    passages = list(fr_of) + sorted(set(french) - set(fr_of))
    queries = [(wo, i) for i, (fr, wo) in enumerate(fr_of.items())]
    model, processor, dtype = load_model(model_path, "cpu", "float32")
    t = time.perf_counter()
    out = {"passages": embed_texts(model, processor, passages, "passage", progress=True),
           "text_queries": embed_texts(model, processor, [w for w, _ in queries], "query"),
           "text_gold": np.array([g for _, g in queries])}
    long_enough = [(w, g) for w, g in queries if len(w.split()) >= 3][:spoken]
    clips = [{"array": synthesize(w, "wo", "espeak-wo-m1-p50"), "sampling_rate": 16000} for w, _ in long_enough]
    out["speech_queries"] = embed_audio(model, processor, clips, progress=True)
    out["speech_gold"] = np.array([g for _, g in long_enough])
    out["embed_seconds"] = np.array(time.perf_counter() - t)
    np.savez(cache, **out)
    return out


def single_query_ms(search, queries: np.ndarray, n: int = 40) -> float:
    import faiss

    faiss.omp_set_num_threads(1)
    times = []
    for q in queries[:n]:
        t = time.perf_counter()
        search(q[None])
        times.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(args_threads)
    return round(1000 * float(np.median(times)), 3)


def recall10(ranked: np.ndarray, gold: np.ndarray) -> float:
    """Gold Recall@10: each query has one relevant passage (its paired French string)."""
    return mean_recall_at_k(ranked, [int(g) for g in gold], 10)


def scale_rows(corpus: np.ndarray, queries: np.ndarray, gold: np.ndarray, n_text: int, kinds, ivf_nprobe: int,
               ef_search: int) -> list[dict]:
    """All rows for one corpus size N (queries: text then speech, full width, normalised)."""
    n, full = corpus.shape
    t = time.perf_counter()
    _, ref = exact_search(queries, corpus, 10)
    exact_ms = 1000 * (time.perf_counter() - t) / len(queries)
    flat = FunnelIndex(full, full, "flat")
    flat.add(corpus)
    rows = [{"N": n, "kind": "flat (exact)", "d": full, "K": 0, "overlap@10": 1.0,
             "gold_R@10_text": recall10(ref[:n_text], gold[:n_text]),
             "gold_R@10_speech": recall10(ref[n_text:], gold[n_text:]), "macs": n * full, "compute_ratio": 1.0,
             "ms_1_thread": single_query_ms(lambda q: flat.search(q, 10, 10), queries),
             "batch_ms_per_query": round(exact_ms, 3), "index_bytes": n * full * 4}]
    del flat
    for kind in kinds:
        for d in sorted({d for d, _ in GRID[kind]}):
            t = time.perf_counter()
            index = FunnelIndex(full, d, kind, nprobe=ivf_nprobe, ef_search=ef_search)
            index.add(corpus)
            build_s = time.perf_counter() - t
            for dd, k in GRID[kind]:
                if dd != d:
                    continue
                index.params["ef_search"] = max(ef_search, k)
                _, ids = index.search(queries, 10, k)
                macs = index.macs_per_query(len(queries), k)
                sizes = index.nbytes()
                rows.append({"N": n, "kind": kind, "d": d, "K": k, "overlap@10": overlap_at_k(ids, ref),
                             "gold_R@10_text": recall10(ids[:n_text], gold[:n_text]),
                             "gold_R@10_speech": recall10(ids[n_text:], gold[n_text:]),
                             "macs": int(macs), "compute_ratio": round(n * full / macs, 1),
                             "ms_1_thread": single_query_ms(lambda q: index.search(q, 10, k), queries),
                             "index_bytes": sizes["coarse"] + sizes["full"], "build_s": round(build_s, 1)})
                print(json.dumps(rows[-1]), flush=True)
            del index
    return rows


def end_to_end_ms(model_path: str, audio: str, corpus: np.ndarray, d: int, k_short: int, threads: int) -> dict:
    """Audio file -> top 10 (decode, embed on the CPU, funnel search over `corpus`), median of 5, `threads` threads."""
    import torch

    from wolofmrl.cli.store import embed_audio, load_model

    torch.set_num_threads(threads)
    model, processor, _ = load_model(model_path, "cpu", "float32")
    index = FunnelIndex(corpus.shape[1], d, "flat")
    index.add(corpus)
    times = {"embed": [], "search": []}
    for _ in range(6):
        t = time.perf_counter()
        q = embed_audio(model, processor, [audio])
        times["embed"].append(time.perf_counter() - t)
        t = time.perf_counter()
        index.search(q, 10, k_short)
        times["search"].append(time.perf_counter() - t)
    med = {key: round(1000 * float(np.median(v[1:])), 1) for key, v in times.items()}
    return {"audio": audio, "N": len(corpus), "d": d, "K": k_short, "threads": threads, "embed_ms": med["embed"],
            "search_ms": med["search"], "total_ms": round(med["embed"] + med["search"], 1)}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# Funnel search at scale ({meta['note']})", "",
             f"Real passages: {meta['n_real']} (French gettext strings); the rest of each corpus is SYNTHETIC "
             f"(Gaussian fitted to the real embeddings). Queries: {meta['n_text']} written Wolof + "
             f"{meta['n_speech']} spoken (SYNTHETIC espeak-ng Wolof). Full dim {meta['full_dim']}; "
             f"IVF nprobe {meta['nprobe']}, nlist ~4 sqrt(N); HNSW M 32, efSearch max({meta['ef_search']}, K). "
             f"Latency: one query per call, one thread, {meta['cpu']}.", "",
             "| N | index | d | K | Recall@10 vs exact 384-d | gold R@10 text | gold R@10 speech | compute ÷ | "
             "ms/query | index MiB |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['N']:,} | {r['kind']} | {r['d']} | {r['K'] or '-'} | {100 * r['overlap@10']:.1f} % | "
                     f"{100 * r['gold_R@10_text']:.1f} | {100 * r['gold_R@10_speech']:.1f} | "
                     f"{r['compute_ratio']:.1f}× | {r['ms_1_thread']:.2f} | {r['index_bytes'] / 2**20:.1f} |")
    return "\n".join(lines) + "\n"


args_threads = 2


def main(argv=None):
    global args_threads
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/wolofmrl-base")
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--kinds", nargs="+", default=["flat", "ivf", "hnsw"], choices=["flat", "ivf", "hnsw"])
    p.add_argument("--spoken", type=int, default=60, help="spoken (synthetic) queries")
    p.add_argument("--nprobe", type=int, default=32)
    p.add_argument("--ef-search", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--e2e", default=None, help="an audio file: also time audio file -> top 10 on the CPU")
    p.add_argument("--out", default="results/funnel_scale")
    args = p.parse_args(argv)
    import faiss

    args_threads = args.threads
    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    real = real_embeddings(args.model, args.spoken, out / "real_embeddings.npz")
    passages = real["passages"]
    queries = prefix_normalize(np.concatenate([real["text_queries"], real["speech_queries"]]), None)
    gold = np.concatenate([real["text_gold"], real["speech_gold"]])
    synth = synthetic_like(passages, max(args.sizes) - len(passages), seed=0)
    corpus_all = prefix_normalize(np.concatenate([passages, synth]), None)  # real rows first: gold ids hold
    del synth
    import platform

    meta = {"note": "real passages padded with synthetic vectors; synthetic speech", "n_real": len(passages),
            "n_text": len(real["text_queries"]), "n_speech": len(real["speech_queries"]),
            "full_dim": passages.shape[1], "nprobe": args.nprobe, "ef_search": args.ef_search,
            "cpu": f"{platform.processor() or platform.machine()}, faiss {faiss.__version__}", "model": args.model}
    rows = []
    for n in sorted(args.sizes):
        rows += scale_rows(corpus_all[:n], queries, gold, meta["n_text"], args.kinds, args.nprobe, args.ef_search)
        (out / "funnel_scale.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (out / "funnel_scale.md").write_text(markdown(rows, meta))
    if args.e2e:
        meta["end_to_end"] = end_to_end_ms(args.model, args.e2e, corpus_all[:max(args.sizes)], 64, 200, args.threads)
        (out / "funnel_scale.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        print(json.dumps(meta["end_to_end"]))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
