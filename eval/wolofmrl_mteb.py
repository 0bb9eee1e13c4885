"""mteb model wrapper for WolofMRL (`AbsEncoder` + `ModelMeta`); the task classes are in `mteb_tasks.py`.

    import mteb
    from wolofmrl_mteb import WolofMRLEncoder                     # with eval/ on sys.path
    from mteb_tasks import wolofmrl_tasks
    model = WolofMRLEncoder("checkpoints/wolofmrl-base", embed_dim=128)
    results = mteb.evaluate(model, wolofmrl_tasks(data_dir="data/offline"))

The wrapper loads any WolofMRL folder through `AutoModel` / `AutoProcessor` with `trust_remote_code=True` (as a Hub
user would) and embeds at any `embed_dim` in 1..hidden. Text queries get the text side's query prefix, documents
its passage prefix (the processor's `text_kind`); text with no prompt type (mteb's zero-shot label names) is
embedded as a passage, since the spoken input plays the query. Audio arrives from mteb batches as
{"array", "sampling_rate"} (or a path / bytes / torchcodec decoder), decoded by the project's one decoder
(`processing_wolofmrl.decode_audio`: integer PCM scaled, channels averaged) and resampled by the processor.

Embeddings are computed once at full width through the project's one batched path (`wolofmrl.inference`:
length-sorted batches) and cached in memory by content, so evaluating every Matryoshka dim costs one forward pass
per input: `embed_dim` only truncates and re-normalises (`modeling_wolofmrl.normalize_dim` through
`wolofmrl.retrieval.prefix_normalize`, what the model's
`dim=` argument does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from processing_wolofmrl import decode_audio, trim_silence  # noqa: E402
from wolofmrl.inference import encode_speech, encode_text  # noqa: E402
from wolofmrl.retrieval import prefix_normalize  # noqa: E402

logger = logging.getLogger(__name__)

LANGS = ["wol-Latn", "fra-Latn"]


# ============================================================================================== embeddings
def audio_key(clip: dict) -> str:
    """Content key of a decoded {"array", "sampling_rate"} clip (cache key for embeddings and transcripts)."""
    h = hashlib.sha1(np.ascontiguousarray(clip["array"], dtype=np.float32).tobytes())
    h.update(str(int(clip["sampling_rate"])).encode())
    return "a:" + h.hexdigest()


class WolofMRLEmbedder:
    """A WolofMRL folder loaded like a Hub model, embedding text and audio at full width (L2-normalised) through
    `wolofmrl.inference` (length-sorted batches), with an in-memory cache (content -> full-width embedding)."""

    def __init__(self, model_path: str | Path, device: str | None = None, text_batch_size: int = 32,
                 audio_batch_size: int = 8, cache: bool = True):
        from transformers import AutoModel, AutoProcessor

        self.path = Path(model_path)
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a model folder (no config.json); build one with "
                                    "`python -m wolofmrl.build --out checkpoints/wolofmrl-base`")
        self.device = torch.device(device or "cpu")
        self.model = AutoModel.from_pretrained(str(self.path), trust_remote_code=True).to(self.device).eval()
        self.processor = AutoProcessor.from_pretrained(str(self.path), trust_remote_code=True)
        self.config = self.model.config
        self.hidden = int(self.config.embedding_dim)
        self.text_batch_size, self.audio_batch_size = int(text_batch_size), int(audio_batch_size)
        self._cache: dict[str, np.ndarray] | None = {} if cache else None
        self.n_truncated = 0

    @property
    def matryoshka_dims(self) -> list[int]:
        return list(self.config.matryoshka_dims)

    # ------------------------------------------------------------------ full width (normalised)
    def _cached(self, keys: list[str], items: list, encode) -> np.ndarray:
        """Embeddings of `items` in order; only those whose key is not cached go through `encode`."""
        cache = self._cache if self._cache is not None else {}
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in cache:
                first.setdefault(k, i)  # a repeated input is embedded once
        todo = list(first.values())
        if todo:
            for i, e in zip(todo, encode([items[i] for i in todo]).numpy()):
                cache[keys[i]] = e
        out = np.stack([cache[k] for k in keys]) if keys else np.zeros((0, self.hidden), np.float32)
        if self._cache is None:
            cache.clear()
        return out.astype(np.float32, copy=False)

    def raw_text(self, texts: Sequence[str], kind: str | None) -> np.ndarray:
        """(n, hidden) L2-normalised text embeddings with the processor's `kind` prefix ("query"/"passage"/None)."""
        texts = [str(t) for t in texts]
        return self._cached([f"t:{kind}:{t}" for t in texts], texts, lambda batch: encode_text(
            self.model, self.processor, batch, batch_size=self.text_batch_size, device=self.device,
            text_kind=kind, progress=False))

    def raw_audio(self, clips: Sequence) -> np.ndarray:
        """(n, hidden) L2-normalised speech embeddings of clips in any form `decode_audio` takes."""
        clips = [self._clip(c) for c in clips]
        return self._cached([audio_key(c) for c in clips], clips, lambda batch: encode_speech(
            self.model, self.processor, batch, batch_size=self.audio_batch_size, device=self.device,
            progress=False))

    def _clip(self, value) -> dict:
        """One clip -> {"array": mono float32, "sampling_rate"}, cut to the model's `max_audio_seconds`."""
        wave, rate = decode_audio(value)
        limit = int(self.processor.max_audio_seconds * rate)
        # trimmed before the cut: a long silent lead-in must not push the question out
        wave = trim_silence(wave, rate, max_samples=limit)
        if len(wave) > limit:  # the model takes at most max_audio_seconds; keep the start, as mteb does
            self.n_truncated += 1
            if self.n_truncated == 1:
                seconds = self.processor.max_audio_seconds
                logger.warning("clips longer than %.0f s are cut to their first %.0f s", seconds, seconds)
            wave = wave[:limit]
        return {"array": wave, "sampling_rate": int(rate)}

    # ------------------------------------------------------------------ normalised at a dim
    def text(self, texts: Sequence[str], kind: str | None = "passage", dim: int | None = None) -> np.ndarray:
        """(n, dim) L2-normalised text embeddings."""
        return prefix_normalize(self.raw_text(texts, kind), dim)

    def audio(self, clips: Sequence, dim: int | None = None) -> np.ndarray:
        """(n, dim) L2-normalised speech embeddings."""
        return prefix_normalize(self.raw_audio(clips), dim)


