"""WolofMRL: Wolof speech and French text in one Matryoshka embedding space.

Reads top to bottom: output dataclass, speech tower, adapters, pooling, the PreTrainedModel.

    waveform 16 kHz -> speech encoder -> concat hidden layers -> Linear -> Conv1d(k=s=stride) -> "speech tokens"
    fusion: [prefix tokens][prompt][speech tokens][suffix tokens] -> frozen text transformer -> pool -> head
    dual:   masked mean of projected speech frames -> MLP -> head
    text:   tokens -> frozen text transformer -> pool -> head
    embedding[:dim] -> L2-normalise

This file is self-contained Hub remote code: it imports nothing from the `wolofmrl` library.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

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


def check_dim(dim: int | None, hidden: int, trained_dims: list[int]) -> None:
    """Raise a ValueError naming the valid range unless `dim` is None or an int in 1..hidden."""
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= hidden):
        raise ValueError(
            f"dim={dim!r} is not valid: use an int in 1..{hidden} (trained Matryoshka dims: {trained_dims}), "
            "or dim=None for the full embedding."
        )


def normalize_dim(embeds: torch.Tensor, dim: int | None, hidden: int, trained_dims: list[int]) -> torch.Tensor:
    """Keep the first `dim` coordinates of `embeds` and L2-normalise them."""
    check_dim(dim, hidden, trained_dims)
    if dim is not None:
        embeds = embeds[..., :dim]
    return F.normalize(embeds.float(), dim=-1)


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


class FrameAdapter(nn.Module):
    """Concatenated speech hidden states -> Linear -> Conv1d(kernel = stride) -> text-width speech tokens."""

    def __init__(self, in_dim: int, out_dim: int, stride: int):
        super().__init__()
        self.stride = stride
        self.proj = nn.Linear(in_dim, out_dim)
        self.conv = nn.Conv1d(out_dim, out_dim, kernel_size=stride, stride=stride)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor):
        # frames: (B, T, in_dim), mask: (B, T)
        x = self.proj(frames) * mask[..., None].to(frames.dtype)
        pad = (-x.shape[1]) % self.stride  # zero-pad to a whole window, alone or batched
        x = F.pad(x, (0, 0, 0, pad))
        x = self.conv(x.transpose(1, 2)).transpose(1, 2)  # (B, ceil(T/stride), out_dim)
        lengths = (mask.sum(-1) + self.stride - 1) // self.stride
        tok_mask = (torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]).long()
        return x * tok_mask[..., None].to(x.dtype), tok_mask


class DualProjection(nn.Module):
    """Dual-encoder speech side: masked mean of projected frames -> MLP into the text embedding space."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.proj = nn.Linear(in_dim, out_dim)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(out_dim, out_dim))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        pooled = masked_mean(self.proj(frames), mask)
        return pooled + self.mlp(pooled)


class WolofMRLPreTrainedModel(PreTrainedModel):
    config_class = WolofMRLConfig
    base_model_prefix = "wolofmrl"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # loading replaces parameters (requires_grad=True again): re-apply what the config says is frozen
        model = super().from_pretrained(*args, **kwargs)
        if isinstance(model, tuple):  # output_loading_info=True
            model[0].apply_freezing()
        else:
            model.apply_freezing()
        return model

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
                if isinstance(sub, (nn.Linear, nn.Conv1d)):
                    nn.init.normal_(sub.weight, std=0.02 if isinstance(sub, nn.Linear) else 1.0 / math.sqrt(
                        sub.in_channels * sub.kernel_size[0]))
                    nn.init.zeros_(sub.bias)


