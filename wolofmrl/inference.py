"""Batched, length-sorted, pipelined inference for many clips or passages.

    from wolofmrl.inference import encode_speech, encode_text, prepare_model
    model = prepare_model(model, device="cuda")        # SDPA, eval mode, on the device, bf16 weights on CUDA
    q = encode_speech(model, processor, clips, batch_size=None, dim=128)       # (N, 128) float32 on the CPU
    d = encode_text(model, processor, passages, batch_size=None, dim=128)

What makes it fast, and why it gives the same embeddings as calling the model batch by batch:

- The CPU side runs ahead in worker threads (`workers`, default half the cores): texts are tokenised in chunks by
  the Rust tokenizer (`fast_token_ids`: `encode_batch_fast`, GIL released) and collated; clips are decoded,
  resampled, checked and reflect-padded (`processor.prepare_audio`, `reflect_stack`). Batches reach the device
  from pinned memory without blocking, and results are fetched once per chunk (text) or every 4 batches
  (speech), so the device never waits on the CPU between batches.
- Items are sorted by length and batched in that order, so a batch pads to its own longest clip (never to 30 s:
  the model keeps each clip's length) or its longest passage; results come back in the caller's order.
- Text batches on CUDA are packed (`wolofmrl.packed`): no padding token at all, attention within each passage
  by variable-length attention; checked once per model against the padded forward (else padded batches).
- Whisper log-mel features are computed batched on the model's device (one STFT + one mel matmul per batch).
  Each clip is reflect-padded on its own before the STFT, so its frames equal the processor's up to float
  rounding; frames past a clip's end are zero and masked, as the processor makes them.
- Attention runs through PyTorch SDPA where the backbone supports it (`prepare_model` checks and reports).
- `prepare_model` casts the weights to bf16 on CUDA by default (`weights_dtype`); `dtype=torch.bfloat16` (or
  float16) runs under `torch.autocast` instead. Embeddings are returned in float32.
- `batch_size=None` sizes batches for the device (`auto_batches`); `max_tokens` / `max_seconds` batch by padded
  size instead of item count, so short items fill large batches.
- `compile=True` compiles the speech tower and the text model in place (`nn.Module.compile`, dynamic shapes), so
  state-dict keys do not change. The first batches pay the compilation. Not measured to help (issue 20).

The model is never padded to 30 s and nothing here changes it beyond device, weights dtype, eval mode, attention
implementation and (optionally) compilation.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Sequence

import numpy as np
import torch

from processing_wolofmrl import audio_windows, reflect_stack, whisper_log_mel

__all__ = ["encode_speech", "encode_text", "prepare_model", "attention_implementations", "clip_seconds",
           "whisper_features", "length_batches", "fast_token_ids", "default_workers", "auto_batches"]


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
                  attn_implementation: str | None = "sdpa", weights_dtype: torch.dtype | str | None = "auto"):
    """Put `model` on `device` in eval mode, with SDPA attention where the backbones support it; optionally compile.

    weights_dtype: cast the weights (e.g. torch.bfloat16: half the memory traffic, no autocast casts per call);
    "auto" (default): bfloat16 on a CUDA device, unchanged elsewhere; None: unchanged. Embeddings still come back
    float32. Returns the same model object (changed in place);
    `model.wolofmrl_inference` records what was done.
    """
    if device is not None:
        model.to(device)
    if weights_dtype == "auto":
        weights_dtype = torch.bfloat16 if next(model.parameters()).device.type == "cuda" else None
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


def auto_batches(device: torch.device, kind: str, budget=None) -> tuple[int, float | None]:
    """(batch_size, budget) for `batch_size=None`: on CUDA large batches cut by a padded-size budget (text: 4096
    texts / 65,536 tokens; speech: 1024 clips / 4096 s of audio), elsewhere (CPU) 64 texts / 16 clips."""
    if torch.device(device).type == "cuda":
        return (4096, budget or 65536) if kind == "text" else (1024, budget or 4096.0)
    return (64, budget) if kind == "text" else (16, budget)


# --------------------------------------------------------------------------- the CPU side, in worker threads
def default_workers() -> int:
    """CPU worker threads preparing the next batches: half the cores (at least 1, at most 8)."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def _prefetch(jobs, workers: int, ahead: int):
    """Run the callables in `jobs` in a thread pool, at most `ahead` in flight; yield their results in order.

    The work inside (Rust tokenisation, numpy, torch CPU ops, audio decoders) releases the GIL, so it overlaps the
    caller's GPU launches. An error in a job is raised here, at its turn.
    """
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    jobs = iter(jobs)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wolofmrl-prep") as pool:
        pending = deque()
        for job in jobs:
            pending.append(pool.submit(job))
            if len(pending) >= ahead:
                break
        while pending:
            result = pending.popleft().result()
            nxt = next(jobs, None)
            if nxt is not None:
                pending.append(pool.submit(nxt))
            yield result


