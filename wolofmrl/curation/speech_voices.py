"""Who speaks what in the stage-2 speech corpus: espeak-ng voices, Wolof respelled per reading language, the plan.

A voice is ``espeak-<reader>-<variant>-p<pitch>-s<speed%>``: espeak-ng's `reader` language voice with a
variant (a file under ``espeak-ng-data/voices/!v``), a pitch (0-99) and a speed in percent of 165 words per
minute. Wolof has no espeak-ng voice: it is respelled for the orthography of a phonemic reader language
(`wolof_respelling`). Train rows are never spoken by a held-out voice (`wolofmrl.voices.is_held_out`), dev/test
rows only by held-out voices, intent rows not at all (the intent benchmark voices them itself).
"""
from __future__ import annotations

import re

import numpy as np

from ..voices import is_held_out
from .store import stable_hash
from .text import spell_wolof_numbers

_VOWEL_ACCENTS = {"ë": "e", "é": "e", "è": "e", "ó": "o", "à": "a", "ã": "a", "í": "i", "ú": "u"}
# Indonesian / Malay: c = /tʃ/, j = /dʒ/, ny = /ɲ/, ng = /ŋ/, kh = /x/: Wolof spelling almost as is
_ID = str.maketrans({"ñ": "ny", "ŋ": "ng", "x": "kh", "q": "k", **_VOWEL_ACCENTS})
# Spanish: ch = /tʃ/, y = /ʝ/ (closest to Wolof j), j = /x/ (Wolof x), gu before e/i keeps /g/
_ES = str.maketrans({"c": "ch", "j": "y", "x": "j", "ŋ": "ng", "q": "k", **_VOWEL_ACCENTS})
_ES_G = re.compile(r"g(?=[eiéëè])")


def wolof_respelling(text: str, reader: str) -> str:
    """CLAD Wolof respelled so espeak-ng's `reader` voice (sw, id, ms, es) reads it close to Wolof.

    Raises ValueError for a reader with no respelling table.
    """
    if reader == "sw":
        from .voice import wolof_for_swahili

        return wolof_for_swahili(text)
    t = spell_wolof_numbers(text).lower()
    if reader in ("id", "ms"):
        return t.translate(_ID)
    if reader == "es":
        return _ES_G.sub("gu", t).translate(_ES)
    raise ValueError(f"no Wolof respelling for reader {reader!r}: use one of sw, id, ms, es")


def voice_name(reader: str, variant: str, pitch: int, speed: int) -> str:
    return f"espeak-{reader}-{variant}-p{int(pitch)}-s{int(speed)}"


def parse_voice(voice: str) -> tuple[str, str, int, int]:
    """``espeak-sw-m3-p50-s100`` -> ("sw", "m3", 50, 100). Raises ValueError on another form."""
    parts = voice.split("-")
    if len(parts) != 5 or parts[0] != "espeak" or parts[3][:1] != "p" or parts[4][:1] != "s":
        raise ValueError(f"voice {voice!r} is not espeak-<reader>-<variant>-p<pitch>-s<speed>")
    return parts[1], parts[2], int(parts[3][1:]), int(parts[4][1:])


def pick_voices(row_id: str, readers: list[str], variants: list[str], k: int, vc: dict) -> list[str]:
    """`k` distinct voices for one row, deterministic in `row_id`; readers taken in turn from a random start."""
    rng = np.random.default_rng(stable_hash("speech-voices", row_id))
    start = int(rng.integers(len(readers)))
    chosen: list[str] = []
    for i in range(50 * k):
        if len(chosen) == k:
            break
        v = voice_name(readers[(start + i) % len(readers)], variants[int(rng.integers(len(variants)))],
                       vc["pitches"][int(rng.integers(len(vc["pitches"])))],
                       vc["speeds"][int(rng.integers(len(vc["speeds"])))])
        if v not in chosen:
            chosen.append(v)
    return chosen


def plan_row(row: dict, vc: dict) -> list[dict]:
    """The clips of one text row: ``{clip_id, voice, reader, espeak_text}`` (none for text-only and intent rows).

    Raises AssertionError if a train row would get a held-out voice or a dev/test row a training voice.
    """
    if row["text_only"] or row["split"] not in ("train", "dev", "test"):
        return []
    train = row["split"] == "train"
    lang = row["speech_lang"]
    readers = list(vc["wo_readers"]) if lang == "wo" else [lang]
    k = vc["wo_train" if train else "wo_heldout"] if lang == "wo" else vc["other_train" if train else "other_heldout"]
    variants = list(vc["train_variants" if train else "heldout_variants"])
    clips = []
    for voice in pick_voices(row["id"], readers, variants, int(k), vc):
        assert is_held_out(voice) != train, f"{voice} may not speak a {row['split']} row"
        reader = parse_voice(voice)[0]
        text = wolof_respelling(row["transcript"], reader) if lang == "wo" else row["transcript"]
        clips.append({"clip_id": f"{row['id']}-{voice}", "voice": voice, "reader": reader, "espeak_text": text})
    return clips


def check_voice_config(vc: dict) -> None:
    """Raise ValueError when the voice config breaks the held-out rule or names an unknown reader."""
    bad_train = [v for v in vc["train_variants"] if is_held_out(voice_name("sw", v, 50, 100))]
    bad_held = [v for v in vc["heldout_variants"] if not is_held_out(voice_name("sw", v, 50, 100))]
    if bad_train or bad_held:
        raise ValueError(f"voices.train_variants holds held-out variants {bad_train} / voices.heldout_variants holds "
                         f"training variants {bad_held}: see wolofmrl.voices.HELD_OUT_ESPEAK_VARIANTS")
    for r in vc["wo_readers"]:
        wolof_respelling("a", r)
