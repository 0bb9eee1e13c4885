"""The source registry: one reader protocol for offline packages and Hub corpora.

A reader is ``reader(spec, drops, reserved) -> Iterator[(kind, event)]`` where ``kind`` is ``"seg"`` (one string
in one language: ``{"source", "group", "key", "lang", "text", "en", "license"[, "source_split"]}``) or ``"audio"``
(a recording of a key: ``{"source", "group", "key", "audio_id", "bytes", "path", "speaker", "source_split"}``).
Readers count what they cannot use on `drops`; they never apply ``limit``: `events` does, in one place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

from . import hub_sources, offline_sources
from .store import Drops


@dataclass(frozen=True)
class SourceType:
    """A source ``type:``: its reader, whether it brings its own recordings, whether its text is voiced by TTS
    unless the spec says ``voice:``."""

    reader: Callable[[dict, Drops, set], Iterator[tuple[str, dict]]]
    audio: bool
    tts: bool


def source_types() -> dict[str, SourceType]:
    """Every known ``type:`` (read at call time, so a reader added to a module's READERS is seen)."""
    types = {t: SourceType(fn, audio=False, tts=True) for t, fn in offline_sources.READERS.items()}
    types.update({t: SourceType(fn, audio=t in hub_sources.AUDIO_TYPES, tts=False)
                  for t, fn in hub_sources.READERS.items()})
    return types


def source_specs(cfg: dict) -> dict[str, dict]:
    """``{name: spec}`` in config order (``_rank``); the name defaults to the type.

    Raises:
        ValueError: a source without a ``type``, with an unknown one, or two sources with one name.
    """
    types = source_types()
    specs: dict[str, dict] = {}
    for i, s in enumerate(cfg["sources"]):
        s = dict(s)
        label = s.get("name") or f"sources[{i}]"
        if s.get("type") not in types:
            problem = "has no `type`" if "type" not in s else f"has unknown type {s['type']!r}"
            raise ValueError(f"curation source {label!r} {problem}; valid types: {', '.join(sorted(types))} "
                             f"(fix `type:` of that source in the config)")
        s.setdefault("name", s["type"])
        if s["name"] in specs:
            raise ValueError(f"two curation sources are named {s['name']!r}; give each a distinct `name:`")
        s["_rank"] = i
        specs[s["name"]] = s
    return specs


def audio_sources(specs: dict) -> set[str]:
    """Names of the sources that bring recordings (their sentences are matched to audio items)."""
    types = source_types()
    return {n for n, s in specs.items() if types[s["type"]].audio}


def is_voiced(spec: dict) -> bool:
    """Whether a source's sentences are spoken by TTS: ``voice:`` in the spec, else its type's default."""
    return bool(spec.get("voice", source_types()[spec["type"]].tts))


def reserved_names(cfg: dict) -> set:
    """Catalogs never read: `offline_sources.RESERVED` plus the config's ``reserved:`` (never fewer)."""
    return set(offline_sources.RESERVED) | {r.lower() for r in cfg.get("reserved", [])}


def events(spec: dict, drops: Drops, reserved: set, limit: int | None = None) -> Iterator[tuple[str, dict]]:
    """A source's events, reserved groups dropped, with ``limit`` applied: at most `limit` distinct keys (first seen first); every event
    of a later key is dropped as ``limit``. ``spec["limit"]`` overrides the run's `limit`."""
    lim = spec.get("limit", limit)
    reader = source_types()[spec["type"]].reader
    keys: set = set()
    for kind, ev in reader(spec, drops, reserved):
        ev_id = f"{spec['name']}/{ev['group']}/{ev.get('lang', 'audio')}/{ev['key']}"
        if offline_sources.reserved_name(ev["group"], extra=reserved):
            drops.drop("reserved_source", ev_id)
            continue
        if lim and ev["key"] not in keys:
            if len(keys) >= lim:
                drops.drop("limit", ev_id)
                continue
            keys.add(ev["key"])
        yield kind, ev
