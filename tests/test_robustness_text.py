"""Robustness of text inputs (issue 14 kind 8) and of the Hub files' imports (kind 11).

Text: a bad `text`, `max_length` or kind is an error naming the argument; queries get the query prefix on the easy
paths (`prompt_name`, `encode_query`). Imports: the remote-code folder loads and embeds with only torch +
transformers + numpy (soundfile, torchaudio, scipy, torchcodec made unimportable in a subprocess)."""

import enum
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from wolofmrl.testing import synthetic_waves, tiny_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("fusion")


def decoded(processor, **kwargs):
    ids = processor(**kwargs)["input_ids"][0].tolist()
    return processor.tokenizer.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("kwargs,error,match", [
    (dict(text=123), TypeError, "text must be a str or a list of str.*int"),
    (dict(text=["ok", 5]), TypeError, r"text\[1\] is int"),
    (dict(text=b"bytes"), TypeError, "text must be a str"),
    (dict(text="a\ud800b"), ValueError, r"text\[0\] is not valid Unicode.*position 1"),
    (dict(text=["ok", "\udfff"]), ValueError, r"text\[1\] is not valid Unicode"),
    (dict(text="x", max_length=0), ValueError, "max_length=0"),
    (dict(text="x", max_length=1), ValueError, "max_length=1"),
    (dict(text="x", max_length=True), ValueError, "max_length=True"),
    (dict(text="x", max_length=2.5), ValueError, "max_length=2.5"),
    (dict(text="x", max_length=10**6), ValueError, "max_length=1000000"),
    (dict(text="x", text_kind="queryy"), ValueError, "text_kind / prompt_name"),
    (dict(text="x", text_kind="query", prompt_name="document"), ValueError, "disagree"),
    (dict(text="x", foo=1), TypeError, "unexpected keyword.*foo"),
])
def test_kind8_bad_text_arguments_are_clear_errors(tiny, kwargs, error, match):
    with pytest.raises(error, match=match):
        tiny[1](**kwargs)


class PromptType(enum.Enum):  # the shape of mteb's PromptType
    query = "query"
    document = "document"


@pytest.mark.parametrize("kwargs,want", [
    (dict(text_kind="query"), "query: Naka nga def?"), (dict(prompt_name="query"), "query: Naka nga def?"),
    (dict(prompt_type=PromptType.query), "query: Naka nga def?"),
    (dict(prompt_name="document"), "passage: Naka nga def?"), (dict(text_kind=PromptType.document), "passage: "
                                                                                                     "Naka nga def?"),
    (dict(text_kind=None), "Naka nga def?"), (dict(), "passage: Naka nga def?"),
])
def test_kind8_prompt_names_pick_the_prefix(tiny, kwargs, want):
    assert decoded(tiny[1], text="Naka nga def?", **kwargs) == want


def test_kind8_max_length_is_honoured_and_queries_are_safe_by_default_paths(tiny):
    model, processor = tiny
    floor = len(processor.tokenizer("query: ")["input_ids"]) + 1
    out = processor(text="Naka nga def? " * 20, text_kind="query", max_length=floor)
    assert out["input_ids"].shape[-1] == floor
    with torch.no_grad():
        q = model.encode_query(text=["Naka nga def?"], dim=16, processor=processor)
        want = model.get_text_embeddings(**processor(text=["Naka nga def?"], text_kind="query"), dim=16)
        d = model.encode_document(["Bonjour"], dim=16, processor=processor)
        want_d = model.get_text_embeddings(**processor(text=["Bonjour"], prompt_name="document"), dim=16)
        s = model.encode_query(audio=synthetic_waves(1), sampling_rate=16000, dim=16, processor=processor)
    torch.testing.assert_close(q, want)
    torch.testing.assert_close(d, want_d)
    assert s.shape == (1, 16)
    with pytest.raises(ValueError, match="one of them"):
        model.encode_query(processor=processor)


BLOCKED = ("soundfile", "_soundfile", "torchaudio", "scipy", "torchcodec", "librosa", "wolofmrl", "__editable__")


def site_without_audio_packages(dest):
    """A copy (symlinks) of site-packages without the optional audio packages and this repo's editable install."""
    import sysconfig

    site = sysconfig.get_paths()["purelib"]
    dest.mkdir()
    for name in os.listdir(site):
        if not name.lower().startswith(BLOCKED) and not name.endswith(".pth"):
            os.symlink(os.path.join(site, name), dest / name)
    return dest


def test_kind11_remote_code_loads_without_optional_audio_packages(tiny, tmp_path):
    from wolofmrl.build import save

    model, processor = tiny
    folder = tmp_path / "model"
    save(model, processor, folder)
    wave = synthetic_waves(1, seconds=(1.0, 1.0), rate=44100)[0]
    np.save(tmp_path / "wave.npy", wave)
    script = textwrap.dedent(f"""
        import sys
        sys.path = [p for p in sys.path if p not in ("", {ROOT!r})]
        import numpy as np, torch
        from transformers import AutoModel, AutoProcessor
        p = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        m = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        import importlib.util
        for name in ("soundfile", "torchaudio", "scipy", "torchcodec", "wolofmrl"):
            assert importlib.util.find_spec(name) is None, name
        with torch.no_grad():
            e = m.get_speech_embeddings(**p(audio=np.load({str(tmp_path / 'wave.npy')!r}), sampling_rate=44100))
        np.save({str(tmp_path / 'out.npy')!r}, e.numpy())
        try:
            p(audio=b"RIFF....WAVEfmt ")
        except ValueError as err:
            assert "soundfile is not installed" in str(err), err
            print("decode error:", err)
    """)
    site = site_without_audio_packages(tmp_path / "site")
    run = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(site)})
    assert run.returncode == 0, run.stderr[-3000:]
    with torch.no_grad():
        want = model.get_speech_embeddings(**processor(audio=wave, sampling_rate=44100))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), want.numpy(), atol=1e-5)
