"""CTranslate2 (faster-whisper) Whisper checkpoints -> `transformers` `WhisperForConditionalGeneration`.

A faster-whisper model directory holds ``model.bin`` (CTranslate2 ``WhisperSpec``),
``config.json`` (alignment heads, language ids, suppressed tokens) and the Hugging
Face ``tokenizer.json``. The variable layout is the one CTranslate2's
``TransformersWhisperLoader`` writes from a `transformers` checkpoint, so the
mapping below is its inverse:

* encoder/decoder self-attention ``linear_0`` is q, k and v fused along the output
  dimension ([3*d, d]); the cross-attention splits into ``linear_0`` = q and
  ``linear_1`` = k and v fused ([2*d, d]). Whisper's k projection has no bias, so
  CTranslate2 stores zeros there; they are checked and dropped.
* the encoder positional table is Whisper's fixed sinusoid; it is stored in fp16,
  so the exact fp32 table is recomputed (and checked against the stored one).
* ``decoder/projection/weight`` is an alias of the token embedding (tied weights).

Weights are saved in float32 by default (see :func:`convert_ct2_whisper`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from wolofmrl.convert.statedict import load_exact
import torch
from tokenizers import AddedToken

from .ct2 import CT2Model, read_ct2_model

__all__ = [
    "convert_ct2_whisper",
    "whisper_config_from_ct2",
    "whisper_state_dict_from_ct2",
    "build_whisper_tokenizer",
    "build_whisper_generation_config",
]

# Whisper predicts timestamps in 20 ms steps over a 30 s window: <|0.00|> .. <|30.00|>.
NUM_TIMESTAMP_TOKENS = 1501
# openai/whisper: a vocabulary this large is the multilingual one (English-only models have 51864).
MULTILINGUAL_VOCAB_SIZE = 51865
# CTranslate2 ActivationType enum (include/ctranslate2/ops/activation.h): Whisper uses exact GELU.
CT2_ACTIVATION_GELU = 3


def _layer_count(ct2: CT2Model, prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    indices = {int(m.group(1)) for name in ct2.keys() if (m := pattern.match(name))}
    if indices != set(range(len(indices))):
        raise ValueError(f"{prefix} layers are not numbered 0..N-1: {sorted(indices)}")
    return len(indices)


def _scalar(ct2: CT2Model, name: str) -> int:
    return int(np.asarray(ct2[name]).item())


def whisper_config_from_ct2(ct2: CT2Model, ct2_config: dict, tokenizer) -> "WhisperConfig":
    """Build the `WhisperConfig` from tensor shapes, stored scalars and the tokenizer's special tokens."""
    from transformers import WhisperConfig

    if ct2.spec != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec model, got {ct2.spec!r}")
    # Options CTranslate2 stores as scalars; Whisper has exactly one value for each, so
    # anything else means this is not a plain Whisper checkpoint and the mapping would be wrong.
    expected = {
        "decoder/activation": CT2_ACTIVATION_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, value in expected.items():
        if name in ct2 and _scalar(ct2, name) != value:
            raise ValueError(f"{name} = {_scalar(ct2, name)}, Whisper needs {value}")

    vocab_size, d_model = ct2["decoder/embeddings/weight"].shape
    eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    sot = tokenizer.convert_tokens_to_ids("<|startoftranscript|>")
    return WhisperConfig(
        vocab_size=vocab_size,
        num_mel_bins=ct2["encoder/conv1/weight"].shape[1],
        d_model=d_model,
        encoder_layers=_layer_count(ct2, "encoder"),
        decoder_layers=_layer_count(ct2, "decoder"),
        encoder_attention_heads=_scalar(ct2, "encoder/num_heads"),
        decoder_attention_heads=_scalar(ct2, "decoder/num_heads"),
        encoder_ffn_dim=ct2["encoder/layer_0/ffn/linear_0/weight"].shape[0],
        decoder_ffn_dim=ct2["decoder/layer_0/ffn/linear_0/weight"].shape[0],
        max_source_positions=ct2["encoder/position_encodings/encodings"].shape[0],
        max_target_positions=ct2["decoder/position_encodings/encodings"].shape[0],
        activation_function="gelu",
        scale_embedding=False,
        # openai/whisper-*: <|endoftext|> is bos, eos and pad; decoding starts at <|startoftranscript|>.
        bos_token_id=eot,
        eos_token_id=eot,
        pad_token_id=eot,
        decoder_start_token_id=sot,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [220, eot])),
        tie_word_embeddings=True,
        dtype="float32",
    )


