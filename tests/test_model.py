"""WolofMRLModel on tiny random backbones (real tokenizer, real feature extractors)."""

import pytest
import torch

from wolofmrl.testing import synthetic_waves, tiny_model

BACKBONES = [("whisper", "xlm-roberta"), ("wav2vec2", "bert"), ("hubert", "qwen3")]


@pytest.fixture(scope="module")
def waves():
    return synthetic_waves(3, seconds=(0.6, 2.5), seed=1)


@pytest.mark.parametrize("strategy", ["fusion", "dual"])
@pytest.mark.parametrize("speech,text", BACKBONES)
def test_embeddings_shapes_norms_and_batch_invariance(strategy, speech, text, waves):
    model, processor = tiny_model(strategy, speech, text)
    batch = processor(audio=waves, sampling_rate=16000)
    with torch.no_grad():
        full = model.get_speech_embeddings(**batch)
        small = model.get_speech_embeddings(**batch, dim=16)
        alone = [model.get_speech_embeddings(**processor(audio=[w], sampling_rate=16000)) for w in waves]
        text_emb = model.get_text_embeddings(**processor(text=["Naka nga def?", "Bonjour à tous."]), dim=8)
    assert full.shape == (3, 48) and small.shape == (3, 16) and text_emb.shape == (2, 8)
    for e in (full, small, text_emb):
        torch.testing.assert_close(e.norm(dim=-1), torch.ones(e.shape[0]))
    # truncation is a prefix of the full embedding, re-normalised
    torch.testing.assert_close(small, torch.nn.functional.normalize(full[:, :16], dim=-1))
    # a clip embeds the same alone or padded next to longer clips
    for i, a in enumerate(alone):
        assert torch.dot(a[0], full[i]).item() >= 0.999


def test_transformer_adapter_is_batch_invariant_trains_and_round_trips(waves, tmp_path):
    """adapter_layers > 0: transformer layers over the speech tokens; padded tokens must not change a clip's
    embedding, the layers train and go into the delta, and save / from_pretrained restores them."""
    from modeling_wolofmrl import WolofMRLModel

    model, processor = tiny_model("fusion", adapter_layers=2, num_prompt_tokens=2)
    assert len(model.adapter.layers) == 2
    names = model.trainable_parameter_names()
    assert any(n.startswith("adapter.layers.1.") for n in names)
    assert all(k in model.delta_state_dict() for k in names)
    batch = processor(audio=waves, sampling_rate=16000)
    with torch.no_grad():
        full = model.get_speech_embeddings(**batch)
        alone = [model.get_speech_embeddings(**processor(audio=[w], sampling_rate=16000)) for w in waves]
    for i, a in enumerate(alone):
        assert torch.dot(a[0], full[i]).item() >= 0.999
    linear, _ = tiny_model("fusion", num_prompt_tokens=2)
    with torch.no_grad():  # the layers act: not the linear adapter's embedding
        base = linear.get_speech_embeddings(**batch)
    assert (base * full).sum(-1).max().item() < 0.999
    model.save_pretrained(tmp_path)
    loaded = WolofMRLModel.from_pretrained(tmp_path).eval()
    assert loaded.config.adapter_layers == 2
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_speech_embeddings(**batch), full)
    for bad in (-1, "two", 1.5, True, None):
        with pytest.raises(ValueError, match="adapter_layers"):
            tiny_model("fusion", adapter_layers=bad)
    with pytest.raises(ValueError, match="adapter_layers=1 is for strategy='fusion'"):
        tiny_model("dual", adapter_layers=1)
    # a delta and a config that disagree on adapter_layers: refused both ways, naming the field
    with pytest.raises(KeyError, match="adapter_layers=0"):
        linear.load_delta(model.delta_state_dict())
    with pytest.raises(ValueError, match="another adapter_layers"):
        model.load_delta(linear.delta_state_dict())
    model.load_delta({"text_head.bias": linear.text_head.bias.detach()})  # a delta without the adapter still loads


