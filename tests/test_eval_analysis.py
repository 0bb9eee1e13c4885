"""eval/analysis.py: effective rank, PCA projection, funnel retrieval, index cost, on constructed cases."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "eval"))

import analysis  # noqa: E402
from offline_intents import label_of  # noqa: E402


def test_effective_rank_known_spectra():
    assert analysis.effective_rank(np.ones(7)) == pytest.approx(7.0)
    assert analysis.effective_rank(np.array([3.0, 0, 0])) == pytest.approx(1.0)
    # p = (.5, .25, .25): exp(H) = exp(1.5 ln 2) = 2 ** 1.5
    assert analysis.effective_rank(np.array([2.0, 1.0, 1.0])) == pytest.approx(2 ** 1.5)
    # scale-free
    assert analysis.effective_rank(np.array([20.0, 10.0, 10.0])) == pytest.approx(2 ** 1.5)


def test_effective_rank_of_matrix_with_known_rank():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((50, 50)))
    x = np.zeros((50, 16))
    x[:, :3] = 10.0 * q[:, :3]  # orthogonal columns of norm 10: singular values 10, 10, 10, then zeros
    sv = analysis.singular_values(x, center=False)
    assert analysis.effective_rank(sv) == pytest.approx(3.0, abs=1e-6)


def test_pca_projection_recovers_a_low_rank_subspace():
    rng = np.random.default_rng(1)
    basis = np.linalg.qr(rng.standard_normal((10, 2)))[0].T  # 2 orthonormal directions in R^10
    a = rng.standard_normal((40, 2))
    # zero-mean, uncorrelated coordinates with more variance on the first direction
    coords = np.linalg.qr(a - a.mean(0))[0] * np.array([5.0, 1.0])
    mean = rng.standard_normal(10)
    x = coords @ basis + mean
    mu, comps = analysis.pca_fit(x)
    assert np.allclose(mu, x.mean(0))
    got = analysis.pca_coordinates(x, mu, comps, 2)
    # the top-2 coordinates reconstruct the centred data exactly
    assert np.allclose(got @ comps[:2], x - mu, atol=1e-5)
    # the first component is the high-variance direction (up to sign)
    assert abs(comps[0] @ basis[0]) == pytest.approx(1.0, abs=1e-6)
    proj = analysis.pca_project(x, mu, comps, 2)
    assert np.allclose(np.linalg.norm(proj, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError):
        analysis.pca_coordinates(x, mu, comps[:2], 3)


def test_funnel_recall_on_a_constructed_case():
    # doc i's first coordinate is useless (all equal) at d_small=1, the rest identifies it exactly at full width
    n, full = 20, 8
    rng = np.random.default_rng(2)
    docs = np.concatenate([np.ones((n, 1)), rng.standard_normal((n, full - 1))], axis=1).astype(np.float32)
    queries = docs.copy()
    relevant = [{i} for i in range(n)]
    # shortlist = everything: re-ranking at full width finds every doc first
    ranked, macs = analysis.funnel_search(queries, docs, d_small=1, shortlist=n, k=5)
    assert analysis.recall_at(ranked, relevant, 1) == 1.0
    assert macs == n * 1 + n * full
    # shortlist of 1 at a dim that cannot tell docs apart: ties -> FAISS picks one doc for all, recall ~ 1/n
    ranked, macs = analysis.funnel_search(queries, docs, d_small=1, shortlist=1, k=1)
    assert analysis.recall_at(ranked, relevant, 1) <= 2 / n
    assert macs == n + full
    # a small dim that does separate them: shortlist 3 at d=4 keeps recall perfect
    ranked, _ = analysis.funnel_search(queries, docs, d_small=4, shortlist=3, k=1)
    assert analysis.recall_at(ranked, relevant, 1) == 1.0


def test_index_bytes_grow_with_dim():
    rng = np.random.default_rng(3)
    d = analysis.l2n(rng.standard_normal((100, 64)))
    small, big = analysis.flat_index(d[:, :16]), analysis.flat_index(d)
    assert analysis.index_bytes(big) - analysis.index_bytes(small) == 100 * (64 - 16) * 4
    assert analysis.search_latency_ms(big, d[:5], k=3, repeats=2) > 0


def test_analyse_writes_report_and_plots(tmp_path):
    rng = np.random.default_rng(4)
    docs = rng.standard_normal((30, 16)).astype(np.float32)
    queries = docs + 0.1 * rng.standard_normal((30, 16)).astype(np.float32)
    rep = analysis.analyse(queries, docs, [{i} for i in range(30)], tmp_path, matryoshka_dims=[16, 8, 4],
                           shortlists=(5, 10), latency_n=500, latency_queries=8, note="random vectors (test)")
    assert rep["prefix"][16]["recall_at_1"] > 0.9  # near-duplicates at full width
    assert set(rep["effective_rank"]) >= {4, 8, 16}
    for name in ("analysis.json", "analysis.md", "score_vs_dim_pca.png", "spectrum.png", "index_cost.png",
                 "funnel.png"):
        assert (tmp_path / name).stat().st_size > 0


@pytest.mark.parametrize("source,key,label", [
    ("mediawiki", "searchbutton", ("mediawiki", "search")),
    ("mediawiki", "userlogin-title", ("mediawiki", "account")),
    ("mediawiki", "watchlist-details", ("mediawiki", "watchlist")),
    ("mediawiki", "editsection", ("mediawiki", "edit")),
    ("mediawiki", "some-other-key", None),
    ("udhr", "art03/b01", ("udhr", "liberty")),
    ("udhr", "art03/b00", None),  # the article's heading
    ("udhr", "art26/all", ("udhr", "social")),
    ("udhr", "preamble/b00", None),
    ("gettext", "Open file", None),
])
def test_offline_intent_rules(source, key, label):
    assert label_of(source, key) == label
