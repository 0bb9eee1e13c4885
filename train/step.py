"""One micro-batch: the loss of a step and its backward (plain, or GradCache from wolofmrl/gradcache.py)."""

from __future__ import annotations

import contextlib

from wolofmrl.gradcache import GradCache


def step_loss(out: dict, batch: dict, criterion, transcript_criterion, transcript_weight: float,
              ctc_weight: float = 0.0):
    """Matryoshka InfoNCE of speech/query `q` against passages `d` (+ distillation towards the teacher `t`), plus
    `transcript_weight` x InfoNCE against the transcript when `transcript_criterion` is set, plus `ctc_weight` x the
    reading loss `ctc` when the encoder computed it. Returns (loss, parts)."""
    loss, parts = criterion(out["q"], out["d"], out["scale"], teacher=out.get("t"), groups=batch["groups"])
    if "ctc" in out:
        loss = loss + ctc_weight * out["ctc"]
        parts.update({"ctc": out["ctc"].detach(), "ctc_skipped": out["ctc_skipped"]})
    if transcript_criterion is not None:
        extra, extra_parts = transcript_criterion(out["q"], out["t"], out["scale"], groups=batch["groups"])
        loss = loss + transcript_weight * extra
        parts.update({f"transcript_{k}": v for k, v in extra_parts.items()})
    return loss, parts


def forward_backward(encoder, batch, loss_fn, accelerator, factor: float, sync: bool, chunk: int):
    """One micro-batch: loss and its backward (scaled by `factor`), gradients all-reduced only when `sync`.

    chunk > 0 (and smaller than the batch) runs GradCache (wolofmrl/gradcache.py): the gradients of one pass over
    the whole micro-batch (all its negatives) at the memory of `chunk` rows. Returns (loss detached, parts).
    """
    def sync_ctx(last: bool = True):
        return contextlib.nullcontext() if sync and last else accelerator.no_sync(encoder)

    n = batch["groups"].shape[0]
    if not chunk or chunk >= n:
        with sync_ctx():
            out = encoder(batch)
            loss, parts = loss_fn(out, batch)
            accelerator.backward(loss * factor)
        return loss.detach(), parts
    inner = accelerator.unwrap_model(encoder)
    trainable = {"q": True, "d": inner.d_trainable, "scale": inner.scale_trainable}
    return GradCache(chunk)(encoder, batch, loss_fn, trainable, n, factor, backward=accelerator.backward,
                            chunk_context=sync_ctx)