def test_speech_lora_starts_as_the_shipped_encoder_trains_alone_and_round_trips(waves, tmp_path):
    """speech_lora_rank > 0: LoRA factors in the Whisper encoder's q/k/v/out_proj, fc1, fc2. A fresh LoRA leaves every
    embedding as without it (B = 0); only its factors train beside the adapter (the encoder's own weights stay
    frozen and out of the delta); once trained they change the embedding and save / from_pretrained / load_delta
    restore them; a delta and a config that disagree on the LoRA are refused naming the fields."""
    from modeling_wolofmrl import WolofMRLModel

    plain, processor = tiny_model("fusion", seed=3)
    model, _ = tiny_model("fusion", seed=3, speech_lora_rank=4, speech_lora_layers=1)
    model.load_state_dict(plain.state_dict(), strict=False)  # same backbone and adapter as `plain`
    batch = processor(audio=waves, sampling_rate=16000)
    with torch.no_grad():
        torch.testing.assert_close(model.get_speech_embeddings(**batch), plain.get_speech_embeddings(**batch))
    names = model.trainable_parameter_names()
    lora = [n for n in names if ".lora." in n]
    layers = model.config.speech_config.encoder_layers
    assert len(lora) == 2 * 6 and all(n.startswith(f"speech_tower.encoder.layers.{layers - 1}.") for n in lora)
    assert not any(n.startswith("speech_tower.") and ".lora." not in n for n in names)
    assert set(lora) <= set(model.delta_state_dict())
    # one optimiser step on the LoRA alone moves the embedding
    model.train()
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if ".lora." in n], lr=1.0)
    before = model.encode_speech(**{k: batch[k] for k in ("input_features", "attention_mask")})
    before.pow(2).sum().backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        trained = model.get_speech_embeddings(**batch)
    assert (trained * plain.get_speech_embeddings(**batch)).sum(-1).min().item() < 0.9999
    model.save_pretrained(tmp_path)
    loaded = WolofMRLModel.from_pretrained(tmp_path).eval()
    assert loaded.config.speech_lora_rank == 4 and loaded.trainable_parameter_names() == names
    fresh, _ = tiny_model("fusion", seed=3, speech_lora_rank=4, speech_lora_layers=1)
    fresh.load_state_dict(plain.state_dict(), strict=False)
    fresh.load_delta(model.delta_state_dict(dtype=None))
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_speech_embeddings(**batch), trained)
        torch.testing.assert_close(fresh.get_speech_embeddings(**batch), trained)
    with pytest.raises(KeyError, match="speech_lora_rank=0"):
        plain.load_delta(model.delta_state_dict())
    with pytest.raises(ValueError, match="another speech_lora_rank"):
        model.load_delta(plain.delta_state_dict())
    other, _ = tiny_model("fusion", speech_lora_rank=2, speech_lora_layers=1)
    with pytest.raises(ValueError, match="another speech_lora_rank.*speech_lora_rank=2"):
        other.load_delta(model.delta_state_dict())
    for bad in ({"speech_lora_rank": -1}, {"speech_lora_rank": 1.5}, {"speech_lora_rank": True},
                {"speech_lora_rank": 2, "speech_lora_alpha": 0}, {"speech_lora_rank": 2, "speech_lora_layers": 99}):
        with pytest.raises(ValueError, match="speech_lora"):
            tiny_model("fusion", **bad)
    with pytest.raises(ValueError, match="needs a Whisper speech encoder"):
        tiny_model("fusion", "wav2vec2", "bert", speech_lora_rank=2)


def test_speech_lora_missing_from_a_checkpoint_is_initialised_to_no_change(tmp_path):
    """strict_weights=False with a config asking for a LoRA the weights lack: the factors are initialised (B = 0,
    A finite), so the encoder is the shipped one, never uninitialised memory."""
    import json

    from modeling_wolofmrl import WolofMRLModel

    model, processor = tiny_model("fusion")
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "speech_lora_rank": 2}))
    loaded = WolofMRLModel.from_pretrained(tmp_path, strict_weights=False).eval()
    factors = loaded.speech_lora_modules()
    assert len(factors) == 6 * loaded.config.speech_config.encoder_layers
    for f in factors:
        assert torch.isfinite(f.A).all() and f.A.abs().max() > 0 and f.B.abs().max() == 0
    waves = synthetic_waves(2, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(loaded.get_speech_embeddings(**processor(audio=waves, sampling_rate=16000)),
                                   model.get_speech_embeddings(**processor(audio=waves, sampling_rate=16000)))


def test_transformer_adapter_fast_path_leaves_no_nan_in_padded_rows():
    """Several heads (the inference fast path of nn.TransformerEncoderLayer) and a clip with no frames beside one
    with frames: every output is finite, padded tokens are 0, and the real clip is unchanged by the padded one."""
    from modeling_wolofmrl import FrameAdapter

    torch.manual_seed(0)
    adapter = FrameAdapter(32, 128, stride=2, layers=2).eval()  # 2 heads
    frames = torch.randn(2, 10, 32)
    mask = torch.tensor([[1] * 10, [0] * 10])
    with torch.no_grad():
        tokens, tok_mask = adapter(frames, mask)
        alone, _ = adapter(frames[:1], mask[:1])
    assert torch.isfinite(tokens).all() and tok_mask[1].sum() == 0 and tokens[1].abs().sum() == 0
    torch.testing.assert_close(tokens[:1], alone, atol=1e-5, rtol=1e-5)


def test_adapter_layers_missing_from_a_checkpoint_are_initialised_not_garbage(tmp_path):
    """strict_weights=False with a config asking for more adapter layers than the weights hold: the extra layer is
    initialised (norms 1, attention projections finite), never left as uninitialised memory."""
    import json

    from modeling_wolofmrl import WolofMRLModel

    model, _ = tiny_model("fusion", adapter_layers=1)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "adapter_layers": 2}))
    loaded = WolofMRLModel.from_pretrained(tmp_path, strict_weights=False)
    extra = loaded.adapter.layers[1]
    assert all(torch.isfinite(p).all() for p in extra.parameters())
    torch.testing.assert_close(extra.norm1.weight, torch.ones_like(extra.norm1.weight))
    assert extra.self_attn.in_proj_weight.abs().max() < 1.0


