"""Batched, length-sorted inference for many clips or passages.

    from wolofmrl.inference import encode_speech, encode_text, prepare_model
    model = prepare_model(model, device="cuda", compile=False)      # SDPA attention, eval mode, on the device
    q = encode_speech(model, processor, clips, batch_size=64, dim=128, dtype=torch.bfloat16)   # (N, 128) fp32 CPU
    d = encode_text(model, processor, passages, batch_size=256, dim=128, dtype=torch.bfloat16)

What makes it fast, and why it gives the same embeddings as calling the model batch by batch:

- Items are sorted by length and batched in that order, so a batch pads to its own longest clip (never to 30 s:
  the model keeps each clip's length) or its longest passage; results come back in the caller's order.
- Whisper log-mel features are computed batched on the model's device (one STFT + one mel matmul per batch)
  instead of clip by clip on the CPU. Each clip is reflect-padded on its own before the STFT, so its frames equal
  the processor's (`WolofMRLProcessor._features`) up to float rounding; frames past a clip's end are zero and
  masked, as the processor makes them.
- Attention runs through PyTorch SDPA where the backbone supports it (`prepare_model` checks and reports).
- `dtype=torch.bfloat16` (or float16) runs under `torch.autocast`; embeddings are returned in float32.
- `prepare_model(weights_dtype=torch.bfloat16)` casts the weights themselves (less memory traffic than autocast).
- `max_tokens` / `max_seconds` batch by padded size instead of item count, so short items fill large batches.
- `compile=True` compiles the speech tower and the text model in place (`nn.Module.compile`, dynamic shapes), so
  state-dict keys do not change. The first batches pay the compilation.

The model is never padded to 30 s and nothing here changes it beyond device, eval mode, attention implementation
and (optionally) compilation.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch

from processing_wolofmrl import audio_windows, whisper_log_mel

__all__ = ["encode_speech", "encode_text", "prepare_model", "attention_implementations", "clip_seconds",
           "whisper_features", "length_batches"]


# --------------------------------------------------------------------------- model set-up
def attention_implementations(model) -> dict[str, str]:
    """The attention implementation each tower runs with, e.g. {"speech": "sdpa", "text": "sdpa"}."""
    out = {}
    for name, module in (("speech", getattr(model.speech_tower, "encoder", None)), ("text", model.text_model)):
        config = getattr(module, "config", None)
        out[name] = getattr(config, "_attn_implementation", None) or "unknown"
    return out


def _set_sdpa(module) -> bool:
    """Switch one backbone to SDPA attention if it supports it; True when it runs SDPA afterwards."""
    config = getattr(module, "config", None)
    if config is None:
        return False
    if getattr(config, "_attn_implementation", None) == "sdpa":
        return True
    if not getattr(module, "_supports_sdpa", False):
        return False
    setter = getattr(module, "set_attn_implementation", None)
    try:
        if setter is not None:
            setter("sdpa")
        else:
            config._attn_implementation = "sdpa"
    except (ValueError, ImportError, AttributeError):
        return False
    return getattr(config, "_attn_implementation", None) == "sdpa"


def prepare_model(model, device: str | torch.device | None = None, compile: bool = False,
                  attn_implementation: str | None = "sdpa", weights_dtype: torch.dtype | None = None):
    """Put `model` on `device` in eval mode, with SDPA attention where the backbones support it; optionally compile.

    weights_dtype: cast the weights (e.g. torch.bfloat16: half the memory traffic, no autocast casts per call);
    embeddings still come back float32. Returns the same model object (changed in place);
    `model.wolofmrl_inference` records what was done.
    """
    if device is not None:
        model.to(device)
    if weights_dtype is not None:
        model.to(weights_dtype)
    model.eval()
    if attn_implementation == "sdpa":
        for module in (getattr(model.speech_tower, "encoder", None), model.text_model):
            if module is not None:
                _set_sdpa(module)
    compiled = bool(getattr(model, "wolofmrl_inference", {}).get("compiled"))
    if compile and not compiled:
        # in place: keeps parameter names (no `_orig_mod.` prefix) so deltas and state dicts still match
        model.speech_tower.compile(dynamic=True)
        model.text_model.compile(dynamic=True)
        compiled = True
    model.wolofmrl_inference = {"attention": attention_implementations(model), "compiled": compiled,
                                "device": str(next(model.parameters()).device),
                                "weights_dtype": str(next(model.parameters()).dtype)}
    return model


# --------------------------------------------------------------------------- helpers
def clip_seconds(item, sampling_rate: int | None) -> float:
    """Duration of one audio item (array, tensor, list of floats, `{"array", "sampling_rate"}` or file path)."""
    if isinstance(item, dict):
        return clip_seconds(item["array"], item.get("sampling_rate", sampling_rate))
    if isinstance(item, (str, os.PathLike)):
        import soundfile as sf

        return float(sf.info(os.fspath(item)).duration)
    shape = tuple(item.shape) if hasattr(item, "shape") else (len(item),)
    samples = max(shape) if len(shape) == 2 else shape[-1]  # (channels, samples) or (samples, channels)
    return samples / float(sampling_rate or 16000)


def length_batches(lengths: Sequence[float], batch_size: int, sort_by_length: bool = True,
                   max_tokens: float | None = None) -> list[list[int]]:
    """Indices grouped into batches; longest first when sorted (an out-of-memory shows up on the first batch).

    max_tokens: a padded-size budget per batch (items x longest item, in the units of `lengths`): a batch holds at
    most `batch_size` items and at most max_tokens // longest, so batches of long items are smaller and every batch
    does about the same work (set batch_size large to let short items fill big batches). Needs sort_by_length.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if max_tokens is not None and (max_tokens <= 0 or not sort_by_length):
        raise ValueError(f"max_tokens must be > 0 and needs sort_by_length=True, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i]) if sort_by_length else list(range(len(lengths)))
    if max_tokens is None:
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    batches, start = [], 0
    while start < len(order):
        longest = max(lengths[order[start]], 1e-9)
        size = int(max(1, min(batch_size, max_tokens // longest)))
        batches.append(order[start:start + size])
        start += size
    return batches


def _device_of(model, device) -> torch.device:
    device = torch.device(device) if device is not None else next(model.parameters()).device
    if device.type == "cuda" and device.index is None:  # "cuda" and "cuda:0" must compare equal below
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def _autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision (if asked) and, on CUDA, SDPA kernels that need no per-shape plan.

    cuDNN attention builds a plan for every new input shape; length-sorted batches change shape on every call, so
    on GPU the forward passes here use flash / memory-efficient attention (math as the last resort) instead.
    """
    stack = contextlib.ExitStack()
    if device.type == "cuda":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                                         SDPBackend.MATH]))
    if dtype is not None and dtype != torch.float32:
        stack.enter_context(torch.autocast(device_type=device.type, dtype=dtype))
    return stack


def _progress(total: int, unit: str, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, unit=unit, disable=not enabled, desc=desc, dynamic_ncols=True)


# --------------------------------------------------------------------------- Whisper features on the device
# The one Whisper feature path lives with the processor (batched STFT on any device, own-length, even frame count).
whisper_features = whisper_log_mel


def _is_whisper_fe(processor) -> bool:
    return type(processor.feature_extractor).__name__ == "WhisperFeatureExtractor"


# --------------------------------------------------------------------------- public encoders
@torch.no_grad()
def encode_speech(model, processor, clips, batch_size: int = 32, dim: int | None = None,
                  device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                  sort_by_length: bool = True, progress: bool = True, sampling_rate: int | None = 16000,
                  compile: bool = False, features_on_device: bool = True,
                  max_seconds: float | None = None, prepared: bool = False) -> torch.Tensor:
    """L2-normalised speech embeddings of many clips: (N, dim or hidden) float32 on the CPU, in `clips`' order.

    clips: arrays / tensors / lists of floats at `sampling_rate`, `{"array", "sampling_rate"}` dicts or file paths
    (anything `processor(audio=...)` takes). `dtype`: None/float32, or bfloat16/float16 run under autocast.
    `features_on_device=False` uses the processor's own (CPU, clip by clip) feature extraction instead.
    `max_seconds`: audio budget per batch (clips x longest clip, seconds; see `length_batches`' max_tokens).
    Weights cast to bf16/fp16 (`prepare_model(weights_dtype=...)`) get features in their dtype.
    Clips over the processor's `max_audio_seconds` are trimmed, windowed and pooled as `processor(audio=...)` does
    (`processing_wolofmrl.audio_windows`). `prepared=True`: clips are already 16 kHz float32 arrays made by the processor (`prepare_audio` /
    `processing_wolofmrl.audio_windows`, e.g. the windows of a long recording): used as they are, not trimmed again.
    """
    model._check_dim(dim)  # a bad dim fails before any work
    if len(clips) == 0:
        width = dim or model.config.embedding_dim
        return torch.zeros(0, width)
    device = _device_of(model, device)
    if compile or next(model.parameters()).device != device:
        prepare_model(model, device=device, compile=compile)
    lengths = [clip_seconds(c, sampling_rate) for c in clips]
    out = None
    fast = features_on_device and _is_whisper_fe(processor)
    weights = next(model.parameters()).dtype
    with _progress(len(clips), "clip", progress, "speech") as bar:
        for idx in length_batches(lengths, batch_size, sort_by_length, max_seconds):
            items = [clips[i] for i in idx]
            if prepared:
                batch = processor.features(items, device)
            elif fast:  # the one long-audio path: trim, then windows over max_audio_seconds (pooled by the model)
                windows, owner = audio_windows(processor, items, sampling_rate)
                batch = whisper_features(processor.feature_extractor, windows, device)
                if len(owner) > len(items):
                    batch["window_to_clip"] = torch.tensor(owner, device=device)
            else:
                batch = processor(audio=items, sampling_rate=sampling_rate, return_tensors="pt")
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            if weights != torch.float32:
                batch = {k: v.to(weights) if v.is_floating_point() else v for k, v in batch.items()}
            with _autocast(device, dtype):
                emb = model.get_speech_embeddings(**batch, dim=dim)
            if out is None:
                out = torch.empty(len(clips), emb.shape[-1], dtype=torch.float32)
            out[torch.tensor(idx)] = emb.float().cpu()
            bar.update(len(idx))
    return out


@torch.no_grad()
def encode_text(model, processor, texts, batch_size: int = 128, dim: int | None = None,
                device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                sort_by_length: bool = True, progress: bool = True, text_kind: str | None = "passage",
                max_length: int = 512, compile: bool = False, max_tokens: int | None = None,
                pad_to_multiple_of: int | None = 8) -> torch.Tensor:
    """L2-normalised text embeddings: (N, dim or hidden) float32 on the CPU, in `texts`' order.

    Texts are tokenised once (with the processor's `text_kind` prefix), sorted by token count and padded per batch
    (to a multiple of `pad_to_multiple_of`: fewer distinct shapes for kernels and `torch.compile`; padding is
    masked, so embeddings do not change). `max_tokens`: padded-token budget per batch (see `length_batches`).
    """
    model._check_dim(dim)
    texts = [texts] if isinstance(texts, str) else list(texts)
    if any(not isinstance(t, str) for t in texts):
        raise ValueError("texts must be strings")
    if not texts:
        return torch.zeros(0, dim or model.config.embedding_dim)
    device = _device_of(model, device)
    if compile or next(model.parameters()).device != device:
        prepare_model(model, device=device, compile=compile)
    tokenizer = processor.tokenizer
    ids = tokenizer(processor.prefix(texts, text_kind), truncation=True, max_length=max_length)["input_ids"]
    out = None
    with _progress(len(texts), "text", progress, "text") as bar:
        for idx in length_batches([len(x) for x in ids], batch_size, sort_by_length, max_tokens):
            batch = tokenizer.pad({"input_ids": [ids[i] for i in idx]}, padding=True, return_tensors="pt",
                                  pad_to_multiple_of=pad_to_multiple_of)
            batch = {k: batch[k].to(device, non_blocking=True) for k in ("input_ids", "attention_mask")}
            with _autocast(device, dtype):
                emb = model.get_text_embeddings(**batch, dim=dim)
            if out is None:
                out = torch.empty(len(texts), emb.shape[-1], dtype=torch.float32)
            out[torch.tensor(idx)] = emb.float().cpu()
            bar.update(len(idx))
    return out
