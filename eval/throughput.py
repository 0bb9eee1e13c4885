"""What a user gets vs what the model computes: French passages/s and speech clips/s, end to end beside the
forward-only ceiling of the same run, with MFU; optionally index build time and query latency (eval/speed_index.py).

    python eval/throughput.py --model checkpoints/wolofmrl-base --out docs/results/speed_h200.md      # GPU
    python eval/throughput.py --model M --device cpu --threads 2 --n-text 256 --n-speech 16          # 2 CPU threads
    ... --index-sizes 100000,1000000 --latency                                   # + index build, query latency

End to end = `wolofmrl.inference.encode_text(model, processor, list_of_str)` / `encode_speech(model, processor,
list_of_float32_arrays)` from Python objects, with the library's defaults (`batch_size=None`: sized for the
device; the CLI's and server's default too) and with the fixed batch sizes the CLI passed before; no environment
variable is set. Forward only = the same model on inputs already tokenised / log-mel already computed and on
the device (padded length buckets, packed sequences with each attention backend there is), nothing else timed.
Ratio = end to end / best forward only.

Inputs: passages of ~`--tokens` tokens joined from the real French sentences of train/data/speech_texts.jsonl.gz
(`fr_text`, 2048 distinct passages cycled), and SYNTHETIC clips (chirps + noise, not speech) of --clip-seconds
(jittered -10 %); speed depends on length, not content. MFU = useful FLOPs / (seconds x --peak-tflops), FLOPs
counted from the configs on real tokens only (padding is not useful work): per transformer layer over a sequence
of T tokens 2 T (4 h^2 + 2 h f) + 4 T^2 h (QKV/output projections, FFN, attention scores and values); speech adds
Whisper's two convolutions, the adapter and the fused pass through the text model (`speech_flops`). Default peak
989 TFLOPS = H200 dense bf16 (NVIDIA's datasheet); on CPU MFU is left out unless --peak-tflops is given.
"""

from __future__ import annotations

import argparse
import datetime
import gzip
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))

from processing_wolofmrl import whisper_log_mel  # noqa: E402
from wolofmrl.inference import (_collate_text, _packed_backend, _text_forward, auto_batches,  # noqa: E402
                                encode_speech, encode_text, fast_token_ids, length_batches, prepare_model)

TEXTS = ROOT / "train" / "data" / "speech_texts.jsonl.gz"


# --------------------------------------------------------------------------- inputs
def french_passages(tokenizer, n: int, tokens: int, pool: int = 2048, seed: int = 0) -> tuple[list[str], float]:
    """n passages of about `tokens` tokens (with the "passage: " prefix and special tokens), each joined from real
    French sentences (`fr_text` of train/data/speech_texts.jsonl.gz, shuffled); `pool` distinct ones, cycled.
    Returns them and their mean token count."""
    with gzip.open(TEXTS, "rt", encoding="utf-8") as f:
        sentences = sorted({r["fr_text"].strip() for r in map(json.loads, f) if r.get("fr_text")
                            and len(r["fr_text"]) >= 20})
    np.random.default_rng(seed).shuffle(sentences)
    counts = [len(x) - 2 for x in fast_token_ids(tokenizer, sentences, 10_000)]
    lead = len(fast_token_ids(tokenizer, ["passage: "], 64)[0])
    out, i = [], 0
    while len(out) < min(n, pool):
        parts, total = [], lead
        while total < tokens:
            parts.append(sentences[i % len(sentences)])
            total += counts[i % len(sentences)]
            i += 1
        out.append(" ".join(parts))
    out = [out[j % len(out)] for j in range(n)]
    mean = float(np.mean([len(x) for x in fast_token_ids(tokenizer, ["passage: " + t for t in out[:pool]], 512)]))
    return out, mean


