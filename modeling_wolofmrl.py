"""WolofMRL: Wolof speech and French text in one Matryoshka embedding space.

Reads top to bottom: output dataclass, speech tower, adapters, pooling, the PreTrainedModel.

    waveform 16 kHz -> speech encoder -> concat hidden layers -> Linear -> Conv1d(k=s=stride)
        [-> adapter_layers transformer layers] -> "speech tokens"
    fusion: [prefix tokens][prompt][speech tokens][suffix tokens] -> frozen text transformer -> pool -> head
    dual:   masked mean of projected speech frames -> MLP -> head
    text:   tokens -> frozen text transformer -> pool -> head
    embedding[:dim] -> L2-normalise

This file is self-contained Hub remote code: it imports nothing from the `wolofmrl` library.
"""

from __future__ import annotations

import math
import operator
import os
import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

try:
    from .configuration_wolofmrl import WolofMRLConfig
except ImportError:  # loaded as a plain module (repo root on sys.path)
    from configuration_wolofmrl import WolofMRLConfig


@dataclass
class WolofMRLOutput(ModelOutput):
    """Output of [`WolofMRLModel.forward`].

    speech_embeds / text_embeds: (batch, hidden) pooled + head, not normalised (losses slice Matryoshka prefixes).
    logits_per_speech: (n_speech, n_text) scaled cosine similarities at full width; logits_per_text is its transpose.
    """

    loss: torch.FloatTensor | None = None
    speech_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    logits_per_speech: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None


def check_dim(dim, hidden: int, trained_dims: list[int] | None = None) -> int | None:
    """`dim` as an int in 1..hidden (any integral number: Python, numpy or 0-d torch ints), or None.

    Raises:
        ValueError: naming the valid range for a bool, a float, a string or an int outside 1..hidden.
    """
    if dim is None:
        return None
    value = None
    if not isinstance(dim, (bool, np.bool_)) and not (isinstance(dim, torch.Tensor) and dim.dtype == torch.bool):
        try:
            value = operator.index(dim)
        except TypeError:
            value = None
    if value is None or not 1 <= value <= hidden:
        trained = f" (trained Matryoshka dims: {list(trained_dims)})" if trained_dims else ""
        raise ValueError(f"dim={dim!r} is not valid: use an int in 1..{hidden}{trained}, or dim=None for the full "
                         "embedding.")
    return value


def normalize_dim(embeds: torch.Tensor, dim=None, hidden: int | None = None,
                  trained_dims: list[int] | None = None) -> torch.Tensor:
    """The project's one truncate-and-normalise: the first `dim` coordinates of `embeds`, L2-normalised, float32.

    embeds: (..., hidden); dim: an int in 1..hidden or None (full width); hidden defaults to embeds.shape[-1].
    Returns (..., dim). Raises ValueError for a bad `dim` (see `check_dim`).
    """
    dim = check_dim(dim, embeds.shape[-1] if hidden is None else hidden, trained_dims)
    if dim is not None:
        embeds = embeds[..., :dim]
    return F.normalize(embeds.float(), dim=-1)


def pool_windows(embeds: torch.Tensor, window_to_clip: torch.Tensor, weights: torch.Tensor | None = None):
    """Long-audio pooling: (W, H) window embeddings -> (C, H) per clip, the `weights`-weighted mean of the
    windows' L2-normalised embeddings (C = window_to_clip.max() + 1; weights: e.g. each window's real frames)."""
    window_to_clip = window_to_clip.to(embeds.device).long()
    unit = F.normalize(embeds.float(), dim=-1)
    w = torch.ones(len(unit), device=unit.device) if weights is None else weights.to(unit.device).float()
    clips = int(window_to_clip.max()) + 1
    pooled = unit.new_zeros(clips, unit.shape[-1]).index_add_(0, window_to_clip, unit * w[:, None])
    total = unit.new_zeros(clips).index_add_(0, window_to_clip, w)
    return pooled / total.clamp(min=1e-6)[:, None]


def unmasked_padding(input_features, min_frames: int = 10):
    """A (B, T) mask for log-mel features that came without one, or None when no row is padded.

    The Whisper feature extractor pads every clip to 30 s (3000 frames) and, by default, returns no attention_mask;
    pooled as speech, the padding pulls the embedding away from the clip's (cosine ~0.6). Padding is a trailing
    run of identical frames (the log-mel of digital silence); a run of at least `min_frames` is masked out here,
    with a warning that says how to pass features properly."""
    x = as_tensor(input_features)
    if x is None or x.dim() != 3 or x.shape[-1] <= min_frames:
        return None
    same = (x == x[..., -1:]).all(dim=1)  # (B, T): frame equals the row's last frame
    run = same.flip(-1).long().cumprod(-1).sum(-1)  # trailing identical frames per row
    if not bool((run >= min_frames).any()):
        return None
    frames = x.shape[-1]
    lengths = torch.where(run >= min_frames, frames - run, torch.full_like(run, frames))
    lengths = (lengths + lengths % 2).clamp(max=frames)  # even, as the processor's own features
    warnings.warn(f"input_features of {frames} frames came without an attention_mask and end in up to "
                  f"{int(run.max())} identical frames: padding (the Whisper feature extractor pads to 30 s); it is "
                  "masked out. Pass **processor(audio=...) (own-length features and their mask), or "
                  "return_attention_mask=True to the feature extractor", stacklevel=3)
    return (torch.arange(frames, device=x.device)[None] < lengths[:, None].to(x.device)).long()


