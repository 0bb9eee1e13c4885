"""Who speaks what in the stage-2 speech corpus: espeak-ng and MBROLA voices, Wolof respelled per reader, the plan.

A voice is ``espeak-<reader>-<variant>-p<pitch>-s<speed%>``: espeak-ng's `reader` language voice with a
variant (a file under ``espeak-ng-data/voices/!v``), a pitch (0-99) and a speed in percent of 165 words per
minute; or ``mbrola-<reader>-<voice>-p<pitch>-s<speed%>``: the MBROLA diphone voice (Debian ``mbrola-<voice>``)
driven by espeak-ng as ``mb-<voice>``, reading with `reader`'s rules (`wolofmrl.voices.TRAIN_MBROLA` /
`HELD_OUT_MBROLA`). With ``voices.mbrola_share`` > 0 that share of a row's clips (drawn per clip) goes to an MBROLA
voice of the row's language where one exists. Wolof has no espeak-ng voice: it is respelled for the orthography of a phonemic reader language
(`wolof_respelling`). Train rows are never spoken by a held-out voice (`wolofmrl.voices.is_held_out`), dev/test
rows only by held-out voices, unseen_dev / unseen_test rows (whole held-out sources, `unseen`) likewise, intent
rows not at all (the intent benchmark voices them itself).
"""
from __future__ import annotations

import re

import numpy as np

from ..voices import HELD_OUT_MBROLA, TRAIN_MBROLA, engine, is_held_out
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


VOICED_SPLITS = ("train", "dev", "test", "unseen_dev", "unseen_test")


def voice_name(reader: str, variant: str, pitch: int, speed: int, engine: str = "espeak") -> str:
    return f"{engine}-{reader}-{variant}-p{int(pitch)}-s{int(speed)}"


def parse_voice(voice: str) -> tuple[str, str, int, int]:
    """``espeak-sw-m3-p50-s100`` -> ("sw", "m3", 50, 100); ``mbrola-es-es2-p50-s100`` -> ("es", "es2", 50, 100).
    Raises ValueError on another form."""
    parts = voice.split("-")
    if len(parts) != 5 or parts[0] not in ("espeak", "mbrola") or parts[3][:1] != "p" or parts[4][:1] != "s":
        raise ValueError(f"voice {voice!r} is not espeak|mbrola-<reader>-<variant>-p<pitch>-s<speed>")
    return parts[1], parts[2], int(parts[3][1:]), int(parts[4][1:])


def mbrola_for(readers: list[str], held: bool, vc: dict) -> list[tuple[str, str]]:
    """[(reader, MBROLA voice)] that may speak a row read by `readers` (train or held-out set), per the config's
    ``mbrola_train`` / ``mbrola_heldout`` lists (default `wolofmrl.voices.TRAIN_MBROLA` / `HELD_OUT_MBROLA`)."""
    table = {**TRAIN_MBROLA, **HELD_OUT_MBROLA}
    names = vc.get("mbrola_heldout", list(HELD_OUT_MBROLA)) if held else vc.get("mbrola_train", list(TRAIN_MBROLA))
    return [(table[m], m) for m in names if table.get(m) in readers]


def pick_voices(row_id: str, readers: list[str], variants: list[str], k: int, vc: dict,
                mbrola: list[tuple[str, str]] = ()) -> list[str]:
    """`k` distinct voices for one row, deterministic in `row_id`; readers taken in turn from a random start.
    Each clip goes to an MBROLA voice of `mbrola` with probability ``vc["mbrola_share"]`` (default 0)."""
    rng = np.random.default_rng(stable_hash("speech-voices", row_id))
    start = int(rng.integers(len(readers)))
    share = float(vc.get("mbrola_share", 0.0)) if mbrola else 0.0
    chosen: list[str] = []
    for i in range(50 * k):
        if len(chosen) == k:
            break
        pitch = vc["pitches"][int(rng.integers(len(vc["pitches"])))]
        speed = vc["speeds"][int(rng.integers(len(vc["speeds"])))]
        if rng.random() < share:
            reader, mb = mbrola[int(rng.integers(len(mbrola)))]
            v = voice_name(reader, mb, pitch, speed, engine="mbrola")
        else:
            v = voice_name(readers[(start + i) % len(readers)], variants[int(rng.integers(len(variants)))],
                           pitch, speed)
        if v not in chosen:
            chosen.append(v)
    return chosen


def plan_row(row: dict, vc: dict) -> list[dict]:
    """The clips of one text row: ``{clip_id, voice, reader, espeak_text}`` (none for text-only and intent rows).

    Raises AssertionError if a train row would get a held-out voice or a dev/test row a training voice.
    """
    if row["text_only"] or row["split"] not in VOICED_SPLITS:
        return []
    train = row["split"] == "train"
    lang = row["speech_lang"]
    readers = list(vc["wo_readers"]) if lang == "wo" else [lang]
    k = vc["wo_train" if train else "wo_heldout"] if lang == "wo" else vc["other_train" if train else "other_heldout"]
    if row.get("source") == "wolof_wordseq":
        k = vc.get("wordseq_train", k)
    variants = list(vc["train_variants" if train else "heldout_variants"])
    clips = []
    for voice in pick_voices(row["id"], readers, variants, int(k), vc, mbrola_for(readers, not train, vc)):
        assert is_held_out(voice) != train, f"{voice} may not speak a {row['split']} row"
        reader = parse_voice(voice)[0]
        text = wolof_respelling(row["transcript"], reader) if lang == "wo" else row["transcript"]
        clips.append({"clip_id": f"{row['id']}-{voice}", "voice": voice, "reader": reader, "espeak_text": text,
                      "engine": engine(voice)})
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
    train_mb, held_mb = vc.get("mbrola_train", list(TRAIN_MBROLA)), vc.get("mbrola_heldout", list(HELD_OUT_MBROLA))
    bad = [m for m in train_mb if is_held_out(voice_name("es", m, 50, 100, "mbrola"))]  # also refuses fr1 / fr4
    bad += [m for m in held_mb if not is_held_out(voice_name("es", m, 50, 100, "mbrola"))]
    unknown = [m for m in [*train_mb, *held_mb] if m not in {**TRAIN_MBROLA, **HELD_OUT_MBROLA}]
    if bad or unknown:
        raise ValueError(f"voices.mbrola_train / mbrola_heldout break the held-out rule {bad} or name voices with no "
                         f"reading language {unknown}: see wolofmrl.voices.TRAIN_MBROLA / HELD_OUT_MBROLA")
