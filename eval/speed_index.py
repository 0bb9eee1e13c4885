"""eval/throughput.py's index sections: index build time (embedding + FAISS) and query latency (audio file -> top 10)
beside the Whisper-base cascade (transcribe -> embed the text query -> search), on each device asked for.

Index build = `wolofmrl.inference.encode_text` (the library's defaults, `batch_size=None`) over N passages (the
throughput run's French passages, cycled) + `wolofmrl.retrieval.FunnelIndex(coarse_dim=128, kind)` `.add`, what
`wolofmrl index` stores. Query latency: a SYNTHETIC 4 s clip (chirps + noise) written as a 16-bit WAV file, read
and decoded each time; median of --latency-runs after a warm-up. The cascade's Whisper is eval/asr.py's: real
Whisper-base weights when the folder has its decoder, else eval/asr.py's labelled COST MODEL (random weights, a
fixed number of greedy steps per second of audio); its text query is a fixed French question.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from wolofmrl.inference import encode_speech, encode_text, prepare_model
from wolofmrl.retrieval import FunnelIndex

QUESTION = "Quels sont les horaires d'ouverture du marché central le samedi ?"


def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def build_indexes(model, processor, passages: list[str], sizes: list[int], kinds: list[str], device,
                  lines: list[str]) -> FunnelIndex | None:
    """Embed + index N passages for each N; appends markdown rows to `lines`; returns the smallest flat index."""
    keep = None
    lines += ["", "## Index build (embedding + FAISS), `wolofmrl.inference` + `wolofmrl.retrieval.FunnelIndex`", "",
              "| passages | embed s | passages/s | index kind | FAISS build s | total s |", "|---|---|---|---|---|---|"]
    for n in sizes:
        corpus = [passages[i % len(passages)] for i in range(n)]
        _sync(device)
        start = time.perf_counter()
        emb = encode_text(model, processor, corpus, batch_size=None, progress=False).numpy()
        embed_s = time.perf_counter() - start
        for kind in kinds:
            start = time.perf_counter()
            index = FunnelIndex(emb.shape[1], coarse_dim=min(128, emb.shape[1]), kind=kind)
            index.add(emb)
            build_s = time.perf_counter() - start
            lines.append(f"| {n:,} | {embed_s:.1f} | {n / embed_s:,.0f} | {kind} | {build_s:.1f} | "
                         f"{embed_s + build_s:.1f} |")
            print(lines[-1], flush=True)
            if kind == "flat" and keep is None:
                keep = index
        del emb, corpus
    return keep


def _median_ms(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def latency(model, processor, index: FunnelIndex, devices: list[str], args, lines: list[str]):
    """Median ms from an audio file to the top 10 ids: WolofMRL (speech -> embedding -> search) vs the cascade."""
    import soundfile as sf
    from asr import load_whisper, transcribe
    from processing_wolofmrl import load_audio

    rng = np.random.default_rng(1)
    t = np.arange(4 * 16000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.1 * t)) + 0.02 * rng.standard_normal(t.shape)
    folder = Path(tempfile.mkdtemp())
    path = str(folder / "query_synthetic.wav")
    sf.write(path, wave.astype(np.float32), 16000, subtype="PCM_16")
    whisper_args = SimpleNamespace(whisper=args.whisper, asr_token_rate=None)
    asr, fe, _, whisper_folder, mode = load_whisper(whisper_args)
    lines += ["", f"## Query latency: audio file (SYNTHETIC 4 s WAV) -> top 10 of {len(index):,} passages "
              "(flat funnel index, coarse 128)", "", f"Cascade Whisper: {whisper_folder}, {mode}", "",
              "| device | WolofMRL ms | Whisper-base cascade ms | cascade / WolofMRL |", "|---|---|---|---|"]
    for dev in devices:
        dev = torch.device(dev)
        same = next(model.parameters()).device.type == dev.type
        here = model if same else prepare_model(copy.deepcopy(model).float(), device=dev)
        dtype = torch.bfloat16 if dev.type == "cuda" else None
        whisper = copy.deepcopy(asr).to(dev, dtype or torch.float32)

        def ours(m=here):
            emb = encode_speech(m, processor, [path], batch_size=1, progress=False)
            return index.search(emb.numpy(), k=10)

        def cascade(m=here, w=whisper, d=dev):
            clip = load_audio(path, None, 16000)
            transcribe(w, fe, [clip], 1, d, dtype, "fr", whisper_args.asr_token_rate)
            q = encode_text(m, processor, [QUESTION], text_kind="query", progress=False)
            return index.search(q.numpy(), k=10)
        a, b = _median_ms(ours, args.latency_runs), _median_ms(cascade, max(3, args.latency_runs // 3))
        lines.append(f"| {dev.type} ({torch.get_num_threads()} threads)" if dev.type == "cpu" else f"| {dev}")
        lines[-1] += f" | {a:.1f} | {b:.1f} | {b / a:.1f}x |"
        print(lines[-1], flush=True)
        del whisper


def index_and_latency(model, processor, args, device, texts) -> list[str]:
    """The optional sections of eval/throughput.py; returns markdown lines for its report."""
    from throughput import french_passages

    passages = texts[:2048] if texts else french_passages(processor.tokenizer, 2048, args.tokens)[0]
    sizes = [int(x) for x in args.index_sizes.split(",") if x.strip()]
    lines: list[str] = []
    index = build_indexes(model, processor, passages, sizes, [k for k in args.index_kinds.split(",") if k],
                          device, lines) if sizes else None
    if args.latency:
        if index is None:
            index = build_indexes(model, processor, passages, [10_000], ["flat"], device, lines)
        devices = (args.latency_devices or ("cpu,cuda" if device.type == "cuda" else "cpu")).split(",")
        latency(model, processor, index, devices, args, lines)
    return lines
