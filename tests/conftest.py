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


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A built folder of a tiny random WolofMRL model (real XLM-R tokenizer, Whisper feature extractor; width 48)."""
    from wolofmrl.build import save
    from wolofmrl.testing import tiny_model

    folder = tmp_path_factory.mktemp("tiny") / "model"
    save(*tiny_model(), folder)
    return folder


@pytest.fixture(autouse=True)
def no_default_model(monkeypatch, tmp_path_factory):
    """Every test sees what CI sees: no built checkpoints/wolofmrl-base and no $WOLOFMRL_MODEL, so a command that
    silently falls back on the developer's own default model fails here too (a test passed locally and failed in CI
    that way: `index --add` resolved --model before reading the INDEX's model)."""
    import wolofmrl.cli

    monkeypatch.delenv("WOLOFMRL_MODEL", raising=False)
    monkeypatch.setattr(wolofmrl.cli, "SOURCE_MODEL", tmp_path_factory.getbasetemp() / "no-source-model")
