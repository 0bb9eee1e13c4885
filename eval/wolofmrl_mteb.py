"""mteb integration for WolofMRL: a model wrapper (`AbsEncoder` + `ModelMeta`) and the Wolof benchmark tasks.

    import mteb
    from wolofmrl_mteb import WolofMRLEncoder, wolofmrl_tasks      # with eval/ on sys.path
    model = WolofMRLEncoder("checkpoints/wolofmrl-base", embed_dim=128)
    results = mteb.evaluate(model, wolofmrl_tasks(data_dir="data/offline"))

The wrapper loads any WolofMRL folder through `AutoModel` / `AutoProcessor` with `trust_remote_code=True` (as a Hub
user would) and embeds at any `embed_dim` in 1..hidden. Text queries get the text side's query prefix, documents
its passage prefix (the processor's `text_kind`); text with no prompt type (mteb's zero-shot label names) is
embedded as a passage, since the spoken input plays the query. Audio arrives from mteb batches as
{"array", "sampling_rate"} (or a path / torchcodec decoder) and is resampled by the processor.

Embeddings are computed once at full width and cached in memory by content, so evaluating every Matryoshka dim
costs one forward pass per input: `embed_dim` only truncates and re-normalises (exactly what the model's
`dim=` argument does).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import benchmark_data as bd
import numpy as np
import torch
from benchmark_data import decode_audio
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.abstasks.zeroshot_classification import AbsTaskZeroShotClassification
from mteb.models.abs_encoder import AbsEncoder
from mteb.models.model_meta import ModelMeta
from mteb.types import PromptType

logger = logging.getLogger(__name__)

LANGS = ["wol-Latn", "fra-Latn"]


# ============================================================================================== embeddings
def truncate_normalize(raw: np.ndarray, dim: int | None) -> np.ndarray:
    """First `dim` coordinates, L2-normalised (float32). Same as the model's `dim=` argument."""
    x = np.asarray(raw, dtype=np.float32)
    if dim is not None:
        if not 1 <= dim <= x.shape[-1]:
            raise ValueError(f"dim={dim} is outside 1..{x.shape[-1]}")
        x = x[..., :dim]
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norm, 1e-12)


def _audio_key(clip: dict) -> str:
    h = hashlib.sha1(np.ascontiguousarray(clip["array"], dtype=np.float32).tobytes())
    h.update(str(int(clip["sampling_rate"])).encode())
    return "a:" + h.hexdigest()


