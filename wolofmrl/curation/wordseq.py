"""Wolof word sequences for reading practice (issue 23): ``source: wolof_wordseq``, train split only.

Units are lexicon entries, each a word or a short phrase in CLAD spelling:

- FreeDict ``wol-fra`` headwords (the ``freedict`` sentences the curation pipeline read, train split only);
- CLDR Wolof display names and emoji names (`speech_texts.iter_word_pairs`, train split only);
- the ``wolof-normalizer`` 0.2.0 vocabulary (official spellings of its lexicon and its word list);
- ``wolof-numbers`` 0.3.0 numerals (`text.wolof_number`, read back by its parser).

A sequence joins units drawn at random (seeded) until it holds 2-8 words. It is not a sentence (no grammar):
it trains reading sounds into the words the text model sees, never retrieval. A sequence is dropped when it
equals or contains (as a contiguous word span) any held-out Wolof text (dev, test, intent, unseen_*), or
repeats another row.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from .store import Drops, stable_hash
from .text import dedupe_key


def normalizer_vocabulary() -> list[str]:
    """The ``wolof-normalizer`` vocabulary (official CLAD spellings), sorted."""
    from wolof_normalizer.normalizer import _vocabulary  # its word list + the official forms of its lexicon

    return sorted(_vocabulary())


def _spans(words: list[str], max_len: int) -> Iterable[str]:
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + max_len) + 1):
            yield " ".join(words[i:j])


def word_sequences(units: list[str], held_wo: set[str], seen: set[str], cfg: dict, drops: Drops) -> list[str]:
    """`cfg["count"]` distinct sequences of `cfg["min_words"]`-`cfg["max_words"]` words (or fewer when the
    draws run out: 20 tries per sequence), deterministic for the same units.

    held_wo: `dedupe_key`s of every held-out Wolof text (none may appear as a span); seen: keys already in the
    corpus (not repeated). Raises ValueError when `units` is empty."""
    units = sorted({u.strip() for u in units if u and u.strip()})
    if not units:
        raise ValueError("word_sequences: no lexicon units (fetch the sources: `speech_corpus texts --fetch`)")
    lo, hi, count = int(cfg.get("min_words", 2)), int(cfg.get("max_words", 8)), int(cfg["count"])
    rng = np.random.default_rng(stable_hash("wolof-wordseq", str(len(units))) % 2**32)
    max_held = max((len(k.split()) for k in held_wo), default=1)
    out: list[str] = []
    for _ in range(20 * count):
        if len(out) == count:
            break
        target = int(rng.integers(lo, hi + 1))
        words: list[str] = []
        while len(words) < target:
            words += units[int(rng.integers(len(units)))].split()
        if len(words) > hi:
            words = words[:hi]
        text = " ".join(words)
        key = dedupe_key(text)
        if key in seen:
            drops.drop("wordseq_duplicate", text[:40])
            continue
        if any(s in held_wo for s in _spans(key.split(), max_held)):
            drops.drop("wordseq_contains_held_text", text[:40])
            continue
        seen.add(key)
        out.append(text)
    return out