# ============================================================================================== mteb model
def model_revision(model_path: str | Path) -> str:
    """The builder's key when the folder was made by wolofmrl.build, else a hash of its config and weights' size."""
    path = Path(model_path)
    marker = path / "wolofmrl_build.json"
    if marker.is_file():
        return str(json.loads(marker.read_text()).get("key", "unknown"))
    h = hashlib.sha256((path / "config.json").read_bytes())
    for f in sorted(path.glob("*.safetensors")):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return h.hexdigest()[:16]


def wolofmrl_model_meta(model_path: str | Path, embed_dim: int | None = None, name: str | None = None,
                        n_parameters: int | None = None) -> ModelMeta:
    """ModelMeta of a WolofMRL folder. `embed_dim=None` lists every Matryoshka dim (mteb's way of saying the model
    can be loaded at any of them: `meta.load_model(embed_dim=128)`); an int pins one and names the experiment."""
    path = Path(model_path)
    cfg = json.loads((path / "config.json").read_text())
    hidden = int(cfg["text_config"]["hidden_size"])
    dims = sorted({hidden, *map(int, cfg.get("matryoshka_dims", []))}, reverse=True)
    max_pos = cfg["text_config"].get("max_position_embeddings")
    return ModelMeta(
        loader=load_wolofmrl_encoder,
        loader_kwargs={"model_path": str(path)},
        name=name or f"wolofmrl/{path.name}",
        revision=model_revision(path),
        release_date=None,
        languages=LANGS,
        n_parameters=n_parameters,
        memory_usage_mb=None,
        max_tokens=float(max_pos - 2) if max_pos else None,
        embed_dim=dims if embed_dim is None else int(embed_dim),
        license="mit",
        open_weights=True,
        public_training_code=None,
        public_training_data=None,
        framework=["PyTorch", "Transformers"],
        similarity_fn_name="cosine",
        use_instructions=True,  # "query: " / "passage: " prefixes
        training_datasets=None,
        modalities=["audio", "text"],
        model_type=["dense"],
        experiment_kwargs=None if embed_dim is None else {"embed_dim": int(embed_dim)},
    )


def load_wolofmrl_encoder(model_name: str | None = None, revision: str | None = None, *, model_path: str,
                          embed_dim: int | None = None, device: str | None = None, **kwargs) -> WolofMRLEncoder:
    """`ModelMeta.loader`: mteb calls it as loader(name, revision=..., **loader_kwargs)."""
    return WolofMRLEncoder(model_path, embed_dim=embed_dim, device=device, name=model_name, **kwargs)


class WolofMRLEncoder(AbsEncoder):
    """mteb encoder for a WolofMRL folder at one Matryoshka dim.

    Args:
        model_path: a WolofMRL model folder (config.json + weights + remote code).
        embed_dim: embedding size (1..hidden); None = full width.
        embedder: share one loaded model (and its embedding cache) between several dims.
        untyped_text_kind: text_kind for text mteb gives no prompt type (zero-shot label names): "passage".
    """

    def __init__(self, model_path: str | Path | None = None, embed_dim: int | None = None, *,
                 embedder: WolofMRLEmbedder | None = None, device: str | None = None, name: str | None = None,
                 untyped_text_kind: str | None = "passage", **embedder_kwargs):
        if embedder is None:
            if model_path is None:
                raise ValueError("pass model_path or embedder")
            embedder = WolofMRLEmbedder(model_path, device=device, **embedder_kwargs)
        self.embedder = embedder
        self.model = embedder.model
        self.embed_dim = int(embed_dim) if embed_dim is not None else embedder.hidden
        if not 1 <= self.embed_dim <= embedder.hidden:
            raise ValueError(f"embed_dim={embed_dim} is outside 1..{embedder.hidden} "
                             f"(trained Matryoshka dims: {embedder.matryoshka_dims})")
        self.untyped_text_kind = untyped_text_kind
        n_params = sum(p.numel() for p in self.model.parameters())
        self.mteb_model_meta = wolofmrl_model_meta(embedder.path, self.embed_dim, name=name, n_parameters=n_params)

    def text_kind(self, prompt_type: PromptType | None) -> str | None:
        if prompt_type == PromptType.query:
            return "query"
        if prompt_type == PromptType.document:
            return "passage"
        return self.untyped_text_kind

    def encode(self, inputs, *, task_metadata: TaskMetadata, hf_split: str, hf_subset: str,
               prompt_type: PromptType | None = None, **kwargs: Any) -> np.ndarray:
        texts, clips = [], []
        for batch in inputs:
            if batch.get("audio") is not None:
                clips.extend(batch["audio"])
            elif batch.get("text") is not None:
                texts.extend(batch["text"])
            else:
                raise ValueError(f"{task_metadata.name}: batch has neither text nor audio (keys: {list(batch)})")
        if texts and clips:
            raise ValueError(f"{task_metadata.name}: inputs mixing text and audio in one item are not supported")
        if clips:
            return self.embedder.audio(clips, self.embed_dim)
        return self.embedder.text(texts, self.text_kind(prompt_type), self.embed_dim)
