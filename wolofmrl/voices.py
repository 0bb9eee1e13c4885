"""Voices held out of every training corpus: the hard benchmark condition speaks only with these.

One home for the rule, read by the corpus builders (which must never voice training rows with a held-out voice)
and by the hard benchmark condition (which voices its test clips only with held-out voices).

Voice names are the curation stage's: ``kokoro-<style>[+<style>]``, ``espeak-<lang>-<variant>-p<pitch>``
(an optional ``-s<speed%>`` suffix may follow) and ``mbrola-<lang>-<mbrola voice>-p<pitch>-s<speed%>`` (an MBROLA
diphone voice driven by espeak-ng as ``mb-<voice>``).

Voice plan of the reading corpus (issue 23; `wolofmrl.curation.speech_voices` applies it):

| engine | train | dev / test / unseen_dev / unseen_test |
|---|---|---|
| espeak-ng | every variant but the held-out ones, every reading language | `HELD_OUT_ESPEAK_VARIANTS` |
| MBROLA | `TRAIN_MBROLA` (Spanish es1, Mexican mx1 and Malay ma1 read respelled Wolof and their own language; fr7 French; nl1 Dutch) | `HELD_OUT_MBROLA` (Spanish es3: respelled Wolof and Spanish) |
| Kokoro | never | the hard condition only (`HELD_OUT_ENGINES`) |

MBROLA ``fr1`` and ``fr4`` (and SVOX Pico, libttspico) are reserved for an independent evaluation: `RESERVED_MBROLA`
voices are refused everywhere (`check_not_reserved`).
"""
from __future__ import annotations

# Kokoro never speaks in training: the hard condition hears a synthesis engine the model has never heard.
HELD_OUT_ENGINES = ("kokoro",)
# espeak-ng variants (files under espeak-ng-data/voices/!v) that training never uses
HELD_OUT_ESPEAK_VARIANTS = ("f5", "m7", "Andrea", "michel", "klatt4", "steph3", "iven4", "whisperf")
# MBROLA voices (Debian mbrola-<voice>): {voice: espeak-ng language that reads the text}
# (chosen small: all seven .debs with the engine are 12 MB, for the device's 64 MiB carry)
TRAIN_MBROLA = {"es1": "es", "mx1": "es", "ma1": "ms", "fr7": "fr", "nl1": "nl"}
HELD_OUT_MBROLA = {"es3": "es"}
RESERVED_MBROLA = ("fr1", "fr4")  # used nowhere (shared/ASSETS.md)


def engine(voice: str) -> str:
    """The synthesis engine of a voice name: ``"kokoro"``, ``"espeak"`` or ``"mbrola"``."""
    return voice.split("-", 1)[0]


def espeak_variant(voice: str) -> str | None:
    """The espeak-ng variant of an ``espeak-<lang>-<variant>-p<pitch>`` voice, else None."""
    parts = voice.split("-")
    return parts[2] if engine(voice) == "espeak" and len(parts) >= 4 else None


def mbrola_voice(voice: str) -> str | None:
    """The MBROLA voice (``es2``) of an ``mbrola-<lang>-<voice>-p<pitch>-s<speed>`` name, else None."""
    parts = voice.split("-")
    return parts[2] if engine(voice) == "mbrola" and len(parts) >= 3 else None


def check_not_reserved(voice: str) -> None:
    """Raise ValueError for a reserved voice (MBROLA fr1 / fr4, SVOX Pico)."""
    if mbrola_voice(voice) in RESERVED_MBROLA or engine(voice) in ("pico", "svox"):
        raise ValueError(f"voice {voice!r} is reserved for an independent evaluation (MBROLA {RESERVED_MBROLA}, "
                         "libttspico): use it nowhere")


def is_held_out(voice: str) -> bool:
    """True when `voice` may not speak training data (held-out engine, espeak-ng variant or MBROLA voice)."""
    check_not_reserved(voice)
    return (engine(voice) in HELD_OUT_ENGINES or espeak_variant(voice) in HELD_OUT_ESPEAK_VARIANTS
            or mbrola_voice(voice) in HELD_OUT_MBROLA)
