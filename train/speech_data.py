"""Speech-stage data: which passage each clip is trained towards, waveforms decoded and degraded on the fly in
DataLoader workers (no two epochs hear the same waveform), and the hard dev condition.

Targets (`speech_target`):
    "auto"        Wolof clips with a French twin -> `fr_text`; every other clip -> its own transcript
    "transcript"  every clip -> its own transcript (phase 1: speech -> frozen text embedding of what is said)
    "fr"          only clips with a French passage (Wolof clips with `fr_text`, French clips); others dropped
The own transcript is the corpus column `transcript` when present and non-empty, else `wo_text` for Wolof clips
and `fr_text` for every other language (the older corpora have no `transcript` column).
"""

from __future__ import annotations

import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from processing_wolofmrl import MIN_SAMPLES, decode_audio, resample

SAMPLING_RATE = 16000  # the speech towers' input rate (WhisperFeatureExtractor.sampling_rate)
TARGET_MODES = ("auto", "transcript", "fr")


def group_id(sentence_id: str) -> int:
    """Integer id of a sentence: rows sharing it (other voices) are not each other's negatives."""
    return zlib.crc32(str(sentence_id).encode())


def own_transcript(row: dict) -> str:
    """The text spoken in the row's clip: `transcript`, else `wo_text` (Wolof clips) or `fr_text` (others)."""
    if row.get("transcript"):
        return row["transcript"]
    return row["wo_text"] if row["speech_lang"] == "wo" else row["fr_text"]


def speech_target(row: dict, mode: str) -> tuple[str, str] | None:
    """(passage text, target kind "fr" | "transcript") of a clip, or None when `mode` drops the row.

    Raises:
        ValueError: an unknown `mode`.
    """
    if mode not in TARGET_MODES:
        raise ValueError(f"speech_target must be one of {TARGET_MODES}, got {mode!r}")
    lang = row["speech_lang"]
    if mode != "transcript":
        if lang == "wo" and row.get("fr_text"):
            return row["fr_text"], "fr"
        if lang == "fr":
            return own_transcript(row), "fr"
        if mode == "fr":
            return None
    text = own_transcript(row)
    return (text, "transcript") if text else None


def resolve_langs(langs: list[str], rows: list[dict]) -> list[str]:
    """`speech_langs` as a run uses it: ["all"] is every language the rows speak (sorted), else `langs` itself.

    Raises:
        ValueError: "all" beside other languages."""
    if "all" not in langs:
        return list(langs)
    if len(langs) > 1:
        raise ValueError(f"speech_langs {langs}: 'all' stands alone; write [all] or list the languages")
    return sorted({r["speech_lang"] for r in rows})


def speech_rows(rows: list[dict], langs: list[str], max_seconds: float, mode: str, log) -> list[dict]:
    """Rows spoken in `langs`, at most `max_seconds` long, with a target; each kept row gains `target`,
    `target_kind` and `transcript`. Logs what it kept per (language, target kind) and what it dropped, and why."""
    kept, dropped, counts = [], Counter(), Counter()
    for row in rows:
        if row["speech_lang"] not in langs:
            dropped["speech_lang"] += 1
            continue
        if row["duration_s"] > max_seconds:
            dropped["too_long"] += 1
            continue
        target = speech_target(row, mode)
        if target is None:
            dropped[f"no_{mode}_target"] += 1
            continue
        row = {**row, "target": target[0], "target_kind": target[1], "transcript": own_transcript(row)}
        counts[f"{row['speech_lang']}->{target[1]}"] += 1
        kept.append(row)
    log({"event": "rows", "split": rows[0]["split"] if rows else "?", "rows": len(rows), "kept": len(kept),
         "speech_target": mode, "per_lang_target": dict(sorted(counts.items())),
         "dropped_speech_lang": dropped["speech_lang"], "dropped_too_long": dropped["too_long"],
         **{f"dropped_{k}": v for k, v in dropped.items() if k not in ("speech_lang", "too_long")}})
    return kept


def row_wave(row: dict) -> np.ndarray:
    """A row's clip as 16 kHz mono float32 through `processing_wolofmrl.decode_audio`: an array (synthetic rows,
    `sampling_rate` key) or the datasets Audio struct {bytes, path} (a path is relative to the row's shard)."""
    audio = row["audio"]
    if isinstance(audio, np.ndarray):
        wave, rate = decode_audio(audio, int(row.get("sampling_rate", SAMPLING_RATE)))
    elif audio.get("bytes"):
        wave, rate = decode_audio(bytes(audio["bytes"]))
    else:
        wave, rate = decode_audio(str(Path(row["shard_dir"]) / audio["path"]))
    return resample(wave, rate, SAMPLING_RATE)


def degrader(preset: str):
    """`wolofmrl.augment.degrade` bound to a preset: f(wave, rng, others) -> (wave, description)."""
    try:
        from wolofmrl.augment import degrade
    except ImportError as err:
        raise ImportError("augmentation needs wolofmrl/augment.py (degrade(wave, rng, preset)); without it set "
                          "augment: null (train from the feature cache) and dev_hard: null") from err
    return lambda wave, rng, others=(): degrade(wave, rng, preset, others)


