"""Voices held out of every training corpus: the hard benchmark condition speaks only with these.

One home for the rule, read by the corpus builders (which must never voice training rows with a held-out voice)
and by the hard benchmark condition (which voices its test clips only with held-out voices).

Voice names are the curation stage's: ``kokoro-<style>[+<style>]`` and ``espeak-<lang>-<variant>-p<pitch>``
(an optional ``-s<speed%>`` suffix may follow).
"""
from __future__ import annotations

# Kokoro never speaks in training: the hard condition hears a synthesis engine the model has never heard.
HELD_OUT_ENGINES = ("kokoro",)
# espeak-ng variants (files under espeak-ng-data/voices/!v) that training never uses
HELD_OUT_ESPEAK_VARIANTS = ("f5", "m7", "Andrea", "michel", "klatt4", "steph3", "iven4", "whisperf")


def engine(voice: str) -> str:
    """The synthesis engine of a voice name: ``"kokoro"`` or ``"espeak"``."""
    return voice.split("-", 1)[0]


def espeak_variant(voice: str) -> str | None:
    """The espeak-ng variant of an ``espeak-<lang>-<variant>-p<pitch>`` voice, else None."""
    parts = voice.split("-")
    return parts[2] if engine(voice) == "espeak" and len(parts) >= 4 else None


def is_held_out(voice: str) -> bool:
    """True when `voice` may speak only in the hard benchmark condition, never in training data."""
    return engine(voice) in HELD_OUT_ENGINES or espeak_variant(voice) in HELD_OUT_ESPEAK_VARIANTS
