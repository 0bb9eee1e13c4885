"""Packed (padding-free) forward of a BERT-family text encoder: no compute on padding.

A batch of N token sequences is concatenated into one (T, hidden) stream, T = the sum of their lengths (no pad
token anywhere). Every matmul, LayerNorm and GELU runs on the T real tokens only; attention stays within each
sequence through cumulative offsets `cu_seqlens` (N + 1,):

- CUDA: `torch.nn.attention.varlen.varlen_attn` (PyTorch >= 2.10, FlashAttention's varlen kernel, bf16/fp16), or,
  where that is missing, SDPA on nested jagged tensors (`torch.nested.nested_tensor_from_jagged`);
- anywhere else (or `attention="padded"`): each group of sequences is padded for SDPA with a key mask (the
  reference the tests compare against; it computes on padding inside attention only).

Supported: the `transformers` BERT / RoBERTa / XLM-RoBERTa encoders (absolute positions; XLM-R's positions
start at padding_idx + 1 as `create_position_ids_from_input_ids` makes them for right-padded input), which is what
WolofMRL's text tower is (multilingual-e5-small). `supports_packed(text_model)` says whether a model qualifies;
`wolofmrl.inference.encode_text(packed=...)` uses this path and checks it against the padded forward once per model.
Pooled outputs equal the padded model's (`pool(..., "mean" | "last" | "cls")`) up to float rounding.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["supports_packed", "packed_text_pool", "varlen_backend", "pack_ids"]

_FAMILY = ("bert", "roberta", "xlm-roberta")


def supports_packed(text_model) -> bool:
    """True for a BERT-family encoder with absolute positions and the module layout this forward reads."""
    cfg = getattr(text_model, "config", None)
    if cfg is None or cfg.model_type not in _FAMILY:
        return False
    if getattr(cfg, "position_embedding_type", "absolute") not in (None, "absolute"):
        return False
    try:
        emb, layer = text_model.embeddings, text_model.encoder.layer[0]
        _ = (emb.word_embeddings, emb.position_embeddings, emb.LayerNorm, layer.attention.self.query,
             layer.attention.self.key, layer.attention.self.value, layer.attention.output.dense,
             layer.attention.output.LayerNorm, layer.intermediate.dense, layer.intermediate.intermediate_act_fn,
             layer.output.dense, layer.output.LayerNorm)
    except AttributeError:
        return False
    return True


def varlen_backend(device: torch.device, dtype: torch.dtype) -> str:
    """"varlen" (FlashAttention varlen via torch), "nested" (SDPA on jagged tensors) or "padded" (the reference)."""
    if device.type != "cuda" or dtype not in (torch.bfloat16, torch.float16):
        return "padded"
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401

        return "varlen"
    except ImportError:
        return "nested"


def pack_ids(ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Token id lists -> (flat ids (T,) int64, positions within each sequence (T,) int64, cu_seqlens (N+1,) int32,
    longest length). CPU tensors (pin them before a non-blocking copy)."""
    if len(ids) == 0:
        raise ValueError("pack_ids needs at least one sequence")
    lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    if int(lengths.min()) < 1:
        raise ValueError("pack_ids got an empty sequence: every sequence needs at least one token")
    total = int(lengths.sum())
    flat = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=total)
    cu = np.zeros(len(ids) + 1, dtype=np.int32)
    np.cumsum(lengths, out=cu[1:])
    positions = np.arange(total, dtype=np.int64) - np.repeat(cu[:-1].astype(np.int64), lengths)
    return torch.from_numpy(flat), torch.from_numpy(positions), torch.from_numpy(cu), int(lengths.max())


