"""Stage 1 with LoRA: low-rank adapters (peft) on the text encoder's attention, trained beside the Matryoshka
head, then merged into the encoder's weights so the delta holds plain text-encoder tensors (fp16) that
`WolofMRLModel.load_delta` and the builder apply with no peft at run time.

    text_lora: {r: 8, alpha: 16, dropout: 0.0, target_modules: [query, value]}

Merged delta size: 2 bytes x 384 x 384 x (targets) x 12 layers for multilingual-e5-small (query + value:
~7 MB); `max_delta_mb` guards the committed size.
"""

from __future__ import annotations

import torch

DEFAULTS = {"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["query", "value"], "layers": None}
MAX_DELTA_MB = 20.0


def attach_lora(model, spec: dict) -> list[str]:
    """Wrap `model.text_model` in a peft LoRA model (adapters trainable, base weights frozen).

    spec: r, alpha, dropout, target_modules (Linear names inside the text encoder), layers (indices or None).
    Returns the names of the trainable LoRA parameters (under `text_model.`).

    Raises:
        ImportError: peft is not installed.
        ValueError: unknown keys in `spec`.
    """
    unknown = sorted(set(spec) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"text_lora: unknown keys {unknown}; known: {sorted(DEFAULTS)}")
    spec = {**DEFAULTS, **spec}
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise ImportError("text_lora needs peft (pip install peft==0.21.2) at training time only") from err
    config = LoraConfig(r=int(spec["r"]), lora_alpha=float(spec["alpha"]), lora_dropout=float(spec["dropout"]),
                        target_modules=list(spec["target_modules"]), layers_to_transform=spec["layers"],
                        bias="none")
    model.text_model = get_peft_model(model.text_model, config)
    return [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]


def lora_targets(model) -> list[str]:
    """Names (in the merged model) of the weights a LoRA adapter changes: `text_model.<path>.weight`."""
    from peft.tuners.lora import LoraLayer

    names = []
    base = model.text_model.get_base_model()
    for path, module in base.named_modules():
        if isinstance(module, LoraLayer):
            names.append(f"text_model.{path}.weight")
    return names


def merge_lora(model) -> list[str]:
    """Merge the adapters into the text encoder's weights and drop peft: `model.text_model` is the plain encoder
    again. The merged weights are marked trainable (so `delta_state_dict` holds them); returns their names."""
    names = lora_targets(model)
    model.text_model = model.text_model.merge_and_unload()
    model.text_model.requires_grad_(False)
    params = dict(model.named_parameters())
    for name in names:  # what training changed: `model.delta_state_dict()` (the delta) takes these weights
        params[name].requires_grad_(True)
    return names


def is_lora(model) -> bool:
    """True while `model.text_model` carries peft adapters."""
    return hasattr(model.text_model, "merge_and_unload")


def delta_megabytes(tensors: dict[str, torch.Tensor]) -> float:
    """Size of a delta in MB (10^6 bytes) as stored (each tensor's dtype)."""
    return sum(t.numel() * t.element_size() for t in tensors.values()) / 1e6
