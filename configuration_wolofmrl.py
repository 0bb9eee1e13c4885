"""WolofMRL configuration.

A WolofMRL model maps Wolof (or French) speech and French (or Wolof) text into one
Matryoshka embedding space. It nests two backbone configs:

- ``speech_config``: any `transformers` speech encoder that exposes hidden states
  (Whisper encoder by default; wav2vec2 / HuBERT / w2v-BERT style encoders work too).
- ``text_config``: any `transformers` text encoder (XLM-R / BERT with mean pooling,
  decoder embedders such as Qwen3-Embedding with last-token pooling).

This file is self-contained Hub remote code: it imports nothing from the `wolofmrl` library.
"""

from __future__ import annotations

from transformers import AutoConfig, PretrainedConfig

STRATEGIES = ("fusion", "dual")
POOLINGS = ("mean", "last", "cls")


def _as_config(value, default_model_type: str) -> PretrainedConfig:
    """Turn a nested config given as a dict (as read from config.json) into a config object."""
    if isinstance(value, PretrainedConfig):
        return value
    value = dict(value or {})
    model_type = value.pop("model_type", default_model_type)
    return AutoConfig.for_model(model_type, **value)


class WolofMRLConfig(PretrainedConfig):
    r"""Configuration of a [`WolofMRLModel`].

    Args:
        speech_config (`dict` or `PretrainedConfig`): config of the speech encoder (default: Whisper base).
        text_config (`dict` or `PretrainedConfig`): config of the text encoder (default: XLM-R small, as in
            multilingual-e5-small).
        strategy (`str`): ``"fusion"`` runs adapted speech frames through the frozen text transformer (the
            paper's best strategy); ``"dual"`` pools the speech encoder and projects into the text space.
        matryoshka_dims (`list[int]`): the embedding prefixes trained to stand on their own, largest first.
        speech_layers (`list[int]` or `None`): indices into the speech encoder's hidden states (0 = embedding
            output) that the adapter concatenates. ``None`` concatenates all of them.
        adapter_stride (`int`): Conv1d kernel = stride over speech-encoder frames. The paper uses 2 with a 32k-token
            text model; with a 512-position text model (mE5) a 30 s Whisper clip (1500 frames) only fits at
            stride >= 4 (375 speech tokens), hence the default 4.
        adapter_layers (`int`): pre-LayerNorm transformer layers (width = the text hidden size, 64-wide heads, GELU
            feed-forward 4x) run over the speech tokens after the Conv1d (fusion). 0 (the default, and every delta
            trained before it existed) keeps the adapter linear: Linear -> Conv1d. Context lets a token-level
            reading loss map a few frames onto a subword (speech-LLM adapters are likewise small transformers,
            e.g. Qwen-Audio's and SALMONN's).
        speech_lora_rank (`int`): rank of LoRA updates (Hu et al., 2021, arXiv:2106.09685) added to the frozen Whisper
            encoder's attention and feed-forward projections (q/k/v/out_proj, fc1, fc2), trained with the adapter.
            0 (the default, and every delta trained before it existed) leaves the speech encoder as shipped. The
            delta then holds only the low-rank factors (rank 16 on Whisper base's 6 layers: 0.88 M parameters,
            1.8 MB in fp16), never the encoder itself.
        speech_lora_alpha (`float` or `None`): LoRA scaling numerator (update = B A x * alpha / rank); `None` = the
            rank (scaling 1).
        speech_lora_layers (`int`): how many of the speech encoder's top layers get LoRA; 0 = all of them.
        num_prompt_tokens (`int`): learned soft-prompt vectors placed before the speech tokens (fusion).
        fusion_prefix_ids / fusion_suffix_ids (`list[int]`): frozen text-token ids around the speech tokens
            (fusion), e.g. the ids of ``"<s> query:"`` and ``"</s>"``, so speech enters the text model the way a
            query does.
        text_pooling (`str`): ``"mean"`` (BERT-like), ``"last"`` (decoder embedders) or ``"cls"``.
        query_prefix / passage_prefix (`str`): text prefixes the text encoder was trained with.
        max_audio_seconds (`float`): longest window the speech encoder takes in one pass (30 s for Whisper); the
            processor cuts longer audio into overlapping windows that the model pools per clip.
        freeze_speech_encoder / freeze_text_encoder (`bool`): frozen towers get ``requires_grad=False``.
        distill_weight (`float`): default weight of the distillation term used by training scripts.
        logit_scale_init_value (`float`): initial log of the contrastive temperature's inverse.
    """

    model_type = "wolofmrl"

    def __init__(
        self,
        speech_config: dict | PretrainedConfig | None = None,
        text_config: dict | PretrainedConfig | None = None,
        strategy: str = "fusion",
        matryoshka_dims: list[int] | None = None,
        speech_layers: list[int] | None = None,
        adapter_stride: int = 4,
        adapter_layers: int = 0,
        speech_lora_rank: int = 0,
        speech_lora_alpha: float | None = None,
        speech_lora_layers: int = 0,
        num_prompt_tokens: int = 0,
        fusion_prefix_ids: list[int] | None = None,
        fusion_suffix_ids: list[int] | None = None,
        text_pooling: str = "mean",
        query_prefix: str = "query: ",
        passage_prefix: str = "passage: ",
        sampling_rate: int = 16000,
        max_audio_seconds: float = 30.0,
        freeze_speech_encoder: bool = True,
        freeze_text_encoder: bool = True,
        distill_weight: float = 0.0,
        logit_scale_init_value: float = 2.6592,  # log(1/0.07), as in CLIP
        **kwargs,
    ):
        self.speech_config = _as_config(speech_config, "whisper")
        self.text_config = _as_config(text_config, "xlm-roberta")
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if text_pooling not in POOLINGS:
            raise ValueError(f"text_pooling must be one of {POOLINGS}, got {text_pooling!r}")
        hidden = self.text_config.hidden_size
        dims = [hidden, 256, 128, 64, 32, 16, 8] if matryoshka_dims is None else list(matryoshka_dims)
        bad = [d for d in dims if not 1 <= int(d) <= hidden]
        if bad:
            raise ValueError(f"matryoshka_dims {bad} are outside 1..{hidden} (the text hidden size)")
        if adapter_stride < 1:
            raise ValueError(f"adapter_stride must be >= 1, got {adapter_stride}")
        if isinstance(adapter_layers, bool) or not isinstance(adapter_layers, int) or adapter_layers < 0:
            raise ValueError(f"adapter_layers must be a whole number >= 0 (0 = the linear adapter), got "
                             f"{adapter_layers!r}")
        if adapter_layers and strategy != "fusion":
            raise ValueError(f"adapter_layers={adapter_layers} is for strategy='fusion' (transformer layers over its "
                             f"speech tokens); strategy={strategy!r} takes adapter_layers=0")
        for name, value, zero in (("speech_lora_rank", speech_lora_rank, "no LoRA"),
                                  ("speech_lora_layers", speech_lora_layers, "every layer")):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a whole number >= 0 (0 = {zero}), got {value!r}")
        if speech_lora_alpha is not None and (isinstance(speech_lora_alpha, bool)
                                              or not isinstance(speech_lora_alpha, (int, float))
                                              or not speech_lora_alpha > 0):
            raise ValueError(f"speech_lora_alpha must be a number > 0 or None (= the rank), got {speech_lora_alpha!r}")
        if speech_lora_rank and self.speech_config.model_type != "whisper":
            raise ValueError(f"speech_lora_rank={speech_lora_rank} needs a Whisper speech encoder (its q/k/v/out_proj, "
                             f"fc1, fc2); this speech_config is {self.speech_config.model_type!r}: "
                             "set speech_lora_rank=0")
        layers_there = getattr(self.speech_config, "encoder_layers", 0)
        if speech_lora_rank and speech_lora_layers > layers_there:
            raise ValueError(f"speech_lora_layers={speech_lora_layers} exceeds the speech encoder's {layers_there} "
                             f"layers: use 1..{layers_there}, or 0 for all")
        self.strategy = strategy
        self.matryoshka_dims = sorted({int(d) for d in dims}, reverse=True)
        self.speech_layers = None if speech_layers is None else [int(i) for i in speech_layers]
        self.adapter_stride = int(adapter_stride)
        self.adapter_layers = int(adapter_layers)
        self.speech_lora_rank = int(speech_lora_rank)
        self.speech_lora_alpha = None if speech_lora_alpha is None else float(speech_lora_alpha)
        self.speech_lora_layers = int(speech_lora_layers)
        self.num_prompt_tokens = int(num_prompt_tokens)
        self.fusion_prefix_ids = list(fusion_prefix_ids or [])
        self.fusion_suffix_ids = list(fusion_suffix_ids or [])
        self.text_pooling = text_pooling
        self.query_prefix = query_prefix
        self.passage_prefix = passage_prefix
        self.sampling_rate = int(sampling_rate)
        self.max_audio_seconds = float(max_audio_seconds)
        self.freeze_speech_encoder = bool(freeze_speech_encoder)
        self.freeze_text_encoder = bool(freeze_text_encoder)
        self.distill_weight = float(distill_weight)
        self.logit_scale_init_value = float(logit_scale_init_value)
        super().__init__(**kwargs)

    @property
    def embedding_dim(self) -> int:
        return self.text_config.hidden_size

    def to_dict(self):
        output = super().to_dict()
        for key in ("speech_config", "text_config"):
            value = getattr(self, key)
            output[key] = value.to_dict() if isinstance(value, PretrainedConfig) else value
        return output


__all__ = ["WolofMRLConfig"]
