"""python -m wolofmrl.convert [--all | NAME ...] [--root build/backbones] [--force]"""

from __future__ import annotations

import argparse
import sys
import time

from .backbones import BACKBONES, DEFAULT_ROOT, ensure_backbone, is_complete


def _size_mb(path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wolofmrl.convert", description=__doc__)
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"backbones to build: {', '.join(BACKBONES)}")
    parser.add_argument("--all", action="store_true", help="build every known backbone")
    parser.add_argument("--root", default=DEFAULT_ROOT, help="parent folder of the built backbones")
    parser.add_argument("--force", action="store_true", help="rebuild even if a finished folder exists")
    args = parser.parse_args(argv)

    names = list(BACKBONES) if args.all else args.names
    if not names:
        parser.error("name at least one backbone, or pass --all")
    for name in names:
        if name not in BACKBONES:
            parser.error(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}")

    for name in names:
        cached = not args.force and is_complete(f"{args.root}/{name}", name)
        if not cached:
            # transformers' per-shard "Writing model shards" bars would drown the summary lines.
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        start = time.perf_counter()
        path = ensure_backbone(name, args.root, force=args.force)
        seconds = time.perf_counter() - start
        status = "cached" if cached else "built"
        print(f"{name:24s} {status:6s} {seconds:7.1f} s {_size_mb(path):8.1f} MB  {path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
