"""Carrying backbones to the device machine: exact Q4_0 re-encoding and a bit-identical round trip."""

import numpy as np
import pytest

from wolofmrl import portable


def test_q4_exact_roundtrip_and_refusal():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 16, size=(6, 64)).astype(np.float32) - 8
    codes[:, ::32] = -8  # Q4_0: each block's largest magnitude is coded -8
    scales = rng.uniform(0.001, 0.1, size=(6, 2)).astype(np.float16)
    w = (codes.reshape(6, 2, 32) * scales.astype(np.float32)[..., None]).reshape(6, 64)
    packed = portable.q4_encode_exact(w)
    assert packed is not None
    np.testing.assert_array_equal(portable.q4_decode(*packed), w)
    assert portable.q4_encode_exact(w + 1e-4) is None  # not Q4_0: refused, stored losslessly instead
    assert portable.q4_encode_exact(np.ones((2, 30), np.float32)) is None


def test_vocabulary_subset_covers_every_token_of_the_texts():
    from wolofmrl.testing import xlmr_tokenizer

    tok = xlmr_tokenizer()
    texts = ["Naka nga def?", "Bonjour à tous"]
    keep = set(portable.token_subset(tok, texts))
    for prefix in ("query: ", "passage: "):
        assert set(tok([prefix + t for t in texts])["input_ids"][0]) <= keep
    assert set(tok.all_special_ids) <= keep


@pytest.mark.slow
def test_bundle_roundtrip_is_bit_identical(tmp_path):
    texts = ["Ku am sa bopp du am bopp", "Qui a sa tête n'a pas de tête"]
    summary = portable.pack(tmp_path / "carry", texts, compress=False)
    assert summary["backbones"]["multilingual-e5-small"]["q4"] > 0
    portable.unpack(tmp_path / "carry", tmp_path / "unpacked")
    report = portable.verify(tmp_path / "unpacked")
    assert report["whisper-base"]["mismatched"] == [] and report["whisper-base"]["tensors"] > 90
    assert report["multilingual-e5-small"]["mismatched"] == []
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(tmp_path / "unpacked" / "multilingual-e5-small", add_pooling_layer=False)
    tok = AutoTokenizer.from_pretrained(tmp_path / "unpacked" / "multilingual-e5-small")
    assert model.embeddings.word_embeddings.weight.shape[0] == 250037
    assert tok("passage: " + texts[1])["input_ids"][0] == 0
