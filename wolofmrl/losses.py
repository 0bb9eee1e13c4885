"""Contrastive losses for WolofMRL, in the sentence-transformers manner: small, composable, dims as plain lists.

    info_nce(q, d, logit_scale)               symmetric InfoNCE, in-batch negatives (+ other processes' rows)
    MatryoshkaInfoNCE(dims, weights)(q, d, s)  info_nce on every Matryoshka prefix, weighted sum, + distillation
    gather_with_grad(x)                       all-gather that keeps gradients (identity on one process)
    TiedCTCLoss(vocab_ids, hidden)(tokens, ...) the reading loss: CTC over subwords, tied to frozen input embeddings

Across processes: every process computes the loss of its own rows against all rows of all processes
(positives offset by rank, as open_clip's `local_loss`). `torch.distributed.nn.functional.all_gather` sends each
process the gradients the others' losses put on its rows, so after DDP averages the parameter gradients, loss and
gradients equal those of one process on the combined batch (tests/test_distributed.py checks this).
`accelerator.gather` would carry no gradient.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MatryoshkaInfoNCE", "TiedCTCLoss", "ctc_greedy", "distillation_loss", "gather_no_grad", "gather_with_grad", "info_nce", "world"]


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when torch.distributed is not initialised."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` (B, ...) of every process along dim 0, gradients flowing back to each process's rows.

    Every process must pass the same shape (training drops the last incomplete batch for this reason).
    """
    _, size = world()
    if size == 1:
        return x
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():  # deprecated in favour of private functional collectives; still exact
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous()), dim=0)


def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    """All-gather without autograd (ids, labels)."""
    _, size = world()
    if size == 1:
        return x
    out = [torch.empty_like(x) for _ in range(size)]
    torch.distributed.all_gather(out, x.contiguous())
    return torch.cat(out, dim=0)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor, row_groups: torch.Tensor | None,
                   col_groups: torch.Tensor | None) -> torch.Tensor:
    if row_groups is not None:
        # a column holding the same item as the row's positive (same sentence, another voice) is no negative
        same = row_groups[:, None] == col_groups[None, :]
        same[torch.arange(len(labels), device=labels.device), labels] = False
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, labels)


def info_nce(q: torch.Tensor, d: torch.Tensor, logit_scale: float | torch.Tensor, symmetric: bool = True,
             groups: torch.Tensor | None = None, gather: bool = True) -> torch.Tensor:
    """InfoNCE between paired rows: q[i] is the positive of d[i]; every other row of d is a negative.

    Args:
        q, d: (B, D) L2-normalised embeddings (this process's rows).
        logit_scale: the multiplier of the cosine similarities (1 / temperature), a float or a 0-d tensor.
        symmetric: average the q->d and d->q cross-entropies (CLIP); otherwise q->d only.
        groups: optional (B,) integer ids; rows sharing an id are the same item and are not each other's negatives.
        gather: take the other processes' rows as extra negatives (with gradients) when torch.distributed runs.
    Returns: the mean cross-entropy over this process's rows (a 0-d float32 tensor).
    """
    if q.shape != d.shape:
        raise ValueError(f"q and d must be paired row by row: shapes {tuple(q.shape)} and {tuple(d.shape)}")
    q, d = q.float(), d.float()
    rank, size = world() if gather else (0, 1)
    labels = torch.arange(q.shape[0], device=q.device) + rank * q.shape[0]
    all_groups = None
    if groups is not None:
        groups = groups.to(q.device)
        all_groups = gather_no_grad(groups) if size > 1 else groups
    d_all = gather_with_grad(d) if size > 1 else d
    loss = _cross_entropy(logit_scale * q @ d_all.T, labels, groups, all_groups)
    if symmetric:
        q_all = gather_with_grad(q) if size > 1 else q
        loss = (loss + _cross_entropy(logit_scale * d @ q_all.T, labels, groups, all_groups)) / 2
    return loss


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, kind: str = "cosine") -> torch.Tensor:
    """Pull `student` (B, D) towards a frozen `teacher` (B, D): mean (1 - cosine) or mean squared error."""
    teacher = teacher.detach().float()
    student = student.float()
    if kind == "cosine":
        return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()
    if kind == "mse":
        return F.mse_loss(student, teacher)
    raise ValueError(f"distillation kind must be 'cosine' or 'mse', got {kind!r}")