class WolofMRLEmbedder:
    """A WolofMRL folder loaded like a Hub model, embedding text and audio at full width with length-sorted
    batches and an in-memory cache (content -> raw full-width embedding)."""

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
        self.max_samples = int(self.processor.max_audio_seconds * 16000)
        self._cache: dict[str, np.ndarray] | None = {} if cache else None
        self.n_truncated = 0

    @property
    def matryoshka_dims(self) -> list[int]:
        return list(self.config.matryoshka_dims)

    # ------------------------------------------------------------------ raw (full width, not normalised)
    def _run(self, keys: list[str], items: list, lengths: list[int], batch_size: int, encode) -> np.ndarray:
        out = np.zeros((len(items), self.hidden), dtype=np.float32)
        todo = [i for i, k in enumerate(keys) if self._cache is None or k not in self._cache]
        todo.sort(key=lambda i: -lengths[i])  # longest first: similar lengths share a batch, peak memory up front
        with torch.inference_mode():
            for start in range(0, len(todo), batch_size):
                idx = todo[start:start + batch_size]
                emb = encode([items[i] for i in idx]).float().cpu().numpy()
                for i, e in zip(idx, emb):
                    out[i] = e
                    if self._cache is not None:
                        self._cache[keys[i]] = e
        if self._cache is not None:
            for i, k in enumerate(keys):
                out[i] = self._cache[k]
        return out

    def raw_text(self, texts: Sequence[str], kind: str | None) -> np.ndarray:
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.hidden), dtype=np.float32)
        keys = [f"t:{kind}:{t}" for t in texts]

        def encode(batch):
            feats = self.processor(text=batch, text_kind=kind, return_tensors="pt").to(self.device)
            return self.model.encode_text(feats["input_ids"], feats["attention_mask"])

        return self._run(keys, texts, [len(t) for t in texts], self.text_batch_size, encode)

    def raw_audio(self, clips: Sequence) -> np.ndarray:
        clips = [self._clip(c) for c in clips]
        if not clips:
            return np.zeros((0, self.hidden), dtype=np.float32)
        keys = [_audio_key(c) for c in clips]

        def encode(batch):
            feats = self.processor(audio=batch, return_tensors="pt").to(self.device)
            return self.model.encode_speech(**feats)

        lengths = [len(c["array"]) * 16000 // c["sampling_rate"] for c in clips]
        return self._run(keys, clips, lengths, self.audio_batch_size, encode)

    def _clip(self, value) -> dict:
        clip = decode_audio(value)
        limit = int(self.processor.max_audio_seconds * clip["sampling_rate"])
        if len(clip["array"]) > limit:  # the model takes at most max_audio_seconds; keep the start, as mteb does
            self.n_truncated += 1
            if self.n_truncated == 1:
                seconds = self.processor.max_audio_seconds
                logger.warning("clips longer than %.0f s are cut to their first %.0f s", seconds, seconds)
            clip = {"array": clip["array"][:limit], "sampling_rate": clip["sampling_rate"]}
        return clip

    # ------------------------------------------------------------------ normalised at a dim
    def text(self, texts: Sequence[str], kind: str | None = "passage", dim: int | None = None) -> np.ndarray:
        return truncate_normalize(self.raw_text(texts, kind), dim)

    def audio(self, clips: Sequence, dim: int | None = None) -> np.ndarray:
        return truncate_normalize(self.raw_audio(clips), dim)


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


# ============================================================================================== tasks
_FLEURS_BIB = r"""
@article{fleurs2022arxiv,
  author = {Conneau, Alexis and Ma, Min and Khanuja, Simran and Zhang, Yu and Axelrod, Vera and Dalmia, Siddharth and Riesa, Jason and Rivera, Clara and Bapna, Ankur},
  journal = {arXiv preprint arXiv:2205.12446},
  title = {FLEURS: Few-shot Learning Evaluation of Universal Representations of Speech},
  year = {2022},
}
"""


def _metadata(name: str, description: str, *, type: str, category: str, modalities: list[str], subsets: list[str],
              main_score: str, task_subtypes: list[str], bibtex: str = "",
              reference: str = "https://huggingface.co/datasets/google/fleurs") -> TaskMetadata:
    return TaskMetadata(
        name=name, description=description, reference=reference,
        # the offline source is a local folder: no Hub id is claimed for it
        dataset={"path": "data/offline", "revision": "curation-test-split"},
        type=type, category=category, modalities=modalities, eval_splits=["test"],
        eval_langs={s: LANGS for s in subsets}, main_score=main_score, date=None,
        domains=["Spoken", "Web", "Legal"], task_subtypes=task_subtypes, license="multiple",
        annotations_creators="derived", dialect=[], sample_creation="multiple", bibtex_citation=bibtex,
    )


_BENCHMARKS: dict[tuple, bd.OfflineBenchmark] = {}


class _SourcedTask:
    """A task whose hf_subsets are its data sources: "offline" (the curated benchmark split, synthetic TTS audio)
    and Hub sources. Only the sources that can be read are run (`sources=None`: offline if `data_dir` has a test
    split, Hub sources if the Hub answers)."""

    HUB_SUBSETS: tuple[str, ...] = ()
    OFFLINE_SUBSETS: tuple[str, ...] = ("offline",)

    def __init__(self, data_dir: str | Path = "data/offline", sources: Sequence[str] | None = None,
                 limit: int | None = None, hub: bool | None = None, **kwargs):
        super().__init__(**kwargs)
        self.data_dir, self.limit = Path(data_dir), limit
        self._offline: bd.OfflineBenchmark | None = None
        self.data_note = ""
        if sources is None:
            test = self.data_dir / "test"
            has_offline = test.is_dir() and any(test.rglob("*.parquet"))
            use_hub = bd.hub_reachable() if hub is None else hub
            sources = [s for s in self.metadata.hf_subsets if self.readable(s, has_offline, use_hub)]
        unknown = set(sources) - set(self.metadata.hf_subsets)
        if unknown:
            raise ValueError(f"{self.metadata.name}: unknown sources {sorted(unknown)}; "
                             f"known: {self.metadata.hf_subsets}")
        self.hf_subsets = list(sources)
        self.skipped: dict[str, str] = {s: "source not readable here (no local data / Hub unreachable)"
                                        for s in self.metadata.hf_subsets if s not in self.hf_subsets}
        if not self.hf_subsets:
            logger.warning("%s: no readable source (no %s/test and no Hub)", self.metadata.name, self.data_dir)

    def readable(self, subset: str, has_offline: bool, use_hub: bool) -> bool:
        return (subset in self.OFFLINE_SUBSETS and has_offline) or (subset in self.HUB_SUBSETS and use_hub)

    def offline(self) -> bd.OfflineBenchmark:
        if self._offline is None:
            test = self.data_dir / "test"
            stamp = max((f.stat().st_mtime for f in test.rglob("*.parquet")), default=0)
            key = (str(test.resolve()), self.limit, stamp)
            if key not in _BENCHMARKS:  # tasks over the same split read it once
                _BENCHMARKS.clear()
                _BENCHMARKS[key] = bd.OfflineBenchmark(self.data_dir, "test", self.limit)
            self._offline = _BENCHMARKS[key]
            self.data_note = self._offline.describe()
        return self._offline

    def load_data(self, num_proc: int | None = None, *, timer=None, **kwargs) -> None:
        if self.data_loaded:
            return
        self.dataset = {}
        for subset in list(self.hf_subsets):
            try:
                self.dataset[subset] = self._load_subset(subset)
            except bd.SourceUnavailable as err:  # reported, never silent
                logger.warning("%s: skipping source %s: %s", self.metadata.name, subset, err)
                self.skipped[subset] = str(err)
                self.hf_subsets.remove(subset)
        self._offline = None  # the mteb datasets hold what is needed
        self.data_loaded = True

    def _load_subset(self, subset: str):
        raise NotImplementedError

    def source_set(self, subset: str):
        """The subset as a plain RetrievalSet / ClassificationSet (for analysis and strategy tables)."""
        raise NotImplementedError


class _WolofRetrieval(_SourcedTask, AbsTaskRetrieval):
    k_values = (1, 3, 5, 10, 100)
    BUILDERS: ClassVar[dict[str, str]] = {}

    def source_set(self, subset: str) -> bd.RetrievalSet:
        builder = self.BUILDERS[subset]
        if subset == "offline":
            return getattr(self.offline(), builder)()
        try:
            return getattr(bd, builder)(limit=self.limit)
        except Exception as err:  # a Hub source that does not load is reported, the rest of the suite still runs
            raise bd.SourceUnavailable(f"{builder}: {type(err).__name__}: {err}") from err

    def _load_subset(self, subset: str):
        return {"test": self.source_set(subset).to_mteb()}


class WolofSpeechToFrenchTextRetrieval(_WolofRetrieval):
    metadata = _metadata(
        "WolofSpeechToFrenchTextRetrieval",
        "A Wolof speech clip finds the French text it means. Subsets are sources: `offline` is the curation "
        "pipeline's benchmark split (French-Wolof pairs from MediaWiki/gettext/UDHR and other packaged texts, the "
        "Wolof voiced by synthetic TTS, several voices); `fleurs` is google/fleurs wo_sn speech paired with fr_fr "
        "text by sentence id; `kallaama` is the Oolel-Embed paper's evaluation collection "
        "soynade-research/kallaama-retrieval-eval (Hub only).",
        type="Any2AnyRetrieval", category="a2t", modalities=["audio", "text"],
        subsets=["offline", "fleurs", "kallaama"], main_score="ndcg_at_10",
        task_subtypes=["Cross-Modal Retrieval", "Speech Retrieval"], bibtex=_FLEURS_BIB)
    HUB_SUBSETS = ("fleurs", "kallaama")
    BUILDERS: ClassVar[dict[str, str]] = {"offline": "a2t", "fleurs": "fleurs_a2t", "kallaama": "kallaama_a2t"}


class FrenchTextToWolofSpeechRetrieval(_WolofRetrieval):
    metadata = _metadata(
        "FrenchTextToWolofSpeechRetrieval",
        "A French text finds the Wolof speech clips that say it (every voice of the sentence is relevant). Subsets: "
        "`offline` (curated benchmark split, synthetic TTS audio) and `fleurs` (google/fleurs fr_fr text -> wo_sn "
        "speech by sentence id).",
        type="Any2AnyRetrieval", category="t2a", modalities=["audio", "text"], subsets=["offline", "fleurs"],
        main_score="ndcg_at_10", task_subtypes=["Cross-Modal Retrieval", "Speech Retrieval"], bibtex=_FLEURS_BIB)
    HUB_SUBSETS = ("fleurs",)
    BUILDERS: ClassVar[dict[str, str]] = {"offline": "t2a", "fleurs": "fleurs_t2a"}


class WolofFrenchTextRetrieval(_WolofRetrieval):
    metadata = _metadata(
        "WolofFrenchTextRetrieval",
        "Bitext retrieval: a Wolof text finds its French translation among all French texts of the split. Subsets: "
        "`offline` (curated benchmark split) and `fleurs` (google/fleurs wo_sn -> fr_fr transcriptions).",
        type="Retrieval", category="t2t", modalities=["text"], subsets=["offline", "fleurs"],
        main_score="ndcg_at_10", task_subtypes=["Cross-Modal Retrieval"], bibtex=_FLEURS_BIB)
    HUB_SUBSETS = ("fleurs",)
    BUILDERS: ClassVar[dict[str, str]] = {"offline": "t2t", "fleurs": "fleurs_t2t"}


_INTENT_DESCRIPTION = (
    "Spoken Wolof intent. Subsets: `offline-mediawiki` (MediaWiki interface strings labelled by the family of their "
    "message key, e.g. login/search/edit) and `offline-udhr` (UDHR passages labelled by article theme), both from the "
    "curated benchmark split with synthetic TTS audio, labels derived by fixed rules (eval/offline_intents.py); "
    "`wolbanking77` (WolBanking77, 77 banking intents, real speakers; a local copy of the authors' Kaggle files).")


class _WolofIntent(_SourcedTask):
    OFFLINE_SUBSETS = ("offline-mediawiki", "offline-udhr")
    HUB_SUBSETS = ()
    input_column_name = "audio"
    label_column_name = "label"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if "wolbanking77" in self.skipped:
            self.skipped["wolbanking77"] = "set WOLBANKING77_DIR to a local copy of the authors' Kaggle files"
        self._label_names: dict[str, list[str]] = {}

    def readable(self, subset: str, has_offline: bool, use_hub: bool) -> bool:
        if subset == "wolbanking77":  # Kaggle, not the Hub: only with a local copy
            return bool(os.environ.get("WOLBANKING77_DIR"))
        return super().readable(subset, has_offline, use_hub)

    def source_set(self, subset: str) -> bd.ClassificationSet:
        if subset.startswith("offline-"):
            return self.offline().intents(subset.split("-", 1)[1])
        return bd.wolbanking77_intents(limit=self.limit)


class WolofSpokenIntentClassification(_WolofIntent, AbsTaskClassification):
    """Linear probe, k-shot: mteb's logistic regression on `samples_per_label` clips per intent from the probe pool,
    averaged over `n_experiments` draws."""

    metadata = _metadata(
        "WolofSpokenIntentClassification", _INTENT_DESCRIPTION + " Scored with a k-shot linear probe.",
        type="AudioClassification", category="a2c", modalities=["audio"],
        subsets=["offline-mediawiki", "offline-udhr", "wolbanking77"], main_score="accuracy",
        task_subtypes=["Intent Classification"], reference="https://arxiv.org/abs/2509.19271")
    samples_per_label = 8
    n_experiments = 5

    def _load_subset(self, subset: str):
        cs = self.source_set(subset)
        self._label_names[subset] = cs.label_names
        return cs.to_mteb()


class WolofSpokenIntentZeroShotClassification(_WolofIntent, AbsTaskZeroShotClassification):
    """Zero-shot: argmax of cosine similarity between a clip and the label names embedded as passages."""

    metadata = _metadata(
        "WolofSpokenIntentZeroShotClassification", _INTENT_DESCRIPTION + " Scored zero-shot (nearest label name).",
        type="AudioZeroshotClassification", category="a2t", modalities=["audio", "text"],
        subsets=["offline-mediawiki", "offline-udhr", "wolbanking77"], main_score="accuracy",
        task_subtypes=["Intent Classification"], reference="https://arxiv.org/abs/2509.19271")

    def _load_subset(self, subset: str):
        cs = self.source_set(subset)
        self._label_names[subset] = cs.label_names
        return cs.to_mteb(splits=("test",))

    def _evaluate_subset(self, model, data_split, *, hf_split: str, hf_subset: str, **kwargs):
        self._current_subset = hf_subset  # candidate labels differ per subset
        return super()._evaluate_subset(model, data_split, hf_split=hf_split, hf_subset=hf_subset, **kwargs)

    def get_candidate_labels(self) -> list[str]:
        return self._label_names[self._current_subset]


TASKS = {cls.metadata.name: cls for cls in (
    WolofSpeechToFrenchTextRetrieval, FrenchTextToWolofSpeechRetrieval, WolofFrenchTextRetrieval,
    WolofSpokenIntentClassification, WolofSpokenIntentZeroShotClassification)}


def wolofmrl_tasks(names: Sequence[str] | None = None, **kwargs) -> list:
    """Task instances (all, or those whose name contains one of `names`, case-insensitive); kwargs go to each
    task (data_dir, sources, limit, hub)."""
    chosen = [c for n, c in TASKS.items() if not names or any(s.lower() in n.lower() for s in names)]
    if not chosen:
        raise ValueError(f"no task matches {list(names)}; tasks: {list(TASKS)}")
    return [c(**kwargs) for c in chosen]