def _pin(t: torch.Tensor, pin: bool) -> torch.Tensor:
    return t.pin_memory() if pin else t


_FAST_TOKENIZERS: dict = {}


def fast_token_ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    """Token ids of `texts` (special tokens added, truncated to max_length): the same ids as
    `tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]`, faster.

    A fast tokenizer's Rust `encode_batch_fast` (no offsets; parallel inside, GIL released) runs on a private copy
    of the backend with truncation and padding off (the shared one is left alone: thread-safe); the few texts
    longer than max_length are re-encoded by the tokenizer itself, so truncation is its own. Slow tokenizers: the
    plain call.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None or not hasattr(backend, "encode_batch_fast"):
        return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    key = id(backend)
    if key not in _FAST_TOKENIZERS:
        from tokenizers import Tokenizer

        private = Tokenizer.from_str(backend.to_str())
        private.no_truncation()
        private.no_padding()
        if len(_FAST_TOKENIZERS) > 8:
            _FAST_TOKENIZERS.clear()
        _FAST_TOKENIZERS[key] = (backend, private)  # keep `backend` alive so its id stays unique
    private = _FAST_TOKENIZERS[key][1]
    ids = [e.ids for e in private.encode_batch_fast(texts, add_special_tokens=True)]
    long = [i for i, x in enumerate(ids) if len(x) > max_length]
    if long:
        redo = tokenizer([texts[i] for i in long], truncation=True, max_length=max_length)["input_ids"]
        for i, x in zip(long, redo):
            ids[i] = list(x)
    return ids


def _collate_text(ids: list[list[int]], pad_id: int, pad_to_multiple_of: int | None, packed: bool,
                  pin: bool) -> dict:
    """One batch's CPU tensors: padded {"input_ids", "attention_mask"} (B, L) or packed {"flat", "positions",
    "cu", "longest"} (see `wolofmrl.packed.pack_ids`)."""
    if packed:
        from wolofmrl.packed import pack_ids

        flat, positions, cu, longest = pack_ids(ids)
        return {"flat": _pin(flat, pin), "positions": _pin(positions, pin), "cu": _pin(cu, pin), "longest": longest,
                "shortest": min(map(len, ids))}
    width = max(len(x) for x in ids)
    if pad_to_multiple_of:
        width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    mask = (np.arange(width)[None] < lengths[:, None]).astype(np.int64)
    arr = np.full((len(ids), width), pad_id, dtype=np.int64)
    arr[mask.astype(bool)] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=int(lengths.sum()))
    return {"input_ids": _pin(torch.from_numpy(arr), pin), "attention_mask": _pin(torch.from_numpy(mask), pin)}


def _text_chunk_job(tokenizer, texts: list[str], start: int, max_length: int, batch_size: int,
                    sort_by_length: bool, max_tokens: int | None, pad_to_multiple_of: int | None, packed: bool,
                    pin: bool):
    """A job for `_prefetch`: tokenise one chunk of texts and cut it into ready batches [(rows, tensors)]."""
    def job():
        ids = fast_token_ids(tokenizer, texts, max_length)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        out = []
        for idx in length_batches([len(x) for x in ids], batch_size, sort_by_length, max_tokens):
            rows = torch.tensor([start + i for i in idx], dtype=torch.int64)
            out.append((rows, _collate_text([ids[i] for i in idx], pad_id, pad_to_multiple_of, packed, pin)))
        return out
    return job


def _text_forward(model, batch: dict, device: torch.device, dim, backend: str) -> torch.Tensor:
    """L2-normalised (B, dim) embeddings of one collated batch (moved to `device` without blocking)."""
    from modeling_wolofmrl import normalize_dim

    if "flat" in batch:
        from wolofmrl.packed import packed_text_pool

        flat, positions, cu = (batch[k].to(device, non_blocking=True) for k in ("flat", "positions", "cu"))
        pooled = packed_text_pool(model.text_model, flat, positions, cu, batch["longest"],
                                  model.config.text_pooling, backend, batch.get("shortest"))
        full = model._head(pooled)
        return normalize_dim(full, model._check_dim(dim), model.config.embedding_dim, model.config.matryoshka_dims)
    inputs = {k: batch[k].to(device, non_blocking=True) for k in ("input_ids", "attention_mask")}
    return model.get_text_embeddings(**inputs, dim=dim)


def _packed_backend(model, device: torch.device, dtype, packed: bool | None) -> str | None:
    """The attention backend of the packed text path, or None for padded batches.

    packed=None (auto): packed where a variable-length kernel runs (CUDA, bf16/fp16) and, once per model, its
    output matched the padded forward (cosine >= 0.999 on mixed lengths; else a warning and padded batches).
    packed=True: packed everywhere (on CPU the padded reference attention: equal results, no speed-up).
    """
    if packed is False:
        return None
    from wolofmrl.packed import supports_packed, varlen_backend

    if not supports_packed(model.text_model):
        if packed:
            raise ValueError(f"packed=True needs a BERT-family text encoder, not {model.config.text_config.model_type}"
                             "; pass packed=False")
        return None
    weights = next(model.text_model.parameters()).dtype
    effective = dtype if dtype in (torch.bfloat16, torch.float16) else weights
    backend = varlen_backend(device, effective)
    if packed:
        return backend
    if backend == "padded":
        return None
    checked = model.__dict__.setdefault("_wolofmrl_packed_ok", {})
    if backend not in checked:
        checked[backend] = _check_packed(model, device, dtype, backend)
    return backend if checked[backend] else None


def _check_packed(model, device, dtype, backend: str) -> bool:
    import warnings

    gen = torch.Generator().manual_seed(0)
    vocab = model.text_model.get_input_embeddings().num_embeddings
    ids = [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in (5, 37, 120, 64)]
    try:
        with _autocast(device, dtype):
            a = _text_forward(model, _collate_text(ids, 1, 8, True, False), device, None, backend)
            b = _text_forward(model, _collate_text(ids, 1, 8, False, False), device, None, backend)
        cos = float(torch.nn.functional.cosine_similarity(a.float(), b.float()).min())
    except Exception as err:  # a kernel missing for this GPU / dtype: padded batches instead
        warnings.warn(f"packed text attention ({backend}) failed ({type(err).__name__}: {err}); using padded "
                      "batches", stacklevel=3)
        return False
    if cos < 0.999:
        warnings.warn(f"packed text attention ({backend}) differs from the padded forward (min cosine {cos:.5f}); "
                      "using padded batches", stacklevel=3)
    return cos >= 0.999


# --------------------------------------------------------------------------- public encoders
@torch.no_grad()
def encode_text(model, processor, texts, batch_size: int | None = 128, dim: int | None = None,
                device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                sort_by_length: bool = True, progress: bool = True, text_kind: str | None = "passage",
                max_length: int = 512, compile: bool = False, max_tokens: int | None = None,
                pad_to_multiple_of: int | None = 8, packed: bool | None = None, workers: int | None = None,
                chunk_size: int | None = None) -> torch.Tensor:
    """L2-normalised text embeddings: (N, dim or hidden) float32 on the CPU, in `texts`' order.

    Texts are prefixed (`text_kind`), tokenised in chunks of `chunk_size` (default max(8192, 4 x batch_size)) by
    `workers` threads (default `default_workers()`) while the GPU runs the previous chunk, sorted by token count
    within a chunk and cut into batches of at most `batch_size` texts and `max_tokens` tokens. Padded batches pad
    to a multiple of `pad_to_multiple_of` (masked: embeddings do not change); packed batches (`packed`, see
    `_packed_backend`; default: on CUDA) hold no padding at all. Batches go to the device from pinned memory
    without blocking. `batch_size=None`: sized for the device (`auto_batches`: on CUDA up to 4096 texts and
    65,536 tokens a batch). Raises ValueError for a bad dim or non-string texts.
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
    if batch_size is None:
        batch_size, max_tokens = auto_batches(device, "text", max_tokens)
    backend = _packed_backend(model, device, dtype, packed)
    prefixed = processor.prefix(texts, text_kind)
    chunk = chunk_size or max(8192, 4 * batch_size)
    pin = device.type == "cuda"
    jobs = (_text_chunk_job(processor.tokenizer, prefixed[s:s + chunk], s, max_length, batch_size, sort_by_length,
                            max_tokens, pad_to_multiple_of, backend is not None, pin)
            for s in range(0, len(prefixed), chunk))
    out = None
    with _progress(len(texts), "text", progress, "text") as bar:
        for batches in _prefetch(jobs, workers or default_workers(), ahead=2):
            done = []
            for rows, batch in batches:
                with _autocast(device, dtype):
                    done.append((rows, _text_forward(model, batch, device, dim, backend)))
            for rows, emb in done:  # one wait per chunk, after all its batches are queued
                if out is None:
                    out = torch.empty(len(texts), emb.shape[-1], dtype=torch.float32)
                out[rows] = emb.float().cpu()
                bar.update(len(rows))
    return out