def as_tensor(value, device: torch.device | None = None, dtype: torch.dtype | None = None):
    """numpy arrays / lists -> tensors on `device` (cast to `dtype` if floating); tensors moved; None kept."""
    if value is None:
        return None
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(np.asarray(value))
    if dtype is not None and value.is_floating_point():
        value = value.to(dtype)
    return value.to(device) if device is not None else value


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    # right padding: the last valid position of each row
    last = mask.long().sum(1).clamp(min=1) - 1
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def pool(hidden: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    if how == "mean":
        return masked_mean(hidden, mask)
    if how == "last":
        return last_token(hidden, mask)
    return hidden[:, 0]


class SpeechTower(nn.Module):
    """Speech encoder returning every hidden state plus a frame mask, without padding clips to 30 s.

    Whisper encoders are run layer by layer so that a short clip keeps its own length (the position table is
    sliced) and padded frames are masked in attention and zeroed between convolutions. A clip's states are then
    the same alone or batched with longer clips. Other encoders (wav2vec2, HuBERT, w2v-BERT) run through their
    own forward with `output_hidden_states=True`.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.is_whisper = config.model_type == "whisper"
        if self.is_whisper:  # the encoder alone: the decoder is not part of this model
            from transformers.models.whisper.modeling_whisper import WhisperEncoder

            self.encoder = WhisperEncoder(config)
        else:
            self.encoder = AutoModel.from_config(config)

    @property
    def num_hidden_states(self) -> int:
        layers = self.config.encoder_layers if self.is_whisper else self.config.num_hidden_layers
        return layers + 1

    @property
    def hidden_size(self) -> int:
        return self.config.d_model if self.is_whisper else self.config.hidden_size

    def forward(self, input_features=None, attention_mask=None, input_values=None):
        if self.is_whisper:
            if input_features is None:
                raise ValueError("a Whisper speech encoder needs `input_features` (log-mel) from the processor")
            return self._whisper(input_features, attention_mask)
        inputs = input_values if input_values is not None else input_features
        if inputs is None:
            raise ValueError("the speech encoder needs `input_values` (or `input_features`) from the processor")
        key = "input_values" if input_values is not None else "input_features"
        out = self.encoder(**{key: inputs}, attention_mask=attention_mask, output_hidden_states=True)
        states = list(out.hidden_states)
        frames = states[-1].shape[1]
        if attention_mask is None:
            mask = torch.ones(states[-1].shape[:2], dtype=torch.long, device=states[-1].device)
        elif hasattr(self.encoder, "_get_feature_vector_attention_mask"):
            mask = self.encoder._get_feature_vector_attention_mask(frames, attention_mask).long()
        else:
            lengths = attention_mask.sum(-1).float() * frames / attention_mask.shape[-1]
            mask = (torch.arange(frames, device=lengths.device)[None] < lengths.ceil()[:, None]).long()
        return states, mask

    def _whisper(self, features: torch.Tensor, mel_mask: torch.Tensor | None):
        enc = self.encoder
        batch, _, n_mel = features.shape
        max_frames = enc.embed_positions.num_embeddings * 2
        if n_mel > max_frames:
            raise ValueError(
                f"input_features have {n_mel} mel frames; this encoder takes at most {max_frames} "
                f"({max_frames // 100} s). Split longer audio into clips."
            )
        if mel_mask is None:
            mel_mask = torch.ones(batch, n_mel, dtype=torch.long, device=features.device)
        if n_mel % 2:  # conv2 has stride 2: an even frame count makes every clip's tail identical alone or batched
            features = F.pad(features, (0, 1))
            mel_mask = F.pad(mel_mask, (0, 1))
        mel_keep = mel_mask[:, None, :].to(features.dtype)
        hidden = F.gelu(enc.conv1(features * mel_keep)) * mel_keep
        hidden = F.gelu(enc.conv2(hidden))  # (B, D, T/2)
        lengths = (mel_mask.sum(-1) + 1) // 2  # ceil(n/2) frames survive the stride-2 conv
        frames = hidden.shape[-1]
        frame_mask = (torch.arange(frames, device=hidden.device)[None] < lengths[:, None]).long()
        hidden = hidden.permute(0, 2, 1) + enc.embed_positions.weight[:frames].to(hidden.dtype)
        hidden = hidden * frame_mask[..., None].to(hidden.dtype)
        # additive mask (B, 1, 1, T): padded keys get -inf-like scores in eager and SDPA attention alike;
        # none at all when nothing is padded, so SDPA may pick its fused (flash) kernels
        attn = None
        if not bool(frame_mask.all()):
            attn = (1.0 - frame_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
        states = [hidden]
        for layer in enc.layers:
            hidden = layer(hidden, attn)
            if isinstance(hidden, tuple):
                hidden = hidden[0]
            states.append(hidden)
        states[-1] = enc.layer_norm(hidden)
        return states, frame_mask


SPEECH_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")  # Whisper encoder layer Linears


class LoRA(nn.Module):
    """A low-rank update of a frozen Linear (Hu et al., 2021, LoRA, arXiv:2106.09685): x (..., in) -> (..., out) =
    x A^T B^T * alpha / rank. A is Kaiming-uniform and B zero at init (peft's defaults), so a fresh LoRA changes
    nothing. Inside the Whisper encoder (a PreTrainedModel of its own, whose `_init_weights` transformers calls for
    its submodules) a factor missing from a checkpoint is reset by `WolofMRLPreTrainedModel.from_pretrained`."""

    is_speech_lora = True

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, in_features))
        self.B = nn.Parameter(torch.empty(out_features, rank))
        self.scaling = alpha / rank
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5))
        nn.init.zeros_(self.B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.linear(x.to(self.A.dtype), self.A), self.B).mul(self.scaling).to(x.dtype)


class LoRALinear(nn.Linear):
    """An nn.Linear with a `lora` child added to its output. The Linear keeps its own parameter names (weight, bias),
    so the backbone's checkpoint loads unchanged; the delta adds `<name>.lora.A` and `<name>.lora.B`."""

    lora: LoRA

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) + self.lora(x)


def attach_speech_lora(tower: "SpeechTower", rank: int, alpha: float | None, top_layers: int = 0) -> list[str]:
    """Give the Linears named in `SPEECH_LORA_TARGETS` of the Whisper encoder's top `top_layers` layers (0 = all) a
    LoRA update of `rank` (alpha None = rank). Returns the names of the wrapped Linears, relative to the encoder."""
    layers = tower.encoder.layers
    first = len(layers) - top_layers if top_layers else 0
    wrapped = []
    for index in range(first, len(layers)):
        for name, module in layers[index].named_modules():
            if name.rsplit(".", 1)[-1] in SPEECH_LORA_TARGETS and type(module) is nn.Linear:
                module.__class__ = LoRALinear
                module.lora = LoRA(module.in_features, module.out_features, rank, float(alpha or rank)).to(
                    module.weight.device)
                wrapped.append(f"layers.{index}.{name}")
    return wrapped


def init_adapter_module(sub: nn.Module) -> None:
    """A fresh part of the adapter's transformer layers (`is_adapter_part`, which transformers initialises module by
    module when a checkpoint lacks it): Linear N(0, 0.02), LayerNorm 1/0, attention input projection Xavier; biases
    0. Backbones keep their own init."""
    if isinstance(sub, (nn.Linear, nn.Conv1d)):
        nn.init.normal_(sub.weight, std=0.02 if isinstance(sub, nn.Linear) else 1.0 / math.sqrt(
            sub.in_channels * sub.kernel_size[0]))
        if sub.bias is not None:
            nn.init.zeros_(sub.bias)
    elif isinstance(sub, nn.LayerNorm):
        nn.init.ones_(sub.weight)
        nn.init.zeros_(sub.bias)
    elif isinstance(sub, nn.MultiheadAttention):
        nn.init.xavier_uniform_(sub.in_proj_weight)
        nn.init.zeros_(sub.in_proj_bias)



class FrameAdapter(nn.Module):
    """Concatenated speech hidden states -> Linear -> Conv1d(kernel = stride) [-> `layers` pre-LN transformer
    layers over the tokens, padded tokens masked] -> text-width speech tokens."""

    def __init__(self, in_dim: int, out_dim: int, stride: int, layers: int = 0):
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(in_dim, out_dim)
        self.conv = nn.Conv1d(out_dim, out_dim, kernel_size=stride, stride=stride)
        heads = max(1, out_dim // 64)
        while out_dim % heads:
            heads -= 1
        # empty for layers=0: the state dict of a linear adapter is unchanged
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(out_dim, heads, dim_feedforward=4 * out_dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True) for _ in range(layers))
        for sub in self.layers.modules():  # proj and conv keep the init every committed delta started from
            sub.is_adapter_part = True

    def forward(self, frames: torch.Tensor, mask: torch.Tensor):
        # frames: (B, T, in_dim), mask: (B, T)
        x = self.proj(frames) * mask[..., None].to(frames.dtype)
        pad = (-x.shape[1]) % self.stride  # zero-pad to a whole window, alone or batched
        x = F.pad(x, (0, 0, 0, pad))
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, ceil(T/stride), out_dim)
        lengths = (mask.sum(-1) + self.stride - 1) // self.stride
        tok_mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
        if len(self.layers):
            padded = tok_mask == 0
            key_mask = padded if bool(padded.any()) else None
            for layer in self.layers:  # padded tokens are keys no token attends to: a clip alone == batched
                x = layer(x, src_key_padding_mask=key_mask)
            # masked_fill, not a product: torch's inference fast path may leave NaN in an all-padded row
            return x.masked_fill(padded[..., None], 0.0), tok_mask
        return x * tok_mask[..., None].to(x.dtype), tok_mask


