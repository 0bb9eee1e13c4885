"""The model a run trains: loaded (tiny random or assembled from backbones), started from a delta, its trainable
parameters chosen, and wrapped as the pair encoder that one step runs under DDP."""

from __future__ import annotations

import sys

import torch
from torch import nn

from train.config import TrainConfig
from train.text_lora import attach_lora

BUILDER_ARGS = ("speech", "text", "strategy", "hub", "backbone_root", "delta", "seed")


def load_model(cfg: TrainConfig):
    """The model (random tiny or assembled from backbones), its processor and the config fields set by `cfg`."""
    kind, spec = next(iter(cfg.model.items()))
    spec = dict(spec or {})
    if kind == "tiny":
        from wolofmrl.testing import tiny_model

        model, processor = tiny_model(seed=cfg.seed, **{k: v for k, v in spec.items() if k != "seed"})
    else:
        from wolofmrl.build import assemble

        spec.pop("delta", None)  # the starting delta is cfg.init_delta
        model, processor = assemble(**spec)
    overrides = {k: getattr(model.config, k) for k in spec if k not in BUILDER_ARGS}
    if cfg.stage == "speech":  # a head alone (text stage) fits either strategy
        overrides = {"strategy": model.config.strategy, **overrides}
    for module in (model.text_model, model.speech_tower.encoder):
        try:
            module.set_attn_implementation("sdpa")
        except (ValueError, AttributeError, NotImplementedError) as err:  # some encoders have no SDPA path
            print(f"[train] {type(module).__name__}: SDPA unavailable ({err}); keeping "
                  f"{module.config._attn_implementation}", file=sys.stderr)
    return model, processor, overrides


def load_init_delta(model, path: str | None) -> dict[str, torch.Tensor]:
    """Apply a delta folder (`wolofmrl.build.load_delta_dir`: delta.safetensors + config_overrides.json) as the
    builder does; returns its tensors as stored (they go into this run's delta too).

    Raises:
        FileNotFoundError: no delta.safetensors in `path`.
        ValueError: the delta was trained with another model configuration (the field is named)."""
    if not path:
        return {}
    from wolofmrl.build import delta_state, load_delta_dir

    folder, overrides = load_delta_dir(path)
    for key, value in overrides.items():
        if key != "strategy" and getattr(model.config, key, value) != value:
            raise ValueError(f"init_delta {path} was trained with {key}={value!r}; this model has "
                             f"{getattr(model.config, key)!r}")
    delta = delta_state(folder)
    model.load_delta(delta)
    return delta


def select_trainable(model, cfg: TrainConfig) -> list[str]:
    """Freeze everything but what the stage trains (text: the head, + LoRA adapters with `text_lora`; speech: the
    adapter, prompt, logit scale, + the speech encoder's LoRA with `speech_lora_rank`), store frozen towers in
    `frozen_dtype`; returns the trainable parameter names."""
    model.requires_grad_(False)
    if cfg.stage == "text":
        model.text_head.requires_grad_(True)
        if cfg.text_lora is not None:  # before the cast below: a LoRA-trained encoder stays fp32
            attach_lora(model, cfg.text_lora)
    else:
        model.adapter.requires_grad_(True)
        if model.prompt is not None:
            model.prompt.requires_grad_(True)
        model.logit_scale.requires_grad_(cfg.train_logit_scale)
        if not model.config.freeze_speech_encoder:  # variant: fine-tune the speech encoder too
            model.speech_tower.requires_grad_(True)
        for lora in model.speech_lora_modules():  # speech_lora_rank: low-rank updates inside the frozen encoder
            lora.requires_grad_(True)
    # trainable modules have no dropout or batch norm; frozen backbones run in eval mode (deterministic, and
    # GradCache's second forward then equals the first)
    model.eval()
    if cfg.frozen_dtype != "float32":
        dtype = getattr(torch, cfg.frozen_dtype)
        for module in (model.speech_tower, model.text_model):
            if not any(p.requires_grad for p in module.parameters()):
                module.to(dtype)
    return model.trainable_parameter_names()


class PairEncoder(nn.Module):
    """What one step runs under DDP: both sides' embeddings (full width, not normalised) and the logit scale.

    text stage:   q = query text,   d = passage text (both through the trainable head)
    speech stage: q = speech,       d = French passage (frozen), t = transcript as a query (frozen teacher)
    """

    def __init__(self, model, cfg: TrainConfig, need_teacher: bool, ctc: nn.Module | None = None):
        super().__init__()
        self.model = model
        self.ctc = ctc  # the reading loss (wolofmrl.losses.TiedCTCLoss) with its learned blank and scale, or None
        self.stage = cfg.stage
        self.need_teacher = need_teacher
        self.fixed_scale = 1.0 / cfg.temperature
        self.max_scale = cfg.max_logit_scale
        self.scale_trainable = cfg.stage == "speech" and cfg.train_logit_scale
        self.d_trainable = cfg.stage == "text"

    def forward(self, batch: dict) -> dict:
        m = self.model
        out = {}
        if self.stage == "text":
            out["q"] = m.encode_text(batch["q_ids"], batch["q_mask"])
            out["d"] = m.encode_text(batch["d_ids"], batch["d_mask"])
        else:
            tokens, token_mask = m.speech_tokens(input_features=batch.get("input_features"),
                                                 attention_mask=batch["speech_mask"],
                                                 input_values=batch.get("input_values"))
            out["q"] = m.embed_speech_tokens(tokens, token_mask)
            if self.ctc is not None:  # per row: the tokens of this micro-batch only (no GradCache, checked in config)
                out["ctc"], parts = self.ctc(*m.reading_tokens(tokens, token_mask), batch["ctc_ids"],
                                             batch["ctc_lens"], m.text_model.get_input_embeddings().weight)
                out["ctc_skipped"] = parts["ctc_skipped"]
            with torch.no_grad():
                out["d"] = m.encode_text(batch["d_ids"], batch["d_mask"])
                if self.need_teacher:
                    out["t"] = m.encode_text(batch["t_ids"], batch["t_mask"])
        if self.scale_trainable:
            out["scale"] = m.logit_scale.exp().clamp(max=self.max_scale)
        else:
            out["scale"] = (torch.tensor(self.fixed_scale, device=out["q"].device) if self.stage == "text" else
                            m.logit_scale.detach().exp().clamp(max=self.max_scale))
        return out


