"""The sharded IVF-PQ funnel at 1M and 10M passages, on the CPU, within 24 GiB: recall, compute, bytes, latency.

    python eval/funnel_ivfpq.py --model checkpoints/wolofmrl-base --sizes 1000000 10000000 --out results/funnel_ivfpq

Corpus: the REAL French passages and queries of `eval/funnel_scale.py` (its cached `real_embeddings`), PADDED to N
with SYNTHETIC vectors (`eval/bench_retrieval.py:synthetic_chunks`, a Gaussian fitted to the real passages'
embeddings), L2-normalised and stored as one float16 memmap (the 1M corpus is the first 1M rows of the 10M one).

Index: exactly what `wolofmrl index --engine ray` builds (`wolofmrl.sharded`): IVF-PQ over the d-wide Matryoshka
prefix, trained once on a random sample, shards of `--shard-rows` encoded independently and merged (into on-disk
inverted lists from `--ondisk-from` passages on), full-width fp16 re-rank store memory-mapped.

Per N, build (d, m) and search setting (nprobe, shortlist K): Recall@10 against exact full-dim (384) search over the
same stored vectors (overlap of the two top 10s), gold Recall@10 of written / spoken (SYNTHETIC speech) queries
beside exact search's, operations per query (`wolofmrl.sharded.ivfpq_macs`: quantiser + PQ tables + one look-up-add
per scanned sub-code + K x 384 re-rank) and its ratio to exact search (N x 384 multiply-adds), single-query latency
on one thread (median of 40, warm page cache), and index bytes per passage (coarse.faiss [+ ivfdata] + fp16 store).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import time
from pathlib import Path

import numpy as np

EVAL = Path(__file__).resolve().parent
sys.path[:0] = [str(EVAL), str(EVAL.parent)]

from bench_retrieval import synthetic_chunks  # noqa: E402
from funnel_scale import real_embeddings, recall10  # noqa: E402
from metrics import overlap_at_k  # noqa: E402
from wolofmrl.retrieval import exact_search, prefix_normalize  # noqa: E402
from wolofmrl.sharded import ShardedFunnelIndex, encode_shard, merge_shards, train_ivfpq, write_store  # noqa: E402

NPROBES = [16, 32, 64, 128, 256]
SHORTLISTS = [500, 1000, 2000]


def corpus_store(passages: np.ndarray, n: int, out: Path, seed: int = 0) -> np.ndarray:
    """(n, D) float16 memmap: the real passages first (their ids are the gold ids), then synthetic rows."""
    path, tag = out / "corpus_fp16.npy", out / "corpus_fp16.json"
    want = {"n": n, "n_real": len(passages), "seed": seed}
    have = json.loads(tag.read_text()) if path.is_file() and tag.is_file() else {}
    if have and {**have, "n": n} == want and have["n"] >= n:  # a larger corpus holds this one as its prefix
        return np.load(path, mmap_mode="r")
    store = np.lib.format.open_memmap(out / "corpus_fp16.tmp.npy", mode="w+", dtype=np.float16,
                                      shape=(n, passages.shape[1]))
    store[:len(passages)] = prefix_normalize(passages, None)
    row = len(passages)
    for chunk in synthetic_chunks(passages, n - len(passages), seed):
        store[row:row + len(chunk)] = prefix_normalize(chunk, None)
        row += len(chunk)
    store.flush()
    del store
    (out / "corpus_fp16.tmp.npy").rename(path)
    tag.write_text(json.dumps(want))
    return np.load(path, mmap_mode="r")


def exact_top10(store: np.ndarray, n: int, queries: np.ndarray, chunk: int = 500_000):
    """Exact full-width top 10 over store[:n] (upcast to fp32 a chunk at a time): (scores, ids) (Q, 10)."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for s in range(0, n, chunk):
        sc, ix = exact_search(queries, np.asarray(store[s:min(n, s + chunk)], dtype=np.float32), 10)
        cat_s, cat_i = np.concatenate([best_s, sc], 1), np.concatenate([best_i, ix + s], 1)
        order = np.argsort(-cat_s, axis=1, kind="stable")[:, :10]
        best_s, best_i = np.take_along_axis(cat_s, order, 1), np.take_along_axis(cat_i, order, 1)
    return best_s, best_i


def default_nlist(n: int) -> int:
    """A power of two near 4 sqrt(N) (FAISS's guideline for IVF on millions of vectors), at most 8192 here."""
    return int(min(8192, 2 ** round(math.log2(4 * math.sqrt(n)))))


