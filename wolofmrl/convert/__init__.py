"""Offline backbone conversion: asset packages -> Hugging Face folders in `build/backbones/`.

    from wolofmrl.convert import ensure_backbone
    path = ensure_backbone("whisper-base")          # WhisperForConditionalGeneration + WhisperProcessor
    path = ensure_backbone("multilingual-e5-small")  # XLMRobertaModel (no pooler) + tokenizer

CLI: ``python -m wolofmrl.convert --all --root build/backbones``.

Importing this package is cheap (no torch / transformers); converters load them lazily.
"""

from .assets import MissingAssetError
from .backbones import (ARCHITECTURES, BACKBONES, MARKER, Architecture, Backbone, architecture, backbone_spec,
                        build_info, ensure_backbone, is_complete)
from .ct2 import CT2Model, read_ct2_model

__all__ = [
    "ARCHITECTURES",
    "Architecture",
    "BACKBONES",
    "Backbone",
    "architecture",
    "backbone_spec",
    "MARKER",
    "CT2Model",
    "MissingAssetError",
    "build_info",
    "ensure_backbone",
    "is_complete",
    "read_ct2_model",
]
