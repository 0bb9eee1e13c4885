"""WolofMRL processor: waveforms -> speech-encoder features, text -> prefixed token ids.

`processor(audio=..., sampling_rate=..., text=..., return_tensors="pt")` takes numpy arrays, torch tensors,
lists of floats or audio file paths; downmixes to mono, resamples any rate to 16 kHz, and never pads a clip to
30 s: each clip keeps its own length and a mask says which frames are real.

This file is self-contained Hub remote code: it imports nothing from the `wolofmrl` library.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

TEXT_KINDS = ("query", "passage", None)
MIN_SAMPLES = 400  # one 25 ms STFT window of the Whisper log-mel at 16 kHz


def decode_audio(audio, sampling_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The project's one audio decoder: one clip of any supported kind -> (mono float32 samples, rate in Hz).

    `audio` is a file path, raw encoded bytes, a `{"array", "sampling_rate"}` or `{"bytes", "path"}` dict (what
    `datasets` gives), a torchcodec decoder, or a 1-D / 2-D (channels) numpy array, torch tensor or list of samples
    (then `sampling_rate` is required). Every module of the project decodes audio through this function.

    Raises:
        FileNotFoundError: a path that does not exist.
        ValueError: undecodable bytes or file, a missing `sampling_rate` for array audio, a bad shape.
    """
    if isinstance(audio, dict):
        if audio.get("array") is not None:
            return decode_audio(audio["array"], audio.get("sampling_rate", sampling_rate))
        if audio.get("bytes") is not None:
            return decode_audio(bytes(audio["bytes"]))
        if audio.get("path") is not None:
            return decode_audio(audio["path"])
        raise ValueError(f"audio dict has no 'array', 'bytes' or 'path' entry (keys: {sorted(audio)})")
    if isinstance(audio, (str, os.PathLike)):
        return _load_file(os.fspath(audio))
    if isinstance(audio, (bytes, bytearray, memoryview)):
        return _load_file(io.BytesIO(bytes(audio)))
    if hasattr(audio, "get_all_samples"):  # torchcodec AudioDecoder (what `datasets` 4/5 decodes to)
        samples = audio.get_all_samples()
        return _to_mono(samples.data), int(samples.sample_rate)
    if sampling_rate is None:
        raise ValueError("sampling_rate is required for array audio: pass sampling_rate=<your audio's rate> (e.g. 16000)")
    return _to_mono(audio), int(sampling_rate)


def load_audio(audio, sampling_rate: int | None = None, target_sampling_rate: int = 16000) -> np.ndarray:
    """`decode_audio`, then the project's one resampler to `target_sampling_rate`: (samples,) float32."""
    wave, rate = decode_audio(audio, sampling_rate)
    return resample(wave, rate, target_sampling_rate)


