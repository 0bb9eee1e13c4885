"""The WolofMRL benchmark as mteb task classes; the model wrapper is in `wolofmrl_mteb.py`.

    import mteb
    from mteb_tasks import wolofmrl_tasks                        # with eval/ on sys.path
    from wolofmrl_mteb import WolofMRLEncoder
    results = mteb.evaluate(WolofMRLEncoder("checkpoints/wolofmrl-base", embed_dim=128), wolofmrl_tasks())

Subsets are data sources (see eval/README.md): `offline` (the curation pipeline's benchmark split, or the hard
condition built by eval/hard.py: any folder holding `test/*.parquet`), Hub sources, and for
`RecordedWordRetrieval` one subset per language of Debian's `qabcs-data` recordings (real speech).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import benchmark_data as bd
import recorded_words as rw
from mteb.abstasks.classification import AbsTaskClassification
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb.abstasks.task_metadata import TaskMetadata
from mteb.abstasks.zeroshot_classification import AbsTaskZeroShotClassification

logger = logging.getLogger(__name__)

LANGS = ["wol-Latn", "fra-Latn"]


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
              reference: str = "https://huggingface.co/datasets/google/fleurs", eval_langs: dict | None = None,
              dataset: dict | None = None, domains: list[str] | None = None) -> TaskMetadata:
    return TaskMetadata(
        name=name, description=description, reference=reference,
        # the offline source is a local folder: no Hub id is claimed for it
        dataset=dataset or {"path": "data/offline", "revision": "curation-test-split"},
        type=type, category=category, modalities=modalities, eval_splits=["test"],
        eval_langs=eval_langs or {s: LANGS for s in subsets}, main_score=main_score, date=None,
        domains=domains or ["Spoken", "Web", "Legal"], task_subtypes=task_subtypes, license="multiple",
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


class RecordedWordRetrieval(_SourcedTask, AbsTaskRetrieval):
    """Real speech: a recorded word finds its written form among all words of its language (qabcs-data)."""

    metadata = _metadata(
        "RecordedWordRetrieval",
        "Spoken word -> written word among all words of the language. Recordings of isolated words by people, "
        "shipped by Debian's qabcs-data (GPL-3+; abcs/<lang>/sounds/words/<word>.ogg), one subset per language. "
        "Real speech, benchmark only.",
        type="Any2AnyRetrieval", category="a2t", modalities=["audio", "text"], subsets=list(rw.LANGS),
        main_score="ndcg_at_10", task_subtypes=["Cross-Modal Retrieval", "Speech Retrieval"],
        reference="https://packages.debian.org/bookworm/qabcs-data",
        eval_langs={lang: [code] for lang, code in rw.LANGS.items()},
        dataset={"path": "debian:qabcs-data", "revision": "1.0.2-6"}, domains=["Spoken"])
    k_values = (1, 3, 5, 10, 100)

    def __init__(self, data_dir: str | Path = "data/offline", sources: Sequence[str] | None = None,
                 limit: int | None = None, hub: bool | None = None, words_root: str | Path | None = None, **kwargs):
        self.words_root = Path(words_root or os.environ.get("WOLOFMRL_QABCS", rw.DEFAULT_ROOT))
        super().__init__(data_dir, sources, limit, hub, **kwargs)

    def readable(self, subset: str, has_offline: bool, use_hub: bool) -> bool:
        return (self.words_root / rw.WORDS_DIR.format(lang=subset)).is_dir()

    def source_set(self, subset: str) -> bd.RetrievalSet:
        return rw.recorded_words(subset, self.words_root, self.limit)

    def _load_subset(self, subset: str):
        return {"test": self.source_set(subset).to_mteb()}


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
    WolofSpokenIntentClassification, WolofSpokenIntentZeroShotClassification, RecordedWordRetrieval)}
RETRIEVAL_ON_SPLIT = ("WolofSpeechToFrenchTextRetrieval", "FrenchTextToWolofSpeechRetrieval",
                      "WolofFrenchTextRetrieval")  # the tasks a hard-condition folder is scored on


def wolofmrl_tasks(names: Sequence[str] | None = None, **kwargs) -> list:
    """Task instances (all, or those whose name contains one of `names`, case-insensitive); kwargs go to each
    task (data_dir, sources, limit, hub; words_root for RecordedWordRetrieval)."""
    chosen = [c for n, c in TASKS.items() if not names or any(s.lower() in n.lower() for s in names)]
    if not chosen:
        raise ValueError(f"no task matches {list(names)}; tasks: {list(TASKS)}")
    words_root = kwargs.pop("words_root", None)
    return [c(**kwargs, words_root=words_root) if c is RecordedWordRetrieval else c(**kwargs) for c in chosen]