def _speech_job(processor, items: list, sampling_rate, fast: bool, pin: bool, prepared: bool = False):
    """A job for `_prefetch`: decode / resample / check one batch of clips; the padded waves (fast path: trimmed,
    then cut into windows over `max_audio_seconds` by the one long-audio path, `audio_windows`, with `owner` = the
    clip of each window) or the processor's own features, as CPU tensors. `prepared`: the items are 16 kHz float32
    waves made by the processor already, used as they are."""
    def job():
        if fast:
            if prepared:
                waves, owner = [np.asarray(c, dtype=np.float32) for c in items], list(range(len(items)))
            else:
                waves, owner = audio_windows(processor, items, sampling_rate)
            return {"waves": waves, "owner": owner,
                    "stacked": _pin(reflect_stack(waves, int(processor.feature_extractor.n_fft)), pin)}
        if prepared:
            return {k: _pin(v, pin) for k, v in processor.features(items).items()}
        batch = processor(audio=items, sampling_rate=sampling_rate, return_tensors="pt")
        return {k: _pin(v, pin) for k, v in batch.items()}
    return job


@torch.no_grad()
def encode_speech(model, processor, clips, batch_size: int | None = 32, dim: int | None = None,
                  device: str | torch.device | None = None, dtype: torch.dtype | None = None,
                  sort_by_length: bool = True, progress: bool = True, sampling_rate: int | None = 16000,
                  compile: bool = False, features_on_device: bool = True,
                  max_seconds: float | None = None, workers: int | None = None,
                  prepared: bool = False) -> torch.Tensor:
    """L2-normalised speech embeddings of many clips: (N, dim or hidden) float32 on the CPU, in `clips`' order.

    clips: arrays / tensors / lists of floats at `sampling_rate`, `{"array", "sampling_rate"}` dicts or file paths
    (anything `processor(audio=...)` takes). `dtype`: None/float32, or bfloat16/float16 run under autocast.
    `features_on_device=False` uses the processor's own feature extraction instead of the batched log-mel.
    `max_seconds`: audio budget per batch (clips x longest clip, seconds; see `length_batches`' max_tokens).
    `workers` threads (default `default_workers()`) decode, resample and pad the next batches while the device runs
    this one; the waves reach the device from pinned memory without blocking. Weights cast to bf16/fp16
    (`prepare_model(weights_dtype=...)`) get features in their dtype. `batch_size=None`: sized for the device
    (`auto_batches`). Clips over the processor's `max_audio_seconds` are trimmed of silence, then windowed and
    pooled as `processor(audio=...)` does (`processing_wolofmrl.audio_windows`). `prepared=True`: clips are already
    16 kHz float32 arrays made by the processor (`prepare_audio` / `audio_windows`, e.g. the windows of a long
    recording): used as they are, not trimmed again. Raises ValueError for a bad dim or clip.
    """
    model._check_dim(dim)  # a bad dim fails before any work
    if len(clips) == 0:
        width = dim or model.config.embedding_dim
        return torch.zeros(0, width)
    device = _device_of(model, device)
    if compile or next(model.parameters()).device != device:
        prepare_model(model, device=device, compile=compile)
    if batch_size is None:
        batch_size, max_seconds = auto_batches(device, "speech", max_seconds)
    lengths = [clip_seconds(c, sampling_rate) for c in clips]
    fast = features_on_device and _is_whisper_fe(processor)
    weights = next(model.parameters()).dtype
    batches = length_batches(lengths, batch_size, sort_by_length, max_seconds)
    jobs = (_speech_job(processor, [clips[i] for i in idx], sampling_rate, fast, device.type == "cuda",
                        prepared)
            for idx in batches)
    out, done = None, []
    with _progress(len(clips), "clip", progress, "speech") as bar:
        for n, (idx, ready) in enumerate(zip(batches, _prefetch(jobs, workers or default_workers(), ahead=4))):
            if fast:
                batch = whisper_log_mel(processor.feature_extractor, ready["waves"], device, stacked=ready["stacked"])
                if len(ready["owner"]) > len(idx):  # long clips became several windows: pooled per clip
                    batch["window_to_clip"] = torch.tensor(ready["owner"], device=device)
            else:
                batch = {k: v.to(device, non_blocking=True) for k, v in ready.items()}
            if weights != torch.float32:
                batch = {k: v.to(weights) if v.is_floating_point() else v for k, v in batch.items()}
            with _autocast(device, dtype):
                done.append((idx, model.get_speech_embeddings(**batch, dim=dim)))
            if len(done) >= 4 or n == len(batches) - 1:  # wait for results every few batches, not after each
                for rows, emb in done:
                    if out is None:
                        out = torch.empty(len(clips), emb.shape[-1], dtype=torch.float32)
                    out[torch.tensor(rows)] = emb.float().cpu()
                    bar.update(len(rows))
                done = []
    return out
