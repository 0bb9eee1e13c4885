"""wolofmrl/metrics.py on hand-computable cases, and agreement with mteb's own retrieval scores."""

import math

import numpy as np
import pytest

from wolofmrl.metrics import (
    classification_scores,
    hit_at_k,
    ndcg_at_k,
    recall_at_k,
    reciprocal_rank,
    retrieval_scores,
    score_matrix_metrics,
    top_k,
)


def test_ndcg_by_hand():
    # one relevant doc at rank 2: DCG = 1/log2(3), IDCG = 1
    assert ndcg_at_k(["a", "b", "c"], {"b"}, 10) == pytest.approx(1 / math.log2(3))
    # two relevant at ranks 1 and 3: (1 + 1/log2(4)) / (1 + 1/log2(3))
    assert ndcg_at_k(["a", "x", "b"], {"a", "b"}, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    # cut-off: relevant doc below k counts nothing
    assert ndcg_at_k(["x", "y", "a"], {"a"}, 2) == 0.0
    # graded gains: ideal order puts gain 2 first
    got = ndcg_at_k(["b", "a"], {"a": 2, "b": 1}, 2)
    assert got == pytest.approx((1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert ndcg_at_k(["a", "b"], {"a"}, 1) == 1.0


def test_recall_hit_mrr_by_hand():
    ranked = ["x", "a", "y", "b"]
    rel = {"a", "b"}
    assert recall_at_k(ranked, rel, 1) == 0.0
    assert recall_at_k(ranked, rel, 2) == 0.5
    assert recall_at_k(ranked, rel, 4) == 1.0
    assert hit_at_k(ranked, rel, 1) == 0.0 and hit_at_k(ranked, rel, 2) == 1.0
    assert reciprocal_rank(ranked, rel) == 0.5
    assert reciprocal_rank(ranked, {"b"}, k=3) == 0.0
    assert reciprocal_rank(ranked, {"b"}) == 0.25


def test_mean_over_queries():
    out = retrieval_scores([["a", "b"], ["b", "a"]], [{"a"}, {"a"}], ks=(1,), ndcg_ks=(2,))
    assert out["recall_at_1"] == 0.5
    assert out["mrr"] == pytest.approx(0.75)
    assert out["ndcg_at_2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    with pytest.raises(ValueError):
        retrieval_scores([["a"]], [set()])


def test_top_k_ties_break_by_index():
    s = np.array([[0.5, 0.9, 0.5, 0.1]])
    assert top_k(s, 3).tolist() == [[1, 0, 2]]


def test_score_matrix_metrics_identity():
    # query i's relevant doc is doc i and scores are highest on the diagonal: everything is perfect
    s = np.eye(5) + 0.01 * np.arange(5)[None]
    out = score_matrix_metrics(s, [{i} for i in range(5)], ks=(1, 10))
    assert out["recall_at_1"] == 1.0 and out["ndcg_at_10"] == 1.0 and out["mrr"] == 1.0


def test_agrees_with_mteb():
    from mteb._evaluators.retrieval_metrics import calculate_retrieval_scores

    rng = np.random.default_rng(0)
    scores = rng.standard_normal((20, 30)).astype(np.float32)  # continuous: no ties
    relevant = [set(rng.choice(30, size=rng.integers(1, 4), replace=False).tolist()) for _ in range(20)]
    ours = score_matrix_metrics(scores, relevant, ks=(1, 10))
    qrels = {f"q{i}": {f"d{j}": 1 for j in rel} for i, rel in enumerate(relevant)}
    results = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(30)} for i in range(20)}
    ref = calculate_retrieval_scores(results, qrels, k_values=[1, 10])
    assert ours["ndcg_at_10"] == pytest.approx(ref.ndcg["NDCG@10"], abs=1e-4)
    assert ours["recall_at_1"] == pytest.approx(ref.recall["Recall@1"], abs=1e-4)
    assert ours["recall_at_10"] == pytest.approx(ref.recall["Recall@10"], abs=1e-4)
    assert ours["mrr_at_10"] == pytest.approx(ref.mrr["MRR@10"], abs=1e-4)


def test_classification_scores():
    out = classification_scores([0, 0, 1, 1], [0, 1, 1, 1])
    assert out["accuracy"] == 0.75
    # class 0: p=1, r=.5, f1=2/3; class 1: p=2/3, r=1, f1=.8; weighted by support 2/2
    assert out["f1_weighted"] == pytest.approx((2 / 3 + 0.8) / 2)
