"""WolofMRL processor: audio -> speech-encoder features, text -> prefixed token ids.

The project's one audio path lives here (the library, training and evaluation import it):

- `decode_audio` turns one clip of any supported kind into mono float32 samples and their rate;
- `resample` is the one resampler (windowed sinc, torchaudio's default algorithm, pure torch);
- `load_audio` = decode + resample; `whisper_log_mel` / `pad_features` are the one Whisper feature path
  (own-length log-mel, even frame count, mask), batched on any device.

Input rules (README, "Input rules"): a list is a batch; a single 1-D array is one clip; a single 2-D array is one
clip when an axis has at most 2 entries (mono/stereo, (channels, samples) or (samples, channels)), otherwise a
batch of rows (clips, samples) as in `transformers` feature extractors; inside a list or dict a 2-D array is one
clip with at most 8 channels. Integer PCM is scaled by its type (int16 / 32768, uint8 re-centred); a list of Python
ints is 16-bit PCM. Float audio must be finite; a peak above 1.5 is rescaled to 1 with a warning.

This file is self-contained Hub remote code: it imports nothing from the `wolofmrl` library, and every optional
import (soundfile, torchcodec) sits in a try block so `transformers`' remote-code import check passes without them.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
import re
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BatchFeature, ProcessorMixin
from transformers.utils import logging

logger = logging.get_logger(__name__)

SAMPLING_RATE = 16000  # the model's rate (Whisper and the other speech encoders)
MIN_SAMPLES = 400  # one 25 ms STFT window of the Whisper log-mel at 16 kHz
MAX_CHANNELS = 8
RATE_RANGE = (1000, 1_000_000)
LOUD_PEAK = 1.5  # float audio peaking above this is rescaled (integer PCM stored as floats, gain errors)
TEXT_KINDS = ("query", "passage", None)
TEXT_KIND_ALIASES = {"document": "passage"}  # mteb PromptType.document
WINDOW_OVERLAP_SECONDS = 5.0
SILENT_DBFS = -60.0  # a clip whose loudest 20 ms frame is quieter holds no speech (`loudest_dbfs`)
SILENCE_DBFS = -60.0  # `is_silent`: no 20 ms frame louder than this (RMS, dB relative to full scale)
_UNSET = object()  # text_kind not given


# =============================================================================== argument checks
def check_sampling_rate(sampling_rate, name: str = "sampling_rate") -> int:
    """A sampling rate as a positive whole number of Hz in 1,000..1,000,000; else a TypeError/ValueError naming it."""
    value = sampling_rate
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of samples per second such as 16000, got "
                        f"{type(sampling_rate).__name__} {sampling_rate!r}")
    value = float(value)
    if not math.isfinite(value) or value != round(value) or not RATE_RANGE[0] <= value <= RATE_RANGE[1]:
        raise ValueError(f"{name}={sampling_rate!r} is not a valid sampling rate: pass your audio's rate in Hz as a "
                         f"whole number in {RATE_RANGE[0]}..{RATE_RANGE[1]} (e.g. 16000, 22050, 44100)")
    return int(value)


def _is_number(x) -> bool:
    return isinstance(x, (numbers.Number, np.generic)) and not isinstance(x, (str, bytes))


# =============================================================================== decoding
def check_not_rate_tuple(items: list) -> None:
    """Refuse a (waveform, rate) / (rate, waveform) pair -- what torchaudio.load, librosa.load and
    scipy.io.wavfile.read return -- which would otherwise read as a batch of two clips. Raises ValueError."""
    if len(items) != 2:
        return
    rates = [i for i, x in enumerate(items) if _is_number(x) and not isinstance(x, (bool, np.bool_))
             and float(x) == int(x) and RATE_RANGE[0] <= int(x) <= RATE_RANGE[1]]
    waves = [i for i, x in enumerate(items) if (isinstance(x, torch.Tensor) and x.numel() > 1)
             or (isinstance(x, (np.ndarray, list)) and np.size(x) > 1)]
    if len(rates) == 1 and len(waves) == 1:
        raise ValueError(f"audio is a (waveform, sampling_rate) tuple, as torchaudio.load / librosa.load / "
                         f"scipy.io.wavfile.read return (rate {int(items[rates[0]])} at position {rates[0]}): pass "
                         "them separately, e.g. wave, rate = librosa.load(path); processor(audio=wave, "
                         "sampling_rate=rate)")


class AudioTooLongError(ValueError):
    """An encoded clip over the caller's `max_seconds`, found from its header or a decode stopped at the cap (so the
    clip was never decoded whole). `seconds`: its length when the header gives it, else None (longer than the cap)."""

    def __init__(self, message: str, seconds: float | None, max_seconds: float):
        super().__init__(message)
        self.seconds, self.max_seconds = seconds, max_seconds


def decode_audio(audio, sampling_rate=None, name: str = "audio",
                 max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """The project's one audio decoder: ONE clip of any supported kind -> (mono float32 samples, rate in Hz).

    `audio` is a file path, encoded bytes or a binary file object (WAV/FLAC/OGG/Opus/MP3 through soundfile, other
    codecs through torchcodec when installed), a `{"array", "sampling_rate"}` / `{"raw", "sampling_rate"}` /
    `{"bytes", "path"}` dict or a torchcodec `AudioDecoder` (what `datasets` 2..5 give), or samples: a 1-D / 2-D
    (at most 8 channels, either axis) numpy array, torch tensor or list. Samples need `sampling_rate`; a
    container's own rate wins over `sampling_rate`. `name` prefixes error messages (e.g. "audio clip 3").
    `max_seconds`: refuse an encoded clip (path, bytes, file object) longer than this before decoding it: its length
    is read from the container header, and the decode stops at the cap whatever the header says, so memory stays
    bounded by the cap (a tiny FLAC of an hour of silence costs no more than `max_seconds` of samples).

    Raises:
        FileNotFoundError: a path that does not exist.
        AudioTooLongError (a ValueError): an encoded clip over `max_seconds`.
        TypeError: an unsupported container or sample dtype (bool, complex, object, str), a bad `sampling_rate` type.
        ValueError: undecodable or truncated bytes/file, missing or invalid `sampling_rate`, a bad shape,
            NaN/inf samples, a list of ints outside 16-bit PCM.
    """
    if isinstance(audio, dict):
        return _decode_dict(audio, sampling_rate, name, max_seconds)
    if isinstance(audio, (str, os.PathLike)):
        return _decode_encoded(os.fspath(audio), name, max_seconds)
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return _decode_encoded(bytes(audio), name, max_seconds)
    if hasattr(audio, "read") and callable(audio.read):
        data = audio.read()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"{name}: a file object must be opened in binary mode ('rb'), read() gave "
                            f"{type(data).__name__}")
        return _decode_encoded(bytes(data), name, max_seconds)
    if hasattr(audio, "get_all_samples"):  # torchcodec AudioDecoder: what `datasets` 4/5 decode an Audio cell to
        samples = audio.get_all_samples()
        return samples_to_mono(samples.data, name), check_sampling_rate(samples.sample_rate, f"{name} decoder rate")
    if sampling_rate is None:
        raise ValueError(f"sampling_rate is required for array {name}: pass sampling_rate=<your audio's rate> "
                         f"(e.g. 16000); it is resampled to {SAMPLING_RATE} Hz")
    rate = check_sampling_rate(sampling_rate)
    return samples_to_mono(audio, name), rate


def load_audio(audio, sampling_rate=None, target_sampling_rate: int = SAMPLING_RATE, name: str = "audio",
               max_seconds: float | None = None):
    """`decode_audio`, then `resample` to `target_sampling_rate`: (samples,) float32. Raises as `decode_audio`."""
    wave, rate = decode_audio(audio, sampling_rate, name, max_seconds)
    return resample(wave, rate, check_sampling_rate(target_sampling_rate, "target_sampling_rate"))


def _decode_dict(audio: dict, sampling_rate, name: str, max_seconds: float | None = None):
    for key in ("array", "raw"):
        if audio.get(key) is not None:
            rate = audio.get("sampling_rate", sampling_rate)
            if rate is None:
                raise ValueError(f"{name} dict has {key!r} but no 'sampling_rate': add it, or pass sampling_rate=")
            return decode_audio(audio[key], rate, name)
    if audio.get("bytes") is not None:
        return decode_audio(bytes(audio["bytes"]), name=name, max_seconds=max_seconds)
    if audio.get("path") is not None:
        return decode_audio(audio["path"], name=name, max_seconds=max_seconds)
    raise ValueError(f"{name} dict has no 'array', 'bytes' or 'path' entry (keys: {sorted(map(str, audio))}); "
                     "pass {'array': samples, 'sampling_rate': rate}, {'bytes': ...} or {'path': ...}")


def _decode_encoded(source: str | bytes, name: str, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    label = f"file {source!r}" if isinstance(source, str) else "bytes"
    if isinstance(source, str):
        if not os.path.isfile(source):
            raise FileNotFoundError(f"{name}: audio file not found: {source!r}")
        with open(source, "rb") as f:
            source = f.read()
    if not source:
        raise ValueError(f"{name}: the audio {label} is empty (0 bytes)")
    _check_wav_complete(source, f"{name} {label}")
    errors = []
    try:
        import soundfile as sf

        if max_seconds is None:
            wave, rate = sf.read(io.BytesIO(source), dtype="float32", always_2d=True)  # (samples, channels)
            return wave.mean(axis=1), int(rate)
        return _read_capped(sf.SoundFile(io.BytesIO(source)), max_seconds, name)
    except AudioTooLongError:
        raise
    except ImportError:
        errors.append("soundfile is not installed")
    except Exception as err:  # LibsndfileError / RuntimeError / TypeError for unreadable data
        errors.append(str(err))
    try:
        from torchcodec.decoders import AudioDecoder

        decoder = AudioDecoder(source)
        if max_seconds is None:
            samples = decoder.get_all_samples()
        else:
            _check_length(decoder.metadata.duration_seconds_from_header, max_seconds, name)
            samples = decoder.get_samples_played_in_range(0.0, max_seconds + 1.0)  # stops at the cap
            _check_length(samples.data.shape[-1] / samples.sample_rate, max_seconds, name, exact=False)
        return samples_to_mono(samples.data, name), int(samples.sample_rate)
    except AudioTooLongError:
        raise
    except ImportError:
        errors.append("torchcodec is not installed")
    except Exception as err:
        errors.append(str(err))
    # decoders' own messages can be multi-line C++ traces: their first line says enough, without the object's
    # address ("<_io.BytesIO object at 0x7f...>") or the decoder's source paths ("/__w/.../Decoder.cpp:70, ")
    reasons = "; ".join(_DECODER_NOISE.sub("", e.strip().splitlines()[0]).replace("<>", "the bytes")[:160]
                        if e.strip() else "unreadable" for e in errors)
    missing = [e for e in errors if e.endswith("is not installed")]
    hint = " Install soundfile (`pip install soundfile`) to read WAV/FLAC/OGG/MP3." if missing else ""
    raise ValueError(f"could not decode audio {label} ({name}): not a readable audio file — is it WAV/FLAC/OGG/MP3? "
                     f"({reasons}).{hint}")


_DECODER_NOISE = re.compile(r"(?<=<)_io\.BytesIO object at 0x[0-9a-fA-F]+(?=>)|[^\s,]*\.(?:cpp|cc|h):\d+,?\s*")


def _check_length(seconds: float | None, max_seconds: float, name: str, exact: bool = True) -> None:
    """AudioTooLongError when `seconds` (from a header when `exact`, else a decode stopped past the cap) > cap."""
    if seconds is not None and seconds > max_seconds + 1e-6:
        said = f"is {seconds:.1f} s long (its header says)" if exact else f"is over {max_seconds:g} s long"
        raise AudioTooLongError(f"{name} {said}; at most {max_seconds:g} s are accepted: cut it shorter",
                                seconds if exact else None, max_seconds)


def _read_capped(f, max_seconds: float, name: str) -> tuple[np.ndarray, int]:
    """Read an open soundfile.SoundFile in blocks, stopping past `max_seconds`: (mono float32, rate)."""
    with f:
        rate = int(f.samplerate)
        if 0 < f.frames < 2**62:  # libsndfile's frame count from the header (a huge value: unknown)
            _check_length(f.frames / rate, max_seconds, name)
        cap, blocks, total = int(max_seconds * rate) + 1, [], 0
        while total <= cap:
            block = f.read(frames=min(cap + 1 - total, 1 << 20), dtype="float32", always_2d=True)
            if not len(block):
                break
            blocks.append(block.mean(axis=1))
            total += len(block)
        _check_length(total / rate, max_seconds, name, exact=False)
    return (np.concatenate(blocks) if blocks else np.zeros(0, np.float32)), rate


def _check_wav_complete(data: bytes, label: str) -> None:
    """A WAV whose data chunk is shorter than its header says was cut short: an error, not half a clip."""
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RIFX") or data[8:12] != b"WAVE":
        return
    order = "little" if data[:4] == b"RIFF" else "big"
    pos = 12
    while pos + 8 <= len(data):
        chunk, size = data[pos:pos + 4], int.from_bytes(data[pos + 4:pos + 8], order)
        if chunk == b"data":
            available = len(data) - pos - 8
            if size < 0x7FFF0000 and available < size:  # larger sizes are streaming placeholders (unknown length)
                raise ValueError(f"audio {label} is a truncated WAV: its header declares {size} bytes of samples but "
                                 f"only {available} are there; re-export or re-download the file")
            return
        pos += 8 + size + (size & 1)


# =============================================================================== samples -> mono float32
def _sample_array(audio, name: str) -> np.ndarray:
    """Samples of any array-like as a numpy array of their own dtype (lists of ints -> int16 PCM)."""
    if isinstance(audio, torch.Tensor):
        tensor = audio.detach().cpu()
        if tensor.dtype in (torch.bfloat16, torch.float16):
            tensor = tensor.float()
        return tensor.resolve_conj().numpy() if tensor.is_complex() else tensor.numpy()
    if isinstance(audio, (list, tuple)):
        try:
            arr = np.asarray(audio)
        except ValueError as err:  # ragged nesting
            raise ValueError(f"{name} is a nested list of unequal lengths ({err}); pass a list of 1-D clips") from err
        first = audio
        while isinstance(first, (list, tuple)) and first:
            first = first[0]
        if arr.dtype.kind == "i" and isinstance(first, int) and not isinstance(first, np.integer):
            low, high = int(arr.min()), int(arr.max())
            if low < -32768 or high > 32767:
                raise ValueError(f"{name} is a list of ints, read as 16-bit PCM, but its values reach {low}..{high}: "
                                 "pass np.asarray(samples, dtype=np.int32) for 32-bit PCM, or floats in [-1, 1]")
            arr = arr.astype(np.int16)
        return arr
    if isinstance(audio, (np.ndarray, np.generic)) or hasattr(audio, "__array__"):
        return np.asarray(audio)
    raise TypeError(f"{name} of type {type(audio).__name__} is not supported: pass a file path, bytes, a dict "
                    "{'array', 'sampling_rate'}, a datasets/torchcodec AudioDecoder, or a numpy array/tensor/list "
                    "of samples")


def samples_to_float(arr: np.ndarray, name: str = "audio") -> np.ndarray:
    """Samples of any real dtype -> float32 in [-1, 1]: integer PCM by its type, float checked for NaN/inf/peak."""
    kind = arr.dtype.kind
    if kind == "b" or kind not in "iuf":
        what = {"b": "boolean", "c": "complex", "O": "object (mixed or nested)", "U": "string", "S": "bytes"}
        raise TypeError(f"{name} has {what.get(kind, str(arr.dtype))} samples ({arr.dtype}); pass float32 samples in "
                        "[-1, 1] or integer PCM (int16, int32, uint8)")
    if kind == "i":
        return (arr.astype(np.float64) / 2.0 ** (8 * arr.dtype.itemsize - 1)).astype(np.float32)
    if kind == "u":
        half = 2.0 ** (8 * arr.dtype.itemsize - 1)
        return ((arr.astype(np.float64) - half) / half).astype(np.float32)
    if arr.size and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or inf samples; clean or drop it before embedding")
    peak = float(np.abs(arr).max()) if arr.size else 0.0
    if peak > LOUD_PEAK:
        warnings.warn(f"{name} peaks at {peak:.3g}, outside [-1, 1]: rescaled to peak 1. Integer PCM stored as "
                      "floats? pass the integer array (e.g. np.int16) so it is scaled exactly", stacklevel=3)
        return (arr.astype(np.float64) / peak).astype(np.float32)
    return arr.astype(np.float32)


def samples_to_mono(audio, name: str = "audio", max_channels: int = MAX_CHANNELS) -> np.ndarray:
    """One clip's samples (1-D, or 2-D with <= `max_channels` channels on either axis) -> mono float32 (samples,).

    Raises:
        TypeError: unsupported container or dtype. ValueError: 0-D, 3-D+, or 2-D with no short (channel) axis.
    """
    wave = samples_to_float(_sample_array(audio, name), name)
    if wave.ndim == 2:
        if min(wave.shape) > max_channels:
            raise ValueError(f"{name} has shape {tuple(wave.shape)}: a 2-D clip is (channels, samples) or (samples, "
                             f"channels) with at most {max_channels} channels. A batch of clips? pass a list of "
                             "1-D clips, e.g. list(batch)")
        wave = wave.mean(axis=0 if wave.shape[0] <= wave.shape[1] else 1)
    elif wave.ndim != 1:
        raise ValueError(f"{name} must be 1-D (samples) or 2-D (channels x samples), got shape {tuple(wave.shape)}")
    return np.ascontiguousarray(wave, dtype=np.float32)


# =============================================================================== the one resampler
_KERNELS: dict = {}


def _sinc_kernel(orig: int, new: int, width_zeros: int = 6, rolloff: float = 0.99):
    """torchaudio's `sinc_interp_hann` kernel (lowpass_filter_width=6, rolloff=0.99) for reduced rates."""
    key = (orig, new)
    if key not in _KERNELS:
        base = min(orig, new) * rolloff
        width = math.ceil(width_zeros * orig / base)
        idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
        t = (torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx) * base
        t = t.clamp(-width_zeros, width_zeros)
        window = torch.cos(t * math.pi / width_zeros / 2) ** 2
        t = t * math.pi
        kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * window * (base / orig)
        if len(_KERNELS) > 16:
            _KERNELS.clear()
        _KERNELS[key] = (kernel.float(), width)
    return _KERNELS[key]


