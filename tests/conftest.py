"""Shared fixtures. Real converted backbones are built once into build/ (git-ignored) and reused."""

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub


@pytest.fixture(scope="session")
def untrained_model_dir():
    """The default WolofMRL model (Whisper base + multilingual-e5-small) with a fresh, untrained fusion adapter."""
    from wolofmrl.build import ROOT, build

    return build(ROOT / "build" / "test-models" / "wolofmrl-fusion-untrained", speech="whisper-base",
                 text="multilingual-e5-small", strategy="fusion", delta=None)