class _Consumer:
    """Hands out CTranslate2 variables as float32 tensors and remembers which were used."""

    def __init__(self, ct2: CT2Model):
        self.ct2 = ct2
        self.used: set[str] = set()

    def __call__(self, name: str) -> torch.Tensor:
        self.used.add(name)
        return torch.from_numpy(np.asarray(self.ct2[name], dtype=np.float32).copy())

    def unused(self) -> list[str]:
        return sorted(set(self.ct2.keys()) - self.used)


def _split_rows(tensor: torch.Tensor, parts: int) -> list[torch.Tensor]:
    if tensor.shape[0] % parts:
        raise ValueError(f"cannot split {tuple(tensor.shape)} into {parts} equal row blocks")
    return list(tensor.chunk(parts, dim=0))


def _zero_k_bias(bias: torch.Tensor, where: str) -> None:
    # Whisper's k_proj has no bias; CTranslate2 fills the fused bias with zeros there.
    # A non-zero value means the checkpoint is not what this mapping assumes.
    if bias.abs().max().item() != 0.0:
        raise ValueError(f"{where}: the key projection bias is not zero; it cannot be dropped")


def _encoder_positions(stored: torch.Tensor, config) -> torch.Tensor:
    """Whisper's exact float32 sinusoid table, once the stored (fp16-rounded) one is shown to be it."""
    from transformers.models.whisper.modeling_whisper import sinusoids

    exact = sinusoids(config.max_source_positions, config.d_model).to(torch.float32)
    # fp16 rounding of values in [-1, 1] is at most ~5e-4; more means a different table.
    if stored.shape != exact.shape or (stored - exact).abs().max().item() > 2e-3:
        raise ValueError("encoder position encodings are not Whisper's sinusoids")
    return exact


