"""eval/bench.py's measurements: loading the two models, and timed rows of speech (beside Whisper) and text."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from asr import load_whisper, transcribe  # noqa: E402
from bench_env import PeakMemory, log, sync  # noqa: E402
from wolofmrl.inference import attention_implementations, encode_speech, encode_text  # noqa: E402

SR = 16000


def load_models(args):
    import transformers
    from transformers import AutoModel, AutoProcessor

    transformers.logging.set_verbosity_error()
    model = AutoModel.from_pretrained(args.model, trust_remote_code=True, attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    return (model, processor, *load_whisper(args))

def model_facts(model, asr) -> dict:
    build = Path(model.name_or_path) / "wolofmrl_build.json"
    info = json.loads(build.read_text()) if build.is_file() else {}
    delta = (info.get("args") or {}).get("delta")
    return {"strategy": model.config.strategy, "embedding_dim": model.config.embedding_dim,
            "matryoshka_dims": model.config.matryoshka_dims, "adapter_stride": model.config.adapter_stride,
            "speech_encoder": model.config.speech_config.model_type,
            "text_encoder": model.config.text_config.model_type,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "attention": attention_implementations(model),
            "whisper_attention": asr.config._attn_implementation,
            "whisper_params_M": round(sum(p.numel() for p in asr.parameters()) / 1e6, 1),
            "trained_delta": delta if delta not in (None, "none") else None}

def embed_speech_run(model, processor, clips, batch, device, dtype):
    return encode_speech(model, processor, clips, batch_size=batch, device=device, dtype=dtype, progress=False)

def timed_reps(fn, device: str, min_seconds: float, max_reps: int) -> list[float]:
    times = []
    while True:
        sync(device)
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
        if sum(times) >= min_seconds or len(times) >= max_reps:
            return times

def speech_rows(model, processor, asr, asr_fe, clips, plan, device, dtype, asr_opts, budget, reserve, label,
                dtype_name, min_seconds, max_reps):
    """One row per (batch, n_clips): embedding throughput, memory, and (where planned) Whisper on the same clips."""
    rows = []
    for batch, n, with_asr in plan:
        subset = clips[:n]
        audio_s = sum(len(c) for c in subset) / SR
        row = {"device": label, "dtype": dtype_name, "batch": batch, "clips": len(subset),
               "audio_s": round(audio_s, 1), "mean_clip_s": round(audio_s / len(subset), 2)}
        if budget.left() < reserve:
            row["skipped"] = "time budget"
            rows.append(row)
            continue
        with PeakMemory(device) as mem:
            times = timed_reps(lambda: embed_speech_run(model, processor, subset, batch, device, dtype), device,
                               min_seconds, max_reps)
        sec = float(np.median(times))
        row.update(embed_s=round(sec, 4), reps=len(times), clips_per_s=round(len(subset) / sec, 2),
                   audio_s_per_s=round(audio_s / sec, 1), x_real_time=round(audio_s / sec, 1),
                   peak_mem_mb=mem.peak_mb, peak_mem_above_start_mb=mem.above_start_mb)
        if with_asr and budget.left() > reserve:
            with PeakMemory(device) as amem:
                sync(device)
                t = time.perf_counter()
                stats = transcribe(asr, asr_fe, subset, batch, device, dtype, **asr_opts)
                sync(device)
                asr_sec = time.perf_counter() - t
            row.update(asr_s=round(asr_sec, 3), asr_clips_per_s=round(len(subset) / asr_sec, 3),
                       asr_x_real_time=round(audio_s / asr_sec, 2), asr_peak_mem_mb=amem.peak_mb,
                       asr_tokens_mean=stats["tokens_mean"], asr_hit_token_cap=stats["hit_cap"],
                       asr_samples=stats["samples"], asr_steps_per_batch=stats["steps_per_batch_mean"],
                       speedup_vs_asr=round(asr_sec / sec, 1))
        elif with_asr:
            row["asr_skipped"] = "time budget"
        log(f"speech {label[:24]} {dtype_name} b={batch} n={len(subset)}: {row.get('clips_per_s')} clips/s "
            f"({row.get('x_real_time')}x RT), whisper {row.get('asr_clips_per_s')} clips/s, "
            f"ratio {row.get('speedup_vs_asr')}, peak {row.get('peak_mem_mb')} MB")
        rows.append(row)
    return rows

def text_rows(model, processor, passages, plan, device, dtype, budget, reserve, label, dtype_name, min_seconds,
              max_reps):
    rows = []
    tok = processor.tokenizer
    for batch, n in plan:
        subset = [passages[i % len(passages)] for i in range(n)]
        row = {"device": label, "dtype": dtype_name, "batch": batch, "passages": n}
        if budget.left() < reserve:
            row["skipped"] = "time budget"
            rows.append(row)
            continue
        n_tok = [len(x) for x in tok(processor.prefix(subset, "passage"), truncation=True, max_length=512)["input_ids"]]
        with PeakMemory(device) as mem:
            times = timed_reps(lambda: encode_text(model, processor, subset, batch_size=batch, device=device,
                                                   dtype=dtype, progress=False), device, min_seconds, max_reps)
        sec = float(np.median(times))
        row.update(seconds=round(sec, 4), reps=len(times), passages_per_s=round(n / sec, 1),
                   tokens_per_s=round(sum(n_tok) / sec), mean_tokens=round(float(np.mean(n_tok)), 1),
                   peak_mem_mb=mem.peak_mb, peak_mem_above_start_mb=mem.above_start_mb)
        log(f"text {label[:24]} {dtype_name} b={batch}: {row['passages_per_s']} passages/s")
        rows.append(row)
    return rows
