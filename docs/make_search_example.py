"""Regenerate docs/search_example.png: the README's "search your documents by voice" commands, run for real.

    .venv/bin/python docs/make_search_example.py --model checkpoints/wolofmrl-base

Runs `wolofmrl index docs/example/french --out <tmp>/my_index` and `wolofmrl search <tmp>/my_index
docs/example/question_wo.ogg` (a SYNTHETIC espeak-ng voice reading the Wolof proverb "Loxo benn du taar"), keeps
what the terminal shows (the commands and the search output), and draws it as a terminal-like PNG with matplotlib.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent


def run(args: list[str]) -> str:
    out = subprocess.run([sys.executable, "-m", "wolofmrl.cli", *args], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return out.stdout


def render(text: str, path: Path):
    """Monospace text on a dark background, sized to the text."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = text.rstrip("\n").split("\n")
    width = max(len(line) for line in lines)
    fig = plt.figure(figsize=(0.085 * width + 0.4, 0.2 * len(lines) + 0.4), dpi=150)
    fig.patch.set_facecolor("#1e1e1e")
    for i, line in enumerate(lines):
        color = "#8ae234" if line.startswith("$") else "#d3d7cf"
        fig.text(0.02, 1 - (i + 1) / (len(lines) + 1), line, family="DejaVu Sans Mono", fontsize=9, color=color,
                 va="center")
    fig.savefig(path, facecolor=fig.get_facecolor())
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/wolofmrl-base")
    p.add_argument("--k", type=int, default=3)
    p.add_argument("--out", default=str(DOCS / "search_example.png"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        index = Path(tmp) / "my_index"
        indexed = run(["index", "docs/example/french", "--out", str(index), "--model", args.model])
        shown = run(["search", str(index), "docs/example/question_wo.ogg", "--k", str(args.k)])
        text = ("$ wolofmrl index docs/example/french --out my_index\n" + indexed +
                f"$ wolofmrl search my_index docs/example/question_wo.ogg --k {args.k}\n" + shown)
        text = text.replace(str(index), "my_index").replace(str(ROOT) + "/", "")
    (Path(args.out).with_suffix(".txt")).write_text(text)
    render(text, Path(args.out))
    print(text)


if __name__ == "__main__":
    main()