class DualProjection(nn.Module):
    """Dual-encoder speech side: masked mean of projected frames -> MLP into the text embedding space."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.pool(self.proj(frames), mask)

    def pool(self, projected: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, T, out_dim) projected frames (`proj` output) -> (B, out_dim): masked mean, then the residual MLP."""
        pooled = masked_mean(projected, mask)
        return pooled + self.mlp(pooled)


def check_loaded_weights(model, info: dict, source: str) -> None:
    """Raise a ValueError naming every missing / unexpected / mis-shaped / non-finite tensor of a loaded model."""
    problems = []
    for label, keys in (("missing", info.get("missing_keys")), ("unexpected", info.get("unexpected_keys"))):
        if keys:
            problems.append(f"{label} tensors {_few(sorted(keys))}")
    if info.get("mismatched_keys"):
        problems.append("tensors of another shape " + _few([f"{k[0]} {tuple(k[1])} vs model {tuple(k[2])}"
                                                            for k in sorted(info["mismatched_keys"])]))
    bad = [n for n, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        problems.append(f"tensors with NaN or inf values {_few(bad)}")
    if problems:
        raise ValueError(
            f"model.safetensors in {source} does not fit its config.json (strategy={model.config.strategy!r}): "
            + "; ".join(problems) + ". The folder is incomplete, damaged or its config was edited: rebuild it "
            "(python -m wolofmrl.build --out FOLDER) or re-save the model with save_pretrained; "
            "strict_weights=False loads it anyway.")


def _few(names: list[str], n: int = 8) -> str:
    return str(names[:n])[:-1] + (f", ... {len(names) - n} more]" if len(names) > n else "]")


class WolofMRLPreTrainedModel(PreTrainedModel):
    config_class = WolofMRLConfig
    base_model_prefix = "wolofmrl"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, strict_weights: bool = True, **kwargs):
        """`PreTrainedModel.from_pretrained`, strict about the weights: a folder whose tensors do not fit its
        config.json (missing, unexpected, other shapes) or hold NaN/inf fails instead of embedding garbage.

        `strict_weights=False` loads anyway (transformers' log line only). `dtype=torch.bfloat16` etc. work: the
        model casts float32 processor features itself.

        Raises:
            ValueError: naming model.safetensors, the bad tensors and the fix.
        """
        want_info = kwargs.pop("output_loading_info", False)
        ignore_sizes = kwargs.pop("ignore_mismatched_sizes", False)  # ours to report, with the tensors' names
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                              ignore_mismatched_sizes=True, **kwargs)
        fresh = set(info.get("missing_keys", ())) | {k[0] if isinstance(k, tuple) else k
                                                     for k in info.get("mismatched_keys", ())}
        with torch.no_grad():  # LoRA factors the folder lacks: transformers leaves them as uninitialised memory
            for name, module in model.named_modules():
                if getattr(module, "is_speech_lora", False) and {f"{name}.A", f"{name}.B"} & fresh:
                    module.reset_parameters()
        if ignore_sizes:
            info = {**info, "mismatched_keys": set()}
        if strict_weights:
            check_loaded_weights(model, info, os.fspath(pretrained_model_name_or_path))
        model.apply_freezing()  # loading replaces parameters (requires_grad=True again)
        return (model, info) if want_info else model

    def _init_weights(self, module):
        # Backbones come from their own checkpoints; only the new modules are initialised here.
        if isinstance(module, WolofMRLModel):
            nn.init.eye_(module.text_head.weight)
            nn.init.zeros_(module.text_head.bias)
            module.logit_scale.data.fill_(self.config.logit_scale_init_value)
            if module.prompt is not None:
                nn.init.normal_(module.prompt, std=0.02)
        elif isinstance(module, (FrameAdapter, DualProjection)):
            for sub in module.modules():
                init_adapter_module(sub)
        elif getattr(module, "is_adapter_part", False):  # transformers initialises missing weights module by module
            init_adapter_module(module)