def test_text_padding_invariance():
    model, processor = tiny_model("fusion")
    texts = ["Lu tax nga ñëw?", "Une phrase beaucoup plus longue que la première, avec des mots en plus."]
    with torch.no_grad():
        both = model.get_text_embeddings(**processor(text=texts))
        alone = model.get_text_embeddings(**processor(text=texts[:1]))
    assert torch.dot(both[0], alone[0]).item() >= 0.9999


@pytest.mark.parametrize("dim", [0, 49, -3, 2.5, "8", True])
def test_bad_dim_is_a_clear_error(dim):
    model, processor = tiny_model("fusion")
    with pytest.raises(ValueError, match=r"1\.\.48.*\[48, 32, 16, 8\]"):
        model.get_text_embeddings(**processor(text=["a"]), dim=dim)
    with pytest.raises(ValueError, match=r"1\.\.48"):
        model.get_speech_embeddings(**processor(audio=synthetic_waves(1), sampling_rate=16000), dim=dim)


def test_frozen_parts_are_frozen_and_marked():
    model, _ = tiny_model("fusion", num_prompt_tokens=2)
    assert model.config.freeze_speech_encoder and model.config.freeze_text_encoder
    assert not any(p.requires_grad for p in model.speech_tower.parameters())
    assert not any(p.requires_grad for p in model.text_model.parameters())
    names = model.trainable_parameter_names()
    assert set(names) == {"prompt", "logit_scale", "adapter.proj.weight", "adapter.proj.bias", "adapter.conv.weight",
                          "adapter.conv.bias", "text_head.weight", "text_head.bias"}


def test_forward_clip_style_logits_and_loss_backprop_only_into_trainable(waves):
    model, processor = tiny_model("fusion")
    model.train()
    batch = processor(audio=waves, text=["un", "deux", "trois"], sampling_rate=16000)
    out = model(**batch, return_loss=True)
    assert out.logits_per_speech.shape == (3, 3)
    torch.testing.assert_close(out.logits_per_text, out.logits_per_speech.T)
    out.loss.backward()
    assert model.adapter.proj.weight.grad is not None and model.adapter.proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.text_model.parameters())


def test_delta_roundtrip_and_mismatch_errors():
    model, _ = tiny_model("fusion", seed=0)
    other, _ = tiny_model("fusion", seed=1)
    delta = model.delta_state_dict()
    assert all(t.dtype == torch.float16 for t in delta.values())
    other.load_delta(delta)
    torch.testing.assert_close(other.adapter.proj.weight, model.adapter.proj.weight.half().float())
    with pytest.raises(KeyError, match="delta has parameters"):
        other.load_delta({"nope.weight": torch.zeros(1)})
    dual, _ = tiny_model("dual")
    with pytest.raises((KeyError, ValueError)):
        dual.load_delta(delta)


def test_fused_sequence_over_text_positions_is_a_clear_error():
    model, processor = tiny_model("fusion", adapter_stride=1)
    # 30 s -> 1500 encoder frames -> 1500 speech tokens at stride 1: more than 512 positions
    wave = synthetic_waves(1, seconds=(30.0, 30.0))
    with pytest.raises(ValueError, match="adapter_stride"):
        with torch.no_grad():
            model.get_speech_embeddings(**processor(audio=wave, sampling_rate=16000))


def test_thirty_second_clip_fits_at_default_stride():
    model, processor = tiny_model("fusion")
    with torch.no_grad():
        e = model.get_speech_embeddings(**processor(audio=synthetic_waves(1, seconds=(30.0, 30.0)),
                                                    sampling_rate=16000))
    assert torch.isfinite(e).all()