class WolofMRLModel(WolofMRLPreTrainedModel):
    """Speech and text towers sharing one frozen text encoder and one Matryoshka head.

    Trainable by default: the speech adapter (fusion or dual), the soft prompt, the text head (stage 1) and
    `logit_scale`. The speech and text backbones are frozen (`config.freeze_*`).
    """

    def __init__(self, config: WolofMRLConfig):
        super().__init__(config)
        self.speech_tower = SpeechTower(config.speech_config)
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
            self.adapter = FrameAdapter(in_dim, hidden, config.adapter_stride)
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
        if self.config.freeze_text_encoder:
            self.text_model.requires_grad_(False)

    def trainable_parameter_names(self) -> list[str]:
        return [n for n, p in self.named_parameters() if p.requires_grad]

    def delta_state_dict(self, dtype: torch.dtype | None = torch.float16) -> dict[str, torch.Tensor]:
        """What training changes (every trainable parameter), e.g. for a small fp16 safetensors file."""
        keep = set(self.trainable_parameter_names())
        return {n: (t.detach().to(dtype) if dtype else t.detach()).cpu().contiguous()
                for n, t in self.state_dict().items() if n in keep}

    def load_delta(self, delta: dict[str, torch.Tensor] | str):
        if isinstance(delta, str):
            from safetensors.torch import load_file

            delta = load_file(delta)
        own = self.state_dict()
        unknown = sorted(set(delta) - set(own))
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

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled + head text embedding at full width, not normalised: (B, hidden)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self._head(pool(hidden, attention_mask, self.config.text_pooling))

    def get_text_embeddings(self, input_ids, attention_mask=None, dim: int | None = None, **_) -> torch.Tensor:
        """L2-normalised text embeddings truncated to `dim` (None = full width): (B, dim)."""
        self._check_dim(dim)
        return normalize_dim(self.encode_text(input_ids, attention_mask), dim, self.config.embedding_dim,
                             self.config.matryoshka_dims)

    # ----------------------------------------------------------------- speech side
    def speech_frames(self, input_features=None, attention_mask=None, input_values=None):
        """Concatenated selected hidden states of the speech encoder: (B, T, D * n_layers) and a (B, T) mask."""
        states, mask = self.speech_tower(input_features=input_features, attention_mask=attention_mask,
                                         input_values=input_values)
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

    def encode_speech(self, input_features=None, attention_mask=None, input_values=None) -> torch.Tensor:
        """Pooled + head speech embedding at full width, not normalised: (B, hidden)."""
        frames, mask = self.speech_frames(input_features, attention_mask, input_values)
        if self.config.strategy == "dual":
            return self._head(self.adapter(frames, mask))
        tokens, tok_mask = self.adapter(frames, mask)
        text_dtype = self.text_model.get_input_embeddings().weight.dtype
        seq, seq_mask = self._fuse(tokens.to(text_dtype), tok_mask)
        hidden = self.text_model(inputs_embeds=seq, attention_mask=seq_mask).last_hidden_state
        return self._head(pool(hidden, seq_mask, self.config.text_pooling))

    def get_speech_embeddings(self, input_features=None, attention_mask=None, input_values=None,
                              dim: int | None = None, **_) -> torch.Tensor:
        """L2-normalised speech embeddings truncated to `dim` (None = full width): (B, dim)."""
        self._check_dim(dim)
        return normalize_dim(self.encode_speech(input_features, attention_mask, input_values), dim,
                             self.config.embedding_dim, self.config.matryoshka_dims)

    # ----------------------------------------------------------------- both
    def _check_dim(self, dim):
        # fail before running the towers
        check_dim(dim, self.config.embedding_dim, self.config.matryoshka_dims)

    def forward(
        self,
        input_features: torch.Tensor | None = None,
        speech_attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        input_values: torch.Tensor | None = None,
        return_loss: bool = False,
        **_,
    ) -> WolofMRLOutput:
        speech = text = logits = None
        if input_features is not None or input_values is not None:
            speech = self.encode_speech(input_features, speech_attention_mask, input_values)
        if input_ids is not None:
            text = self.encode_text(input_ids, attention_mask)
        if speech is not None and text is not None:
            logits = self.logit_scale.exp() * F.normalize(speech.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
        loss = None
        if return_loss:
            if logits is None:
                raise ValueError("return_loss=True needs both speech and text inputs")
            target = torch.arange(logits.shape[0], device=logits.device)
            loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        return WolofMRLOutput(loss=loss, speech_embeds=speech, text_embeds=text, logits_per_speech=logits,
                              logits_per_text=None if logits is None else logits.T)


__all__ = ["WolofMRLModel", "WolofMRLPreTrainedModel", "WolofMRLOutput"]
