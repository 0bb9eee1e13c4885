"""wolofmrl.inference on tiny random models: same embeddings as the plain per-batch path, order, dims."""

import pytest
import torch
import torch.nn.functional as F

from wolofmrl.inference import (
    attention_implementations,
    clip_seconds,
    encode_speech,
    encode_text,
    length_batches,
    prepare_model,
    whisper_features,
)
from wolofmrl.testing import synthetic_waves, tiny_model

TEXTS = [
    "Naka nga def?",
    "Une phrase beaucoup plus longue que la première, avec des mots en plus et encore.",
    "a",
    "Lu tax nga ñëw?",
    "Bonjour à tous.",
    "Dëkk bi dafa sore lool, waaye dinaa fa dem ëllëg.",
]


@pytest.fixture(scope="module")
def fusion():
    return tiny_model("fusion")


@pytest.fixture(scope="module")
def waves():
    # lengths deliberately out of order, so sorting by length really reorders them
    return synthetic_waves(7, seconds=(0.4, 6.0), seed=3)


def plain_speech(model, processor, clips, batch_size, dim=None):
    """The reference: processor + model, batch by batch, in the caller's order."""
    with torch.no_grad():
        return torch.cat(
            [
                model.get_speech_embeddings(**processor(audio=clips[i : i + batch_size], sampling_rate=16000), dim=dim)
                for i in range(0, len(clips), batch_size)
            ]
        )


def plain_text(model, processor, texts, batch_size, dim=None, text_kind="passage"):
    with torch.no_grad():
        return torch.cat(
            [
                model.get_text_embeddings(**processor(text=texts[i : i + batch_size], text_kind=text_kind), dim=dim)
                for i in range(0, len(texts), batch_size)
            ]
        )


def assert_same_rows(got, ref, min_cos=0.999):
    assert got.shape == ref.shape
    cos = (F.normalize(got, dim=-1) * F.normalize(ref, dim=-1)).sum(-1)
    assert cos.min().item() >= min_cos, cos
    # rows are distinct, so a permuted result could not pass the row-wise check above
    sims = F.normalize(ref, dim=-1) @ F.normalize(got, dim=-1).T
    assert torch.equal(sims.argmax(dim=1), torch.arange(len(ref)))