def _attention(q, k, v, cu: torch.Tensor, longest: int, backend: str, lengths: torch.Tensor | None,
               shortest: int | None = None):
    """q, k, v: (T, H, D) -> (T, H, D), attention within each sequence."""
    if backend == "varlen":
        from torch.nn.attention.varlen import varlen_attn

        return varlen_attn(q, k, v, cu, cu, longest, longest)
    if backend == "nested":
        offsets = cu.long()
        nq, nk, nv = (torch.nested.nested_tensor_from_jagged(x, offsets, min_seqlen=shortest, max_seqlen=longest)
                      .transpose(1, 2) for x in (q, k, v))  # lengths given: no device->host sync
        out = F.scaled_dot_product_attention(nq, nk, nv)  # (N, H, j, D)
        return out.transpose(1, 2).values()
    # padded reference: (N, L, H, D) with a key mask
    n = len(cu) - 1
    rows = torch.repeat_interleave(torch.arange(n, device=q.device), lengths, output_size=q.shape[0])
    cols = torch.arange(q.shape[0], device=q.device) - torch.repeat_interleave(cu[:-1].long(), lengths,
                                                                               output_size=q.shape[0])
    pad = lambda x: x.new_zeros(n, longest, *x.shape[1:]).index_put_((rows, cols), x)  # noqa: E731
    keep = torch.zeros(n, longest, dtype=torch.bool, device=q.device).index_put_(
        (rows, cols), torch.ones_like(rows, dtype=torch.bool))
    out = F.scaled_dot_product_attention(pad(q).transpose(1, 2), pad(k).transpose(1, 2), pad(v).transpose(1, 2),
                                         attn_mask=keep[:, None, None, :])
    return out.transpose(1, 2)[rows, cols]


def _layer(layer, x, cu, longest, backend, lengths, shortest):
    att = layer.attention.self
    heads = att.num_attention_heads
    t, hidden = x.shape
    q, k, v = (m(x).view(t, heads, hidden // heads) for m in (att.query, att.key, att.value))
    ctx = _attention(q, k, v, cu, longest, backend, lengths, shortest).reshape(t, hidden)
    out = layer.attention.output
    x = out.LayerNorm(out.dense(ctx) + x)
    inter = layer.intermediate.intermediate_act_fn(layer.intermediate.dense(x))
    return layer.output.LayerNorm(layer.output.dense(inter) + x)


def packed_text_pool(text_model, flat_ids: torch.Tensor, positions: torch.Tensor, cu: torch.Tensor, longest: int,
                     pooling: str, backend: str, shortest: int | None = None) -> torch.Tensor:
    """Pooled last hidden states of packed sequences: (N, hidden), in the model's dtype.

    flat_ids / positions (T,) and cu (N+1,) int32 on the model's device (from `pack_ids`); pooling "mean" | "last"
    | anything else = first token (CLS), as `modeling_wolofmrl.pool`. `longest` / `shortest`: the longest and
    shortest sequence lengths (Python ints, known on the CPU: nothing waits on the device). Eval mode only.
    """
    cfg = text_model.config
    emb = text_model.embeddings
    offset = cfg.pad_token_id + 1 if cfg.model_type in ("roberta", "xlm-roberta") else 0
    x = emb.word_embeddings(flat_ids) + emb.position_embeddings(positions + offset)
    if getattr(emb, "token_type_embeddings", None) is not None:
        x = x + emb.token_type_embeddings.weight[0]
    x = emb.LayerNorm(x)
    lengths = (cu[1:] - cu[:-1]).long()
    for layer in text_model.encoder.layer:
        x = _layer(layer, x, cu, longest, backend, lengths, shortest)
    if pooling == "mean":
        seg = torch.repeat_interleave(torch.arange(len(lengths), device=x.device), lengths,
                                      output_size=x.shape[0])  # the size given: no device->host sync
        sums = torch.zeros(len(lengths), x.shape[1], dtype=torch.float32, device=x.device).index_add_(0, seg, x.float())
        return (sums / lengths[:, None].float()).to(x.dtype)
    if pooling == "last":
        return x[cu[1:].long() - 1]
    return x[cu[:-1].long()]
