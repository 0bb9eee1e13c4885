"""Strategy table: Wolof speech -> French text retrieval by each way of getting there, same data, every dim.

    python eval/strategies.py --model fusion=checkpoints/wolofmrl-base --model dual=checkpoints/wolofmrl-dual \
        --cascade build/backbones/whisper-base --data data/offline --out results/strategies

Rows (all on the same queries and the same French corpus; documents always go through the text side as passages):
- one per `--model label=folder`: the model's own speech side (fusion or dual, from its config).
- ``text topline``: the gold Wolof transcript (`wo_text`) through the text side of the first model as a query; what
  a perfect Wolof ASR would give the text tower.
- ``cascade (Whisper ...)``: Whisper greedy transcription of the clip (no language forced: Whisper has no Wolof,
  so it transcribes into whatever language it detects) through the same text side. Needs a Whisper folder
  (`wolofmrl.convert.ensure_backbone("whisper-base")` -> build/backbones/whisper-base); transcripts are cached.

Metrics (wolofmrl/metrics.py, same definitions as mteb's): nDCG@10, Recall@1, Recall@10, MRR@10 at every Matryoshka dim
of the first model. Writes strategies.md, strategies.json, strategies.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path

import numpy as np

EVAL_DIR = Path(__file__).resolve().parent
for _p in (EVAL_DIR, EVAL_DIR.parent):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from wolofmrl.metrics import score_matrix_metrics  # noqa: E402

METRICS = [("ndcg_at_10", "nDCG@10"), ("recall_at_1", "R@1"), ("recall_at_10", "R@10"), ("mrr_at_10", "MRR@10")]


def scores_by_dim(q_raw: np.ndarray, d_raw: np.ndarray, relevant: list[set[int]], dims: list[int]) -> dict:
    from wolofmrl.retrieval import prefix_normalize

    return {d: score_matrix_metrics(prefix_normalize(q_raw, d) @ prefix_normalize(d_raw, d).T, relevant,
                                    ks=(1, 10)) for d in dims}


def markdown(table: dict, dims: list[int], note: str) -> str:
    lines = [f"# Strategy comparison: speech -> text retrieval ({note})", "",
             "Scores x 100, same queries and corpus for every row.", ""]
    for key, name in METRICS:
        lines += [f"## {name}", "", "| strategy | " + " | ".join(str(d) for d in dims) + " |",
                  "|---|" + "---|" * len(dims)]
        for strat, by_dim in table.items():
            lines.append(f"| {strat} | " + " | ".join(f"{100 * by_dim[d][key]:.1f}" for d in dims) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(table: dict, dims: list[int], path: Path, note: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, (key, name) in zip(axes, [METRICS[0], METRICS[1]]):
        for strat, by_dim in table.items():
            ax.plot(dims, [100 * by_dim[d][key] for d in dims], "o-", label=strat)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("embedding dim (Matryoshka prefix)")
        ax.set_ylabel(f"{name} x 100")
        ax.set_title(textwrap.fill(f"{name} vs dim by strategy ({note})", 60), fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def strategy_table(models: dict[str, str], rset, out: str | Path, cascade: str | None = None,
                   cascade_language: str | None = None, note: str = "", topline: bool = True) -> dict:
    """Score each strategy on one retrieval set (queries with audio, a text corpus) at every Matryoshka dim of the
    first model; writes strategies.json / .md / .png to `out` and returns {strategy: {dim: metrics}}."""
    from analysis import relevant_indices
    from asr import cached_transcripts
    from wolofmrl_mteb import WolofMRLEmbedder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    relevant = relevant_indices(rset)
    docs = [d["text"] for d in rset.corpus]
    table, dims, first = {}, None, None
    for label, folder in models.items():
        emb = WolofMRLEmbedder(folder)
        if first is None:
            first, dims = emb, emb.matryoshka_dims
        q = emb.raw_audio([x["audio"] for x in rset.queries])
        table[f"{label} ({emb.config.strategy})"] = scores_by_dim(q, emb.raw_text(docs, "passage"), relevant, dims)
    d_first = first.raw_text(docs, "passage")
    if topline and rset.gold_text:
        gold = [rset.gold_text[x["id"]] for x in rset.queries]
        table["text topline (gold transcript)"] = scores_by_dim(first.raw_text(gold, "query"), d_first, relevant,
                                                                dims)
    if cascade:
        hyps = cached_transcripts(out / "cascade_transcripts.json", [x["audio"] for x in rset.queries], cascade,
                                  cascade_language)
        forced = f", language {cascade_language} forced" if cascade_language else ""
        table[f"cascade ({Path(cascade).name} greedy{forced} -> text)"] = scores_by_dim(
            first.raw_text(hyps, "query"), d_first, relevant, dims)
    (out / "strategies.json").write_text(json.dumps({"note": note, "dims": dims, "models": models,
                                                     "table": table}, indent=1))
    (out / "strategies.md").write_text(markdown(table, dims, note))
    plot(table, dims, out / "strategies.png", note)
    return table


def run(models: dict[str, str], data: str, out: str | Path, source: str = "offline", limit: int | None = None,
        cascade: str | None = None, cascade_language: str | None = None, note: str = "") -> dict:
    """The strategy table on the offline test split (`data`) or a Hub source's Wolof speech -> French text set."""
    import benchmark_data as bd

    if source == "offline":
        bench = bd.OfflineBenchmark(data, "test", limit)
        rset = bench.a2t()
        note = ", ".join(x for x in ("offline test split", bench.describe(), note) if x)
    else:
        rset = getattr(bd, f"{source}_a2t")(limit=limit)
        note = ", ".join(x for x in (source, note) if x)
    return strategy_table(models, rset, out, cascade, cascade_language, note)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True, help="label=folder (repeat); the first one's text side "
                                                                     "serves the topline and the cascade")
    p.add_argument("--data", default="data/offline")
    p.add_argument("--source", default="offline", choices=["offline", "fleurs", "kallaama"])
    p.add_argument("--out", default="results/strategies")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--cascade", default=None, help="a Whisper folder (e.g. build/backbones/whisper-base)")
    p.add_argument("--cascade-language", default=None, help="force a Whisper language (default: detect)")
    p.add_argument("--note", default="", help="added to titles (e.g. 'untrained adapters')")
    args = p.parse_args(argv)
    models = dict(m.split("=", 1) if "=" in m else (Path(m).name, m) for m in args.model)
    run(models, args.data, args.out, args.source, args.limit, args.cascade, args.cascade_language, args.note)
    print((Path(args.out) / "strategies.md").read_text())


if __name__ == "__main__":
    main()
