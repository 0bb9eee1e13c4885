"""Curation config: a YAML file deep-merged over these defaults."""
from __future__ import annotations

import copy
from pathlib import Path

import yaml

DEFAULTS: dict = {
    "name": "corpus",
    "out": "data/corpus",
    "reserved": [],  # added to offline_sources.RESERVED, never replacing it
    "sources": [],
    "text": {
        "min_words": 2,          # a source may override (dictionaries: 1)
        "max_chars": 400,
        "max_length_ratio": 3.0,  # longer/shorter side, in characters
        "ratio_min_chars": 12,    # the ratio is only judged when both sides are at least this long
        "fr_only_fraction": 1.0,  # share of French-only strings kept (deterministic by key)
        "fr_only_min_words": 3,   # French-only strings are mostly UI labels and place names below that
    },
    "mt": {"backend": "none"},  # none | nllb | lookup
    "voice": {
        "workers": None,          # None: os.cpu_count()
        "chunk_size": 32,
        "wo_voices_per_sentence": 2,
        "fr_voices_per_paired_sentence": 1,
        "fr_voices_per_fr_only_sentence": 1,
        "engines": {"wo": {"kokoro": 0.7, "espeak": 0.3}, "fr": {"kokoro": 0.3, "espeak": 0.7}},
        "speed": [0.9, 1.1],
        "augment": {"p_noise": 0.4, "snr_db": [30, 20, 12], "p_bandlimit": 0.2, "gain_db": [-6.0, 2.0]},
        "audio_format": "flac",   # flac (lossless) | opus (~7x smaller)
    },
    "filter": {
        "min_duration_s": 0.4,
        "max_duration_s": 30.0,   # Whisper's window
        "min_rms": 0.003,
        "max_clip_fraction": 0.01,
        "min_chars_per_s": 2.0,
        "max_chars_per_s": 40.0,
        "min_source_sr": 8000,
    },
    "split": {"dev": 0.05, "test": 0.05, "salt": "wolofmrl-split-v1"},
    "write": {"rows_per_shard": 2000},
}


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def load_config(path: str | Path, **overrides) -> dict:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    cfg = _merge(DEFAULTS, raw)
    cfg = _merge(cfg, {k: v for k, v in overrides.items() if v is not None})
    cfg["_config_path"] = str(path)
    return cfg