def resample(wave, orig: int, target: int) -> np.ndarray:
    """The project's one resampler: (samples,) float32 at `orig` Hz -> (ceil(samples * target / orig),) float32.

    Band-limited windowed-sinc interpolation, the algorithm and defaults of `torchaudio.functional.resample`
    (equal to it within float rounding), in plain torch. A rate pair that does not reduce to a small ratio (e.g.
    16001 -> 16000 Hz) is first rounded to the nearest 100 Hz, with a warning (a pitch change of at most 0.6 %).
    """
    orig = check_sampling_rate(orig, "orig")
    target = check_sampling_rate(target, "target")
    wave = np.asarray(wave, dtype=np.float32)
    if orig == target or wave.size == 0:
        return wave
    g = math.gcd(orig, target)
    if (orig // g) * (target // g) > 1_000_000:
        rounded = max(100, round(orig / 100) * 100)
        warnings.warn(f"sampling rate {orig} Hz has no small ratio to {target} Hz: resampled as {rounded} Hz",
                      stacklevel=2)
        orig, g = rounded, math.gcd(rounded, target)
        if orig == target:
            return wave
    o, n = orig // g, target // g
    kernel, width = _sinc_kernel(o, n)
    x = F.pad(torch.from_numpy(np.ascontiguousarray(wave))[None, None], (width, width + o))
    y = F.conv1d(x, kernel, stride=o).transpose(1, 2).reshape(-1)
    return y[: math.ceil(n * wave.size / o)].numpy()


# =============================================================================== the one Whisper feature path
_MEL_CACHE: dict = {}


def reflect_stack(clips: list[np.ndarray], n_fft: int) -> torch.Tensor:
    """CPU (B, longest + 2 * (n_fft // 2)) float32: each clip reflect-padded by n_fft // 2 on its own (as
    `WhisperFeatureExtractor` pads a lone clip; constant padding for clips of at most n_fft // 2 samples), then
    zero-padded to the longest. The CPU half of `whisper_log_mel` (worker threads build it; pin it for a copy)."""
    half = n_fft // 2
    waves = np.zeros((len(clips), max(len(c) for c in clips) + 2 * half), dtype=np.float32)
    for i, clip in enumerate(clips):
        clip = np.asarray(clip, dtype=np.float32)
        waves[i, : len(clip) + 2 * half] = np.pad(clip, half, mode="reflect" if len(clip) > half else "constant")
    return torch.from_numpy(waves)


def whisper_log_mel(feature_extractor, clips: list[np.ndarray], device="cpu",
                    stacked: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Whisper log-mel of 16 kHz mono clips, batched on `device`, each clip at its own length (never 30 s).

    Returns {"input_features": (B, n_mels, T) float32, "attention_mask": (B, T) long}, T = the longest clip's
    frame count (`len // hop`) rounded up to even (Whisper's stride-2 conv: a clip's tail is the same alone or
    batched). Each clip is reflect-padded on its own (as `WhisperFeatureExtractor` does a lone clip), normalised
    on its own frames; frames past a clip's end are zero and masked. `stacked`: `reflect_stack(clips, n_fft)`
    made beforehand (e.g. pinned, in a worker thread); copied to `device` without blocking.
    """
    device = torch.device(device)
    n_fft, hop = int(feature_extractor.n_fft), int(feature_extractor.hop_length)
    filters = np.asarray(feature_extractor.mel_filters)
    key = (n_fft, filters.shape, float(filters.sum()), str(device))  # by content: extractors alike share an entry
    if key not in _MEL_CACHE:
        if len(_MEL_CACHE) > 4:
            _MEL_CACHE.clear()
        _MEL_CACHE[key] = (torch.hann_window(n_fft, device=device),
                           torch.from_numpy(filters).to(device, torch.float32))
    window, mel_filters = _MEL_CACHE[key]
    frames = [len(c) // hop for c in clips]
    stacked = reflect_stack(clips, n_fft) if stacked is None else stacked
    waves = stacked.to(device, non_blocking=True)
    stft = torch.stft(waves, n_fft, hop, window=window, center=False, return_complex=True)  # (B, n_fft/2+1, F)
    longest = max(frames)
    parts = torch.view_as_real(stft[..., :longest])
    power = parts[..., 0].square() + parts[..., 1].square()
    log_spec = (mel_filters.T @ power).clamp_(min=1e-10).log10_()  # (B, n_mels, T)
    mask = torch.arange(longest, device=device)[None] < torch.tensor(frames, device=device)[:, None]
    peak = log_spec.masked_fill(~mask[:, None, :], float("-inf")).amax(dim=(1, 2), keepdim=True)
    log_spec = ((torch.maximum(log_spec, peak - 8.0) + 4.0) / 4.0) * mask[:, None, :]
    return _pad_masked(log_spec, frames)


def _pad_masked(log_spec: torch.Tensor, frames: list[int]) -> dict[str, torch.Tensor]:
    """(B, n_mels, longest) already zero past each clip's end -> the `pad_features` layout (even T), on its device."""
    total = log_spec.shape[-1] + log_spec.shape[-1] % 2
    feats = F.pad(log_spec, (0, total - log_spec.shape[-1]))
    mask = (torch.arange(total, device=feats.device)[None]
            < torch.tensor(frames, device=feats.device)[:, None]).long()
    return {"input_features": feats.float(), "attention_mask": mask}


def pad_features(features: list, even: bool = True, key: str = "input_features") -> dict[str, torch.Tensor]:
    """Right-pad per-clip features ((..., T_i) arrays or tensors) into a batch + mask, as the processor pads.

    Returns {key: (B, ..., T) float32, "attention_mask": (B, T) long}; T = max T_i, rounded up to even when `even`
    (Whisper log-mel; `processor.uses_log_mel`). Training's feature cache collates with this.
    """
    if not features:
        raise ValueError("features is empty: pass at least one clip's features")
    feats = [torch.as_tensor(f) for f in features]
    frames = max(f.shape[-1] for f in feats)
    frames += frames % 2 if even else 0
    batch = feats[0].new_zeros((len(feats), *feats[0].shape[:-1], frames), dtype=torch.float32)
    mask = torch.zeros(len(feats), frames, dtype=torch.long, device=batch.device)
    for i, f in enumerate(feats):
        batch[i, ..., : f.shape[-1]] = f
        mask[i, : f.shape[-1]] = 1
    return {key: batch, "attention_mask": mask}


def trim_silence(wave: np.ndarray, rate: int = SAMPLING_RATE, threshold_db: float = -40.0,
                 pad_seconds: float = 0.04, max_samples: int | None = None) -> np.ndarray:
    """Cut leading and trailing silence to a fixed margin. Pauses inside are kept.

    Keeps from the first to the last 20 ms frame whose RMS is within `threshold_db` of the loudest frame's, plus
    exactly `pad_seconds` on each side: the clip's own audio where it has it, zeros where it ends sooner. So a clip
    embeds the same whatever silence surrounds it: a question cut tight and the same question followed by seconds of
    silence give the same samples (mean pooling otherwise averages in the silence; the default's LoRA speech encoder
    moved to cosine 0.95-0.97 when 0.05-0.1 s of silence followed a question cut tight).

    `pad_seconds` is rounded to whole 20 ms frames (the grid starts at the clip's first sample), so the output's
    frames are the input's and `trim_silence(trim_silence(x)) == trim_silence(x)`. The default 0.04 s is close to the
    ~0.05 s margins training clips are synthesised with (`wolofmrl.curation.voice`); a 0.1 s margin filled with zeros
    cost the default 4.9 points of unseen clean Wolof R@1 (15.7 -> 10.8; synthetic speech).
    A clip that is all silence, or whose trimmed length would fall under one spectrogram window, is returned
    unchanged. `max_samples` (the model's window, e.g. 30 s of samples): zeros are never added past it, so a clip
    that fits one window still does.

    Args: wave (samples,) float32 at `rate` Hz. Returns (samples',) float32.
    """
    frame = max(1, int(0.02 * rate))
    rms = _frame_rms(np.pad(wave, (0, -wave.size % frame)), rate)  # the last, partial frame counts too
    if rms.size < 2:
        return wave
    loud = np.flatnonzero(rms >= rms.max() * 10 ** (threshold_db / 20))
    if rms.max() <= 1e-5 or loud.size == 0:
        return wave
    pad = int(round(pad_seconds / 0.02)) * frame  # whole frames: trim_silence(trim_silence(x)) == trim_silence(x)
    first, last = loud[0] * frame, (loud[-1] + 1) * frame  # the loud frames [first, last), on the 20 ms grid
    start, stop = max(0, first - pad), min(wave.size, last + pad)
    if (last + pad) - (first - pad) < MIN_SAMPLES:
        return wave
    before, after = start - (first - pad), (last + pad) - stop  # zeros where the clip's own margin is short
    kept = wave[start:stop]
    if max_samples is not None and kept.size + before + after > max_samples:
        return kept  # the fill would push a clip that fits the window past it
    return np.pad(kept, (before, after)) if before or after else kept


def _frame_rms(wave: np.ndarray, rate: int) -> np.ndarray:
    """RMS of each whole 20 ms frame of `wave`: (frames,) float64."""
    frame = max(1, int(0.02 * rate))
    n = wave.size // frame
    return np.sqrt(np.mean(np.square(wave[: n * frame].reshape(n, frame), dtype=np.float64), axis=1))


def loudest_dbfs(wave: np.ndarray, rate: int = SAMPLING_RATE) -> float:
    """The level of the loudest 20 ms frame of `wave` (RMS, dB relative to full scale 1.0): about -3 for a
    full-scale sine, -inf for digital silence. Speech sits far above `SILENT_DBFS` (-60 dBFS); a clip under it is a
    muted microphone or an empty recording, with nothing to embed. A clip shorter than one frame is measured whole."""
    rms = _frame_rms(wave, rate)
    peak = float(rms.max()) if rms.size else float(np.sqrt(np.mean(np.square(wave, dtype=np.float64)))) \
        if wave.size else 0.0
    return 20 * math.log10(peak) if peak > 0 else -math.inf
def is_silent(wave: np.ndarray, rate: int = SAMPLING_RATE, threshold_dbfs: float = SILENCE_DBFS) -> bool:
    """True when no 20 ms frame of `wave` (float, full scale 1.0) is louder than `threshold_dbfs` RMS: digital
    silence, a muted microphone, an empty recording. Its embedding says nothing about a question (callers warn or
    refuse instead of ranking passages for it)."""
    frame = max(1, int(0.02 * rate))
    n = max(1, wave.size // frame)
    padded = np.zeros(n * frame, np.float64)
    padded[: min(wave.size, n * frame)] = wave[: n * frame]
    rms = np.sqrt(np.mean(np.square(padded.reshape(n, frame)), axis=1))
    return bool(rms.max() <= 10 ** (threshold_dbfs / 20)) if wave.size else True


def audio_windows(processor, audio, sampling_rate=None, max_audio_seconds=None) -> tuple[list[np.ndarray], list[int]]:
    """The one long-audio path: audio (any input `processor.prepare_audio` takes) -> (windows, window_to_clip).

    Every clip is decoded, resampled to 16 kHz and its leading/trailing silence trimmed (`prepare_audio`) BEFORE a
    clip longer than `processor.max_audio_seconds` is cut into windows overlapping by `WINDOW_OVERLAP_SECONDS`
    (`split_windows`): windowing first would embed a recording's silent tail as windows of its own. Clips that fit
    are one window each. The processor's `audio_inputs`, the CLI and the server all take their windows from here;
    the model pools the windows of a clip (`pool_windows`)."""
    clips = processor.prepare_audio(audio, sampling_rate, max_audio_seconds)
    rate = processor.sampling_rate
    window = int(processor.max_audio_seconds * rate)
    overlap = int(min(WINDOW_OVERLAP_SECONDS, processor.max_audio_seconds / 3) * rate)
    return split_windows(clips, window, overlap)


def split_windows(clips: list[np.ndarray], window: int, overlap: int) -> tuple[list[np.ndarray], list[int]]:
    """Clips longer than `window` samples -> evenly sized windows of at most `window` samples that overlap by
    `overlap`; returns (windows, window_to_clip) where window_to_clip[j] is the clip index of window j."""
    windows, owner = [], []
    for i, clip in enumerate(clips):
        n = 1 if len(clip) <= window else math.ceil((len(clip) - overlap) / (window - overlap))
        size = min(window, math.ceil((len(clip) + (n - 1) * overlap) / n))
        step = (len(clip) - size) / max(n - 1, 1)
        for k in range(n):
            start = round(k * step)
            windows.append(clip[start:start + size])
            owner.append(i)
    return windows, owner


# =============================================================================== the processor
class WolofMRLProcessor(ProcessorMixin):
    r"""Speech feature extractor (Whisper log-mel by default) + the text tokenizer of the text tower.

    Args:
        feature_extractor: a `WhisperFeatureExtractor` (or any `transformers` audio feature extractor).
        tokenizer: the text encoder's tokenizer.
        query_prefix / passage_prefix: prepended to text according to `text_kind` / `prompt_name`.
        max_audio_seconds: the longest window the speech encoder takes in one pass (30 s for Whisper); longer
            audio is cut into overlapping windows and pooled per clip by the model.
        trim_silence: cut leading and trailing silence from every clip (`trim_silence`), as training clips are.
    """

    def __init__(self, feature_extractor, tokenizer, query_prefix: str = "query: ", passage_prefix: str = "passage: ",
                 max_audio_seconds: float = 30.0, trim_silence: bool = True, **kwargs):
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.max_audio_seconds = float(max_audio_seconds)
        self.trim_silence = bool(trim_silence)
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`ProcessorMixin.from_pretrained`, after checking a local folder's files (each error names the file and
        the fix): tokenizer.json and tokenizer_config.json present, every JSON file complete."""
        folder = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(folder):
            check_processor_folder(folder)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def feature_key(self) -> str:
        """The speech feature key the model takes: "input_features" (log-mel) or "input_values" (waveform)."""
        return "input_features" if self.uses_log_mel else "input_values"

    @property
    def uses_log_mel(self) -> bool:
        """True for a Whisper log-mel feature extractor (features from `whisper_log_mel`, even frame counts)."""
        return type(self.feature_extractor).__name__ == "WhisperFeatureExtractor"

    # ------------------------------------------------------------------ audio
    def audio_batch(self, audio) -> list:
        """`audio` as a list of clips, by the input rules (module docstring)."""
        if isinstance(audio, (np.ndarray, np.generic, torch.Tensor)):
            if audio.ndim == 2 and min(audio.shape) > 2:  # (clips, samples), as transformers feature extractors
                if audio.shape[1] <= MAX_CHANNELS < audio.shape[0]:
                    raise ValueError(f"audio of shape {tuple(audio.shape)} reads as {audio.shape[0]} clips of "
                                     f"{audio.shape[1]} samples; one clip with {audio.shape[1]} channels? pass it "
                                     "inside a list: audio=[clip]")
                return list(audio)
            return [audio]
        if isinstance(audio, (str, os.PathLike, bytes, bytearray, memoryview, dict)) or hasattr(audio, "read") \
                or hasattr(audio, "get_all_samples"):
            return [audio]
        if isinstance(audio, (list, tuple)) or (hasattr(audio, "__iter__") and hasattr(audio, "__len__")):
            items = list(audio)
            check_not_rate_tuple(items)
            if not items:
                raise ValueError("audio is an empty list: pass at least one clip")
            return [items] if all(_is_number(x) for x in items) else items
        raise TypeError(f"audio of type {type(audio).__name__} is not supported: pass an array, tensor, list, dict, "
                        "file path, bytes or a datasets/torchcodec AudioDecoder (or a list of those)")

    def prepare_audio(self, audio, sampling_rate=None, max_audio_seconds: float | None = None) -> list[np.ndarray]:
        """Any supported audio input -> list of finite mono float32 arrays at the model's rate (`audio_batch`
        rules). `max_audio_seconds`: refuse longer clips (ValueError); None: any length."""
        if sampling_rate is not None:
            check_sampling_rate(sampling_rate)
        if max_audio_seconds is not None and (isinstance(max_audio_seconds, (bool, np.bool_)) or not (
                _is_number(max_audio_seconds) and max_audio_seconds > 0)):
            raise ValueError(f"max_audio_seconds must be a positive number of seconds or None, got "
                             f"{max_audio_seconds!r}")
        items = self.audio_batch(audio)
        clips = []
        for i, item in enumerate(items):
            name = f"audio clip {i}"
            try:
                wave, rate = decode_audio(item, sampling_rate, name, max_audio_seconds)
            except AudioTooLongError as err:
                raise AudioTooLongError(f"{err} (max_audio_seconds). Split it into shorter clips, or pass "
                                        "max_audio_seconds=None to embed it in overlapping windows", err.seconds,
                                        err.max_seconds) from None
            if wave.size == 0:
                raise ValueError(f"{name} is empty (0 samples)")
            seconds = wave.size / rate
            if max_audio_seconds is not None and seconds > max_audio_seconds + 1e-6:
                raise ValueError(f"{name} is {seconds:.1f} s long; you asked for at most {max_audio_seconds:g} s "
                                 "(max_audio_seconds). Split it into shorter clips, or pass max_audio_seconds=None "
                                 "to embed it in overlapping windows")
            wave = resample(wave, rate, self.sampling_rate)
            if self.trim_silence:
                window = int(self.max_audio_seconds * self.sampling_rate)
                wave = trim_silence(wave, self.sampling_rate, max_samples=window)
            if wave.size < MIN_SAMPLES:
                raise ValueError(
                    f"{name} is {wave.size / self.sampling_rate * 1000:.1f} ms long; at least "
                    f"{MIN_SAMPLES * 1000 // SAMPLING_RATE} ms ({MIN_SAMPLES} samples at 16 kHz) are needed for one "
                    "spectrogram window. Drop or pad such clips.")
            clips.append(wave)
        return clips

    def features(self, clips: list[np.ndarray], device="cpu") -> dict[str, torch.Tensor]:
        """Model inputs for prepared 16 kHz clips: {feature_key: batch, "attention_mask": mask} (torch, `device`).

        Clips longer than `max_audio_seconds` must be windowed first (`split_windows`; `__call__` does it)."""
        if self.uses_log_mel:
            return whisper_log_mel(self.feature_extractor, clips, device)
        out = self.feature_extractor(clips, sampling_rate=self.sampling_rate, padding=True,
                                     return_attention_mask=True, return_tensors="pt")
        return {"input_values": out["input_values"].float().to(device),
                "attention_mask": out["attention_mask"].long().to(device)}

    def audio_inputs(self, audio, sampling_rate=None, max_audio_seconds=None, device="cpu") -> dict:
        """Audio -> model inputs; long clips become overlapping windows of at most `self.max_audio_seconds` s and
        the output gains `window_to_clip` ((n_windows,) long: the clip of each row) for the model to pool."""
        windows, owner = audio_windows(self, audio, sampling_rate, max_audio_seconds)
        if len(set(owner)) == len(owner):  # no clip was cut: one row per clip
            return self.features(windows, device)
        return {**self.features(windows, device), "window_to_clip": torch.tensor(owner, device=device)}

    # ------------------------------------------------------------------ text
    def resolve_text_kind(self, text_kind=_UNSET, prompt_name=None) -> str | None:
        """"query" / "passage" / None from `text_kind`, or sentence-transformers' `prompt_name` / mteb's
        `prompt_type` ("query", "document" = "passage"); neither given: "passage", with a one-time log line.

        Raises:
            ValueError: an unknown kind, or `text_kind` and `prompt_name` that disagree.
        """
        given = ([] if text_kind is _UNSET else [text_kind]) + ([] if prompt_name is None else [prompt_name])
        kinds = []
        for k in given:
            k = getattr(k, "value", k)  # mteb's PromptType enum
            k = TEXT_KIND_ALIASES.get(k, k) if isinstance(k, str) else k
            if k not in TEXT_KINDS:
                raise ValueError(f"text_kind / prompt_name must be 'query', 'passage' (or 'document') or None, "
                                 f"got {k!r}")
            kinds.append(k)
        if len(set(kinds)) > 1:
            raise ValueError(f"text_kind={text_kind!r} and prompt_name={prompt_name!r} disagree: pass one of them")
        if kinds:
            return kinds[0]
        logger.warning_once("text_kind not given: text is embedded as passages ('passage: ' prefix). For search "
                            "queries pass text_kind='query' (or prompt_name='query').")
        return "passage"

    def prefix(self, texts: list[str], text_kind=_UNSET) -> list[str]:
        """Prepend the prefix of `text_kind` ("query", "passage"/"document" or None) to each text."""
        kind = self.resolve_text_kind(text_kind)
        lead = {"query": self.query_prefix, "passage": self.passage_prefix, None: ""}[kind]
        return [lead + t for t in texts]

    def text_inputs(self, text, text_kind=_UNSET, max_length=None) -> dict[str, torch.Tensor]:
        """Checked, prefixed, tokenised text: {"input_ids", "attention_mask"} (B, L) long tensors."""
        texts = check_texts(text)
        prefixed = self.prefix(texts, text_kind)
        lead = len(prefixed[0]) - len(texts[0])
        floor = len(self.tokenizer(prefixed[0][:lead])["input_ids"]) + 1
        ceiling = int(getattr(self.tokenizer, "model_max_length", 512) or 512)
        ceiling = ceiling if ceiling < 1_000_000 else 512
        if max_length is None:
            max_length = ceiling
        if isinstance(max_length, (bool, np.bool_)) or not isinstance(max_length, (numbers.Integral, np.integer)) \
                or not floor <= int(max_length) <= ceiling:
            raise ValueError(f"max_length={max_length!r} is not valid: use an int in {floor}..{ceiling} (tokens, "
                             "including the prefix and special tokens), or None for the longest")
        tok = self.tokenizer(prefixed, padding=True, truncation=True, max_length=int(max_length), return_tensors="pt")
        return {"input_ids": tok["input_ids"], "attention_mask": tok["attention_mask"]}

    # ------------------------------------------------------------------ both
    def __call__(self, audio=None, text=None, sampling_rate=None, text_kind=_UNSET, return_tensors="pt",
                 max_length=None, prompt_name=None, max_audio_seconds=None, **kwargs) -> BatchFeature:
        """Featurise `audio` and/or tokenise `text` (input rules: README and the module docstring).

        Args:
            audio: one clip or a batch (see `decode_audio` for the kinds). Any length: clips over
                `self.max_audio_seconds` (30 s) become overlapping windows (`window_to_clip` in the output).
            text: a str or a list of str.
            sampling_rate: the rate of array audio in Hz (containers carry their own).
            text_kind / prompt_name: "query" or "passage"/"document" (the prefix); None = no prefix. When neither
                is given, text is a passage (logged once): pass "query" for search queries.
            max_length: longest tokenised text (default: the tokenizer's limit).
            max_audio_seconds: refuse clips longer than this (ValueError) instead of windowing them.
            return_tensors: "pt" (default), "np" or None.

        Returns:
            `BatchFeature` with `input_features` (Whisper, (B, n_mels, T)) or `input_values` ((B, samples)) and
            `attention_mask` for audio alone; `input_ids` + `attention_mask` for text alone; with both, the speech
            mask is `speech_attention_mask`. Every model method routes these keys.

        Raises:
            TypeError / ValueError naming the argument and the fix (see `decode_audio`, `check_texts`).
        """
        ignored = set(kwargs) - {"padding", "truncation", "return_attention_mask", "prompt_type"}
        if ignored:
            raise TypeError(f"WolofMRLProcessor got unexpected keyword argument(s) {sorted(ignored)}")
        if audio is None and text is None:
            raise ValueError("pass audio=..., text=... or both")
        if return_tensors not in ("pt", "np", None):
            raise ValueError(f"return_tensors must be 'pt', 'np' or None, got {return_tensors!r}")
        data = {}
        if audio is not None:
            data.update(self.audio_inputs(audio, sampling_rate, max_audio_seconds))
        if text is not None:
            if prompt_name is None:
                prompt_name = kwargs.get("prompt_type")
            tok = self.text_inputs(text, self.resolve_text_kind(text_kind, prompt_name), max_length)
            if audio is not None:
                data["speech_attention_mask"] = data.pop("attention_mask")
            data.update(tok)
        if return_tensors != "pt":
            data = {k: v.cpu().numpy() for k, v in data.items()}
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return ["input_features", "input_values", "speech_attention_mask", "input_ids", "attention_mask",
                "window_to_clip"]



def check_texts(text) -> list[str]:
    """`text` as a non-empty list of valid Unicode strings; TypeError/ValueError naming `text` otherwise."""
    texts = [text] if isinstance(text, str) else text
    if not isinstance(texts, (list, tuple)):
        raise TypeError(f"text must be a str or a list of str, got {type(text).__name__} {text!r:.60}")
    if not texts:
        raise ValueError("text must be a string or a non-empty list of strings")
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text[{i}] is {type(t).__name__} {t!r:.60}: text must be a str or a list of str")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(f"text[{i}] is not valid Unicode ({err.reason} at position {err.start}): decode your "
                             "text with errors='replace' or drop the character") from None
    return list(texts)


def check_processor_folder(folder: str) -> None:
    """Raise an OSError/ValueError naming the file and the fix if a local processor folder is incomplete."""
    fix = "re-save the folder with processor.save_pretrained(...) or rebuild it (python -m wolofmrl.build)"
    vocab = ("tokenizer.json", "sentencepiece.bpe.model", "spiece.model", "tokenizer.model", "vocab.txt", "vocab.json")
    if not any(os.path.isfile(os.path.join(folder, name)) for name in vocab):
        raise OSError(f"tokenizer.json is missing from {folder}: without it the tokenizer would fall back to a "
                      f"5-token vocabulary (every word <unk>); {fix}")
    if not os.path.isfile(os.path.join(folder, "tokenizer_config.json")):
        raise OSError(f"tokenizer_config.json is missing from {folder}: the tokenizer class and special tokens "
                      f"cannot be known without it; {fix}")
    for name in sorted(os.listdir(folder)):
        if name.endswith(".json"):
            try:
                with open(os.path.join(folder, name), encoding="utf-8") as f:
                    content = json.load(f)
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"{name} in {folder} is not valid JSON ({err}): the file is truncated or damaged; "
                                 f"{fix}") from err
            if name == "config.json" and isinstance(content, dict) and "AutoModel" not in content.get("auto_map", {}):
                logger.warning(f"config.json in {folder} has no auto_map: AutoModel.from_pretrained(..., "
                               "trust_remote_code=True) will not find WolofMRLModel (transformers then says it does "
                               'not recognise model type "wolofmrl"). Fix: add "auto_map": {"AutoConfig": '
                               '"configuration_wolofmrl.WolofMRLConfig", "AutoModel": '
                               f'"modeling_wolofmrl.WolofMRLModel"}} to config.json, or {fix}')


__all__ = ["WolofMRLProcessor", "decode_audio", "load_audio", "resample", "whisper_log_mel", "reflect_stack",
           "pad_features",
           "split_windows", "samples_to_mono", "samples_to_float", "check_sampling_rate", "check_texts",
           "check_processor_folder", "trim_silence", "loudest_dbfs", "AudioTooLongError", "SAMPLING_RATE",
           "SILENT_DBFS"]