def clips(n: int, seconds: float, rate: int = 16000) -> list[np.ndarray]:
    """SYNTHETIC clips: chirps + noise, `seconds` long each (lengths jittered by -10 %)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        t = np.arange(int(seconds * rate * rng.uniform(0.9, 1.0))) / rate
        out.append((0.3 * np.sin(2 * np.pi * (150 + 10 * (i % 30)) * t * (1 + 0.1 * t))
                    + 0.02 * rng.standard_normal(t.shape)).astype(np.float32))
    return out


# --------------------------------------------------------------------------- FLOPs
def layer_flops(seq: float, hidden: int, ffn: int) -> float:
    """FLOPs of one transformer layer over one sequence of `seq` tokens: 2 T (4 h^2 + 2 h f) + 4 T^2 h."""
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


# --------------------------------------------------------------------------- timing
def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, min_seconds: float, warmup: bool = True) -> float:
    """Seconds per call of fn (after one warm-up call), over calls lasting >= min_seconds in all."""
    if warmup:
        fn()
    sync(device)
    calls, start = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        sync(device)
        if time.perf_counter() - start >= min_seconds:
            return (time.perf_counter() - start) / calls


def row(rows, args, kind, path, config, items, seconds, flops_per_item, unit_scale, ceiling=None):
    per_s = items / seconds
    r = {"kind": kind, "path": path, "config": config, "items_per_s": round(per_s, 1),
         "per_item_unit": round(per_s * unit_scale, 1), "tflops": round(per_s * flops_per_item / 1e12, 3),
         "mfu": round(per_s * flops_per_item / (args.peak_tflops * 1e12), 4) if args.peak_tflops else None,
         "ratio": round(per_s / ceiling, 3) if ceiling else None}
    rows.append(r)
    print(json.dumps(r), flush=True)
    return per_s


# --------------------------------------------------------------------------- text and speech
def run_text(model, processor, args, device, rows):
    tok = processor.tokenizer
    texts, mean_tokens = french_passages(tok, args.n_text, args.tokens)
    flops = text_flops(model.config.text_config, mean_tokens) + 2 * model.config.embedding_dim ** 2
    ids = fast_token_ids(tok, processor.prefix(texts, "passage"), 512)
    lengths = [len(x) for x in ids]
    batch, budget = auto_batches(device, "text", args.max_tokens)
    size = f"{budget}-token batches" if budget else f"batches of {batch}"
    plans = [("padded buckets", f"{size}, pad to 8", False, None, batch, budget),
             ("padded to 128", "batch 1024 (the issue's ceiling)", False, 128, 1024, None)]
    packed_backend = _packed_backend(model, device, None, True)
    for backend in dict.fromkeys([packed_backend, "nested"] if device.type == "cuda" else [packed_backend]):
        plans.append((f"packed ({backend})", f"{size}, no padding", backend, None, batch, budget))
    best = 0.0
    for name, config, backend, pad_to, bsize, tokens in plans:
        try:
            order = length_batches(lengths, bsize, True, tokens)
            pad = pad_to or 8
            ready = []
            for idx in order:  # padded to a multiple of `pad` (128: every ~113-token passage pads to 128)
                b = _collate_text([ids[i] for i in idx], tok.pad_token_id, pad, bool(backend), False)
                ready.append({k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()})

            def fn(ready=ready, backend=backend):
                with torch.no_grad():
                    for b in ready:
                        _text_forward(model, b, device, None, backend or "padded")
            sec = timed(fn, device, args.min_seconds)
            best = max(best, row(rows, args, "text", f"forward only: {name}", config, len(texts), sec, flops,
                                 mean_tokens))
        except Exception as err:  # a kernel this device lacks: say so, keep going
            print(f"text forward only {name}: FAILED {type(err).__name__}: {err}", flush=True)
    for config, bsize in (("defaults (batch_size=None)", None), ("batch_size=64 (the CLI's until 2026-12-03)", 64)):
        sec = timed(lambda b=bsize: encode_text(model, processor, texts, batch_size=b, progress=False), device,
                    args.min_seconds)
        row(rows, args, "text", "end to end: list[str] -> embeddings", config, len(texts), sec, flops, mean_tokens,
            best)
    return texts, mean_tokens


def run_speech(model, processor, args, device, rows):
    waves = clips(args.n_speech, args.clip_seconds)
    mean_seconds = float(np.mean([len(w) for w in waves]) / 16000)
    flops = speech_flops(model, mean_seconds)
    batch, budget = auto_batches(device, "speech", args.max_seconds)
    lengths = [len(w) / 16000 for w in waves]
    weights = next(model.parameters()).dtype
    ready = []
    for idx in length_batches(lengths, batch, True, budget):
        feats = whisper_log_mel(processor.feature_extractor, [waves[i] for i in idx], device)
        ready.append({k: v.to(weights) if v.is_floating_point() else v for k, v in feats.items()})

    def fn():
        with torch.no_grad():
            for b in ready:
                model.get_speech_embeddings(**b)
    sec = timed(fn, device, args.min_seconds)
    best = row(rows, args, "speech", "forward only: log-mel on the device", f"{budget or batch} s/clips a batch",
               len(waves), sec, flops, mean_seconds)
    del ready
    for config, bsize in (("defaults (batch_size=None)", None), ("batch_size=16 (the CLI's until 2026-12-03)", 16)):
        sec = timed(lambda b=bsize: encode_speech(model, processor, waves, batch_size=b, progress=False), device,
                    args.min_seconds)
        row(rows, args, "speech", "end to end: float32 arrays -> embeddings", config, len(waves), sec, flops,
            mean_seconds, best)


# --------------------------------------------------------------------------- report
def environment(args, device) -> dict:
    import tokenizers
    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or 'x86'})"
    return {"device": name, "torch_threads": torch.get_num_threads(), "cpu_cores": __import__("os").cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "python": platform.python_version(), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                timespec="seconds"), "command": " ".join(["python"] + sys.argv), "model": args.model}


def report(env: dict, rows: list[dict], extra: list[str]) -> str:
    lines = [f"# WolofMRL embedding speed: {env['device']}", "",
             "Produced by `eval/throughput.py` (issue 20). Passages: real French sentences joined to ~113 tokens; "
             "speech: SYNTHETIC clips (chirps + noise). End to end starts from Python strings / float32 arrays; "
             "forward only starts from inputs already on the device. Ratio = end to end / best forward only.", "",
             "| " + " | ".join(f"{k}: {v}" for k, v in env.items() if k != "command") + " |", "",
             f"Command: `{env['command']}`", "",
             "| kind | path | config | items/s | tokens/s or x real time | TFLOPS | MFU | ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        unit = f"{r['per_item_unit']:,.0f} tok/s" if r["kind"] == "text" else f"{r['per_item_unit']:,.1f}x"
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "-"
        lines.append(f"| {r['kind']} | {r['path']} | {r['config']} | {r['items_per_s']:,.1f} | {unit} | "
                     f"{r['tflops']} | {mfu} | {r['ratio'] if r['ratio'] is not None else '-'} |")
    return "\n".join(lines + [""] + extra) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="checkpoints/wolofmrl-base")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (e.g. 2)")
    p.add_argument("--n-text", type=int, default=65536)
    p.add_argument("--tokens", type=int, default=113)
    p.add_argument("--n-speech", type=int, default=2048)
    p.add_argument("--clip-seconds", type=float, default=16.0)
    p.add_argument("--max-tokens", type=int, default=None, help="token budget of a text batch (default: auto)")
    p.add_argument("--max-seconds", type=float, default=None, help="audio budget of a speech batch (default: auto)")
    p.add_argument("--min-seconds", type=float, default=5.0)
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak; default 989 (H200) on CUDA")
    p.add_argument("--skip", default="", help="comma list of sections to skip: text,speech")
    p.add_argument("--index-sizes", default="", help="e.g. 100000,1000000: embed + FAISS build time")
    p.add_argument("--index-kinds", default="flat,ivf")
    p.add_argument("--latency", action="store_true", help="query latency (audio file -> top 10) vs Whisper cascade")
    p.add_argument("--latency-devices", default=None, help="default: cpu, plus cuda when --device is cuda")
    p.add_argument("--latency-runs", type=int, default=20)
    p.add_argument("--whisper", default=None, help="Whisper folder for the cascade (default build/backbones)")
    p.add_argument("--out", default=None, help="results file (.md; a .json beside it)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.peak_tflops is None and device.type == "cuda":
        args.peak_tflops = 989.0
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    model = prepare_model(AutoModel.from_pretrained(args.model, trust_remote_code=True), device=device)
    env = {**environment(args, device), "weights": str(next(model.parameters()).dtype)}
    print(json.dumps(env), flush=True)
    rows, extra, skip = [], [], set(args.skip.split(","))
    texts = None

    def section(name, fn):  # one section failing (a kernel, a missing package) leaves the others measured
        try:
            return fn()
        except Exception as err:
            import traceback

            traceback.print_exc()
            extra.append(f"**{name}: FAILED** `{type(err).__name__}: {str(err)[:300]}`")
    if "text" not in skip:
        texts = (section("text", lambda: run_text(model, processor, args, device, rows)) or (None,))[0]
    if "speech" not in skip:
        section("speech", lambda: run_speech(model, processor, args, device, rows))
    if args.index_sizes or args.latency:
        from speed_index import index_and_latency

        extra += section("index / latency", lambda: index_and_latency(model, processor, args, device, texts)) or []
    text = report(env, rows, extra)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps({"env": env, "rows": rows, "extra": extra},
                                                                  indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
