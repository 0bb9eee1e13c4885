"""Keep the better of several runs by dev score and copy its delta folder (delta.safetensors,
config_overrides.json, training.json) to where the next stage or the builder reads it.

    python train/choose.py --runs runs/text_stage runs/text_stage_lora --out weights/wolofmrl-text

Each run folder holds result.json (its `dev_score`: the mean of the dev metrics keep-best compares) and delta/.
Writes choice.json beside the copied delta: every candidate's score, their mean and sample std (seeds), the one kept.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path


def dev_scores(runs: list[str]) -> dict[str, float]:
    """{run folder: dev_score from its result.json}.

    Raises:
        FileNotFoundError: a run without result.json or delta/delta.safetensors (not finished).
        KeyError: a result.json without dev_score (written before choose existed: rerun the run)."""
    scores = {}
    for run in runs:
        result, delta = Path(run) / "result.json", Path(run) / "delta" / "delta.safetensors"
        for path in (result, delta):
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run {run} has not finished (train it first)")
        data = json.loads(result.read_text())
        if "dev_score" not in data:
            raise KeyError(f"{result} has no dev_score; rerun {run} with this version of train/train.py")
        scores[run] = float(data["dev_score"])
    return scores


def choose(runs: list[str], out: str | Path) -> str:
    """Copy the delta of the run with the highest dev score to `out`; returns that run."""
    scores = dev_scores(runs)
    best = max(scores, key=scores.get)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(Path(best) / "delta", out)
    values = list(scores.values())
    spread = {"mean": sum(values) / len(values),
              "std": (sum((v - sum(values) / len(values)) ** 2 for v in values) / max(len(values) - 1, 1)) ** 0.5}
    (out / "choice.json").write_text(json.dumps({"kept": best, "dev_scores": scores, **spread}, indent=1) + "\n")
    return best


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders (output_dir of train/train.py)")
    p.add_argument("--out", required=True, help="folder that receives the kept delta")
    args = p.parse_args(argv)
    best = choose(args.runs, args.out)
    print(f"kept {best} -> {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
