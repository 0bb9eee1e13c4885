"""Demo: spoken Wolof proverbs find their French text, at every Matryoshka dim.

    python -m wolofmrl.demo --model checkpoints/wolofmrl-base

The Wolof clips are synthesised at demo time (TTS voices, not Wolof speakers) from the proverbs that the
`wolof-nlp` package ships with French translations; the model is loaded with `AutoModel` exactly as a Hub user
would. Each clip is also heard in the benchmark's hard condition (`wolofmrl.augment.degrade(preset="hard")`:
speed, noise, room, telephone, codec, odd rate). The proverbs are also a source of the offline corpus, so some may
sit in its train split: the demo shows the model working, `eval/` measures it on held-out sentences and voices.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from modeling_wolofmrl import normalize_dim

from wolofmrl.metrics import score_matrix_metrics


def proverb_pairs(n: int | None = None) -> list[tuple[str, str]]:
    """(Wolof, French) proverb pairs from the `wolof-nlp` package."""
    from wolof_nlp.lexicon.proverbs import PROVERBS

    pairs = [(p.wolof, p.french) for p in PROVERBS if p.wolof and p.french]
    return pairs[:n] if n else pairs


def recall_at_1(speech: torch.Tensor, text: torch.Tensor, dim: int) -> float:
    """Recall@1 of query i finding passage i, both truncated to `dim` (wolofmrl/metrics.py)."""
    scores = (normalize_dim(speech, dim) @ normalize_dim(text, dim).T).numpy()
    return score_matrix_metrics(scores, [[i] for i in range(len(scores))], ks=(1,))["recall_at_1"]


def recorded_unseen_results(model_dir: str | Path, dim: int) -> list[str]:
    """The unseen-source results that `eval/run.py` recorded for this model, as printable lines, from the
    `model-index` of the folder's model card (README.md; the builder copies it from the delta's
    `model-index.yaml`): per task / source, R@1 / R@10 x 100 at `dim`, clean and hard. [] when the card has none.
    These are read, not re-measured (the benchmark takes ~20 min on 2 CPU cores)."""
    card = Path(model_dir) / "README.md"
    if not card.is_file():
        return []
    from huggingface_hub import ModelCard

    found: dict[tuple[str, str], dict[str, float]] = {}
    for r in ModelCard.load(card).data.eval_results or []:
        # eval/run.py's dataset config: <condition>/<source>/<task>
        condition, source = ((r.dataset_config or "").split("/") + ["", ""])[:2]
        if condition.startswith("unseen-") and (r.metric_args or {}).get("embed_dim") == dim \
                and r.metric_type in ("recall_at_1", "recall_at_10"):
            kind = condition.removeprefix("unseen-")  # clean / hard
            found.setdefault((r.task_name, source), {})[f"{kind} {r.metric_type}"] = r.metric_value
    lines = []
    for (task, source), m in sorted(found.items()):
        cells = [f"{m.get(f'{c} recall_at_1', float('nan')):5.1f} / {m.get(f'{c} recall_at_10', float('nan')):5.1f}"
                 for c in ("clean", "hard")]
        lines.append(f"  {task} ({source}):  clean {cells[0]}   hard {cells[1]}")
    return lines


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/wolofmrl-base")
    p.add_argument("--voice", default=None, help="a voice of wolofmrl.curation.voice.list_voices('wo')")
    p.add_argument("--n", type=int, default=None, help="number of proverbs (default: all)")
    p.add_argument("--show", type=int, default=5, help="queries whose ranking is printed")
    args = p.parse_args(argv)

    from transformers import AutoModel, AutoProcessor

    from wolofmrl.curation.voice import list_voices, synthesize

    model = AutoModel.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    build_info = Path(args.model) / "wolofmrl_build.json"
    delta = json.loads(build_info.read_text())["args"].get("delta") if build_info.is_file() else None
    label = f"trained adapter ({delta})" if delta else "UNTRAINED adapter (random speech side; text side is mE5)"

    pairs = proverb_pairs(args.n)
    voice = args.voice or list_voices("wo")[0]
    start = time.time()
    clips = [synthesize(wo, "wo", voice) for wo, _ in pairs]
    synth_s = time.time() - start
    french = [fr for _, fr in pairs]

    from wolofmrl.augment import degrade

    hard = [degrade(c, np.random.default_rng(i), preset="hard", others=clips[:i] + clips[i + 1:])[0]
            for i, c in enumerate(clips)]
    with torch.no_grad():
        start = time.time()
        speech = model.get_speech_embeddings(**processor(audio=clips, sampling_rate=16000))
        text = model.get_text_embeddings(**processor(text=french, text_kind="passage"))
        embed_s = time.time() - start
        speech_hard = model.get_speech_embeddings(**processor(audio=hard, sampling_rate=16000))
        wolof_text = model.get_text_embeddings(**processor(text=[wo for wo, _ in pairs], text_kind="query"))

    audio_s = sum(len(c) for c in clips) / 16000
    print(f"model: {args.model} — {label}")
    print(f"{len(pairs)} Wolof proverbs voiced by synthetic voice {voice!r} ({audio_s:.0f} s of audio, "
          f"synthesised in {synth_s:.1f} s); {len(french)} French passages; embedded in {embed_s:.1f} s\n")
    scores = speech @ text.T
    for i in range(min(args.show, len(pairs))):
        order = scores[i].argsort(descending=True)[:3].tolist()
        print(f"spoken: {pairs[i][0]!r}")
        for rank, j in enumerate(order, 1):
            mark = "✓" if j == i else " "
            print(f"   {rank}. {mark} {scores[i, j]:+.3f}  {french[j]}")
    print("\nRecall@1, spoken Wolof -> French text (synthetic speech: clean, and the hard condition's "
          "degradations); text topline: written Wolof -> French")
    print(f"{'dim':>5}  {'clean':>7}  {'hard':>7}  {'text topline':>12}")
    for dim in model.config.matryoshka_dims:
        print(f"{dim:>5}  {recall_at_1(speech, text, dim):>7.3f}  {recall_at_1(speech_hard, text, dim):>7.3f}  "
              f"{recall_at_1(wolof_text, text, dim):>12.3f}")
    print(f"(chance = {1 / len(pairs):.3f}; held-out test figures, clean and hard: README.md, docs/results/)")
    top = max(model.config.matryoshka_dims)
    recorded = recorded_unseen_results(args.model, top)
    if recorded:
        print(f"\nThe headline, sources training never saw (recorded by eval/run.py for this model, read from its "
              f"model card, not re-measured here; synthetic held-out voices): R@1 / R@10 x 100 at dim {top}")
        print("\n".join(recorded))


if __name__ == "__main__":
    main()
