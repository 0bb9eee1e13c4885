"""GradCache (Gao et al., 2021, "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"), beside
the losses it serves, in the manner of sentence-transformers' `CachedMultipleNegativesRankingLoss`.

A contrastive loss needs every row's embedding, so a big batch's graph does not fit in memory. GradCache runs in
three named steps, with the gradients of one pass over the whole batch and the memory of one chunk:

    1. `embed_without_graph`: embed the batch chunk by chunk under no_grad;
    2. `embedding_gradients`: the loss on all embeddings at once (all negatives) and its gradient with respect to
       each embedding (the embeddings are leaves; only they get a graph);
    3. `replay_with_graph`: re-embed each chunk with a graph and back-propagate the cached embedding gradients
       (a surrogate `sum(embedding * cached_grad)`), chunk by chunk.

The encoder must be deterministic between steps 1 and 3 (no dropout: the project's frozen towers run in eval mode
and its trainable modules have none). An encoder returns a dict of tensors: per-row embeddings (B, D) and, under
`shared`, batch-level values such as a trainable logit scale (0-d), whose gradient is added once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence

import torch

__all__ = ["GradCache", "chunk_slices", "embed_without_graph", "embedding_gradients", "replay_with_graph",
           "slice_batch"]


def slice_batch(batch: dict, rows: slice) -> dict:
    """The rows `rows` of every entry of a batch (tensors, lists)."""
    return {k: v[rows] for k, v in batch.items()}


def chunk_slices(n: int, chunk: int) -> list[slice]:
    """Consecutive slices of at most `chunk` rows covering `n` rows.

    Raises:
        ValueError: chunk < 1."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1 rows, got {chunk}")
    return [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]


@torch.no_grad()
def embed_without_graph(encoder: Callable[[dict], dict], batch: dict, slices: Sequence[slice]) -> list[dict]:
    """Step 1: the encoder's outputs for each chunk, without autograd graphs."""
    return [encoder(slice_batch(batch, s)) for s in slices]


def embedding_gradients(outs: list[dict], loss_fn: Callable[[dict, dict], tuple[torch.Tensor, dict]], batch: dict,
                        trainable: dict[str, bool], factor: float = 1.0,
                        shared: Iterable[str] = ("scale",)) -> tuple[torch.Tensor, dict, dict]:
    """Step 2: concatenate the chunks' outputs (fp32 leaves), take `loss_fn(outputs, batch)` on the whole batch,
    back-propagate `loss * factor` to the outputs.

    trainable: output name -> whether a trainable module produced it (only those need gradients).
    shared: names of batch-level outputs (taken from the first chunk, not concatenated).
    Returns (loss detached, the loss's parts, {name: cached output with `.grad` for trainable names})."""
    shared = set(shared)
    cached = {}
    for name in outs[0]:
        value = outs[0][name].detach() if name in shared else torch.cat([o[name] for o in outs])
        cached[name] = value.float().requires_grad_(trainable.get(name, False))
    loss, parts = loss_fn(cached, batch)
    (loss * factor).backward()
    return loss.detach(), parts, cached


def replay_with_graph(encoder: Callable[[dict], dict], batch: dict, slices: Sequence[slice], cached: dict,
                      backward: Callable[[torch.Tensor], None] = torch.Tensor.backward,
                      chunk_context: Callable[[bool], contextlib.AbstractContextManager] = lambda last:
                      contextlib.nullcontext(), shared: Iterable[str] = ("scale",)) -> None:
    """Step 3: re-embed each chunk with a graph and back-propagate the cached gradients of step 2.

    backward: how to run backward (e.g. `accelerator.backward`, which scales for mixed precision).
    chunk_context(last): the context of a chunk's forward/backward, e.g. DDP's `no_sync` except for the last chunk,
    so gradients are all-reduced once. A shared output's gradient is added with the last chunk only."""
    shared = set(shared)
    for k, rows in enumerate(slices):
        last = k == len(slices) - 1
        with chunk_context(last):
            out = encoder(slice_batch(batch, rows))
            surrogate = None
            for name, value in cached.items():
                if value.grad is None or (name in shared and not last):
                    continue
                grad = value.grad if name in shared else value.grad[rows]
                term = (out[name].float() * grad).sum()
                surrogate = term if surrogate is None else surrogate + term
            if surrogate is not None:
                backward(surrogate)


class GradCache:
    """The three steps for one batch: `GradCache(chunk)(encoder, batch, loss_fn, trainable, ...)`.

    Args:
        chunk: rows embedded at once (the memory of the step).
    """

    def __init__(self, chunk: int):
        if chunk < 1:
            raise ValueError(f"GradCache chunk must be >= 1 rows, got {chunk}")
        self.chunk = chunk

    def __call__(self, encoder, batch: dict, loss_fn, trainable: dict[str, bool], n_rows: int, factor: float = 1.0,
                 backward=torch.Tensor.backward, chunk_context=lambda last: contextlib.nullcontext(),
                 shared: Iterable[str] = ("scale",)) -> tuple[torch.Tensor, dict]:
        """Loss (detached) and its parts; the encoder's parameters hold the gradients of `loss * factor`."""
        slices = chunk_slices(n_rows, self.chunk)
        outs = embed_without_graph(encoder, batch, slices)
        loss, parts, cached = embedding_gradients(outs, loss_fn, batch, trainable, factor, shared)
        replay_with_graph(encoder, batch, slices, cached, backward, chunk_context, shared)
        return loss, parts
