"""python -m wolofmrl.curation --config train/configs/data/offline.yaml [--out DIR] [--limit N] [--workers N]"""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import time


def main(argv=None) -> int:
    from .config import load_config
    from .pipeline import STAGES, run

    ap = argparse.ArgumentParser(prog="python -m wolofmrl.curation", description="Build a WolofMRL speech–text corpus.")
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", help="output folder (default: the config's `out`)")
    ap.add_argument("--limit", type=int, help="at most N keys per source (quick runs)")
    ap.add_argument("--workers", type=int, help="voice stage processes (default: os.cpu_count())")
    ap.add_argument("--until", choices=STAGES, help="stop after this stage")
    ap.add_argument("--voice-sample", type=float, help="voice only this deterministic fraction of sentences")
    ap.add_argument("--fetch", action="store_true", help="first pull the config's Debian/npm packages (fetch:)")
    ap.add_argument("--stop-after-chunks", type=int, help=argparse.SUPPRESS)  # tests: a simulated kill
    args = ap.parse_args(argv)
    def on_term(signum, frame):  # `kill` behaves like Ctrl-C: the voice pool is shut down, chunks kept
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    cfg = load_config(args.config)
    if args.voice_sample is not None:
        cfg["voice"]["sample_fraction"] = args.voice_sample
    if args.fetch:
        from .fetch import fetch

        fetch(cfg)
    t0 = time.perf_counter()
    try:
        reports = run(cfg, out=args.out, limit=args.limit, workers=args.workers, until=args.until,
                      stop_after_chunks=args.stop_after_chunks)
    except KeyboardInterrupt as e:
        print(f"interrupted: {e}; rerun the same command to resume", file=sys.stderr)
        return 130
    summary = {n: {"kept": r["kept"], "dropped": r["dropped_total"], "seconds": r["seconds"]} for n, r in reports.items()}
    print(json.dumps({"stages": summary, "total_seconds": round(time.perf_counter() - t0, 1)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
