"""Can a user tell a hit from a miss? Top-1 score and margin to #2, for queries whose top-1 is right vs wrong.

    python eval/score_hist.py --model checkpoints/wolofmrl-base --unseen data/unseen --split dev --subset wo \
        --condition hard --dim 384 --out results/hist

Writes `<out>/<name>.png` (two histograms: top-1 score, margin; hits vs misses) and `<out>/<name>.json` / `.md`
(counts, means, and the AUROC of each for "top-1 is right": 0.5 = no signal, 1.0 = a threshold separates them).
`score_histograms(embedder, rset, dim, out, name)` is the function to call after training (any RetrievalSet).
All unseen-source audio is synthetic TTS: say so beside any figure.
"""
from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import numpy as np

EVAL_DIR = Path(__file__).resolve().parent
if str(EVAL_DIR) not in sys.path:
    sys.path.insert(0, str(EVAL_DIR))

from wolofmrl.metrics import hit_miss_stats  # noqa: E402


def scores_of(embedder, rset, dim: int) -> tuple[np.ndarray, list[dict]]:
    """(Q, N) cosine scores at `dim` of a RetrievalSet's queries against its corpus, and relevant column indices."""
    from wolofmrl.retrieval import prefix_normalize

    if rset.query_modality == "audio":
        q = embedder.raw_audio([x["audio"] for x in rset.queries])
    else:
        q = embedder.raw_text([x["text"] for x in rset.queries], "query")
    d = embedder.raw_text([x["text"] for x in rset.corpus], "passage")
    q, d = prefix_normalize(q, dim), prefix_normalize(d, dim)
    index = {x["id"]: i for i, x in enumerate(rset.corpus)}
    relevant = [{index[doc]: 1 for doc in rset.relevant[x["id"]]} for x in rset.queries]
    return np.asarray(q) @ np.asarray(d).T, relevant


def plot_hit_miss(stats: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    hit = stats["hit"]
    for ax, key, label in ((axes[0], "top1", "top-1 cosine score"), (axes[1], "margin", "margin: top-1 - #2")):
        vals = np.asarray(stats[key])
        bins = np.linspace(vals.min(), vals.max() + 1e-9, 30)
        ax.hist(vals[hit], bins=bins, alpha=0.6, density=True, label=f"top-1 right (n={int(hit.sum())})")
        ax.hist(vals[~hit], bins=bins, alpha=0.6, density=True, label=f"top-1 wrong (n={int((~hit).sum())})")
        auc = stats[f"auroc_{key}"]
        ax.set_xlabel(label + (f"   AUROC {auc:.2f}" if auc is not None else ""))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("density")
    axes[0].legend(fontsize=7)
    fig.suptitle(textwrap.fill(title, 110), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(stats: dict) -> dict:
    hit = stats["hit"]
    mean = lambda key, m: float(np.mean(np.asarray(stats[key])[m])) if m.any() else None  # noqa: E731
    return {"queries": stats["n"], "hits": stats["hits"], "recall_at_1": stats["hits"] / stats["n"],
            "mean_top1_hit": mean("top1", hit), "mean_top1_miss": mean("top1", ~hit),
            "mean_margin_hit": mean("margin", hit), "mean_margin_miss": mean("margin", ~hit),
            "auroc_top1": stats["auroc_top1"], "auroc_margin": stats["auroc_margin"]}


def score_histograms(embedder, rset, dim: int, out: str | Path, name: str, note: str = "") -> dict:
    """Hit vs miss distributions of one model on one RetrievalSet at `dim`: writes `<out>/<name>.png`, `.json`,
    `.md`; returns the summary (queries, hits, Recall@1, mean top-1 / margin of hits and misses, AUROCs).
    `embedder`: eval/wolofmrl_mteb.WolofMRLEmbedder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    scores, relevant = scores_of(embedder, rset, dim)
    stats = hit_miss_stats(scores, relevant)
    s = summary(stats) | {"set": rset.name, "dim": dim, "note": note}
    title = f"{name}: {rset.name}, dim {dim}" + (f" ({note})" if note else "")
    plot_hit_miss(stats, out / f"{name}.png", title)
    (out / f"{name}.json").write_text(json.dumps(s, indent=1))
    f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
    (out / f"{name}.md").write_text(
        f"{title}\n\n| queries | hits | R@1 | top-1 hit | top-1 miss | margin hit | margin miss | AUROC top-1 | "
        "AUROC margin |\n|---|---|---|---|---|---|---|---|---|\n"
        f"| {s['queries']} | {s['hits']} | {f(s['recall_at_1'])} | {f(s['mean_top1_hit'])} | "
        f"{f(s['mean_top1_miss'])} | {f(s['mean_margin_hit'])} | {f(s['mean_margin_miss'])} | "
        f"{f(s['auroc_top1'])} | {f(s['auroc_margin'])} |\n")
    return s


def main(argv=None):
    import unseen
    from wolofmrl_mteb import WolofMRLEmbedder

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a WolofMRL model folder")
    p.add_argument("--unseen", default="data/unseen", help="eval/unseen.py's output folder")
    p.add_argument("--split", default="dev", choices=list(unseen.SPLITS))
    p.add_argument("--subset", default="wo", choices=list(unseen.SUBSETS))
    p.add_argument("--condition", default="hard", choices=[*unseen.CONDITIONS, "text"])
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--out", default="results/hist")
    a = p.parse_args(argv)
    rset = unseen.retrieval_set(a.unseen, a.split, a.subset, None if a.condition == "text" else a.condition)
    name = f"{Path(a.model).name}-{a.split}-{a.subset}-{a.condition}-{a.dim}"
    s = score_histograms(WolofMRLEmbedder(a.model), rset, a.dim, a.out, name,
                         "" if a.condition == "text" else "synthetic TTS speech, held-out voices")
    print(json.dumps(s, indent=1))
    print((Path(a.out) / f"{name}.md").read_text())


if __name__ == "__main__":
    main()
