"""The fast path of wolofmrl.inference (issue 20): worker-thread tokenisation / audio preparation, chunks, packed
text batches. Real XLM-R tokenizer, tiny random towers; every result is checked against the plain per-batch path
(processor + model in the caller's order), row by row, with texts and clips of mixed lengths out of order."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from processing_wolofmrl import reflect_stack, whisper_log_mel
from wolofmrl.inference import encode_speech, encode_text, fast_token_ids
from wolofmrl.packed import pack_ids, packed_text_pool, supports_packed
from wolofmrl.testing import synthetic_waves, tiny_model

WORDS = ("le conseil municipal se réunira jeudi pour discuter du budget de l'école ; "
         "dëkk bi dafa sore lool waaye dinaa fa dem ëllëg").split()


def mixed_texts(n: int, seed: int = 0) -> list[str]:
    """n texts of 1..90 words in shuffled length order (so sorting really reorders them)."""
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 90)))) for _ in range(n)]


@pytest.fixture(scope="module")
def fusion():
    return tiny_model("fusion")


def plain_text(model, processor, texts, batch_size=7, dim=None):
    with torch.no_grad():
        return torch.cat([model.get_text_embeddings(**processor(text=texts[i:i + batch_size], text_kind="passage"),
                                                    dim=dim) for i in range(0, len(texts), batch_size)])


def assert_rows(got, ref, min_cos=0.9999):
    assert got.shape == ref.shape and got.dtype == torch.float32
    cos = F.cosine_similarity(got, ref)
    assert cos.min().item() >= min_cos, cos.min()
    # rows differ from one another, so a permutation could not pass: each row is nearest its own reference
    assert torch.equal((F.normalize(ref) @ F.normalize(got).T).argmax(1), torch.arange(len(ref)))


def test_fast_token_ids_equal_the_tokenizer_call(fusion):
    _, processor = fusion
    tok = processor.tokenizer
    texts = mixed_texts(40) + ["", "a", "é" * 3]
    for max_length in (512, 24):  # 24 truncates many texts: the tokenizer's own truncation applies
        assert fast_token_ids(tok, texts, max_length) == tok(texts, truncation=True, max_length=max_length)[
            "input_ids"]
    tok(texts[:3], truncation=True, max_length=10)  # the shared backend now truncates; ours must not
    assert fast_token_ids(tok, texts[:5], 512) == tok(texts[:5], truncation=True, max_length=512)["input_ids"]


@pytest.mark.slow
@pytest.mark.parametrize("packed", [False, True])
def test_encode_text_chunks_workers_packed_equal_plain(fusion, packed):
    model, processor = fusion
    texts = mixed_texts(57, seed=1)
    ref = plain_text(model, processor, texts)
    # chunks of 10 texts, 3 workers, batches cut by a token budget: many chunks and batches, out of order
    got = encode_text(model, processor, texts, batch_size=8, max_tokens=300, chunk_size=10, workers=3,
                      packed=packed, progress=False)
    assert_rows(got, ref)
    small = encode_text(model, processor, texts, batch_size=5, dim=16, chunk_size=13, packed=packed, progress=False)
    assert_rows(small, plain_text(model, processor, texts, dim=16))


def test_packed_attention_backends_equal_per_sequence_attention():
    from wolofmrl.packed import _attention

    torch.manual_seed(0)
    lengths = torch.tensor([3, 9, 1, 6])
    cu = torch.zeros(5, dtype=torch.int32)
    cu[1:] = lengths.cumsum(0)
    q, k, v = (torch.randn(int(lengths.sum()), 2, 8) for _ in range(3))
    ref = torch.cat([F.scaled_dot_product_attention(*(x[a:b].transpose(0, 1) for x in (q, k, v))).transpose(0, 1)
                     for a, b in zip(cu[:-1].tolist(), cu[1:].tolist())])
    for backend in ("padded", "nested"):  # "varlen" needs CUDA (FlashAttention); the GPU run checks it
        torch.testing.assert_close(_attention(q, k, v, cu, 9, backend, lengths, 1), ref, atol=1e-5, rtol=1e-5)


def test_packed_pool_equals_padded_model_per_pooling(fusion):
    model, processor = fusion
    assert supports_packed(model.text_model)
    ids = processor.tokenizer(mixed_texts(9, seed=2))["input_ids"]
    flat, positions, cu, longest = pack_ids(ids)
    assert cu.tolist()[-1] == len(flat) == sum(map(len, ids))  # no padding anywhere
    batch = processor.tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_model(**batch).last_hidden_state
        mask = batch["attention_mask"]
        for how, ref in (("mean", (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)),
                         ("last", hidden[torch.arange(len(ids)), mask.sum(1) - 1]), ("cls", hidden[:, 0])):
            for backend in ("padded", "nested"):
                got = packed_text_pool(model.text_model, flat, positions, cu, longest, how, backend, 1)
                torch.testing.assert_close(got, ref, atol=2e-5, rtol=1e-4)


@pytest.mark.slow
def test_encode_speech_workers_equal_plain_and_keep_order(fusion):
    model, processor = fusion
    waves = synthetic_waves(11, seconds=(0.3, 5.0), seed=5)
    with torch.no_grad():
        ref = torch.cat([model.get_speech_embeddings(**processor(audio=waves[i:i + 4], sampling_rate=16000))
                         for i in range(0, len(waves), 4)])
    for workers in (1, 3):
        got = encode_speech(model, processor, waves, batch_size=3, max_seconds=9.0, workers=workers, progress=False)
        assert_rows(got, ref)


def test_reflect_stack_feeds_the_same_log_mel(fusion):
    _, processor = fusion
    fe = processor.feature_extractor
    waves = synthetic_waves(5, seconds=(0.01, 2.0), seed=6)  # the first is shorter than n_fft // 2: constant pad
    waves[0] = waves[0][:150]
    stacked = reflect_stack(waves, int(fe.n_fft))
    a = whisper_log_mel(fe, waves, stacked=stacked)
    b = whisper_log_mel(fe, waves)
    processor.trim_silence = False  # the same samples on both paths (trimming now fills margins with zeros)
    try:
        ref = processor(audio=waves[1:], sampling_rate=16000)
    finally:
        processor.trim_silence = True
    assert torch.equal(a["input_features"], b["input_features"])
    torch.testing.assert_close(a["input_features"][1:, :, :ref["input_features"].shape[-1]], ref["input_features"],
                               atol=1e-5, rtol=0)


def test_errors_from_workers_reach_the_caller(fusion):
    model, processor = fusion
    waves = synthetic_waves(4, seconds=(1.0, 2.0), seed=7)
    waves[2] = np.full(8000, np.nan, dtype=np.float32)
    with pytest.raises(ValueError, match="audio clip"):
        encode_speech(model, processor, waves, batch_size=2, workers=2, progress=False)