def test_device_log_mel_equals_processor_features(fusion, waves):
    _, processor = fusion
    ref = processor(audio=waves, sampling_rate=16000)
    # the device path gets the waves the processor prepared (trimmed, margins filled), as encode_speech gives them
    got = whisper_features(processor.feature_extractor, processor.prepare_audio(waves, sampling_rate=16000))
    assert torch.equal(got["attention_mask"], ref["attention_mask"])
    torch.testing.assert_close(got["input_features"], ref["input_features"], atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_encode_speech_matches_plain_path_and_keeps_order(fusion, waves, batch_size):
    model, processor = fusion
    ref = plain_speech(model, processor, waves, batch_size)
    got = encode_speech(model, processor, waves, batch_size=batch_size, progress=False)
    assert got.dtype == torch.float32 and got.device.type == "cpu"
    assert_same_rows(got, ref)
    unsorted = encode_speech(model, processor, waves, batch_size=batch_size, sort_by_length=False, progress=False)
    assert_same_rows(unsorted, ref)


def test_encode_speech_dims_and_errors(fusion, waves):
    model, processor = fusion
    full = encode_speech(model, processor, waves, batch_size=4, progress=False)
    small = encode_speech(model, processor, waves, batch_size=4, dim=16, progress=False)
    assert full.shape == (7, 48) and small.shape == (7, 16)
    torch.testing.assert_close(small, F.normalize(full[:, :16], dim=-1), atol=1e-5, rtol=0)
    torch.testing.assert_close(small.norm(dim=-1), torch.ones(7))
    assert_same_rows(small, plain_speech(model, processor, waves, 4, dim=16))
    for bad in (0, 49, 2.5):
        with pytest.raises(ValueError, match=r"1\.\.48"):
            encode_speech(model, processor, waves, dim=bad, progress=False)
    assert encode_speech(model, processor, [], dim=8, progress=False).shape == (0, 8)
    with pytest.raises(ValueError, match="batch_size"):
        encode_speech(model, processor, waves, batch_size=0, progress=False)


def test_encode_speech_processor_features_path_bf16_and_input_kinds(fusion, waves, tmp_path):
    import soundfile as sf

    model, processor = fusion
    ref = plain_speech(model, processor, waves, 3)
    assert_same_rows(
        encode_speech(model, processor, waves, batch_size=3, features_on_device=False, progress=False), ref
    )
    # bf16 autocast (CPU here, GPU in the bench): same ranking, close cosines
    bf16 = encode_speech(model, processor, waves, batch_size=3, dtype=torch.bfloat16, progress=False)
    assert_same_rows(bf16, ref, min_cos=0.99)
    # a file path at 8 kHz, a {"array", "sampling_rate"} dict and a tensor, mixed in one call
    path = tmp_path / "clip.wav"
    sf.write(path, waves[0][::2], 8000)
    items = [str(path), {"array": waves[1], "sampling_rate": 16000}, torch.from_numpy(waves[2])]
    assert [round(clip_seconds(x, 16000), 2) for x in items] == [round(len(w) / 16000, 2) for w in waves[:3]]
    got = encode_speech(model, processor, items, batch_size=2, progress=False)
    with torch.no_grad():
        want = model.get_speech_embeddings(**processor(audio=items, sampling_rate=16000))
    assert_same_rows(got, want)


@pytest.mark.parametrize("strategy,speech", [("dual", "whisper"), ("fusion", "wav2vec2")])
def test_encode_speech_other_strategy_and_backbone(strategy, speech):
    model, processor = tiny_model(strategy, speech, "bert" if speech != "whisper" else "xlm-roberta")
    clips = synthetic_waves(5, seconds=(0.3, 2.0), seed=5)  # the tiny wav2vec2 keeps 200 tokens/s: stay short
    got = encode_speech(model, processor, clips, batch_size=2, dim=32, progress=False)
    # a non-Whisper feature extractor pads inside the batch: compare against the same batches, sorted
    order = sorted(range(len(clips)), key=lambda i: -len(clips[i]))
    with torch.no_grad():
        ref = torch.empty_like(got)
        for b in range(0, len(order), 2):
            idx = order[b : b + 2]
            ref[idx] = model.get_speech_embeddings(
                **processor(audio=[clips[i] for i in idx], sampling_rate=16000), dim=32
            )
    assert_same_rows(got, ref)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_encode_text_matches_plain_path_and_keeps_order(fusion, batch_size):
    model, processor = fusion
    got = encode_text(model, processor, TEXTS, batch_size=batch_size, progress=False)
    assert_same_rows(got, plain_text(model, processor, TEXTS, batch_size), min_cos=0.9999)
    q = encode_text(model, processor, TEXTS, batch_size=batch_size, dim=8, text_kind="query", progress=False)
    assert q.shape == (len(TEXTS), 8)
    assert_same_rows(q, plain_text(model, processor, TEXTS, batch_size, dim=8, text_kind="query"), min_cos=0.9999)
    with pytest.raises(ValueError, match=r"1\.\.48"):
        encode_text(model, processor, TEXTS, dim=49, progress=False)


def test_length_batches_cover_every_index_once_longest_first():
    lengths = [3.0, 1.0, 7.0, 2.0, 7.0, 5.0]
    batches = length_batches(lengths, 4)
    flat = [i for b in batches for i in b]
    assert sorted(flat) == list(range(6)) and [len(b) for b in batches] == [4, 2]
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    assert length_batches(lengths, 4, sort_by_length=False) == [[0, 1, 2, 3], [4, 5]]


def test_prepare_model_uses_sdpa_and_keeps_parameter_names():
    model, _ = tiny_model("fusion")
    model.speech_tower.encoder.set_attn_implementation("eager")
    model.text_model.set_attn_implementation("eager")
    model.train()
    names = list(model.state_dict())
    prepare_model(model, device="cpu")
    assert attention_implementations(model) == {"speech": "sdpa", "text": "sdpa"}
    assert model.wolofmrl_inference["attention"] == {"speech": "sdpa", "text": "sdpa"}
    assert list(model.state_dict()) == names
    assert not model.training
