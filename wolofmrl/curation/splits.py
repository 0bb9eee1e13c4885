"""Which split a sentence and a voice belong to: deterministic, salted, disjoint.

Splits: ``train``, ``dev``, ``test`` and, when ``split.intent > 0``, ``intent`` — sentences kept for the
spoken-intent benchmark, out of training and out of the retrieval test split. They are written as their own
split folder (``<out>/intent/``) and voiced with the held-out *test* voices, so no training voice speaks them.
"""
from __future__ import annotations

from .store import stable_hash, unit_interval

SPLITS = ("train", "dev", "test")
HELD_OUT = ("dev", "test", "intent")  # their sentences and voices never reach train
# the voice set each split is spoken with: intent sentences use the held-out test voices
VOICE_SET = {"train": "train", "dev": "dev", "test": "test", "intent": "test"}


def splits_of(cfg: dict) -> tuple[str, ...]:
    """The splits a config writes: train/dev/test, plus ``intent`` when ``split.intent > 0``."""
    return SPLITS + (("intent",) if cfg["split"].get("intent", 0.0) > 0 else ())


def sentence_id(source: str, group: str, key: str) -> str:
    """The id every voice of one (Wolof, French) sentence shares: ``<source>-<16 hex>``."""
    return f"{source}-{stable_hash(source, group, key):016x}"


def sentence_split(sent: dict, cfg: dict, specs: dict) -> str:
    """Deterministic split of a sentence: its source's own split where the config keeps
    it (real corpora with official splits), else a salted hash of the sentence id."""
    spec = specs.get(sent["source"], {})
    if spec.get("split_from_source") and sent.get("source_split") in SPLITS:
        return sent["source_split"]
    u = unit_interval(cfg["split"]["salt"], sent["sentence_id"])
    if u < cfg["split"]["test"]:
        return "test"
    if u < cfg["split"]["test"] + cfg["split"]["dev"]:
        return "dev"
    # sentences reserved for the spoken-intent benchmark: never in training, never in the retrieval test split
    if u < cfg["split"]["test"] + cfg["split"]["dev"] + cfg["split"].get("intent", 0.0):
        return "intent"
    return "train"


def voice_split(voice: str, cfg: dict) -> str:
    """Held-out voices: the synthetic ones per engine/language group (fixed sets), real
    speakers by a salted hash. Returns ``train``, ``dev`` or ``test`` (see `VOICE_SET`)."""
    from ..voices import engine
    from .voice import list_voices

    salt = cfg["split"]["salt"]
    if voice.startswith(("kokoro-", "espeak-")):
        lang = "fr" if voice.startswith("espeak-fr") else "wo"
        group = [v for v in list_voices(lang) if engine(v) == engine(voice)]
        ranked = sorted(group, key=lambda v: stable_hash(salt, "voice", v))
        k = max(1, round(0.15 * len(ranked)))
        if voice in ranked[:k]:
            return "test"
        if voice in ranked[k:2 * k]:
            return "dev"
        return "train"
    u = unit_interval(salt, "speaker", voice)
    if u < cfg["split"]["test"] * 2:
        return "test"
    if u < (cfg["split"]["test"] + cfg["split"]["dev"]) * 2:
        return "dev"
    return "train"
