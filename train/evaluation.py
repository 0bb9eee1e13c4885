"""The dev set and its evaluation: Recall@1/10 per Matryoshka dim (speech -> French, clean and hard; written Wolof
-> French), the keep-best score and the PCA rotation baseline of the text stage.

Embeddings come from the project's one batched-encoding path (`wolofmrl.inference.encode_speech / encode_text`),
prefixes and Recall@k from the one metrics module (`wolofmrl/metrics.py`), truncation + L2 from
`modeling_wolofmrl.normalize_dim`.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from wolofmrl.metrics import score_matrix_metrics
from modeling_wolofmrl import normalize_dim
from wolofmrl.inference import encode_speech, encode_text


def recall_table(q: torch.Tensor, d: torch.Tensor, relevant: torch.Tensor, dims: list[int], task: str) -> dict:
    """{"<task>/R@1/<dim>", "<task>/R@10/<dim>"} for each Matryoshka dim (4 decimals).

    q (Nq, H), d (Nd, H): embeddings (any scale: each prefix is L2-normalised); relevant (Nq,): index into d."""
    hidden, out = q.shape[-1], {}
    gold = [[int(r)] for r in relevant]
    for m in dims:
        scores = normalize_dim(q, m, hidden, dims) @ normalize_dim(d, m, hidden, dims).T
        got = score_matrix_metrics(scores.numpy(), gold, ks=(1, 10), depth=10)
        out[f"{task}/R@1/{m}"] = round(got["recall_at_1"], 4)
        out[f"{task}/R@10/{m}"] = round(got["recall_at_10"], 4)
    return out


@contextlib.contextmanager
def head_weight(model, weight: torch.Tensor | None):
    """Temporarily replace the text head by `weight` (H, H) with no bias (None: leave the head as it is)."""
    if weight is None:
        yield
        return
    head = model.text_head
    saved = head.weight.detach().clone(), head.bias.detach().clone()
    with torch.no_grad():
        head.weight.copy_(weight.to(head.weight))
        head.bias.zero_()
    try:
        yield
    finally:
        with torch.no_grad():
            head.weight.copy_(saved[0])
            head.bias.copy_(saved[1])


def pca_rotation(embeddings: torch.Tensor) -> torch.Tensor:
    """(H, H) orthogonal matrix whose rows are the principal axes of `embeddings` (N, H), largest variance first.
    As a head (no bias) it rotates the frozen embedding: full-width cosines are unchanged, and every prefix keeps
    the most variance a prefix of that size can."""
    x = embeddings.double() - embeddings.double().mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x / max(len(x) - 1, 1))  # ascending eigenvalues
    return vectors.flip(1).T.float().contiguous()


class DevSet:
    """Dev queries and documents, embedded on the main process. Documents: the unique French passages of the dev
    sentences; text queries: their Wolof transcripts; speech queries: the dev clips (16 kHz `waves`, capped), clean
    and, when given, degraded once with the hard dev condition's fixed settings (`hard_waves`).

    `cache_documents`: embed the passages once (the text side is frozen: speech stage)."""

    def __init__(self, rows, cfg, processor, clips: list[dict] | None = None, waves=None, hard_waves=None,
                 cache_documents: bool = False):
        unique = {}
        for row in rows:
            if row["fr_text"]:  # sentences without French (other languages' alignment rows) are no documents
                unique.setdefault(row["sentence_id"], row)
        self.sids = sorted(unique)
        index = {sid: i for i, sid in enumerate(self.sids)}
        self.fr = [unique[s]["fr_text"] for s in self.sids]
        self.wo = [(unique[s]["wo_text"], i) for i, s in enumerate(self.sids) if unique[s]["wo_text"]]
        # sentence-only queries (stage 1 is chosen on them): >= SENTENCE_WORDS words, no word-list source
        self.wo_sentences = [(t, i) for t, i in self.wo if is_sentence(t, unique[self.sids[i]].get("source"), cfg)]
        self.waves, self.hard_waves, self.cache_documents = waves, hard_waves, cache_documents
        self.clip_relevant = None if clips is None else torch.tensor([index[r["sentence_id"]] for r in clips])
        self.processor, self.cfg = processor, cfg
        self.dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else None
        self._documents = None

    @property
    def n_queries(self) -> int:
        return len(self.waves) if self.waves is not None else len(self.wo)

    def _texts(self, model, texts: list[str], kind: str, device) -> torch.Tensor:
        return encode_text(model, self.processor, texts, batch_size=self.cfg.eval_batch_size, device=device,
                           dtype=self.dtype, progress=False, text_kind=kind, max_length=self.cfg.max_text_tokens)

    def documents(self, model, device) -> torch.Tensor:
        """(N_docs, H) passage embeddings (computed once with `cache_documents`)."""
        if self._documents is None or not self.cache_documents:
            self._documents = self._texts(model, self.fr, "passage", device)
        return self._documents

    def text_recall(self, model, dims, device, weight=None, task="text_wo2fr") -> dict:
        """Written Wolof -> French passage recall, every query (`<task>`) and sentence queries only (`<task>_sent`:
        >= 4 words, no word-list source; none without such queries); `weight`: evaluate another head instead."""
        with head_weight(model, weight):
            q = self._texts(model, [t for t, _ in self.wo], "query", device)
            d = self._texts(model, self.fr, "passage", device) if weight is not None else self.documents(model, device)
        out = recall_table(q, d, torch.tensor([i for _, i in self.wo]), dims, task)
        sentences = set(self.wo_sentences)
        keep = [k for k, pair in enumerate(self.wo) if pair in sentences]
        if keep:
            out.update(recall_table(q[keep], d, torch.tensor([self.wo[k][1] for k in keep]), dims, f"{task}_sent"))
        return out

    def speech_recall(self, model, dims, device, task: str = "speech2fr") -> dict:
        """Spoken Wolof -> French passage recall, clean (`<task>`) and hard (`<task>_hard`)."""
        d, out = self.documents(model, device), {}
        for task, waves in ((task, self.waves), (f"{task}_hard", self.hard_waves)):
            if waves is not None:
                q = encode_speech(model, self.processor, waves, batch_size=self.cfg.eval_batch_size, device=device,
                                  dtype=self.dtype, progress=False, sampling_rate=16000)
                out.update(recall_table(q, d, self.clip_relevant, dims, task))
        return out


SENTENCE_WORDS = 4
AUTO_BEST = ("speech2fr_unseen_hard", "speech2fr_unseen", "speech2fr_hard", "text_wo2fr_sent")


def is_sentence(text: str, source: str | None, cfg) -> bool:
    """A dev query that is a sentence: at least SENTENCE_WORDS words and not from a word-list source."""
    from train.data import is_word_source

    return len(text.split()) >= SENTENCE_WORDS and not is_word_source(source, cfg.word_sources)


def dev_score(metrics: dict, best_on: str = "auto") -> float:
    """The keep-best score: mean of the dev Recall metrics whose name starts with `best_on + "/"` ("auto": the first
    of AUTO_BEST evaluated — unseen sources hard, unseen clean, hard, written sentences —, else every Recall metric;
    "all": every Recall metric; the reading diagnostic `dev/...` (CER, lower is better) never counts).

    Raises:
        ValueError: `best_on` names no metric."""
    recall = {k: v for k, v in metrics.items() if not k.startswith("dev/")}
    if best_on == "auto":
        best_on = next((t for t in AUTO_BEST if any(k.startswith(t + "/") for k in recall)), "all")
    chosen = [v for k, v in recall.items() if best_on == "all" or k.startswith(best_on + "/")]
    if not chosen:
        raise ValueError(f"best_on {best_on!r} matches no dev metric; the dev metrics are {sorted(metrics)}")
    return float(np.mean(chosen))
