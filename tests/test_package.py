"""The Hub package on real converted backbones: AutoModel/AutoProcessor loading, save/reload, deltas."""

import json
import os
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from wolofmrl.testing import espeak_wave

pytestmark = pytest.mark.slow

FRENCH = ["Le marché de Dakar ouvre tôt le matin.", "Il pleut beaucoup pendant l'hivernage.",
          "Les enfants vont à l'école à pied."]


@pytest.fixture(scope="module")
def loaded(untrained_model_dir):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(untrained_model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(untrained_model_dir, trust_remote_code=True)
    return model, processor


@pytest.fixture(scope="module")
def clips():
    return [espeak_wave(t, "fr") for t in FRENCH]


def test_folder_is_a_hub_model_repo(untrained_model_dir):
    files = set(os.listdir(untrained_model_dir))
    assert {"config.json", "model.safetensors", "configuration_wolofmrl.py", "modeling_wolofmrl.py",
            "processing_wolofmrl.py", "processor_config.json"} <= files or "preprocessor_config.json" in files
    config = json.loads((untrained_model_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_wolofmrl.WolofMRLModel"
    assert config["auto_map"]["AutoConfig"] == "configuration_wolofmrl.WolofMRLConfig"
    assert config["freeze_speech_encoder"] and config["freeze_text_encoder"]


def test_loaded_model_is_the_real_thing(loaded):
    model, processor = loaded
    assert type(model).__name__ == "WolofMRLModel" and type(processor).__name__ == "WolofMRLProcessor"
    assert model.config.speech_config.d_model == 512 and model.config.speech_config.encoder_layers == 6
    assert model.config.text_config.hidden_size == 384 and model.config.text_config.num_hidden_layers == 12
    assert model.config.matryoshka_dims[0] == 384
    trainable = set(model.trainable_parameter_names())
    assert trainable and all(n.startswith(("adapter.", "text_head.", "logit_scale", "prompt")) for n in trainable)


def test_text_side_is_multilingual_e5(loaded):
    """Untrained adapter, but the text side is the converted mE5 (identity head): it ranks translations."""
    model, processor = loaded
    english = ["The market in Dakar opens early in the morning.", "It rains a lot during the rainy season.",
               "The children walk to school."]
    with torch.no_grad():
        q = model.get_text_embeddings(**processor(text=english, text_kind="query"))
        d = model.get_text_embeddings(**processor(text=FRENCH, text_kind="passage"))
    assert (q @ d.T).argmax(-1).tolist() == [0, 1, 2]


def test_speech_padding_invariance_on_real_whisper(loaded, clips):
    model, processor = loaded
    with torch.no_grad():
        batch = model.get_speech_embeddings(**processor(audio=clips, sampling_rate=16000))
        for i, clip in enumerate(clips):
            alone = model.get_speech_embeddings(**processor(audio=[clip], sampling_rate=16000))
            assert torch.dot(alone[0], batch[i]).item() >= 0.999


def test_dims_on_real_model(loaded, clips):
    model, processor = loaded
    feats = processor(audio=clips[:1], sampling_rate=16000)
    with torch.no_grad():
        for dim in model.config.matryoshka_dims:
            e = model.get_speech_embeddings(**feats, dim=dim)
            assert e.shape == (1, dim) and abs(e.norm().item() - 1) < 1e-5
    with pytest.raises(ValueError, match=r"1\.\.384"):
        model.get_speech_embeddings(**feats, dim=385)


def test_save_reload_in_a_fresh_folder_gives_identical_outputs(loaded, clips, tmp_path):
    """Copy the folder anywhere and load it in a fresh interpreter that cannot see this repo."""
    model, processor = loaded
    folder = tmp_path / "copied-model"
    shutil.copytree(model.name_or_path, folder)
    np.save(tmp_path / "clip.npy", clips[0])
    script = textwrap.dedent(f"""
        import sys, numpy as np, torch
        sys.path = [p for p in sys.path if p not in ("", {str(os.getcwd())!r})]
        from transformers import AutoModel, AutoProcessor
        m = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        p = AutoProcessor.from_pretrained({str(folder)!r}, trust_remote_code=True)
        assert "wolofmrl" not in sys.modules, "the Hub package must not need the wolofmrl library"
        with torch.no_grad():
            s = m.get_speech_embeddings(**p(audio=np.load({str(tmp_path / 'clip.npy')!r}), sampling_rate=16000))
            t = m.get_text_embeddings(**p(text=["Bonjour"]))
        np.save({str(tmp_path / 'out.npy')!r}, torch.cat([s, t]).numpy())
    """)
    subprocess.run([sys.executable, "-c", script], check=True, cwd=tmp_path,
                   env={**os.environ, "PYTHONPATH": ""})
    with torch.no_grad():
        s = model.get_speech_embeddings(**processor(audio=clips[0], sampling_rate=16000))
        t = model.get_text_embeddings(**processor(text=["Bonjour"]))
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), torch.cat([s, t]).numpy(), atol=1e-5)


def test_builder_applies_a_speech_lora_delta(loaded, clips, tmp_path):
    """A delta trained with speech_lora_rank (the converted Whisper base beneath, unchanged): the built folder loads
    through AutoModel with the factors from the delta, the encoder's own weights are the backbone's, and the LoRA
    changes the speech embedding (espeak-ng French, synthetic) but not the text one."""
    from safetensors.torch import save_file
    from transformers import AutoModel

    from wolofmrl.build import assemble, build

    model, processor = loaded
    lora, _ = assemble(speech="whisper-base", text="multilingual-e5-small", strategy="fusion",
                       speech_lora_rank=4, speech_lora_layers=2)
    trainable = lora.delta_state_dict()
    names = [k for k in trainable if ".lora." in k]
    assert len(names) == 2 * 6 * 2 and all(".layers.4." in k or ".layers.5." in k for k in names)
    generator = torch.Generator().manual_seed(0)
    delta = {k: 0.05 * torch.randn(v.shape, generator=generator) for k, v in trainable.items()}
    (tmp_path / "delta").mkdir()
    save_file(delta, tmp_path / "delta" / "delta.safetensors")
    (tmp_path / "delta" / "config_overrides.json").write_text(json.dumps(
        {"strategy": "fusion", "speech_lora_rank": 4, "speech_lora_layers": 2}))
    out = build(tmp_path / "lora", speech="whisper-base", text="multilingual-e5-small", strategy="fusion",
                delta=tmp_path / "delta")
    rebuilt = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    q = "speech_tower.encoder.layers.5.self_attn.q_proj"
    own = dict(rebuilt.named_parameters())
    torch.testing.assert_close(own[f"{q}.lora.B"], delta[f"{q}.lora.B"], atol=1e-4, rtol=1e-3)  # as saved
    torch.testing.assert_close(own[f"{q}.weight"], dict(model.named_parameters())[f"{q}.weight"])
    with torch.no_grad():
        audio = processor(audio=clips[0], sampling_rate=16000)
        model_copy = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
        for module in model_copy.speech_lora_modules():  # the same model with its LoRA switched off
            module.B.zero_()
        with_lora = rebuilt.get_speech_embeddings(**audio)
        without = model_copy.get_speech_embeddings(**audio)
        text = processor(text=["Bonjour"])
        torch.testing.assert_close(rebuilt.get_text_embeddings(**text), model_copy.get_text_embeddings(**text))
    assert (with_lora * without).sum().item() < 0.999
    # the same delta under a config without the LoRA: one line naming the fields, no folder
    (tmp_path / "delta" / "config_overrides.json").write_text(json.dumps({"strategy": "fusion"}))
    with pytest.raises(ValueError, match="speech_lora_rank=0"):
        build(tmp_path / "no-lora", speech="whisper-base", text="multilingual-e5-small", strategy="fusion",
              delta=tmp_path / "delta")
    assert not (tmp_path / "no-lora").exists()


def test_builder_applies_a_delta(loaded, tmp_path):
    """A delta folder (what training writes) changes exactly the trainable weights of the built model."""
    from safetensors.torch import save_file
    from transformers import AutoModel

    from wolofmrl.build import build

    model, _ = loaded
    delta = {k: torch.randn_like(v) for k, v in model.delta_state_dict().items()}
    (tmp_path / "delta").mkdir()
    save_file(delta, tmp_path / "delta" / "delta.safetensors")
    (tmp_path / "delta" / "config_overrides.json").write_text(json.dumps({"strategy": "fusion"}))
    out = build(tmp_path / "with-delta", speech="whisper-base", text="multilingual-e5-small", strategy="fusion",
                delta=tmp_path / "delta")
    rebuilt = AutoModel.from_pretrained(out, trust_remote_code=True)
    torch.testing.assert_close(rebuilt.adapter.proj.weight, delta["adapter.proj.weight"].float())
    torch.testing.assert_close(rebuilt.text_model.embeddings.word_embeddings.weight,
                               model.text_model.embeddings.word_embeddings.weight)
    with pytest.raises(ValueError, match="trained for strategy"):
        build(tmp_path / "bad", speech="whisper-base", text="multilingual-e5-small", strategy="dual",
              delta=tmp_path / "delta")
    # a rebuild replaces the whole folder: a folder of the user's own files, or a file, is refused untouched
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("important")
    for where in (tmp_path / "mine", tmp_path / "mine" / "notes.txt"):
        with pytest.raises(ValueError, match="did not write|is a file"):
            build(where, speech="whisper-base", text="multilingual-e5-small", strategy="fusion",
                  delta=tmp_path / "delta")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "important"
    assert build(out, speech="whisper-base", text="multilingual-e5-small", strategy="fusion",
                 delta=tmp_path / "delta", force=True) == out  # its own folder: rebuilt
    # overrides that say adapter_layers=2 beside a linear adapter's tensors: one line naming the field, no folder
    (tmp_path / "delta" / "config_overrides.json").write_text(json.dumps({"strategy": "fusion", "adapter_layers": 2}))
    from wolofmrl.build import main as build_main

    with pytest.raises(SystemExit, match="another adapter_layers"):
        build_main(["--delta", str(tmp_path / "delta"), "--out", str(tmp_path / "deep")])
    assert not (tmp_path / "deep").exists()
