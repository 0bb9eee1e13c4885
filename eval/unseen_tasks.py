"""The unseen-source benchmark (eval/unseen.py's data) as mteb task classes: the headline of eval/run.py.

    from unseen_tasks import unseen_tasks                         # with eval/ on sys.path
    tasks = unseen_tasks("data/unseen", condition="hard")          # speech tasks of that condition + the topline

Subsets are eval/unseen.py's: `wo` (Wolof speech -> French text), `fr-strings` and `fr-manpages` (French speech
-> French text). `condition` picks the clips (`clean` / `hard`); the topline task reads the written query through
the text side (`query:` prefix). All audio is synthetic TTS (held-out voices), not people.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import unseen
from mteb.abstasks.retrieval import AbsTaskRetrieval
from mteb_tasks import _metadata

logger = logging.getLogger(__name__)

_LANGS = {"wo": ["wol-Latn", "fra-Latn"], "fr-strings": ["fra-Latn"], "fr-manpages": ["fra-Latn"]}
_DATASET = {"path": "data/unseen", "revision": "unseen-source-split"}


def _meta(name: str, description: str, category: str, subsets: list[str], modalities: list[str]):
    return _metadata(name, description, type="Any2AnyRetrieval" if "audio" in modalities else "Retrieval",
                     category=category, modalities=modalities, subsets=subsets, main_score="ndcg_at_10",
                     task_subtypes=["Cross-Modal Retrieval", "Speech Retrieval"] if "audio" in modalities else
                     ["Cross-Modal Retrieval"], eval_langs={s: _LANGS[s] for s in subsets}, dataset=_DATASET,
                     reference="https://packages.debian.org/bookworm/manpages-fr", domains=["Spoken", "Web"])


class _UnseenRetrieval(AbsTaskRetrieval):
    """Subsets that eval/unseen.py built under `data_dir/<split>` are run; the others are listed in `skipped`."""

    k_values = (1, 3, 5, 10, 100)
    CONDITION_FREE = False  # the topline reads text: the same whatever the condition

    def __init__(self, data_dir: str | Path = "data/unseen", condition: str = "clean", split: str = "test",
                 sources=None, **kwargs):
        super().__init__(**kwargs)
        if condition not in unseen.CONDITIONS:
            raise ValueError(f"condition must be one of {unseen.CONDITIONS}, got {condition!r}")
        self.data_dir, self.condition, self.split = Path(data_dir), condition, split
        have = unseen.available(self.data_dir, split)
        wanted = self.metadata.hf_subsets if sources is None else list(sources)
        self.hf_subsets = [s for s in wanted if s in have and s in self.metadata.hf_subsets]
        self.skipped = {s: f"not built under {self.data_dir / split} (python eval/unseen.py build)"
                        for s in self.metadata.hf_subsets if s not in have}
        self.data_note = ""  # run.py's header describes --data; the unseen section says what this is

    def source_set(self, subset: str):
        return unseen.retrieval_set(self.data_dir, self.split, subset,
                                    None if self.CONDITION_FREE else self.condition)

    def load_data(self, num_proc: int | None = None, *, timer=None, **kwargs) -> None:
        if self.data_loaded:
            return
        self.dataset = {s: {"test": self.source_set(s).to_mteb()} for s in self.hf_subsets}
        self.data_loaded = True


class UnseenWolofSpeechToFrenchTextRetrieval(_UnseenRetrieval):
    metadata = _meta(
        "UnseenWolofSpeechToFrenchTextRetrieval",
        "A spoken Wolof string from a source no training split draws on (whole gettext packages, the debconf "
        "templates) finds its French twin among the French texts of all held-out sources of the split. Spoken by "
        "held-out synthetic voices (espeak-ng variants, Kokoro).", "a2t", ["wo"], ["audio", "text"])


class UnseenFrenchSpeechToFrenchTextRetrieval(_UnseenRetrieval):
    metadata = _meta(
        "UnseenFrenchSpeechToFrenchTextRetrieval",
        "Spoken French -> French text on unseen sources: `fr-strings` (a French string of a held-out source, never "
        "voiced in training, finds itself among the split's French texts) and `fr-manpages` (one sentence of a "
        "French man page paragraph, Debian manpages-fr, finds its paragraph). Held-out synthetic voices.",
        "a2t", ["fr-strings", "fr-manpages"], ["audio", "text"])


class UnseenTextToFrenchTextRetrieval(_UnseenRetrieval):
    metadata = _meta(
        "UnseenTextToFrenchTextRetrieval",
        "The written topline of the unseen-source tasks: the query's text (Wolof for `wo`, French otherwise) "
        "through the text side as a query, same passages.", "t2t", list(unseen.SUBSETS), ["text"])
    CONDITION_FREE = True


UNSEEN_TASKS: dict[str, type] = {c.metadata.name: c for c in (
    UnseenWolofSpeechToFrenchTextRetrieval, UnseenFrenchSpeechToFrenchTextRetrieval, UnseenTextToFrenchTextRetrieval)}
TOPLINE = UnseenTextToFrenchTextRetrieval.metadata.name


def unseen_tasks(data_dir: str | Path = "data/unseen", condition: str = "clean", names=None, **kwargs) -> list:
    """Instances of the unseen tasks (all, or those whose name contains one of `names`, case-insensitive)."""
    chosen = [c for n, c in UNSEEN_TASKS.items() if not names or any(s.lower() in n.lower() for s in names)]
    return [c(data_dir, condition, **kwargs) for c in chosen]