def _load_file(source) -> tuple[np.ndarray, int]:
    if isinstance(source, str) and not os.path.isfile(source):
        raise FileNotFoundError(f"audio file not found: {source!r}")
    import soundfile as sf

    try:
        wave, rate = sf.read(source, dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as err:  # soundfile raises LibsndfileError / RuntimeError for corrupt files
        name = f"file {source!r}" if isinstance(source, str) else "bytes"
        raise ValueError(f"could not decode audio {name} ({err}); is it a valid WAV/FLAC/OGG file?") from err
    return wave.mean(axis=1), int(rate)


def _to_mono(wave) -> np.ndarray:
    if isinstance(wave, torch.Tensor):
        wave = wave.detach().cpu().numpy()
    wave = np.asarray(wave)
    if np.issubdtype(wave.dtype, np.integer):  # PCM: scale to [-1, 1]
        wave = wave.astype(np.float32) / float(np.iinfo(wave.dtype).max)
    wave = wave.astype(np.float32, copy=False)
    if wave.ndim == 2:
        # channels are the short axis: (channels, samples) as torchaudio gives or (samples, channels) as soundfile
        wave = wave.mean(axis=0 if wave.shape[0] <= wave.shape[1] else 1)
    elif wave.ndim != 1:
        raise ValueError(f"audio must be 1-D (samples) or 2-D (channels x samples), got shape {wave.shape}")
    return wave


def resample(wave: np.ndarray, orig: int, target: int) -> np.ndarray:
    if orig == target:
        return wave
    try:
        import torchaudio.functional as AF

        return AF.resample(torch.from_numpy(np.ascontiguousarray(wave)), orig, target).numpy()
    except ImportError:  # torchaudio is optional for Hub users
        from math import gcd

        from scipy.signal import resample_poly

        g = gcd(orig, target)
        return resample_poly(wave, target // g, orig // g).astype(np.float32)


class WolofMRLProcessor(ProcessorMixin):
    r"""Speech feature extractor (Whisper log-mel by default) + the text tokenizer of the text tower.

    Args:
        feature_extractor: a `WhisperFeatureExtractor` (or any `transformers` audio feature extractor).
        tokenizer: the text encoder's tokenizer.
        query_prefix / passage_prefix: prepended to text according to `text_kind`.
        max_audio_seconds: longest clip accepted; longer audio must be split by the caller.
    """

    def __init__(self, feature_extractor, tokenizer, query_prefix: str = "query: ", passage_prefix: str = "passage: ",
                 max_audio_seconds: float = 30.0, **kwargs):
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.max_audio_seconds = float(max_audio_seconds)
        super().__init__(feature_extractor, tokenizer, **kwargs)

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    # ------------------------------------------------------------------ audio
    def prepare_audio(self, audio, sampling_rate: int | None = None) -> list[np.ndarray]:
        """Any supported audio input -> list of finite mono float32 arrays at the model's sampling rate."""
        if isinstance(audio, (str, os.PathLike, np.ndarray, torch.Tensor)) or (
            isinstance(audio, Sequence) and len(audio) > 0 and isinstance(audio[0], (int, float, np.floating))
        ):
            audio = [audio]
        if isinstance(audio, dict):
            audio = [audio]
        if len(audio) == 0:
            raise ValueError("audio is an empty list: pass at least one clip")
        clips = []
        for i, item in enumerate(audio):
            rate = sampling_rate
            if rate is None and not isinstance(item, (dict, str, os.PathLike, bytes)) and not hasattr(
                item, "get_all_samples"
            ):
                raise ValueError(
                    "sampling_rate is required for array audio: pass sampling_rate=<your audio's rate> "
                    f"(e.g. 16000); it is resampled to {self.sampling_rate} Hz."
                )
            wave, rate = decode_audio(item, rate)
            if wave.size == 0:
                raise ValueError(f"audio clip {i} is empty (0 samples)")
            if not np.isfinite(wave).all():
                raise ValueError(f"audio clip {i} contains NaN or inf samples; clean or drop it before embedding")
            seconds = wave.size / rate
            if seconds > self.max_audio_seconds + 1e-6:
                raise ValueError(
                    f"audio clip {i} is {seconds:.1f} s long; the model takes at most {self.max_audio_seconds:g} s. "
                    "Split it into shorter clips (e.g. on pauses) and embed each."
                )
            wave = resample(wave, int(rate), self.sampling_rate)
            if wave.size < MIN_SAMPLES:
                raise ValueError(
                    f"audio clip {i} is {wave.size / self.sampling_rate * 1000:.1f} ms long; at least "
                    f"{MIN_SAMPLES * 1000 // 16000} ms ({MIN_SAMPLES} samples at 16 kHz) are needed for one "
                    "spectrogram window. Drop or pad such clips."
                )
            clips.append(wave)
        return clips

    def _features(self, clips: list[np.ndarray]) -> dict[str, np.ndarray]:
        fe = self.feature_extractor
        if type(fe).__name__ != "WhisperFeatureExtractor":
            out = fe(clips, sampling_rate=self.sampling_rate, padding=True, return_attention_mask=True,
                     return_tensors="np")
            return {"input_values": out["input_values"].astype(np.float32), "attention_mask": out["attention_mask"]}
        # one clip at a time: no padding to 30 s, so each clip's log-mel is exactly what it is alone
        feats = [fe(c, sampling_rate=self.sampling_rate, padding="longest", truncation=False,
                    return_tensors="np")["input_features"][0] for c in clips]
        frames = max(f.shape[-1] for f in feats)
        frames += frames % 2
        batch = np.zeros((len(feats), feats[0].shape[0], frames), dtype=np.float32)
        mask = np.zeros((len(feats), frames), dtype=np.int64)
        for i, f in enumerate(feats):
            batch[i, :, : f.shape[-1]] = f
            mask[i, : f.shape[-1]] = 1
        return {"input_features": batch, "attention_mask": mask}

    # ------------------------------------------------------------------ text
    def prefix(self, texts: list[str], text_kind: str | None) -> list[str]:
        if text_kind not in TEXT_KINDS:
            raise ValueError(f"text_kind must be one of {TEXT_KINDS}, got {text_kind!r}")
        lead = {"query": self.query_prefix, "passage": self.passage_prefix, None: ""}[text_kind]
        return [lead + t for t in texts]

    def __call__(self, audio=None, text=None, sampling_rate: int | None = None, text_kind: str | None = "passage",
                 return_tensors: str | None = "pt", max_length: int = 512, **kwargs) -> BatchFeature:
        """Featurise `audio` and/or tokenise `text`.

        Returns `input_features`/`input_values` + `attention_mask` for audio alone, `input_ids` + `attention_mask`
        for text alone, and with both: the speech mask as `speech_attention_mask`.
        """
        if audio is None and text is None:
            raise ValueError("pass audio=..., text=... or both")
        data = {}
        if audio is not None:
            data.update(self._features(self.prepare_audio(audio, sampling_rate)))
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            if not texts or any(not isinstance(t, str) for t in texts):
                raise ValueError("text must be a string or a non-empty list of strings")
            tok = self.tokenizer(self.prefix(texts, text_kind), padding=True, truncation=True, max_length=max_length,
                                 return_tensors="np")
            if audio is not None:
                data["speech_attention_mask"] = data.pop("attention_mask")
            data["input_ids"] = tok["input_ids"]
            data["attention_mask"] = tok["attention_mask"]
        return BatchFeature(data, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return ["input_features", "input_values", "speech_attention_mask", "input_ids", "attention_mask"]


__all__ = ["WolofMRLProcessor", "decode_audio", "load_audio", "resample"]
