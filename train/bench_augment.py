"""Throughput of the on-the-fly augmentation loader (decode + degrade + collate) without a model: clips/s that the
DataLoader workers can feed, to compare with the GPU's samples/s.

    python train/bench_augment.py --workers 14 --batches 20                      # synthetic 3 s signals (not speech)
    python train/bench_augment.py --corpus data/offline --workers 14 --batches 20   # the corpus' training clips
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "train"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from torch.utils.data import DataLoader  # noqa: E402

from train.speech_data import AugmentedSpeechPairs, speech_rows  # noqa: E402


def rows_for(corpus: str | None, n: int, seconds: float) -> list[dict]:
    """Training rows of `corpus`, or `n` synthetic signals of `seconds` (not speech)."""
    if corpus:
        from train.train import read_corpus

        return read_corpus(corpus, "train", audio=True)
    from wolofmrl.testing import synthetic_waves

    waves = synthetic_waves(n, seconds=(seconds, seconds), seed=0)
    return [dict(id=str(i), sentence_id=str(i), speech_lang="wo", wo_text="a", fr_text="b", audio=w.numpy()
                 if hasattr(w, "numpy") else w, sampling_rate=16000, duration_s=seconds, split="train")
            for i, w in enumerate(waves)]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--corpus")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--batches", type=int, default=10)
    p.add_argument("--seconds", type=float, default=3.0, help="synthetic clip length")
    p.add_argument("--prob", type=float, default=0.8)
    p.add_argument("--preset", default="train")
    args = p.parse_args(argv)
    rows = speech_rows(rows_for(args.corpus, args.batch_size * args.batches, args.seconds), ["wo", "fr"], 30.0,
                       "auto", lambda _: None)
    data = AugmentedSpeechPairs(rows, {"preset": args.preset, "prob": args.prob, "babble": 3}, 0, 30.0)
    keys = [[(i, 0) for i in range(s, min(s + args.batch_size, len(rows)))]
            for s in range(0, len(rows), args.batch_size)][: args.batches]
    loader = DataLoader(data, batch_sampler=keys, num_workers=args.workers, collate_fn=lambda items: items)
    start, clips, audio_s = time.perf_counter(), 0, 0.0
    for batch in loader:
        clips += len(batch)
        audio_s += sum(len(it["wave"]) for it in batch) / 16000
    seconds = time.perf_counter() - start
    out = {"workers": args.workers, "clips": clips, "clips_per_s": clips / seconds,
           "audio_seconds_per_s": audio_s / seconds, "preset": args.preset, "prob": args.prob,
           "data": args.corpus or f"synthetic {args.seconds}s signals (not speech)"}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