def build(store, n: int, d: int, m: int, nlist: int, folder: Path, ondisk: bool, shard_rows: int,
          threads: int, train_per_list: int = 40) -> dict:
    """Train on a sample, encode shards, merge, write the fp16 store: the `wolofmrl.sharded` recipe, timed."""
    import faiss

    faiss.omp_set_num_threads(threads)
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "build").mkdir(parents=True)
    times = {}
    t = time.perf_counter()
    rng = np.random.default_rng(0)
    picks = np.sort(rng.choice(n, min(n, max(train_per_list * nlist, 20_000)), replace=False))
    sample = np.asarray(store[picks], dtype=np.float32)
    trained = train_ivfpq(sample, d, nlist, m)
    faiss.write_index(trained, str(folder / "build" / "trained.faiss"))
    times["train_s"] = time.perf_counter() - t
    t = time.perf_counter()
    shards = []
    for i, s in enumerate(range(0, n, shard_rows)):
        shards.append(folder / "build" / f"{i:05d}.faiss")
        encode_shard(folder / "build" / "trained.faiss", store[s:min(n, s + shard_rows)], s, shards[-1])
    times["encode_s"] = time.perf_counter() - t
    t = time.perf_counter()
    merge_shards(folder / "build" / "trained.faiss", shards, folder, n, store.shape[1], ondisk=ondisk)
    times["merge_s"] = time.perf_counter() - t
    t = time.perf_counter()
    write_store(folder, (store[s:min(n, s + 500_000)] for s in range(0, n, 500_000)), n, store.shape[1])
    times["store_s"] = time.perf_counter() - t
    shutil.rmtree(folder / "build")
    return {k: round(v, 1) for k, v in times.items()} | {"sample": len(sample), "shards": len(shards)}


def single_query_ms(index: ShardedFunnelIndex, queries: np.ndarray, k: int, threads: int, n: int = 40) -> float:
    import faiss

    faiss.omp_set_num_threads(1)
    index.search(queries[:n], 10, k)  # warm the page cache for these queries' lists and rows
    times = []
    for q in queries[:n]:
        t = time.perf_counter()
        index.search(q[None], 10, k)
        times.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(threads)
    return round(1000 * float(np.median(times)), 3)


