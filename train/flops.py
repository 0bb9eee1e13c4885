"""Model FLOPs of a micro-batch from shapes, and the devices' dense peaks (MFU)."""

from __future__ import annotations

import torch
from torch import nn

from train.config import TrainConfig

def _matmul_params(module: nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(p.numel() for n, p in module.named_parameters() if p.dim() >= 2 and not any(s in n for s in skip))


class FlopCounter:
    """Model FLOPs of one micro-batch, forward + backward, from shapes (documented in train/README.md).

    A transformer of P matmul weights, L layers, width H on a sequence of n real tokens costs 2·P·n + 4·L·H·n²
    forward. Each module then counts (1 + [it trains] + [something before it trains]) forwards: backward computes
    weight gradients only for trainable modules and input gradients only where a trainable module lies upstream.
    Padding, GradCache's extra forward and the frozen teacher's recomputation-free passes are not model FLOPs.
    """

    def __init__(self, model, cfg: TrainConfig, need_teacher: bool):
        c = model.config
        self.stage, self.strategy, self.need_teacher = cfg.stage, c.strategy, need_teacher
        tc = c.text_config
        self.text = (_matmul_params(model.text_model, ("embed",)), tc.num_hidden_layers, tc.hidden_size)
        self.head = 2 * model.text_head.weight.numel()
        tower = model.speech_tower
        self.whisper = tower.is_whisper
        if self.whisper:
            enc = tower.encoder
            self.conv = (enc.conv1.weight.numel(), enc.conv2.weight.numel())
            self.speech = (_matmul_params(enc.layers), c.speech_config.encoder_layers, c.speech_config.d_model)
        else:
            self.speech = (_matmul_params(tower.encoder, ("embed", "feature_extractor", "pos_conv")),
                           c.speech_config.num_hidden_layers, c.speech_config.hidden_size)
        ad = model.adapter
        self.adapter_proj = ad.proj.weight.numel()
        self.adapter_tail = ad.conv.weight.numel() if c.strategy == "fusion" else ad.mlp[1].weight.numel()
        self.stride = c.adapter_stride
        layers = getattr(ad, "layers", None) or []
        self.adapter_layers = (_matmul_params(layers), len(layers), c.text_config.hidden_size) if len(layers) else None
        self.fused_extra = len(c.fusion_prefix_ids) + len(c.fusion_suffix_ids) + (
            c.num_prompt_tokens if c.strategy == "fusion" else 0)
        self.speech_trains = not c.freeze_speech_encoder
        # a speech LoRA (speech_lora_rank) trains inside the encoder: backward takes input gradients through it (1
        # more forward's worth, as a text LoRA); its own weight gradients are negligible
        # (the top speech_lora_layers of them only, when set)
        layers = c.speech_config.encoder_layers if self.whisper else 0
        self.speech_lora = 0.0 if not c.speech_lora_rank or self.speech_trains else \
            (c.speech_lora_layers or layers) / max(layers, 1)
        self.head_trains = cfg.stage == "text"
        # a text LoRA trains inside every layer: backward takes input gradients through the whole encoder (1 more
        # forward's worth); the adapters' own weight gradients are negligible
        self.text_passes = 2 if cfg.stage == "text" and cfg.text_lora is not None else 1

    @staticmethod
    def _transformer(spec, lengths: torch.Tensor) -> float:
        params, layers, width = spec
        n = lengths.double()
        return (2 * params * n + 4 * layers * width * n * n).sum()

    def __call__(self, batch: dict) -> torch.Tensor:
        """A 0-d float64 tensor on the batch's device (no host sync per step)."""
        if self.stage == "text":
            total = 0.0
            for side in ("q", "d"):
                lengths = batch[f"{side}_mask"].sum(1)
                total += self.text_passes * self._transformer(self.text, lengths) + 2 * self.head * len(lengths)
            return total
        mask = batch["speech_mask"]
        b = mask.shape[0]
        up = self.speech_trains or bool(self.speech_lora)  # is something upstream of the current module trainable?
        if self.whisper:
            mel = mask.sum(1).double()
            frames = torch.ceil(mel / 2)
            speech = 2 * self.conv[0] * mel.sum() + 2 * self.conv[1] * frames.sum()
            speech += self._transformer(self.speech, frames)
        else:
            frames = torch.ceil(mask.sum(1).double() / 320)  # wav2vec2-style encoders: one frame per 20 ms
            speech = self._transformer(self.speech, frames)
        total = speech * (1 + 2 * self.speech_trains + self.speech_lora)
        if self.strategy == "fusion":
            tokens = torch.ceil(frames / self.stride)
            adapter = 2 * self.adapter_proj * frames.sum() + 2 * self.adapter_tail * tokens.sum()
            total += adapter * (2 + up)
            if self.adapter_layers:  # trained, with trained proj / conv before them: forward + both backwards
                total += 3 * self._transformer(self.adapter_layers, tokens)
            total += (self._transformer(self.text, tokens + self.fused_extra) + self.head * b) * 2
        else:
            adapter = 2 * self.adapter_proj * frames.sum() + 2 * self.adapter_tail * b
            total += adapter * (2 + up) + self.head * b * 2
        total += self._transformer(self.text, batch["d_mask"].sum(1)) + self.head * b
        if self.need_teacher:
            total += self._transformer(self.text, batch["t_mask"].sum(1)) + self.head * b
        return total


PEAK_TFLOPS = {"H100": (989.0, 67.0), "H200": (989.0, 67.0), "A100": (312.0, 19.5), "L4": (121.0, 30.0)}


def peak_flops(cfg: TrainConfig) -> float | None:
    """Dense peak per device in FLOP/s (bf16 tensor cores with bf16, else fp32); None when unknown (CPU)."""
    if cfg.peak_tflops:
        return cfg.peak_tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, (bf16, fp32) in PEAK_TFLOPS.items():
        if key in name:
            return (bf16 if cfg.mixed_precision == "bf16" else fp32) * 1e12
    return None
