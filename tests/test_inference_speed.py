"""wolofmrl.inference speed knobs: token/second budgets, padding to a multiple, bf16 weights (tiny random model,
real tokenizer and feature extractor). Each knob must leave the embeddings as they were (bf16: close)."""

import copy

import pytest
import torch

from wolofmrl.inference import encode_speech, encode_text, length_batches, prepare_model
from wolofmrl.testing import synthetic_waves, tiny_model

TEXTS = ["Il pleut.", "Le marché ouvre à huit heures et ferme le soir après la prière.", "Oui.",
         "Les enfants vont à l'école à pied chaque matin, même quand il pleut beaucoup sur la route."] * 3


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_length_batches_with_a_budget_cover_every_item_once():
    lengths = [5, 100, 7, 50, 50, 3, 99, 1]
    batches = length_batches(lengths, batch_size=4, max_tokens=150)
    assert sorted(i for b in batches for i in b) == list(range(8))
    assert all(len(b) * max(lengths[i] for i in b) <= 150 or len(b) == 1 for b in batches)
    assert all(len(b) <= 4 for b in batches) and len(batches[0]) == 1  # the 100-long item fits alone
    with pytest.raises(ValueError, match="max_tokens"):
        length_batches(lengths, 4, sort_by_length=False, max_tokens=10)


def test_budgets_and_padding_do_not_change_embeddings(tiny):
    model, processor = tiny
    ref = encode_text(model, processor, TEXTS, batch_size=2, progress=False, pad_to_multiple_of=None)
    got = encode_text(model, processor, TEXTS, batch_size=64, max_tokens=60, progress=False, pad_to_multiple_of=16)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)
    waves = synthetic_waves(5, (0.5, 3.0))
    ref = encode_speech(model, processor, waves, batch_size=1, progress=False)
    got = encode_speech(model, processor, waves, batch_size=16, max_seconds=4.0, progress=False)
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


def test_bf16_weights_stay_close_to_fp32(tiny):
    model, processor = tiny
    half = prepare_model(copy.deepcopy(model), device="cpu", weights_dtype=torch.bfloat16)
    assert half.wolofmrl_inference["weights_dtype"] == "torch.bfloat16"
    for encode, items in ((encode_text, TEXTS), (encode_speech, synthetic_waves(3))):
        a = encode(model, processor, items, progress=False)
        b = encode(half, processor, items, progress=False)
        assert b.dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a, b).min() > 0.99
