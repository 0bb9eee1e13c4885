"""wolofmrl.retrieval: FAISS indexes (flat / IVF / HNSW) and funnel search, on real FAISS."""

import numpy as np
import pytest
import torch

from modeling_wolofmrl import normalize_dim
from wolofmrl.retrieval import FunnelIndex, build_index, exact_search, index_bytes, prefix_normalize, rerank


def matryoshka_like(n: int, d: int = 64, seed: int = 0) -> np.ndarray:
    """Unit vectors whose variance decays along the coordinates (leading dims carry most of the signal)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32) * (1.0 / np.sqrt(1 + np.arange(d)))[None]
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def noisy_queries(docs: np.ndarray, n: int, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    q = docs[rng.choice(len(docs), n, replace=False)] + 0.05 * rng.standard_normal((n, docs.shape[1]))
    return q.astype(np.float32)


def test_prefix_normalize_is_normalize_dim():
    x = matryoshka_like(20, 32)
    got = prefix_normalize(x * 3.0, 8)
    want = normalize_dim(torch.from_numpy(x * 3.0), 8, 32, []).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert got.shape == (20, 8)
    with pytest.raises(ValueError, match="dim=33"):
        prefix_normalize(x, 33)


def test_flat_funnel_with_full_shortlist_equals_exact_search():
    docs, queries = matryoshka_like(500), None
    queries = noisy_queries(docs, 30)
    index = FunnelIndex(64, coarse_dim=8, kind="flat")
    index.add(docs)
    scores, ids = index.search(queries, k=10, shortlist=500)  # every passage re-ranked: exact
    ref_s, ref_i = exact_search(prefix_normalize(queries, None), docs, k=10)
    np.testing.assert_array_equal(ids, ref_i)
    np.testing.assert_allclose(scores, ref_s, atol=1e-5)
    assert index.last_search_distances == 30 * 500


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_funnel_recall_against_full_width_exact(kind):
    docs = matryoshka_like(4000)
    queries = noisy_queries(docs, 50)
    _, ref = exact_search(prefix_normalize(queries, None), docs, k=10)
    index = FunnelIndex(64, coarse_dim=16, kind=kind, nprobe=16, ef_search=128)
    index.add(docs)
    _, ids = index.search(queries, k=10, shortlist=200)
    overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids.tolist(), ref.tolist())])
    assert overlap >= 0.95, (kind, overlap)
    macs = index.macs_per_query(len(queries), 200)
    assert 0 < macs < 4000 * 64  # cheaper than exact full-width search
    if kind != "flat":
        assert index.last_search_distances < 50 * 4000  # approximate: fewer distances than brute force


def test_incremental_add_and_save_load_roundtrip(tmp_path):
    docs = matryoshka_like(300)
    queries = noisy_queries(docs, 10)
    whole = FunnelIndex(64, coarse_dim=16)
    whole.add(docs)
    parts = FunnelIndex(64, coarse_dim=16)
    assert parts.add(docs[:100]).tolist() == list(range(100))
    assert parts.add(docs[100:]).tolist() == list(range(100, 300))
    parts.save(tmp_path / "idx")
    loaded = FunnelIndex.load(tmp_path / "idx", mmap=True)
    assert len(loaded) == 300 and loaded.coarse_dim == 16
    a, b = whole.search(queries, 5, 50), loaded.search(queries, 5, 50)
    np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_allclose(a[0], b[0], atol=1e-6)
    assert loaded.nbytes()["full"] == 300 * 64 * 4 and loaded.nbytes()["coarse"] >= 300 * 16 * 4


def test_k_larger_than_index_and_hnsw_padding():
    docs = matryoshka_like(5)
    index = FunnelIndex(64, coarse_dim=4, kind="hnsw")
    index.add(docs)
    scores, ids = index.search(docs[:2], k=10, shortlist=10)
    assert ids.shape == (2, 5) and ids[:, 0].tolist() == [0, 1]
    assert np.all(np.diff(scores, axis=1) <= 1e-6)


def test_rerank_skips_faiss_padding():
    docs = matryoshka_like(6, 8)
    cand = np.array([[2, -1, 0]])
    scores, ids = rerank(docs[2:3], docs, cand, k=3)
    assert ids.tolist() == [[2, 0, -1]] and scores[0, 2] == -np.inf


def test_bad_inputs_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="kind="):
        FunnelIndex(64, kind="lsh")
    with pytest.raises(ValueError, match="coarse_dim=65"):
        FunnelIndex(64, coarse_dim=65)
    index = FunnelIndex(64, coarse_dim=8)
    with pytest.raises(ValueError, match="empty"):
        index.search(matryoshka_like(1), 3)
    with pytest.raises(ValueError, match="width 32"):
        index.add(matryoshka_like(3, 32))
    with pytest.raises(ValueError, match="NaN"):
        index.add(np.full((2, 64), np.nan, dtype=np.float32))
    with pytest.raises(ValueError, match="nlist=50"):
        FunnelIndex(64, 8, kind="ivf", nlist=50).add(matryoshka_like(10))
    with pytest.raises(FileNotFoundError, match="not a funnel index"):
        FunnelIndex.load(tmp_path)
    with pytest.raises(ValueError, match="nlist"):
        build_index(8, "ivf")
    flat = build_index(8)
    flat.add(prefix_normalize(matryoshka_like(10), 8))
    assert index_bytes(flat) >= 10 * 8 * 4