class WolofMRLModel(WolofMRLPreTrainedModel):
    """Speech and text towers sharing one frozen text encoder and one Matryoshka head.

    Trainable by default: the speech adapter (fusion or dual), the soft prompt, the text head (stage 1) and
    `logit_scale`. The speech and text backbones are frozen (`config.freeze_*`).

    Example (a spoken Wolof question against French passages; `waves`: 16 kHz float32 arrays):

    >>> from transformers import AutoModel, AutoProcessor
    >>> model = AutoModel.from_pretrained("checkpoints/wolofmrl-base", trust_remote_code=True)
    >>> processor = AutoProcessor.from_pretrained("checkpoints/wolofmrl-base", trust_remote_code=True)
    >>> q = model.get_audio_features(**processor(audio=waves, sampling_rate=16000), dim=128)   # (n_clips, 128)
    >>> d = model.encode_document(["Le marché ouvre tôt.", "Il pleut."], dim=128)               # (2, 128)
    >>> t = model.encode_query(text=["Marse bi dafa ubbeeku ci suba"], dim=128)                 # query prefix
    >>> scores = q @ d.T                                                                         # cosine similarities
    """

    def __init__(self, config: WolofMRLConfig):
        super().__init__(config)
        self.speech_tower = SpeechTower(config.speech_config)
        if config.speech_lora_rank:
            attach_speech_lora(self.speech_tower, config.speech_lora_rank, config.speech_lora_alpha,
                               config.speech_lora_layers)
        self.text_model = AutoModel.from_config(config.text_config, add_pooling_layer=False) if config.text_config.model_type in (
            "bert", "roberta", "xlm-roberta") else AutoModel.from_config(config.text_config)
        hidden = config.text_config.hidden_size
        n_states = self.speech_tower.num_hidden_states
        layers = list(range(n_states)) if config.speech_layers is None else config.speech_layers
        bad = [i for i in layers if not -n_states <= i < n_states]
        if bad:
            raise ValueError(f"speech_layers {bad} out of range for {n_states} hidden states")
        self.speech_layers = layers
        in_dim = self.speech_tower.hidden_size * len(layers)
        if config.strategy == "fusion":
            self.adapter = FrameAdapter(in_dim, hidden, config.adapter_stride, config.adapter_layers)
        else:
            self.adapter = DualProjection(in_dim, hidden)
        use_prompt = config.strategy == "fusion" and config.num_prompt_tokens > 0
        self.prompt = nn.Parameter(torch.zeros(config.num_prompt_tokens, hidden)) if use_prompt else None
        # Matryoshka head shared by both modalities; identity at start = the frozen text model's own embedding.
        self.text_head = nn.Linear(hidden, hidden)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()
        self.apply_freezing()

    # ----------------------------------------------------------------- freezing and deltas
    def apply_freezing(self):
        if self.config.freeze_speech_encoder:
            self.speech_tower.requires_grad_(False)
            for module in self.speech_lora_modules():  # the LoRA updates train; the encoder stays as shipped
                module.requires_grad_(True)
        if self.config.freeze_text_encoder:
            self.text_model.requires_grad_(False)

    def speech_lora_modules(self) -> list[LoRA]:
        """The speech encoder's LoRA updates (`config.speech_lora_rank`), empty without them."""
        return [m for m in self.speech_tower.modules() if getattr(m, "is_speech_lora", False)]

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def delta_state_dict(self, dtype: torch.dtype | None = torch.float16) -> dict[str, torch.Tensor]:
        """What training changes (every trainable parameter), e.g. for a small fp16 safetensors file."""
        keep = set(self.trainable_parameter_names())
        return {n: (t.detach().to(dtype) if dtype else t.detach()).cpu().contiguous()
                for n, t in self.state_dict().items() if n in keep}

    def load_delta(self, delta: dict[str, torch.Tensor] | str):
        """Load a trained delta (`delta_state_dict`: tensor names -> values, or a safetensors path) over this model.

        Raises:
            KeyError / ValueError: naming `adapter_layers` or `speech_lora_rank` / `speech_lora_layers` when the delta
                was trained under other values (it has parts this model lacks, or lacks parts it has, or other
                shapes). `speech_lora_alpha` adds no tensor, so it cannot be checked here: the builder and training
                take it from the delta's config_overrides.json."""
        if isinstance(delta, str):
            from safetensors.torch import load_file

            delta = load_file(delta)
        own = self.state_dict()
        unknown = sorted(set(delta) - set(own))
        c = self.config
        # config fields that add parameters: a delta trained under other values must be refused by name, not built
        # with untrained (or missing) parts
        parts = (("adapter transformer layers", lambda k: k.startswith("adapter.layers."), "adapter_layers",
                  f"adapter_layers={c.adapter_layers}", "model.builder.adapter_layers, or the run name's _a<N>"),
                 ("speech-encoder LoRA", lambda k: k.startswith("speech_tower.") and ".lora." in k,
                  "speech_lora_rank / speech_lora_layers",
                  f"speech_lora_rank={c.speech_lora_rank}, speech_lora_layers={c.speech_lora_layers}",
                  "model.builder.speech_lora_rank / speech_lora_layers, or the run name's _l<R>"))
        speech_delta = any(k.startswith("adapter.") for k in delta)
        for what, belongs, names, fields, where in parts:
            fix = f"use the values in the delta's config_overrides.json (in training: {where})"
            extra = [k for k in unknown if belongs(k)]
            if extra:
                raise KeyError(f"delta has {what} ({extra[0]} and {len(extra) - 1} more) and this model's config "
                               f"has {fields}: {fix}")
            missing = sorted(k for k in own if belongs(k) and k not in delta)
            if missing and speech_delta:  # a speech delta, but trained without these parts
                raise ValueError(f"delta trains the adapter without this model's {what} ({fields}; {missing[0]} "
                                 f"and {len(missing) - 1} more are missing): it was trained with another {names}; "
                                 f"{fix}")
            wrong = [k for k, v in delta.items() if belongs(k) and k in own and own[k].shape != v.shape]
            if wrong:
                raise ValueError(f"delta {wrong[0]}: shape {tuple(delta[wrong[0]].shape)} != model "
                                 f"{tuple(own[wrong[0]].shape)}: the {what} were trained with another {names} "
                                 f"(this model: {fields}); {fix}")
        if unknown:
            raise KeyError(f"delta has parameters this model does not: {unknown[:5]} (built for another config?)")
        for name, value in delta.items():
            if own[name].shape != value.shape:
                raise ValueError(f"delta {name}: shape {tuple(value.shape)} != model {tuple(own[name].shape)}")
        self.load_state_dict({**own, **{k: v.to(own[k].dtype) for k, v in delta.items()}})
        return self

    # ----------------------------------------------------------------- text side
    def _head(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.text_head(pooled.to(self.text_head.weight.dtype))

    def encode_text(self, input_ids, attention_mask=None) -> torch.Tensor:
        """Pooled + head text embedding at full width, not normalised: (B, hidden). Takes tensors or numpy."""
        device = self.text_head.weight.device
        input_ids = as_tensor(input_ids, device).long()
        attention_mask = torch.ones_like(input_ids) if attention_mask is None else as_tensor(attention_mask, device)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._head(pool(hidden, attention_mask, self.config.text_pooling))

    def get_text_embeddings(self, input_ids=None, attention_mask=None, dim=None, **_) -> torch.Tensor:
        """L2-normalised text embeddings truncated to `dim`: (B, dim), float32.

        Args:
            input_ids / attention_mask: (B, L) from `processor(text=...)` (tensors or numpy); the processor's other
                keys (speech features, `speech_attention_mask`) are ignored, so `**processor(audio=, text=)` works.
            dim: an int in 1..hidden (Python, numpy or torch int), or None for the full width.
        Raises:
            ValueError: a bad `dim`, or no `input_ids`.
        """
        dim = self._check_dim(dim)
        if input_ids is None:
            raise ValueError("get_text_embeddings needs input_ids: pass **processor(text=...)")
        return normalize_dim(self.encode_text(input_ids, attention_mask), dim, self.config.embedding_dim,
                             self.config.matryoshka_dims)

    def get_text_features(self, input_ids=None, attention_mask=None, dim=None, **kwargs) -> torch.Tensor:
        """`transformers`-style name (as CLIP's) for `get_text_embeddings`: L2-normalised (B, dim) float32."""
        return self.get_text_embeddings(input_ids, attention_mask, dim=dim, **kwargs)

    # ----------------------------------------------------------------- speech side
    def speech_frames(self, input_features=None, attention_mask=None, input_values=None):
        """Concatenated selected hidden states of the speech encoder: (B, T, D * n_layers) and a (B, T) mask."""
        weight = next(self.speech_tower.parameters())  # cast inside, as transformers models do (bf16/fp16 models)
        if input_features is not None and attention_mask is None:
            attention_mask = unmasked_padding(input_features)
        states, mask = self.speech_tower(input_features=as_tensor(input_features, weight.device, weight.dtype),
                                         attention_mask=as_tensor(attention_mask, weight.device),
                                         input_values=as_tensor(input_values, weight.device, weight.dtype))
        frames = torch.cat([states[i] for i in self.speech_layers], dim=-1)
        return frames, mask

    def _fuse(self, tokens: torch.Tensor, tok_mask: torch.Tensor):
        """[prefix][prompt][speech tokens][suffix] right-padded, as `inputs_embeds` for the text model."""
        embed = self.text_model.get_input_embeddings()
        device, dtype = tokens.device, tokens.dtype
        batch = tokens.shape[0]
        parts = []
        if self.config.fusion_prefix_ids:
            ids = torch.tensor(self.config.fusion_prefix_ids, device=device)
            parts.append(embed(ids).to(dtype)[None].expand(batch, -1, -1))
        if self.prompt is not None:
            parts.append(self.prompt.to(dtype)[None].expand(batch, -1, -1))
        lead = sum(p.shape[1] for p in parts)
        suffix_ids = self.config.fusion_suffix_ids
        seq = torch.cat(parts + [tokens, tokens.new_zeros(batch, len(suffix_ids), tokens.shape[-1])], dim=1)
        lengths = tok_mask.sum(-1)
        mask = torch.zeros(seq.shape[:2], dtype=torch.long, device=device)
        mask[:, :lead] = 1
        mask[:, lead:lead + tokens.shape[1]] = tok_mask
        if suffix_ids:
            # each row's suffix goes right after its own last speech token
            pos = lead + lengths[:, None] + torch.arange(len(suffix_ids), device=device)[None]
            rows = torch.arange(batch, device=device)[:, None]
            seq = seq.clone()
            seq[rows, pos] = embed(torch.tensor(suffix_ids, device=device)).to(dtype)[None].expand(batch, -1, -1)
            mask[rows, pos] = 1
        limit = getattr(self.config.text_config, "max_position_embeddings", None)
        if self.config.text_config.model_type in ("xlm-roberta", "roberta"):
            limit = limit - self.config.text_config.pad_token_id - 1 if limit else limit
        if limit and seq.shape[1] > limit:
            raise ValueError(
                f"fused sequence of {seq.shape[1]} tokens exceeds the text model's {limit} positions; use shorter "
                f"clips or a larger adapter_stride (now {self.config.adapter_stride})"
            )
        return seq, mask

    def speech_tokens(self, input_features=None, attention_mask=None, input_values=None):
        """The speech tokens at the text model's width, as the token-level (reading) loss supervises them:
        (B, T', hidden) and their (B, T') mask.

        fusion: the FrameAdapter output (T' = ceil(T / adapter_stride)), the `inputs_embeds` the frozen text
        transformer reads between prompt and suffix; dual: the projected frames before pooling (T' = T).
        """
        return self._tokens(*self.speech_frames(input_features, attention_mask, input_values))

    def reading_tokens(self, tokens: torch.Tensor, token_mask: torch.Tensor):
        """`speech_tokens` at the rate the token-level loss reads them: fusion's as they are; dual's projected frames
        averaged over windows of `adapter_stride` frames (fusion's rate, a quarter of the memory of frame-rate CTC).
        Returns (B, T'', hidden) and the (B, T'') mask."""
        if self.config.strategy != "dual" or self.config.adapter_stride <= 1:
            return tokens, token_mask
        stride, pad = self.config.adapter_stride, (-tokens.shape[1]) % self.config.adapter_stride
        weight = F.pad(token_mask.to(tokens.dtype), (0, pad)).unflatten(1, (-1, stride))  # (B, T'', stride)
        summed = (F.pad(tokens, (0, 0, 0, pad)).unflatten(1, (-1, stride)) * weight[..., None]).sum(2)
        count = weight.sum(-1)
        return summed / count.clamp(min=1)[..., None], (count > 0).long()

    def _tokens(self, frames: torch.Tensor, mask: torch.Tensor):
        if self.config.strategy == "dual":
            return self.adapter.proj(frames), mask
        return self.adapter(frames, mask)

    def embed_speech_tokens(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """Speech tokens (`speech_tokens`) -> pooled + head embedding at full width, not normalised: (B, hidden)."""
        if self.config.strategy == "dual":
            return self._head(self.adapter.pool(tokens, token_mask))
        text_dtype = self.text_model.get_input_embeddings().weight.dtype
        seq, seq_mask = self._fuse(tokens.to(text_dtype), token_mask)
        hidden = self.text_model(inputs_embeds=seq, attention_mask=seq_mask).last_hidden_state
        return self._head(pool(hidden, seq_mask, self.config.text_pooling))

    def encode_speech(self, input_features=None, attention_mask=None, input_values=None,
                      window_to_clip=None) -> torch.Tensor:
        """Pooled + head speech embedding at full width, not normalised: (B, hidden).

        With `window_to_clip` (long audio cut into windows by the processor) the rows are windows and the result is
        one row per clip: the frame-weighted mean of its windows' L2-normalised embeddings (`pool_windows`).
        """
        if input_features is None and input_values is None:
            raise ValueError("speech embeddings need input_features (or input_values): pass **processor(audio=...); "
                             "for text use get_text_embeddings")
        frames, mask = self.speech_frames(input_features, attention_mask, input_values)
        embeds = self.embed_speech_tokens(*self._tokens(frames, mask))
        if window_to_clip is not None:
            embeds = pool_windows(embeds, as_tensor(window_to_clip), mask.sum(-1))
        return embeds

    def get_speech_embeddings(self, input_features=None, attention_mask=None, input_values=None, dim=None,
                              speech_attention_mask=None, window_to_clip=None, input_ids=None, **_) -> torch.Tensor:
        """L2-normalised speech embeddings truncated to `dim`: (n_clips, dim), float32.

        Args:
            input_features (B, n_mels, T) / input_values (B, samples), attention_mask (B, T): from
                `processor(audio=...)` (tensors or numpy, any float dtype: cast to the model's dtype and device).
            speech_attention_mask: the speech mask when the processor got audio and text; it wins over
                `attention_mask`, which is then the text mask and is ignored here.
            window_to_clip (W,): set by the processor for audio over 30 s; windows are pooled per clip.
            dim: an int in 1..hidden (Python, numpy or torch int), or None for the full width.
        Raises:
            ValueError: a bad `dim`, no speech features.

        Long audio: windows of at most 30 s overlapping by 5 s (evenly sized), pooled by frame-weighted mean of
        their unit embeddings. Measured on the built default model with synthetic espeak-ng speech (voice sw reading
        Wolof; clip A 76 s = 8 sentences, clip B 51 s = 8 others): cosine(long A, mean of A's sentence embeddings)
        0.822 vs 0.665 to B's at dim 384 (0.860 vs 0.713 at 128), but long B sits nearer A's sentences (0.766)
        than its own (0.655), and 11 of 16 sentences are nearer their own long clip. The windows run; the model,
        trained on short clips, keeps little of a long clip's content: split long recordings where you can.
        """
        dim = self._check_dim(dim)
        if speech_attention_mask is not None or (input_ids is not None and attention_mask is not None):
            attention_mask = speech_attention_mask  # with text keys present, `attention_mask` is the text mask
        embeds = self.encode_speech(input_features, attention_mask, input_values, window_to_clip)
        return normalize_dim(embeds, dim, self.config.embedding_dim, self.config.matryoshka_dims)

    def get_audio_features(self, input_features=None, attention_mask=None, input_values=None, dim=None,
                           **kwargs) -> torch.Tensor:
        """`transformers`-style name for `get_speech_embeddings`: L2-normalised (n_clips, dim) float32."""
        return self.get_speech_embeddings(input_features, attention_mask, input_values, dim=dim, **kwargs)

    # ----------------------------------------------------------------- safe query / document paths
    def _processor(self, processor=None):
        if processor is not None:
            return processor
        if getattr(self, "_wolofmrl_processor", None) is None:
            from transformers import AutoProcessor

            if not os.path.isdir(str(self.name_or_path)):
                raise ValueError("pass processor=AutoProcessor.from_pretrained(<model folder>, trust_remote_code=True)")
            self._wolofmrl_processor = AutoProcessor.from_pretrained(self.name_or_path, trust_remote_code=True)
        return self._wolofmrl_processor

    @torch.no_grad()
    def encode_query(self, text=None, audio=None, sampling_rate=None, dim=None, processor=None) -> torch.Tensor:
        """Search queries -> (N, dim) unit embeddings: text with the query prefix, or speech (`audio`).

        The safe path (sentence-transformers' `encode_query`): a query is never prefixed as a passage. `processor`
        defaults to the one saved with the model. Raises ValueError unless exactly one of `text` / `audio` is given.
        """
        if (text is None) == (audio is None):
            raise ValueError("encode_query takes text=... or audio=... (one of them)")
        proc = self._processor(processor)
        if audio is not None:
            return self.get_speech_embeddings(**proc(audio=audio, sampling_rate=sampling_rate), dim=dim)
        return self.get_text_embeddings(**proc(text=text, text_kind="query"), dim=dim)

    @torch.no_grad()
    def encode_document(self, text, dim=None, processor=None) -> torch.Tensor:
        """Documents (passages) -> (N, dim) unit embeddings with the passage prefix (sentence-transformers'
        `encode_document`). Raises TypeError/ValueError for bad text or dim."""
        return self.get_text_embeddings(**self._processor(processor)(text=text, text_kind="passage"), dim=dim)

    # ----------------------------------------------------------------- both
    def _check_dim(self, dim):
        # fail before running the towers
        return check_dim(dim, self.config.embedding_dim, self.config.matryoshka_dims)

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        speech_attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        return_loss: bool = False,
        window_to_clip: torch.Tensor | None = None,
        **_,
    ) -> WolofMRLOutput:
        """CLIP-style forward: unnormalised embeddings, scaled cosine logits and (`return_loss`) the symmetric
        InfoNCE loss pairing clip i with text i. Raises ValueError when `return_loss` lacks a side or the counts of
        clips and texts differ."""
        speech = text = logits = None
        if input_features is not None or input_values is not None:
            if speech_attention_mask is None and input_ids is None:
                speech_attention_mask, attention_mask = attention_mask, None  # processor(audio=...) alone
            speech = self.encode_speech(input_features, speech_attention_mask, input_values, window_to_clip)
        if input_ids is not None:
            text = self.encode_text(input_ids, attention_mask)
        if speech is not None and text is not None:
            logits = self.logit_scale.exp() * F.normalize(speech.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
        loss = None
        if return_loss:
            if logits is None:
                raise ValueError("return_loss=True needs both speech and text inputs")
            if logits.shape[0] != logits.shape[1]:
                raise ValueError(f"return_loss=True pairs speech clip i with text i: got {logits.shape[0]} clips and "
                                 f"{logits.shape[1]} texts; pass as many texts as clips")
            target = torch.arange(logits.shape[0], device=logits.device)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return WolofMRLOutput(loss=loss, speech_embeds=speech, text_embeds=text, logits_per_speech=logits,
                              logits_per_text=None if logits is None else logits.T)


__all__ = ["WolofMRLModel", "WolofMRLPreTrainedModel", "WolofMRLOutput", "normalize_dim", "check_dim", "pool_windows"]