def whisper_state_dict_from_ct2(ct2: CT2Model, config) -> dict[str, torch.Tensor]:
    """Map CTranslate2 Whisper variables onto `WhisperForConditionalGeneration` parameter names.

    Raises if a CTranslate2 tensor is left unused (other than the scalar options read
    into the config), so a layout change cannot silently drop weights.
    """
    take = _Consumer(ct2)
    sd: dict[str, torch.Tensor] = {}

    def linear(hf: str, w: torch.Tensor, b: torch.Tensor | None) -> None:
        sd[f"{hf}.weight"] = w
        if b is not None:
            sd[f"{hf}.bias"] = b

    def layer_norm(hf: str, ct: str) -> None:
        sd[f"{hf}.weight"] = take(f"{ct}/gamma")
        sd[f"{hf}.bias"] = take(f"{ct}/beta")

    def fused_self_attention(hf: str, ct: str) -> None:
        q_w, k_w, v_w = _split_rows(take(f"{ct}/linear_0/weight"), 3)
        q_b, k_b, v_b = _split_rows(take(f"{ct}/linear_0/bias"), 3)
        _zero_k_bias(k_b, ct)
        linear(f"{hf}.q_proj", q_w, q_b)
        linear(f"{hf}.k_proj", k_w, None)
        linear(f"{hf}.v_proj", v_w, v_b)
        linear(f"{hf}.out_proj", take(f"{ct}/linear_1/weight"), take(f"{ct}/linear_1/bias"))

    def cross_attention(hf: str, ct: str) -> None:
        linear(f"{hf}.q_proj", take(f"{ct}/linear_0/weight"), take(f"{ct}/linear_0/bias"))
        k_w, v_w = _split_rows(take(f"{ct}/linear_1/weight"), 2)
        k_b, v_b = _split_rows(take(f"{ct}/linear_1/bias"), 2)
        _zero_k_bias(k_b, ct)
        linear(f"{hf}.k_proj", k_w, None)
        linear(f"{hf}.v_proj", v_w, v_b)
        linear(f"{hf}.out_proj", take(f"{ct}/linear_2/weight"), take(f"{ct}/linear_2/bias"))

    def ffn(hf: str, ct: str) -> None:
        layer_norm(f"{hf}.final_layer_norm", f"{ct}/layer_norm")
        linear(f"{hf}.fc1", take(f"{ct}/linear_0/weight"), take(f"{ct}/linear_0/bias"))
        linear(f"{hf}.fc2", take(f"{ct}/linear_1/weight"), take(f"{ct}/linear_1/bias"))

    # --- encoder ---
    for i in (1, 2):
        linear(f"model.encoder.conv{i}", take(f"encoder/conv{i}/weight"), take(f"encoder/conv{i}/bias"))
    sd["model.encoder.embed_positions.weight"] = _encoder_positions(take("encoder/position_encodings/encodings"), config)
    for i in range(config.encoder_layers):
        hf, ct = f"model.encoder.layers.{i}", f"encoder/layer_{i}"
        layer_norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        fused_self_attention(f"{hf}.self_attn", f"{ct}/self_attention")
        ffn(hf, f"{ct}/ffn")
    layer_norm("model.encoder.layer_norm", "encoder/layer_norm")

    # --- decoder ---
    sd["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    sd["model.decoder.embed_positions.weight"] = take("decoder/position_encodings/encodings")
    for i in range(config.decoder_layers):
        hf, ct = f"model.decoder.layers.{i}", f"decoder/layer_{i}"
        layer_norm(f"{hf}.self_attn_layer_norm", f"{ct}/self_attention/layer_norm")
        fused_self_attention(f"{hf}.self_attn", f"{ct}/self_attention")
        layer_norm(f"{hf}.encoder_attn_layer_norm", f"{ct}/attention/layer_norm")
        cross_attention(f"{hf}.encoder_attn", f"{ct}/attention")
        ffn(hf, f"{ct}/ffn")
    layer_norm("model.decoder.layer_norm", "decoder/layer_norm")

    # The output projection is tied to the token embedding; CTranslate2 stores it as an
    # alias (or, from an older converter, as a copy). Either way it must equal the embedding.
    proj = take("decoder/projection/weight")
    if not torch.equal(proj, sd["model.decoder.embed_tokens.weight"]):
        raise ValueError("decoder/projection/weight differs from the token embedding; Whisper ties them")
    sd["proj_out.weight"] = sd["model.decoder.embed_tokens.weight"]

    # Scalars are options (read and checked in whisper_config_from_ct2), not weights.
    # `decoder/alignment_heads`/`alignment_layer` are CTranslate2's generic alignment
    # options; Whisper's real alignment heads live in config.json.
    leftover = [n for n in take.unused() if np.asarray(ct2[n]).ndim > 0]
    if leftover:
        raise ValueError(f"CTranslate2 tensors with no Whisper parameter: {leftover}")
    return sd


def build_whisper_tokenizer(tokenizer_file: str | Path, vocab_size: int):
    """`WhisperTokenizer` (tokenizers-backed; `WhisperTokenizerFast` in transformers 4) from a tokenizer.json.

    faster-whisper's tokenizer.json stops at ``<|notimestamps|>``; the Hub's Whisper
    tokenizers also carry the 1501 timestamp tokens, which generation and
    ``decode(..., decode_with_timestamps=True)`` look up by text. They are added here
    so that ``len(tokenizer) == vocab_size`` as in openai/whisper-*.
    """
    from transformers import WhisperTokenizer

    with open(tokenizer_file, encoding="utf-8") as f:
        added = json.load(f)["added_tokens"]
    # Register every special added token (<|startoftranscript|>, languages, tasks, ...)
    # as an extra special token: decode(skip_special_tokens=True) drops them, and
    # Whisper's timestamp logic takes all_special_ids[-1] + 1 as the first timestamp id.
    specials = [t["content"] for t in sorted(added, key=lambda t: t["id"]) if t["special"]]
    tokenizer = WhisperTokenizer(
        tokenizer_file=str(tokenizer_file),
        extra_special_tokens=[s for s in specials if s != "<|endoftext|>"],
        model_max_length=448,
    )
    first_timestamp = len(tokenizer)
    if first_timestamp != tokenizer.convert_tokens_to_ids("<|notimestamps|>") + 1:
        raise ValueError("tokenizer.json does not end at <|notimestamps|>; cannot place timestamp tokens")
    if first_timestamp + NUM_TIMESTAMP_TOKENS != vocab_size:
        raise ValueError(
            f"tokenizer ({first_timestamp}) + {NUM_TIMESTAMP_TOKENS} timestamps != model vocabulary ({vocab_size})"
        )
    timestamps = [
        AddedToken(f"<|{i * 0.02:.2f}|>", lstrip=False, rstrip=False, normalized=False, special=False)
        for i in range(NUM_TIMESTAMP_TOKENS)
    ]
    tokenizer.add_tokens(timestamps)
    if tokenizer.convert_tokens_to_ids("<|30.00|>") != vocab_size - 1:
        raise ValueError("timestamp tokens did not land at the end of the vocabulary")
    return tokenizer


def build_whisper_generation_config(config, ct2_config: dict, tokenizer):
    """The `GenerationConfig` `WhisperForConditionalGeneration.generate` reads (language/task ids, timestamps)."""
    from transformers import GenerationConfig

    multilingual = config.vocab_size >= MULTILINGUAL_VOCAB_SIZE
    fields = dict(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
        decoder_start_token_id=config.decoder_start_token_id,
        max_length=config.max_target_positions,
        suppress_tokens=list(config.suppress_tokens or []),
        begin_suppress_tokens=list(config.begin_suppress_tokens or []),
        alignment_heads=[list(map(int, pair)) for pair in ct2_config.get("alignment_heads", [])],
        no_timestamps_token_id=tokenizer.convert_tokens_to_ids("<|notimestamps|>"),
        prev_sot_token_id=tokenizer.convert_tokens_to_ids("<|startofprev|>"),
        # openai/whisper: the first timestamp may not exceed 1.0 s (50 steps of 20 ms).
        max_initial_timestamp_index=50,
        return_timestamps=False,
        is_multilingual=multilingual,
    )
    if multilingual:
        # Only multilingual models get lang/task ids: `generate` runs language detection
        # whenever `lang_to_id` exists, which an English-only model must not do.
        lang_tokens = tokenizer.convert_ids_to_tokens(list(ct2_config["lang_ids"]))
        if not all(re.fullmatch(r"<\|[a-z]{2,3}\|>", t) for t in lang_tokens):
            raise ValueError(f"config.json lang_ids do not map to language tokens: {lang_tokens[:5]}...")
        fields["lang_to_id"] = dict(zip(lang_tokens, map(int, ct2_config["lang_ids"])))
        fields["task_to_id"] = {
            task: tokenizer.convert_tokens_to_ids(f"<|{task}|>") for task in ("transcribe", "translate")
        }
        # openai/whisper decodes <|startoftranscript|><|lang|><|transcribe|> by default; the Hub
        # checkpoints say so with the deprecated forced_decoder_ids [[1, None], [2, transcribe]].
        # Without either, `generate()` with no task omits the task token and quality drops.
        fields["task"] = "transcribe"
    return GenerationConfig(**fields)


def convert_ct2_whisper(
    model_files: str | Path | Sequence[str | Path],
    output_dir: str | Path,
    *,
    config_file: str | Path,
    tokenizer_file: str | Path,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Convert a faster-whisper (CTranslate2) Whisper model to a `transformers` folder.

    Args:
        model_files: ``model.bin``, its directory, or the ordered ``model.bin.partN`` files.
        output_dir: where ``model.safetensors``, ``config.json``, ``generation_config.json``
            and the `WhisperProcessor` files are written.
        config_file: faster-whisper's ``config.json`` (alignment heads, language ids, suppressed tokens).
        tokenizer_file: the Hugging Face ``tokenizer.json`` shipped with it.
        dtype: saved weight dtype. float32 by default: transformers 5 loads a checkpoint in
            its saved dtype, and CPU training/inference here wants float32; the source is
            float16, so ``torch.float16`` is a lossless half-size alternative.

    Returns:
        ``output_dir``, loadable with ``WhisperForConditionalGeneration.from_pretrained``
        and ``WhisperProcessor.from_pretrained`` offline.
    """
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration, WhisperProcessor

    output_dir = Path(output_dir)
    ct2 = read_ct2_model(model_files)
    with open(config_file, encoding="utf-8") as f:
        ct2_config = json.load(f)

    vocab_size = ct2["decoder/embeddings/weight"].shape[0]
    tokenizer = build_whisper_tokenizer(tokenizer_file, vocab_size)
    config = whisper_config_from_ct2(ct2, ct2_config, tokenizer)
    state_dict = whisper_state_dict_from_ct2(ct2, config)
    del ct2

    model = WhisperForConditionalGeneration(config)
    load_exact(model, state_dict, "Whisper conversion")
    model.generation_config = build_whisper_generation_config(config, ct2_config, tokenizer)
    model.to(dtype)
    model.config.dtype = dtype

    feature_extractor = WhisperFeatureExtractor(
        feature_size=config.num_mel_bins, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400
    )
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    return output_dir
