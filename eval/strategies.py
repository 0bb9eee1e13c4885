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

Metrics (eval/metrics.py, same definitions as mteb's): nDCG@10, Recall@1, Recall@10, MRR@10 at every Matryoshka dim
of the first model. Writes strategies.md, strategies.json, strategies.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

EVAL_DIR = Path(__file__).resolve().parent
if str(EVAL_DIR) not in sys.path:
    sys.path.insert(0, str(EVAL_DIR))

from metrics import score_matrix_metrics  # noqa: E402

METRICS = [("ndcg_at_10", "nDCG@10"), ("recall_at_1", "R@1"), ("recall_at_10", "R@10"), ("mrr_at_10", "MRR@10")]


def scores_by_dim(q_raw: np.ndarray, d_raw: np.ndarray, relevant: list[set[int]], dims: list[int]) -> dict:
    from wolofmrl_mteb import truncate_normalize

    return {d: score_matrix_metrics(truncate_normalize(q_raw, d) @ truncate_normalize(d_raw, d).T, relevant,
                                    ks=(1, 10)) for d in dims}


def whisper_transcribe(whisper_dir: str | Path, clips: list[dict], language: str | None = None,
                       batch_size: int = 8, max_new_tokens: int = 96) -> list[str]:
    """Greedy Whisper transcripts of {"array", "sampling_rate"} clips (resampled to 16 kHz)."""
    import torch
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    sys.path.insert(0, str(EVAL_DIR.parent))
    from processing_wolofmrl import resample  # the model package's own resampler

    proc = WhisperProcessor.from_pretrained(str(whisper_dir))
    model = WhisperForConditionalGeneration.from_pretrained(str(whisper_dir)).eval()
    waves = [resample(np.asarray(c["array"], dtype=np.float32), int(c["sampling_rate"]), 16000) for c in clips]
    out = []
    with torch.inference_mode():
        for i in range(0, len(waves), batch_size):
            feats = proc(waves[i:i + batch_size], sampling_rate=16000, return_tensors="pt", return_attention_mask=True)
            gen = model.generate(feats.input_features, attention_mask=feats.attention_mask, num_beams=1,
                                 do_sample=False, max_new_tokens=max_new_tokens, task="transcribe",
                                 **({"language": language} if language else {}))
            out += [t.strip() for t in proc.batch_decode(gen, skip_special_tokens=True)]
    return out


def cached_transcripts(path: Path, rset, whisper_dir, language) -> list[str]:
    """Transcripts keyed by Whisper folder + language, then by the clip's content hash (not its id)."""
    from wolofmrl_mteb import _audio_key

    cache = json.loads(path.read_text()) if path.is_file() else {}
    have = cache.setdefault(f"{Path(whisper_dir).resolve()}|{language}", {})
    keys = [_audio_key(q["audio"]) for q in rset.queries]
    todo = [(k, q) for k, q in zip(keys, rset.queries) if k not in have]
    if todo:
        t = time.time()
        for (k, _), text in zip(todo, whisper_transcribe(whisper_dir, [q["audio"] for _, q in todo], language)):
            have[k] = text
        print(f"transcribed {len(todo)} clips with {whisper_dir} in {time.time() - t:.0f} s")
        path.write_text(json.dumps(cache, ensure_ascii=False, indent=0))
    return [have[k] for k in keys]


def markdown(table: dict, dims: list[int], note: str) -> str:
    lines = [f"# Strategy comparison: Wolof speech -> French text ({note})", "",
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


def run(models: dict[str, str], data: str, out: str | Path, source: str = "offline", limit: int | None = None,
        cascade: str | None = None, cascade_language: str | None = None, note: str = "") -> dict:
    import benchmark_data as bd
    from analysis import relevant_indices
    from wolofmrl_mteb import WolofMRLEmbedder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if source == "offline":
        bench = bd.OfflineBenchmark(data, "test", limit)
        rset = bench.a2t()
        note = ", ".join(x for x in ("offline test split", bench.describe(), note) if x)
    else:
        rset = getattr(bd, f"{source}_a2t")(limit=limit)
        note = ", ".join(x for x in (source, note) if x)
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
    if rset.gold_text:
        gold = [rset.gold_text[x["id"]] for x in rset.queries]
        table["text topline (gold wo_text)"] = scores_by_dim(first.raw_text(gold, "query"), d_first, relevant, dims)
    if cascade:
        hyps = cached_transcripts(out / "cascade_transcripts.json", rset, cascade, cascade_language)
        table[f"cascade ({Path(cascade).name} greedy -> text)"] = scores_by_dim(
            first.raw_text(hyps, "query"), d_first, relevant, dims)
    (out / "strategies.json").write_text(json.dumps({"note": note, "dims": dims, "models": models,
                                                     "table": table}, indent=1))
    (out / "strategies.md").write_text(markdown(table, dims, note))
    plot(table, dims, out / "strategies.png", note)
    return table


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
