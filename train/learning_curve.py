"""Learning curves from training logs: dev Recall@10 against optimizer steps and against hours of audio seen.

    python train/learning_curve.py runs/reading/*_s0 --out docs/results/reading/learning_curve
    -> learning_curve.png (two panels) + learning_curve.md (one row per dev evaluation)

Reads each run's log.jsonl `eval` lines (`step`, `hours_seen`, the dev metrics). The metric defaults to the first
one the logs hold of: unseen-source hard, unseen-source clean, hard, clean (Wolof speech -> French, Recall@10 at
--dim). An evaluation without `hours_seen` (older logs) appears in the steps panel only. Speech is synthetic.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

PREFERRED = ("speech2fr_unseen_hard", "speech2fr_unseen", "speech2fr_hard", "speech2fr")


def read_curve(run: Path) -> list[dict]:
    """The `eval` lines of `run`/log.jsonl, in order (a resumed run's repeated steps: the last line wins)."""
    by_step = {}
    for line in open(run / "log.jsonl"):
        record = json.loads(line)
        if record.get("event") == "eval":
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def pick_metric(curves: dict[str, list[dict]], dim: int | None, metric: str | None) -> str:
    """`<task>/R@10/<dim>`: `metric` as given, else the first of PREFERRED present in every run's evaluations.

    Raises:
        ValueError: no run holds that metric (named, with the ones they hold)."""
    held = [{k for e in curve for k in e} for curve in curves.values() if curve]
    if dim is None and held:  # the widest dim the logs hold
        dim = max((int(k.rsplit("/", 1)[1]) for k in held[0] if "/R@10/" in k), default=384)
    if metric is None:
        metric = next((f"{t}/R@10/{dim}" for t in PREFERRED if held and all(f"{t}/R@10/{dim}" in h for h in held)),
                      f"speech2fr/R@10/{dim}")
    if not held or not all(metric in h for h in held):
        raise ValueError(f"metric {metric!r} is not in every run's eval lines; they hold "
                         f"{sorted(set().union(*held)) if held else 'no eval line'}")
    return metric


def table(curves: dict[str, list[dict]], metric: str) -> str:
    lines = [f"| run | step | hours of audio seen | {metric} | CER (dev, per language) |", "|---|---|---|---|---|"]
    for name, curve in curves.items():
        for e in curve:
            cer = ", ".join(f"{k[8:]} {e[k]:.3f}" for k in sorted(e) if k.startswith("dev/cer_")) or "-"
            hours = "-" if e.get("hours_seen") is None else f"{e['hours_seen']:.2f}"
            lines.append(f"| {name} | {e['step']} | {hours} | {e[metric]:.4f} | {cer} |")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, list[dict]], metric: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name, curve in curves.items():
        axes[0].plot([e["step"] for e in curve], [e[metric] for e in curve], marker="o", label=name)
        timed = [e for e in curve if e.get("hours_seen") is not None]
        axes[1].plot([e["hours_seen"] for e in timed], [e[metric] for e in timed], marker="o", label=name)
    axes[0].set_xlabel("optimizer steps")
    axes[1].set_xlabel("hours of (synthetic) audio seen")
    axes[0].set_ylabel(metric)
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("dev learning curve (synthetic speech)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders holding log.jsonl")
    p.add_argument("--out", required=True, help="path stem: writes <out>.png and <out>.md")
    p.add_argument("--dim", type=int, help="Matryoshka dim (default: the widest the logs hold)")
    p.add_argument("--metric", help="a full metric name, e.g. speech2fr_unseen_hard/R@10/384")
    args = p.parse_args(argv)
    curves = {Path(r).name: read_curve(Path(r)) for r in args.runs}
    empty = [n for n, c in curves.items() if not c]
    if empty:
        print(f"[learning_curve] no eval line in {empty}; left out", file=sys.stderr)
    curves = {n: c for n, c in curves.items() if c}
    metric = pick_metric(curves, args.dim, args.metric)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot(curves, metric, out.with_suffix(".png"))
    out.with_suffix(".md").write_text(f"Dev {metric} (synthetic speech) by step and hours of audio seen.\n\n"
                                      + table(curves, metric))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.md')} ({metric})")


if __name__ == "__main__":
    main()