class MatryoshkaInfoNCE(nn.Module):
    """Weighted sum over Matryoshka dims of InfoNCE on each L2-normalised prefix, plus optional distillation.

        loss = sum_k w_k * [info_nce(norm(q[:, :m_k]), norm(d[:, :m_k]))
                            + distill_weight * distill(q[:, :m_k], t[:, :m_k])]

    Args:
        dims: prefix sizes, any order (e.g. [384, 256, 128, 64, 32, 16, 8]).
        weights: one weight per dim (default 1 each), in the order of `dims`.
        symmetric, gather: passed to `info_nce`.
        distill: None, "cosine" or "mse": distil `q` towards a frozen teacher embedding of the same pair
            (e.g. the text embedding of the Wolof transcript for a speech query).
        distill_weight: weight of the distillation term (0 turns it off).
    """

    def __init__(self, dims: Sequence[int], weights: Sequence[float] | None = None, symmetric: bool = True,
                 gather: bool = True, distill: str | None = None, distill_weight: float = 0.0):
        super().__init__()
        self.dims = [int(m) for m in dims]
        if not self.dims or any(m < 1 for m in self.dims):
            raise ValueError(f"dims must be positive ints, got {list(dims)}")
        self.weights = [1.0] * len(self.dims) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.dims):
            raise ValueError(f"{len(self.weights)} weights for {len(self.dims)} dims")
        if distill not in (None, "cosine", "mse"):
            raise ValueError(f"distill must be None, 'cosine' or 'mse', got {distill!r}")
        self.symmetric, self.gather = symmetric, gather
        self.distill, self.distill_weight = distill, float(distill_weight)

    def forward(self, q: torch.Tensor, d: torch.Tensor, logit_scale: float | torch.Tensor,
                teacher: torch.Tensor | None = None, groups: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """q, d: (B, D) full-width, not normalised. Returns (loss, {"nce@m": ..., "distill@m": ...} detached)."""
        too_wide = [m for m in self.dims if m > q.shape[-1]]
        if too_wide:
            raise ValueError(f"dims {too_wide} exceed the embedding width {q.shape[-1]}")
        distilling = self.distill is not None and self.distill_weight > 0
        if distilling and teacher is None:
            raise ValueError("distillation is on (distill_weight > 0) but no teacher embedding was given")
        total = q.new_zeros((), dtype=torch.float32)
        parts = {}
        for m, w in zip(self.dims, self.weights):
            qm, dm = F.normalize(q[:, :m].float(), dim=-1), F.normalize(d[:, :m].float(), dim=-1)
            nce = info_nce(qm, dm, logit_scale, symmetric=self.symmetric, groups=groups, gather=self.gather)
            parts[f"nce@{m}"] = nce.detach()
            total = total + w * nce
            if distilling:
                dist = distillation_loss(q[:, :m], teacher[:, :m], self.distill)
                parts[f"distill@{m}"] = dist.detach()
                total = total + w * self.distill_weight * dist
        return total, parts


class TiedCTCLoss(nn.Module):
    """The reading loss: CTC over the text model's own subwords, the classifier tied to its frozen input embeddings.

    Speech tokens (B, T', H) — fusion: the FrameAdapter output the frozen text transformer reads as
    `inputs_embeds`; dual: the projected frames before pooling, averaged to fusion's rate — are scored against the L2-normalised frozen
    input-embedding rows of a restricted vocabulary (the subword ids the training transcripts use) plus a learned
    blank vector: logits = scale * cos(token, row), classes [blank, vocab...]. A frame that says a word is pulled
    towards that word's embedding, the one the text model would read. (CTC: Graves et al., 2006.)

    Args:
        vocab_ids: (V,) the text tokenizer's ids of the restricted vocabulary (sorted, unique).
        hidden: the text model's embedding width.
        scale_init: the initial logit scale (1 / temperature); `learn_scale` trains it (clamped to `max_scale`).
    Rows whose target cannot fit (T' < target length + its adjacent repeats: CTC must put a blank between equal
    labels) are left out of the loss and counted (`parts["ctc_skipped"]`), never silently.
    """

    def __init__(self, vocab_ids, hidden: int, scale_init: float = 20.0, learn_scale: bool = True,
                 max_scale: float = 100.0, seed: int = 0):
        super().__init__()
        vocab_ids = torch.as_tensor(vocab_ids, dtype=torch.long)
        if vocab_ids.ndim != 1 or len(vocab_ids) == 0:
            raise ValueError(f"vocab_ids must be a non-empty 1-D list of token ids, got shape {tuple(vocab_ids.shape)}")
        self.register_buffer("vocab_ids", vocab_ids, persistent=False)  # rebuilt from the data, not checkpointed
        generator = torch.Generator().manual_seed(seed)
        self.blank = nn.Parameter(torch.randn(hidden, generator=generator) / hidden ** 0.5)
        self.log_scale = nn.Parameter(torch.tensor(float(scale_init)).log(), requires_grad=learn_scale)
        self.max_scale = float(max_scale)

    @property
    def num_classes(self) -> int:
        return len(self.vocab_ids) + 1

    def logits(self, tokens: torch.Tensor, embedding_weight: torch.Tensor) -> torch.Tensor:
        """(B, T', V + 1) float32 scaled cosines of each token to [blank, vocab rows] (the rows are detached)."""
        rows = embedding_weight.detach()[self.vocab_ids.to(embedding_weight.device)].float()
        classes = F.normalize(torch.cat([self.blank.float()[None], rows]), dim=-1)
        scale = self.log_scale.exp().clamp(max=self.max_scale)
        with torch.autocast(tokens.device.type, enabled=False):
            return scale * F.normalize(tokens.float(), dim=-1) @ classes.T

    def forward(self, tokens: torch.Tensor, token_mask: torch.Tensor, targets: torch.Tensor,
                target_lengths: torch.Tensor, embedding_weight: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """tokens (B, T', H), token_mask (B, T'), targets (B, S) class indices 1..V (0 = blank, padding anything),
        target_lengths (B,), embedding_weight (vocab_size, H) the frozen input embeddings.

        Returns (mean over the kept rows of each row's CTC loss divided by its target length — 0 with a graph when
        none is kept —, {"ctc": loss, "ctc_skipped": rows left out, "ctc_rows": rows kept} detached)."""
        input_lengths = token_mask.long().sum(-1)
        targets, target_lengths = targets.long(), target_lengths.long()
        span = torch.arange(targets.shape[1], device=targets.device)[None]
        valid = span < target_lengths[:, None]
        repeats = ((targets[:, 1:] == targets[:, :-1]) & valid[:, 1:]).sum(-1) if targets.shape[1] > 1 else \
            torch.zeros_like(target_lengths)
        keep = (input_lengths >= target_lengths + repeats) & (target_lengths > 0)
        logits = self.logits(tokens, embedding_weight)
        n_keep = int(keep.sum())
        if n_keep == 0:
            loss = logits.sum() * 0.0
        else:
            log_probs = logits[keep].log_softmax(-1).transpose(0, 1)  # (T', B_kept, C)
            per_row = F.ctc_loss(log_probs, targets[keep].clamp(min=0), input_lengths[keep], target_lengths[keep],
                                 blank=0, reduction="none", zero_infinity=True)
            loss = (per_row / target_lengths[keep].float()).mean()
        skipped = torch.tensor(float(len(keep) - n_keep), device=tokens.device)
        return loss, {"ctc": loss.detach(), "ctc_skipped": skipped, "ctc_rows": skipped.new_tensor(float(n_keep))}


def ctc_greedy(logits: torch.Tensor, token_mask: torch.Tensor) -> list[list[int]]:
    """Best-path CTC decoding: per row, the argmax class of each valid step, repeats collapsed, blanks (0) dropped.

    logits (B, T', C), token_mask (B, T'). Returns class indices (1..C-1) per row."""
    best = logits.argmax(-1).cpu()
    lengths = token_mask.long().sum(-1).cpu()
    out = []
    for row, n in zip(best, lengths):
        path = row[: int(n)].tolist()
        out.append([c for i, c in enumerate(path) if c != 0 and (i == 0 or c != path[i - 1])])
    return out
