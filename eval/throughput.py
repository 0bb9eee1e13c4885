"""Embedding throughput on one GPU: French passages/s and speech clips/s, with MFU, for the wolofmrl.inference knobs.

    python eval/throughput.py --model checkpoints/wolofmrl-base                   # on the GPU machine
    python eval/throughput.py --model M --device cpu --threads 2 --quick         # smoke run

Inputs are SYNTHETIC stand-ins of the right size (throughput depends on length, not content): passages of
~`--tokens` tokens made of French sentences, and `--clip-seconds` clips of tone chirps + noise (not speech).
Each configuration (weights dtype, autocast, batch / token budget, torch.compile) is timed after a warm-up for at
least `--min-seconds`. MFU = model FLOPs / (seconds x `--peak-tflops`), with FLOPs counted from the configs:
per token per layer 2 (4 h^2 + 2 h f) + 4 s h (attention), the Whisper convolutions, the adapter, and for speech
the fused pass through the text model; default peak 989 TFLOPS = H200 dense bf16. Prints one table (markdown) and
writes --out JSON if given. Needs only torch + transformers (no FAISS, no audio files).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wolofmrl.inference import encode_speech, encode_text, prepare_model  # noqa: E402

FRENCH = ["Le conseil municipal se réunira jeudi pour discuter du budget de l'école.",
          "Les pluies de la saison ont rempli les puits du village plus tôt que prévu.",
          "Le marché central ouvre à huit heures et ferme avant la prière du soir.",
          "Les agriculteurs vendent leurs arachides à la coopérative au prix fixé cette année."]


def passages(tokenizer, n: int, tokens: int) -> tuple[list[str], float]:
    """n passages of about `tokens` tokens (sentences cycled and joined); returns them and the mean token count."""
    out, i = [], 0
    for _ in range(n):
        text = ""
        while len(text) < 8 * tokens and len(tokenizer(text)["input_ids"]) < tokens:
            text += FRENCH[i % len(FRENCH)] + " "
            i += 1
        out.append(text.strip())
    mean = float(np.mean([len(x) for x in tokenizer(out[:64])["input_ids"]]))
    return out, mean


def clips(n: int, seconds: float, rate: int = 16000) -> list[np.ndarray]:
    """SYNTHETIC clips: chirps + noise, `seconds` long each (lengths jittered by +-10 %)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = np.arange(int(seconds * rate * rng.uniform(0.9, 1.0))) / rate
        out.append((0.3 * np.sin(2 * np.pi * (150 + 10 * (i % 30)) * t * (1 + 0.1 * t))
                    + 0.02 * rng.standard_normal(t.shape)).astype(np.float32))
    return out


def layer_flops(seq: float, hidden: int, ffn: int) -> float:
    """FLOPs of one transformer layer over one sequence of `seq` tokens."""
    return seq * 2 * (4 * hidden * hidden + 2 * hidden * ffn) + 4 * seq * seq * hidden


def text_flops(cfg, seq: float) -> float:
    return cfg.num_hidden_layers * layer_flops(seq, cfg.hidden_size, cfg.intermediate_size)


def speech_flops(model, seconds: float) -> float:
    """FLOPs of one clip: Whisper convs + encoder, adapter, fused text pass."""
    sc, tc, cfg = model.config.speech_config, model.config.text_config, model.config
    mel = 100 * seconds
    frames = mel / 2
    d = sc.d_model
    convs = 2 * mel * 3 * sc.num_mel_bins * d + 2 * frames * 3 * d * d
    encoder = sc.encoder_layers * layer_flops(frames, d, sc.encoder_ffn_dim)
    layers = len(model.speech_layers)
    tokens = frames / cfg.adapter_stride
    adapter = 2 * frames * d * layers * tc.hidden_size + 2 * tokens * cfg.adapter_stride * tc.hidden_size ** 2
    fused = len(cfg.fusion_prefix_ids) + cfg.num_prompt_tokens + tokens + len(cfg.fusion_suffix_ids)
    return convs + encoder + adapter + (text_flops(tc, fused) if cfg.strategy == "fusion" else 0)


