"""Robustness of model calls and model folders (issue 14 kinds 5, 6): inputs in any form the processor gives or
a user builds route to the right embedding; a damaged folder fails to load, naming the file, the tensors and the
fix. Tiny random models on the real tokenizer; synthetic signals, not speech."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from modeling_wolofmrl import WolofMRLModel
from processing_wolofmrl import WolofMRLProcessor
from wolofmrl.testing import synthetic_waves, tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("fusion")


@pytest.fixture(scope="module")
def waves():
    return synthetic_waves(2, seconds=(1.0, 2.0), seed=4)


@pytest.fixture(scope="module")
def folder(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-model")
    tiny[0].save_pretrained(out)
    tiny[1].save_pretrained(out)
    return out


# ------------------------------------------------------------------------------------------- kind 5: model calls
@pytest.mark.parametrize("call", ["joint processor output", "numpy inputs", "forward audio only",
                                  "get_audio_features", "numpy dim", "torch dim"])
def test_kind5_speech_inputs_route_to_the_same_embedding(tiny, waves, call):
    model, processor = tiny
    alone = processor(audio=waves, sampling_rate=16000)
    with torch.no_grad():
        ref = model.get_speech_embeddings(**alone, dim=16)
        if call == "joint processor output":  # the text mask is longer than the speech mask here
            got = model.get_speech_embeddings(**processor(audio=waves, text=["a", "b " * 300], text_kind="query",
                                                          sampling_rate=16000), dim=16)
        elif call == "numpy inputs":
            got = model.get_speech_embeddings(**processor(audio=waves, sampling_rate=16000, return_tensors="np"),
                                              dim=16)
        elif call == "forward audio only":
            got = torch.nn.functional.normalize(model(**alone).speech_embeds[:, :16], dim=-1)
        elif call == "get_audio_features":
            got = model.get_audio_features(**alone, dim=16)
        else:
            got = model.get_speech_embeddings(**alone, dim=np.int64(16) if call == "numpy dim" else torch.tensor(16))
    assert got.shape == ref.shape
    assert torch.nn.functional.cosine_similarity(got, ref).min() >= 0.999


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_kind5_half_precision_model_takes_float32_features(folder, waves, dtype):
    ref = WolofMRLModel.from_pretrained(folder).eval()
    half = WolofMRLModel.from_pretrained(folder, dtype=dtype).eval()
    processor = WolofMRLProcessor.from_pretrained(folder)
    batch = processor(audio=waves, sampling_rate=16000)
    with torch.no_grad():
        got = half.get_speech_embeddings(**batch)
        want = ref.get_speech_embeddings(**batch)
    assert got.dtype == torch.float32
    assert torch.nn.functional.cosine_similarity(got, want).min() >= 0.99


@pytest.mark.parametrize("bad,error,match", [
    (dict(dim=True), ValueError, "dim=True"), (dict(dim=np.float64(8.0)), ValueError, "1..48"),
    (dict(dim=np.int64(49)), ValueError, "1..48"), (dict(return_loss=True), ValueError, "2 clips and 3 texts"),
])
def test_kind5_bad_model_calls_are_clear_errors(tiny, waves, bad, error, match):
    model, processor = tiny
    batch = processor(audio=waves, text=["un", "deux", "trois"], text_kind="passage", sampling_rate=16000)
    with pytest.raises(error, match=match):
        if "return_loss" in bad:
            model(**batch, **bad)
        else:
            model.get_speech_embeddings(**batch, **bad)


def test_kind5_text_call_with_joint_output_and_no_speech_is_clear(tiny, waves):
    model, processor = tiny
    joint = processor(audio=waves, text=["un", "deux"], text_kind="passage", sampling_rate=16000)
    with torch.no_grad():
        a = model.get_text_embeddings(**joint)
        b = model.get_text_embeddings(**processor(text=["un", "deux"], text_kind="passage"))
    torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="input_features.*get_text_embeddings"):
        model.get_speech_embeddings(**processor(text=["un"], text_kind="query"))


# ------------------------------------------------------------------------------------------- kind 6: model folders
def _rewrite(folder, fn):
    path = folder / "model.safetensors"
    state = load_file(path)
    os.remove(path)
    save_file(fn(state), path, metadata={"format": "pt"})


def _set_dual(folder):
    config = json.loads((folder / "config.json").read_text())
    config["strategy"] = "dual"
    (folder / "config.json").write_text(json.dumps(config))


def _nan(state):
    state["adapter.proj.weight"] = torch.full_like(state["adapter.proj.weight"], float("nan"))
    return state


DAMAGE = {
    "adapter tensors missing": (lambda d: _rewrite(d, lambda s: {k: v for k, v in s.items()
                                                                 if not k.startswith("adapter.")}),
                                "missing tensors.*adapter.proj.weight"),
    "strategy edited to dual": (_set_dual, "strategy='dual'.*(missing|unexpected)"),
    "NaN weights": (lambda d: _rewrite(d, _nan), "NaN or inf.*adapter.proj.weight"),
    "text layer missing": (lambda d: _rewrite(d, lambda s: {k: v for k, v in s.items()
                                                            if not k.startswith("text_model.encoder.layer.1.")}),
                           "missing tensors.*text_model.encoder.layer.1"),
    "shape mismatch": (lambda d: _rewrite(d, lambda s: {**s, "text_head.bias": torch.zeros(7)}),
                       "another shape.*text_head.bias"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_kind6_damaged_weights_fail_to_load_naming_the_tensors(folder, tmp_path, damage):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    mutate, match = DAMAGE[damage]
    mutate(copy)
    with pytest.raises(ValueError, match=f"model.safetensors.*{match}.*(rebuild|save_pretrained)"):
        WolofMRLModel.from_pretrained(copy)
    assert WolofMRLModel.from_pretrained(folder) is not None  # the intact folder loads clean


@pytest.mark.parametrize("damage,error,match", [
    ("no tokenizer.json", OSError, "tokenizer.json is missing.*<unk>.*save_pretrained"),
    ("no tokenizer_config.json", OSError, "tokenizer_config.json is missing.*save_pretrained"),
    ("truncated tokenizer_config.json", ValueError, "tokenizer_config.json.*not valid JSON.*truncated"),
    ("truncated processor_config.json", ValueError, "processor_config.json.*not valid JSON"),
])
def test_kind6_damaged_processor_files_name_the_file_and_fix(folder, tmp_path, damage, error, match):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    name = damage.split()[-1]
    if damage.startswith("no "):
        os.remove(copy / name)
    else:
        text = (copy / name).read_text()
        (copy / name).write_text(text[: len(text) // 2])
    with pytest.raises(error, match=match):
        WolofMRLProcessor.from_pretrained(copy)