def size_rows(store, n: int, queries, gold, n_text: int, builds, args) -> list[dict]:
    t = time.perf_counter()
    ref_s, ref = exact_top10(store, n, queries)
    exact_s = time.perf_counter() - t
    full = store.shape[1]
    rows = [{"N": n, "index": "exact fp32 (fp16 store)", "d": full, "m": "-", "nprobe": "-", "K": "-",
             "overlap@10": 1.0, "gold_R@10_text": recall10(ref[:n_text], gold[:n_text]),
             "gold_R@10_speech": recall10(ref[n_text:], gold[n_text:]), "ops": n * full, "compute_ratio": 1.0,
             "batch_ms_per_query": round(1000 * exact_s / len(queries), 2), "bytes_per_passage": 4 * full}]
    print(json.dumps(rows[-1]), flush=True)
    for d, m in builds:
        nlist = args.nlist or default_nlist(n)
        folder = Path(args.out) / f"index_{n}_{d}_{m}"
        timing = build(store, n, d, m, nlist, folder, n >= args.ondisk_from, args.shard_rows, args.threads,
                       args.train_per_list)
        index = ShardedFunnelIndex.load(folder)
        sizes = index.nbytes()
        for nprobe in args.nprobes:
            for k in args.shortlists:
                index.params["nprobe"] = nprobe
                _, ids = index.search(queries, 10, k)
                ops = index.macs_per_query(len(queries), k)
                rows.append({"N": n, "index": f"IVF{nlist},PQ{m}" + (" on disk" if index.meta["ondisk"] else ""),
                             "d": d, "m": m, "nprobe": nprobe, "K": k, "overlap@10": overlap_at_k(ids, ref),
                             "gold_R@10_text": recall10(ids[:n_text], gold[:n_text]),
                             "gold_R@10_speech": recall10(ids[n_text:], gold[n_text:]), "ops": int(ops),
                             "compute_ratio": round(n * full / ops, 1),
                             "ms_1_thread": single_query_ms(index, queries, k, args.threads),
                             "bytes_per_passage": round((sizes["coarse"] + sizes["full"]) / n, 1),
                             "coarse_bytes": sizes["coarse"], "store_bytes": sizes["full"], **timing})
                print(json.dumps(rows[-1]), flush=True)
        del index
        if not args.keep:
            shutil.rmtree(folder)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [f"# IVF-PQ funnel at scale ({meta['note']})", "",
             f"Real passages: {meta['n_real']} (French gettext strings); every other row is SYNTHETIC (Gaussian "
             f"fitted to the real embeddings). Queries: {meta['n_text']} written Wolof + {meta['n_speech']} spoken "
             f"(SYNTHETIC espeak-ng Wolof). Full dim {meta['full_dim']}, vectors stored float16. Machine: "
             f"{meta['cpu']}; {meta['threads']} threads for builds, latency on 1 thread.", "",
             "| N | index | d | nprobe | K | Recall@10 vs exact 384-d | gold R@10 text | gold R@10 speech | "
             "compute ÷ | ms/query | bytes/passage | train+encode+merge s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r.get("ms_1_thread", f"{r.get('batch_ms_per_query', 0)} (batch)")
        build_s = (f"{r['train_s']:.0f}+{r['encode_s']:.0f}+{r['merge_s']:.0f}" if "train_s" in r else "-")
        lines.append(f"| {r['N']:,} | {r['index']} | {r['d']} | {r['nprobe']} | {r['K']} | "
                     f"{100 * r['overlap@10']:.1f} % | {100 * r['gold_R@10_text']:.1f} | "
                     f"{100 * r['gold_R@10_speech']:.1f} | {r['compute_ratio']:.1f}× | {ms} | "
                     f"{r['bytes_per_passage']:.0f} | {build_s} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/wolofmrl-base")
    p.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    p.add_argument("--builds", nargs="+", default=["64:32", "128:32", "128:64"],
                   help="d:m pairs (shortlist width : PQ sub-codes) built at every size")
    p.add_argument("--builds-large", nargs="+", default=["128:64"], help="d:m pairs for sizes >= 5M")
    p.add_argument("--nlist", type=int, default=None, help="inverted lists (default ~4 sqrt(N), power of 2)")
    p.add_argument("--shard-rows", type=int, default=1_000_000)
    p.add_argument("--train-per-list", type=int, default=40, help="training sample: this many vectors per list")
    p.add_argument("--ondisk-from", type=int, default=5_000_000, help="merge into on-disk lists from this N on")
    p.add_argument("--nprobes", type=int, nargs="+", default=NPROBES, help="lists probed per query (grid)")
    p.add_argument("--shortlists", type=int, nargs="+", default=SHORTLISTS, help="re-ranked candidates K (grid)")
    p.add_argument("--spoken", type=int, default=60)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--keep", action="store_true", help="keep the built indexes")
    p.add_argument("--out", default="results/funnel_ivfpq")
    args = p.parse_args(argv)
    import faiss

    faiss.omp_set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    Path("results/funnel_scale").mkdir(parents=True, exist_ok=True)  # funnel_scale.py's cache, shared
    real = real_embeddings(args.model, args.spoken, Path("results/funnel_scale") / "real_embeddings.npz")
    queries = prefix_normalize(np.concatenate([real["text_queries"], real["speech_queries"]]), None)
    gold = np.concatenate([real["text_gold"], real["speech_gold"]])
    t = time.perf_counter()
    store = corpus_store(real["passages"], max(args.sizes), out)
    print(f"corpus store {store.shape} fp16 ready in {time.perf_counter() - t:.0f} s", flush=True)
    meta = {"note": "real passages padded with SYNTHETIC vectors; SYNTHETIC speech", "n_real": len(real["passages"]),
            "n_text": len(real["text_queries"]), "n_speech": len(real["speech_queries"]), "full_dim": store.shape[1],
            "cpu": f"{platform.machine()}, {__import__('os').cpu_count()} cores, faiss {faiss.__version__}",
            "threads": args.threads, "model": args.model, "date": time.strftime("%Y-%m-%d")}
    rows = []
    for n in sorted(args.sizes):
        specs = args.builds_large if n >= 5_000_000 else args.builds
        builds = [tuple(int(x) for x in b.split(":")) for b in specs]
        rows += size_rows(store, n, queries, gold, meta["n_text"], builds, args)
        (out / "funnel_ivfpq.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
        (out / "funnel_ivfpq.md").write_text(markdown(rows, meta))
    print(markdown(rows, meta))


if __name__ == "__main__":
    main()