def timed(fn, device: str, min_seconds: float) -> float:
    """Seconds per call of fn (after a warm-up call), over calls lasting >= min_seconds in all."""
    fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync(device)
        if time.perf_counter() - start >= min_seconds:
            return (time.perf_counter() - start) / calls


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


PLANS = {  # name: (weights dtype, autocast dtype, batch size, budget (tokens | seconds) or None, compile)
    "text": [("fp32, batch 64 (old bench)", None, None, 64, None, False),
             ("bf16 autocast, batch 256", None, torch.bfloat16, 256, None, False),
             ("bf16 weights, batch 1024", torch.bfloat16, None, 1024, None, False),
             ("bf16 weights, 64k-token batches", torch.bfloat16, None, 4096, 65536, False),
             ("bf16 weights, 64k tokens + compile", torch.bfloat16, None, 4096, 65536, True)],
    "speech": [("bf16 autocast, batch 64 (old bench)", None, torch.bfloat16, 64, None, False),
               ("bf16 weights, batch 256", torch.bfloat16, None, 256, None, False),
               ("bf16 weights, 4096-s batches", torch.bfloat16, None, 1024, 4096.0, False),
               ("bf16 weights, 4096 s + compile", torch.bfloat16, None, 1024, 4096.0, True)],
}


def run(args) -> list[dict]:
    from transformers import AutoModel, AutoProcessor

    torch.set_num_threads(args.threads) if args.threads else None
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    texts, mean_tokens = passages(processor.tokenizer, args.n_text, args.tokens)
    waves = clips(args.n_speech, args.clip_seconds)
    mean_seconds = float(np.mean([len(w) for w in waves]) / 16000)
    rows = []
    for kind, plan in PLANS.items():
        for name, weights, autocast, batch, budget, compile_ in plan:
            if args.quick:
                batch, budget = min(batch, 8), None
            if compile_ and args.no_compile:
                continue
            model = AutoModel.from_pretrained(args.model, trust_remote_code=True)
            prepare_model(model, device=args.device, compile=compile_, weights_dtype=weights)
            if kind == "text":
                fn = lambda: encode_text(model, processor, texts, batch_size=batch, dtype=autocast, progress=False,  # noqa: E731
                                         max_tokens=budget)
                items, flops = len(texts), text_flops(model.config.text_config, mean_tokens)
            else:
                fn = lambda: encode_speech(model, processor, waves, batch_size=batch, dtype=autocast,  # noqa: E731
                                           progress=False, max_seconds=budget)
                items, flops = len(waves), speech_flops(model, mean_seconds)
            seconds = timed(fn, args.device, args.min_seconds)
            per_s = items / seconds
            rows.append({"kind": kind, "config": name, "items_per_s": round(per_s, 1),
                         "tokens_per_s": round(per_s * mean_tokens) if kind == "text" else None,
                         "x_real_time": round(per_s * mean_seconds, 1) if kind == "speech" else None,
                         "tflops": round(per_s * flops / 1e12, 2),
                         "mfu": round(per_s * flops / (args.peak_tflops * 1e12), 4),
                         "mean_tokens": round(mean_tokens, 1), "mean_clip_s": round(mean_seconds, 2)})
            print(json.dumps(rows[-1]), flush=True)
            del model
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/wolofmrl-base")
    p.add_argument("--device", default="cuda")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--n-text", type=int, default=16384)
    p.add_argument("--tokens", type=int, default=100)
    p.add_argument("--n-speech", type=int, default=2048)
    p.add_argument("--clip-seconds", type=float, default=16.0)
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H200: 989)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--quick", action="store_true", help="small batches, no budgets (a CPU smoke run)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"cpu x{args.threads}"
    rows = run(args)
    print(f"\n| {device_name} | config | items/s | tokens/s or x real time | TFLOPS | MFU |\n|---|---|---|---|---|---|")
    for r in rows:
        extra = r["tokens_per_s"] if r["kind"] == "text" else f"{r['x_real_time']}x"
        print(f"| {r['kind']} | {r['config']} | {r['items_per_s']:,} | {extra} | {r['tflops']} | "
              f"{100 * r['mfu']:.1f} % |")
    if args.out:
        Path(args.out).write_text(json.dumps({"device": device_name, "torch": torch.__version__, "rows": rows},
                                             indent=1))


if __name__ == "__main__":
    main()
