"""Retrieval metrics computed locally (no hub): nDCG@k, Recall@k, MRR, hit rate.

Definitions (binary or graded relevance; `relevant` maps a document to its gain, a set means gain 1):

- ``ndcg_at_k``: DCG@k / IDCG@k with DCG = sum_i gain(doc_i) / log2(i + 1), ranks i = 1.. (trec_eval / mteb's).
- ``recall_at_k``: |relevant in top k| / |relevant|.
- ``hit_at_k``: 1 if any relevant document is in the top k (mteb's ``hit_rate``, trec's ``success``).
- ``reciprocal_rank``: 1 / rank of the first relevant document (0 if none within `k`; k=None: whole ranking).

Scores are averaged over queries. Ties in a score matrix are broken by document index (lower first) so results
are deterministic; mteb breaks ties by document id, so the two agree whenever scores have no ties.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

Relevant = Mapping[object, float] | set | frozenset | Sequence


def _gains(relevant: Relevant) -> dict:
    if isinstance(relevant, Mapping):
        return {d: float(g) for d, g in relevant.items() if g > 0}
    return {d: 1.0 for d in relevant}


def dcg(gains: Sequence[float]) -> float:
    return float(sum(g / math.log2(i + 2) for i, g in enumerate(gains)))


def ndcg_at_k(ranked: Sequence, relevant: Relevant, k: int) -> float:
    gains = _gains(relevant)
    if not gains:
        raise ValueError("a query needs at least one relevant document")
    got = dcg([gains.get(d, 0.0) for d in list(ranked)[:k]])
    ideal = dcg(sorted(gains.values(), reverse=True)[:k])
    return got / ideal


def recall_at_k(ranked: Sequence, relevant: Relevant, k: int) -> float:
    gains = _gains(relevant)
    if not gains:
        raise ValueError("a query needs at least one relevant document")
    return sum(1 for d in list(ranked)[:k] if d in gains) / len(gains)


def hit_at_k(ranked: Sequence, relevant: Relevant, k: int) -> float:
    gains = _gains(relevant)
    return float(any(d in gains for d in list(ranked)[:k]))


def reciprocal_rank(ranked: Sequence, relevant: Relevant, k: int | None = None) -> float:
    gains = _gains(relevant)
    for i, d in enumerate(ranked if k is None else list(ranked)[:k]):
        if d in gains:
            return 1.0 / (i + 1)
    return 0.0


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k best documents per query, best first: (Q, min(k, N)). Ties: lower index first."""
    scores = np.asarray(scores)
    n = scores.shape[1]
    k = min(k, n)
    if k < n and n > 50_000:  # large corpora: partial sort (a tie exactly at the cut may pick either document)
        part = np.sort(np.argpartition(-scores, k - 1, axis=1)[:, :k], axis=1)
        order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
        return np.take_along_axis(part, order, axis=1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def retrieval_scores(ranked: Sequence[Sequence], relevant: Sequence[Relevant],
                     ks: Sequence[int] = (1, 5, 10), ndcg_ks: Sequence[int] = (10,),
                     mrr_ks: Sequence[int | None] = (10, None)) -> dict[str, float]:
    """Mean metrics over queries. `ranked[q]` is query q's ranking (document ids/indices, best first);
    `relevant[q]` its relevant documents. Keys: ``ndcg_at_10``, ``recall_at_1``, ``hit_rate_at_1``, ``mrr_at_10``,
    ``mrr`` (mrr_ks None = whole ranking)."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings for {len(relevant)} queries")
    if not ranked:
        raise ValueError("no queries")
    out: dict[str, float] = {}
    for k in ndcg_ks:
        out[f"ndcg_at_{k}"] = float(np.mean([ndcg_at_k(r, rel, k) for r, rel in zip(ranked, relevant)]))
    for k in ks:
        out[f"recall_at_{k}"] = float(np.mean([recall_at_k(r, rel, k) for r, rel in zip(ranked, relevant)]))
        out[f"hit_rate_at_{k}"] = float(np.mean([hit_at_k(r, rel, k) for r, rel in zip(ranked, relevant)]))
    for k in mrr_ks:
        name = "mrr" if k is None else f"mrr_at_{k}"
        out[name] = float(np.mean([reciprocal_rank(r, rel, k) for r, rel in zip(ranked, relevant)]))
    return out


def score_matrix_metrics(scores: np.ndarray, relevant: Sequence[Relevant], ks: Sequence[int] = (1, 5, 10),
                         depth: int | None = None) -> dict[str, float]:
    """Metrics from a (Q, N) similarity matrix; documents are column indices. `depth` caps the ranking kept per
    query (default: whole corpus, so ``mrr`` is exact)."""
    scores = np.asarray(scores, dtype=np.float32)
    ranked = top_k(scores, depth or scores.shape[1])
    return retrieval_scores([list(r) for r in ranked], relevant, ks=ks)


def classification_scores(y_true: Sequence, y_pred: Sequence) -> dict[str, float]:
    """Accuracy and weighted / macro F1 (sklearn's definitions)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {"accuracy": float(accuracy_score(y_true, y_pred)),
            "f1_weighted": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
            "f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0))}


def mean_recall_at_k(ranked, relevant: Sequence, k: int) -> float:
    """Mean Recall@k over queries. `ranked`: (Q, >= k) document ids or indices, best first (array or lists);
    `relevant[q]`: a set / mapping / sequence of relevant ids, or one id."""
    if len(ranked) != len(relevant):
        raise ValueError(f"{len(ranked)} rankings for {len(relevant)} queries")
    rel = [r if isinstance(r, (Mapping, set, frozenset, list, tuple)) else {r} for r in relevant]
    return float(np.mean([recall_at_k(list(r), g, k) for r, g in zip(ranked, rel)]))


def overlap_at_k(a, b, k: int = 10) -> float:
    """Mean |top-k of a ∩ top-k of b| / k over queries: how much two rankings (Q, >= k) agree (e.g. a funnel search
    against exact search)."""
    return float(np.mean([len(set(list(x[:k])) & set(list(y[:k]))) / k for x, y in zip(a, b)]))


# ----------------------------------------------------------------------------------------------- baselines
def chance_scores(relevant: Sequence[Relevant], n_docs: int, ks: Sequence[int] = (1, 10)) -> dict[str, float]:
    """Expected Recall@k / Hit@k of a uniformly random ranking of `n_docs` documents, averaged over queries:
    Recall@k = min(k, N) / N; Hit@k = 1 - C(N - r, k) / C(N, k) for r relevant documents."""
    if n_docs < 1:
        raise ValueError(f"n_docs must be >= 1, got {n_docs}")
    out = {}
    for k in ks:
        kk = min(k, n_docs)
        out[f"recall_at_{k}"] = kk / n_docs
        hits = []
        for rel in relevant:
            r = len(_gains(rel))
            miss = math.comb(n_docs - r, kk) / math.comb(n_docs, kk) if n_docs - r >= kk else 0.0
            hits.append(1.0 - miss)
        out[f"hit_rate_at_{k}"] = float(np.mean(hits))
    return out


def fit_length_floor(durations: Sequence[float], lengths: Sequence[float]) -> tuple[float, float]:
    """Least-squares (offset, slope) of the relevant passage's length (characters) against the query clip's
    duration (seconds), for `length_floor_scores`. One distinct duration: slope 0, offset the mean length.

    Raises ValueError when the two lists differ in length or are empty."""
    x, y = np.asarray(durations, np.float64), np.asarray(lengths, np.float64)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"durations ({x.size}) and lengths ({y.size}) must be non-empty and of equal length")
    if np.ptp(x) == 0:
        return float(y.mean()), 0.0
    slope, offset = np.polyfit(x, y, 1)
    return float(offset), float(slope)


def length_floor_scores(durations: Sequence[float], doc_lengths: Sequence[float],
                        fit: tuple[float, float]) -> np.ndarray:
    """The length-only ranker: score(q, d) = -|len(d) - (offset + slope * duration(q))|, shape (Q, N). A model
    whose speech side does not beat this floor carries nothing of the content beyond the clip's duration."""
    offset, slope = fit
    want = offset + slope * np.asarray(durations, np.float64)[:, None]
    return -np.abs(np.asarray(doc_lengths, np.float64)[None, :] - want)


def hit_miss_stats(scores: np.ndarray, relevant: Sequence[Relevant]) -> dict:
    """Hit vs miss of the top-1 document, from a (Q, N) score matrix (documents = column indices, N >= 2):
    per query top-1 score, margin to #2 and whether top-1 is relevant; AUROC of each for "top-1 is right"
    (sklearn's roc_auc_score; None when all queries are hits or all misses)."""
    from sklearn.metrics import roc_auc_score

    scores = np.asarray(scores, np.float64)
    if scores.ndim != 2 or scores.shape[1] < 2 or scores.shape[0] != len(relevant):
        raise ValueError(f"scores must be (Q, N >= 2) with Q = {len(relevant)} queries, got {scores.shape}")
    top = top_k(scores, 2)
    top1 = scores[np.arange(len(scores)), top[:, 0]]
    margin = top1 - scores[np.arange(len(scores)), top[:, 1]]
    hit = np.array([int(t) in _gains(rel) for t, rel in zip(top[:, 0], relevant)])
    both = 0 < hit.sum() < len(hit)
    return {"top1": top1, "margin": margin, "hit": hit.astype(bool), "n": int(len(hit)), "hits": int(hit.sum()),
            "auroc_top1": float(roc_auc_score(hit, top1)) if both else None,
            "auroc_margin": float(roc_auc_score(hit, margin)) if both else None}