def babble_sources(rows: list[dict], i: int, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """`n` other rows' clips (drawn by `rng`, never row `i`): the talkers of babble noise."""
    if n <= 0 or len(rows) < 2:
        return []
    picks = rng.choice(len(rows) - 1, size=min(n, len(rows) - 1), replace=False)
    return [row_wave(rows[j + (j >= i)]) for j in picks]


def fit_length(wave: np.ndarray, max_seconds: float) -> np.ndarray:
    """Crop to `max_seconds` (a slowed-down clip may outgrow it) and pad to one STFT window."""
    wave = np.asarray(wave, dtype=np.float32)[: int(max_seconds * SAMPLING_RATE)]
    return np.pad(wave, (0, MIN_SAMPLES - len(wave))) if len(wave) < MIN_SAMPLES else wave


class AugmentedSpeechPairs(Dataset):
    """Speech pairs whose clip is decoded and degraded in the worker each time it is drawn.

    Index with `(row, epoch)` (BucketBatchSampler(with_epoch=True) yields those): the degradation's generator is
    seeded by (seed, epoch, row), so a run is reproducible and resumable, and every epoch hears new audio.
    With probability 1 - `prob` the clip stays clean; `babble` other clips are decoded as babble talkers.
    """

    KEYS = ("preset", "prob", "babble")

    def __init__(self, rows: list[dict], augment: dict, seed: int, max_seconds: float):
        unknown = sorted(set(augment) - set(self.KEYS))
        if unknown:
            raise ValueError(f"augment: unknown keys {unknown}; known: {list(self.KEYS)}")
        self.rows, self.seed, self.max_seconds = rows, seed, max_seconds
        self.prob = float(augment.get("prob", 1.0))
        self.preset = augment.get("preset", "train")
        self.babble = int(augment.get("babble", 3))
        self._degrade = None

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, key) -> dict:
        i, epoch = key
        row = self.rows[i]
        wave = row_wave(row)
        rng = np.random.default_rng([self.seed, epoch, i])
        if rng.random() < self.prob:
            if self._degrade is None:
                self._degrade = degrader(self.preset)
            wave, _ = self._degrade(wave, rng, babble_sources(self.rows, i, rng, self.babble))
        return {"wave": fit_length(wave, self.max_seconds), "target": row["target"],
                "transcript": row["transcript"], "group": group_id(row["sentence_id"])}


def speech_features(processor, waves: list[np.ndarray], device: str | torch.device = "cpu") -> dict:
    """Features of 16 kHz clips as the model takes them: {"input_features" | "input_values", "speech_mask"}.

    Whisper log-mel goes through `wolofmrl.inference.whisper_features` (one batched STFT on `device`, equal to the
    processor's clip-by-clip features); other extractors through the processor's own (CPU) path.
    """
    if type(processor.feature_extractor).__name__ == "WhisperFeatureExtractor":
        from wolofmrl.inference import whisper_features

        out = whisper_features(processor.feature_extractor, waves, device)
        return {"input_features": out["input_features"], "speech_mask": out["attention_mask"]}
    out = processor(audio=waves, sampling_rate=SAMPLING_RATE, return_tensors="pt")
    return {"input_values": out["input_values"].to(device), "speech_mask": out["attention_mask"].to(device)}


def featurize_on_device(batch: dict, processor, device) -> dict:
    """A batch that carries raw `waves` (features_on: device) gets its features here, on `device`."""
    if "waves" not in batch:
        return batch
    batch = dict(batch)
    batch.update(speech_features(processor, batch.pop("waves"), device))
    return batch


def wave_features(processor, wave: np.ndarray) -> np.ndarray:
    """One 16 kHz clip's features as the processor makes them alone, unpadded: (mels, frames) or (samples,)."""
    out = processor(audio=[wave], sampling_rate=SAMPLING_RATE, return_tensors="np")
    key = "input_features" if "input_features" in out else "input_values"
    return out[key][0][..., : int(out["attention_mask"][0].sum())].astype(np.float32)


class ClipWaves(Dataset):
    """Each row's clip as a 16 kHz wave (for decoding once in DataLoader workers). With `hard` = {"preset", "seed",
    "max_seconds", "babble"}, each clip is degraded with fixed settings (generator seeded by (seed, clip index);
    babble talkers are other clips of `rows`): the hard dev condition."""

    def __init__(self, rows: list[dict], hard: dict | None = None):
        self.rows, self.hard = rows, hard
        self._degrade = None

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i) -> np.ndarray:
        wave = row_wave(self.rows[i])
        if not self.hard:
            return wave
        if self._degrade is None:
            self._degrade = degrader(self.hard.get("preset", "hard"))
        rng = np.random.default_rng([int(self.hard.get("seed", 0)), i])
        others = babble_sources(self.rows, i, rng, int(self.hard.get("babble", 4)))
        return fit_length(self._degrade(wave, rng, others)[0], self.hard["max_seconds"])


class ClipFeatures(ClipWaves):
    """Each row's clip features as the processor makes them alone (`wave_features`), for the feature cache."""

    def __init__(self, rows: list[dict], processor):
        super().__init__(rows)
        self.processor = processor

    def __getitem__(self, i) -> np.ndarray:
        return wave_features(self.processor, super().__getitem__(i))


def in_workers(dataset: Dataset, workers: int) -> list:
    """Every item of `dataset`, computed in `workers` DataLoader processes (0: here), in order."""
    from torch.utils.data import DataLoader

    return list(DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=lambda x: x))
