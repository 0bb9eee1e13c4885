"""Benchmark data as plain retrieval / classification sets, from the offline corpus or from the Hub.

Offline source: the curation pipeline's benchmark split, ``<data>/test/*.parquet`` (columns in docs/CONTRACT.md),
read with ``datasets.load_dataset("parquet", ...)``. Its Wolof audio is synthetic TTS, not Wolof speakers.

- a2t  Wolof speech -> French text: one query per Wolof clip (every voice), the corpus is the distinct French texts
       of the split (French-only sentences included, as distractors); a clip's relevant document is its
       sentence's French text.
- t2a  French text -> Wolof speech: one query per distinct French text, the corpus is every Wolof clip; all clips
       (all voices) of the sentence(s) with that French text are relevant.
- t2t  Wolof text -> French text: one query per distinct Wolof text, corpus as in a2t.
- intent: see offline_intents.py; sentences are split in two halves per label (by a stable hash of sentence_id),
       the first half is the k-shot / linear-probe pool ("train"), the second the evaluation set ("test"), so no
       sentence is voiced on both sides.

Identical French strings of different sentences are one document (id = hash of the text), so a query is never
scored against a copy of its own answer. `limit` keeps that many sentences, chosen by a stable hash of
sentence_id, before anything else.

Hub sources (used when the Hub is reachable; the ids and schemas are the publishers'):
- FLEURS ``google/fleurs`` configs ``wo_sn`` and ``fr_fr``, paired by FLEURS' sentence ``id``.
- The Oolel-Embed paper's evaluation sets, Hub collection ``soynade-research/kallaama-retrieval-eval``; each set is
  three datasets (queries ``_id`` + ``audio``/``text``, corpus ``_id`` + ``text``, qrels ``query-id`` +
  ``corpus-id``, split ``train``), as read by the paper's ``speech_text/evaluation/evaluation.py``.
- WolBanking77 (arXiv 2509.19271): its authors distribute it on Kaggle (``abdoukarimkandji/wolbanking77`` text,
  ``abdoukarimkandji/WolBankingAudioDatasetParquet`` audio), not on the Hub, so its loader reads a local copy
  (``$WOLBANKING77_DIR``): ``train.parquet`` / ``test.parquet`` with ``audio`` and an intent column.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import sys
import os
import socket
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from offline_intents import label_names, label_of

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from processing_wolofmrl import decode_audio  # noqa: E402

logger = logging.getLogger(__name__)

CONTRACT_COLUMNS = ("id", "sentence_id", "source", "source_key", "wo_text", "fr_text", "speech_lang", "audio", "voice")
FLEURS = "google/fleurs"
KALLAAMA_COLLECTION = "soynade-research/kallaama-retrieval-eval"
WOLBANKING77_KAGGLE = ("abdoukarimkandji/wolbanking77", "abdoukarimkandji/WolBankingAudioDatasetParquet")


class SourceUnavailable(RuntimeError):
    """A source that cannot be read here (no Hub, no local copy, too few labelled rows): skipped and reported."""


# ----------------------------------------------------------------------------------------------- sets
@dataclass
class RetrievalSet:
    """queries / corpus: lists of {"id", "text"} or {"id", "audio": {"array", "sampling_rate"}};
    relevant: query id -> {doc id: gain}. `gold_text` (optional): query id -> the query's gold transcript."""

    name: str
    queries: list[dict]
    corpus: list[dict]
    relevant: dict[str, dict[str, int]]
    query_modality: str
    doc_modality: str
    gold_text: dict[str, str] = field(default_factory=dict)
    synthetic_audio: bool = False

    def __post_init__(self):
        qids, dids = {q["id"] for q in self.queries}, {d["id"] for d in self.corpus}
        if len(qids) != len(self.queries) or len(dids) != len(self.corpus):
            raise ValueError(f"{self.name}: duplicate query or document ids")
        missing = {d for rel in self.relevant.values() for d in rel} - dids
        if missing:
            raise ValueError(f"{self.name}: qrels name documents not in the corpus: {sorted(missing)[:3]}")
        if not self.queries or not self.corpus:
            raise ValueError(f"{self.name}: empty ({len(self.queries)} queries, {len(self.corpus)} documents)")

    def to_mteb(self):
        """mteb's RetrievalSplitData (corpus / queries Datasets, relevant_docs, top_ranked)."""
        return {"corpus": _as_dataset(self.corpus, self.doc_modality),
                "queries": _as_dataset(self.queries, self.query_modality),
                "relevant_docs": {q: dict(r) for q, r in self.relevant.items()},
                "top_ranked": None}


@dataclass
class ClassificationSet:
    """Audio inputs with integer labels into `label_names` (French names, for zero-shot)."""

    name: str
    train: list[dict]
    train_labels: list[int]
    test: list[dict]
    test_labels: list[int]
    label_names: list[str]
    synthetic_audio: bool = False
    notes: dict = field(default_factory=dict)

    def to_mteb(self, splits=("train", "test")):
        from datasets import DatasetDict

        parts = {"train": (self.train, self.train_labels), "test": (self.test, self.test_labels)}
        return DatasetDict({s: _as_dataset(parts[s][0], "audio", labels=parts[s][1]) for s in splits})


def _as_dataset(items: list[dict], modality: str, labels: list[int] | None = None):
    from datasets import Dataset, Features, List, Value

    data = {"id": [x["id"] for x in items]}
    if modality == "audio":
        data["audio"] = [{"array": np.asarray(x["audio"]["array"], dtype=np.float32),
                          "sampling_rate": int(x["audio"]["sampling_rate"])} for x in items]
        feats = {"id": Value("string"), "audio": {"array": List(Value("float32")), "sampling_rate": Value("int64")}}
    else:
        data["text"] = [x["text"] for x in items]
        feats = {"id": Value("string"), "text": Value("string")}
    if labels is not None:
        data["label"] = list(labels)
        feats["label"] = Value("int64")
    return Dataset.from_dict(data, features=Features(feats))


# ----------------------------------------------------------------------------------------------- audio
def audio_dict(value, base_dir: str | Path | None = None) -> dict:
    """A stored audio cell -> {"array": float32 mono, "sampling_rate": int}, decoded by the project's one decoder
    (`processing_wolofmrl.decode_audio`: arrays, {"bytes", "path"} cells, paths, torchcodec decoders). A relative
    path that does not exist as given is looked up under `base_dir` (a split folder).

    Raises FileNotFoundError for a missing file, ValueError for undecodable audio."""
    if isinstance(value, dict) and value.get("array") is None and value.get("bytes") is None:
        value = value.get("path")
        if value is None:
            raise ValueError("audio cell has no 'array', 'bytes' or 'path': the row holds no audio")
    if isinstance(value, (str, os.PathLike)) and base_dir is not None:
        path = Path(value)
        if not path.is_absolute() and not path.exists():
            value = str(Path(base_dir) / path)
    wave, rate = decode_audio(value)
    return {"array": np.ascontiguousarray(wave, dtype=np.float32), "sampling_rate": int(rate)}


# ----------------------------------------------------------------------------------------------- helpers
def stable_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def doc_id(lang: str, text: str) -> str:
    return f"{lang}-{stable_hash(text.strip())[:16]}"


def keep_sentences(sentence_ids, limit: int | None) -> set[str]:
    uniq = sorted(set(sentence_ids), key=stable_hash)
    return set(uniq if limit is None else uniq[:limit])


def hub_reachable(timeout: float = 3.0) -> bool:
    """False when HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set or huggingface.co:443 does not answer in `timeout`."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "") or os.environ.get("HF_DATASETS_OFFLINE", "0") not in (
            "0", ""):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------- offline
class OfflineBenchmark:
    """The curation pipeline's benchmark split, text columns in memory and audio decoded on demand."""

    def __init__(self, data_dir: str | Path, split: str = "test", limit: int | None = None):
        from datasets import Audio, load_dataset

        self.data_dir = Path(data_dir)
        self.split = split
        files = sorted(glob.glob(str(self.data_dir / split / "**" / "*.parquet"), recursive=True))
        if not files:
            raise FileNotFoundError(
                f"no parquet shards under {self.data_dir / split}: build the corpus (`make data`), pass --data <dir>, "
                "or make a synthetic fixture with `python eval/fixture.py --out <dir>`")
        from wolofmrl.curation.shards import verify_split

        verify_split(self.data_dir, split)  # names a damaged shard and its rows before anything is read
        ds = load_dataset("parquet", data_files={split: files}, split=split)
        missing = [c for c in CONTRACT_COLUMNS if c not in ds.column_names]
        if missing:
            raise ValueError(f"{self.data_dir / split} lacks contract columns {missing} (docs/CONTRACT.md)")
        if isinstance(ds.features["audio"], Audio):
            ds = ds.cast_column("audio", Audio(decode=False))
        keep = keep_sentences(ds["sentence_id"], limit)
        if limit is not None:
            ds = ds.filter(lambda s: s in keep, input_columns="sentence_id")
        self.ds = ds
        self.rows = ds.remove_columns("audio").to_list()
        self.synthetic = bool(ds["synthetic"][0]) if "synthetic" in ds.column_names and len(ds) else True
        logger.info("offline benchmark %s/%s: %d rows, %d sentences", data_dir, split, len(self.rows), len(keep))

    def describe(self) -> str:
        """How much to believe scores on this data, in a few words (for tables and plot titles)."""
        if self.rows and all(r.get("license") == "synthetic fixture" for r in self.rows):
            return "synthetic fixture: placeholder text, tone audio"
        return "synthetic TTS audio" if self.synthetic else "recorded audio"

    def audio(self, indices: list[int]) -> list[dict]:
        cells = self.ds.select(indices)["audio"]
        return [audio_dict(c, self.data_dir / self.split) for c in cells]

    def wolof_clips(self) -> list[int]:
        return [i for i, r in enumerate(self.rows) if r["speech_lang"] == "wo"]

    def french_corpus(self) -> tuple[list[dict], dict[str, str]]:
        """Distinct French texts as documents, and sentence_id -> document id."""
        corpus, seen, sent2doc = [], set(), {}
        for r in sorted(self.rows, key=lambda r: r["sentence_id"]):
            did = doc_id("fr", r["fr_text"])
            sent2doc[r["sentence_id"]] = did
            if did not in seen:
                seen.add(did)
                corpus.append({"id": did, "text": r["fr_text"].strip()})
        return corpus, sent2doc

    def a2t(self) -> RetrievalSet:
        corpus, sent2doc = self.french_corpus()
        clips = self.wolof_clips()
        audio = self.audio(clips)
        queries = [{"id": self.rows[i]["id"], "audio": a} for i, a in zip(clips, audio)]
        relevant = {self.rows[i]["id"]: {sent2doc[self.rows[i]["sentence_id"]]: 1} for i in clips}
        gold = {self.rows[i]["id"]: self.rows[i]["wo_text"] for i in clips}
        return RetrievalSet("offline-a2t", queries, corpus, relevant, "audio", "text", gold, self.synthetic)

    def t2a(self) -> RetrievalSet:
        clips = self.wolof_clips()
        audio = self.audio(clips)
        corpus = [{"id": self.rows[i]["id"], "audio": a} for i, a in zip(clips, audio)]
        queries, relevant = {}, defaultdict(dict)
        for i in clips:
            r = self.rows[i]
            qid = doc_id("fr", r["fr_text"])
            queries.setdefault(qid, {"id": qid, "text": r["fr_text"].strip()})
            relevant[qid][r["id"]] = 1
        return RetrievalSet("offline-t2a", list(queries.values()), corpus, dict(relevant), "text", "audio",
                            synthetic_audio=self.synthetic)

    def t2t(self) -> RetrievalSet:
        corpus, sent2doc = self.french_corpus()
        queries, relevant = {}, defaultdict(dict)
        for r in self.rows:
            if not (r["wo_text"] or "").strip():  # French-only sentences have no Wolof text
                continue
            qid = doc_id("wo", r["wo_text"])
            queries.setdefault(qid, {"id": qid, "text": r["wo_text"].strip()})
            relevant[qid][sent2doc[r["sentence_id"]]] = 1
        return RetrievalSet("offline-t2t", list(queries.values()), corpus, dict(relevant), "text", "text")

    def intents(self, subset: str, min_sentences_per_label: int = 2) -> ClassificationSet:
        names = label_names(subset)
        by_label: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        for i in self.wolof_clips():
            r = self.rows[i]
            lab = label_of(r["source"], r["source_key"])
            if lab and lab[0] == subset:
                by_label[lab[1]][r["sentence_id"]].append(i)
        labels = [lab for lab in names if len(by_label.get(lab, {})) >= min_sentences_per_label]
        if len(labels) < 2:
            counts = {k: len(v) for k, v in by_label.items()}
            raise SourceUnavailable(f"offline intent subset {subset!r}: fewer than 2 labels with >= "
                                    f"{min_sentences_per_label} sentences in {self.data_dir / self.split} ({counts})")
        train_idx, train_y, test_idx, test_y = [], [], [], []
        for y, lab in enumerate(labels):
            sents = sorted(by_label[lab], key=stable_hash)
            half = len(sents) // 2
            for j, s in enumerate(sents):
                idx = by_label[lab][s]
                (train_idx if j < half else test_idx).extend(idx)
                (train_y if j < half else test_y).extend([y] * len(idx))
        train = [{"id": self.rows[i]["id"], "audio": a} for i, a in zip(train_idx, self.audio(train_idx))]
        test = [{"id": self.rows[i]["id"], "audio": a} for i, a in zip(test_idx, self.audio(test_idx))]
        return ClassificationSet(f"offline-intent-{subset}", train, train_y, test, test_y,
                                 [names[lab] for lab in labels], self.synthetic)


# ----------------------------------------------------------------------------------------------- FLEURS
def _hub_split(path: str, name: str | None, split: str):
    """A Hub dataset split with audio left undecoded (bytes), trying the Hub's parquet conversion when the repo
    is script-based (datasets >= 4 runs no loading scripts)."""
    from datasets import Audio, load_dataset

    try:
        ds = load_dataset(path, name, split=split)
    except Exception as err:  # script datasets: fall back to the Hub's automatic parquet conversion
        logger.info("%s/%s: %s; trying revision refs/convert/parquet", path, name, err)
        ds = load_dataset(path, name, split=split, revision="refs/convert/parquet")
    if "audio" in ds.column_names and isinstance(ds.features["audio"], Audio):
        ds = ds.cast_column("audio", Audio(decode=False))
    return ds


def _fleurs(split: str, limit: int | None):
    wo = _hub_split(FLEURS, "wo_sn", split)
    fr = _hub_split(FLEURS, "fr_fr", split)
    fr_text = {}
    for sid, text in zip(fr["id"], fr["raw_transcription"]):
        fr_text.setdefault(str(sid), text.strip())
    keep = keep_sentences([str(s) for s in wo["id"] if str(s) in fr_text], limit)
    rows = [i for i, s in enumerate(wo["id"]) if str(s) in keep]
    return wo, fr_text, keep, rows


def fleurs_a2t(split: str = "test", limit: int | None = None) -> RetrievalSet:
    wo, fr_text, keep, rows = _fleurs(split, limit)
    corpus = [{"id": f"fleurs-{s}", "text": t} for s, t in sorted(fr_text.items()) if limit is None or s in keep]
    sub = wo.select(rows)
    queries, relevant, gold = [], {}, {}
    for j, (sid, cell, text) in enumerate(zip(sub["id"], sub["audio"], sub["raw_transcription"])):
        qid = f"fleurs-wo-{sid}-{j}"
        queries.append({"id": qid, "audio": audio_dict(cell)})
        relevant[qid] = {f"fleurs-{sid}": 1}
        gold[qid] = text
    return RetrievalSet("fleurs-a2t", queries, corpus, relevant, "audio", "text", gold)


def fleurs_t2a(split: str = "test", limit: int | None = None) -> RetrievalSet:
    wo, fr_text, _, rows = _fleurs(split, limit)
    sub = wo.select(rows)
    corpus, relevant = [], defaultdict(dict)
    for j, (sid, cell) in enumerate(zip(sub["id"], sub["audio"])):
        did = f"fleurs-wo-{sid}-{j}"
        corpus.append({"id": did, "audio": audio_dict(cell)})
        relevant[f"fleurs-{sid}"][did] = 1
    queries = [{"id": q, "text": fr_text[q.split("-", 1)[1]]} for q in sorted(relevant)]
    return RetrievalSet("fleurs-t2a", queries, corpus, dict(relevant), "text", "audio")


def fleurs_t2t(split: str = "test", limit: int | None = None) -> RetrievalSet:
    wo, fr_text, keep, rows = _fleurs(split, limit)
    corpus = [{"id": f"fleurs-{s}", "text": t} for s, t in sorted(fr_text.items()) if limit is None or s in keep]
    queries, relevant = {}, {}
    for sid, text in zip(wo.select(rows)["id"], wo.select(rows)["raw_transcription"]):
        qid = f"fleurs-wo-{sid}"
        queries.setdefault(qid, {"id": qid, "text": text.strip()})
        relevant[qid] = {f"fleurs-{sid}": 1}
    return RetrievalSet("fleurs-t2t", list(queries.values()), corpus, relevant, "text", "text")


# ----------------------------------------------------------------------------------------------- Kallaama (paper)
def kallaama_repos(collection: str = KALLAAMA_COLLECTION) -> dict[str, str]:
    """queries / corpus / qrels dataset ids: from $WOLOFMRL_KALLAAMA_{QUERIES,CORPUS,QRELS}, else the first
    datasets of the Hub collection whose ids end in those words."""
    env = {k: os.environ.get(f"WOLOFMRL_KALLAAMA_{k.upper()}") for k in ("queries", "corpus", "qrels")}
    if all(env.values()):
        return env
    from huggingface_hub import get_collection

    items = [it.item_id for it in get_collection(collection).items if it.item_type == "dataset"]
    found = {}
    for kind in ("queries", "corpus", "qrels"):
        match = [i for i in items if i.lower().rstrip("/").endswith(kind)]
        if not match:
            raise LookupError(f"collection {collection} has no dataset ending in {kind!r} ({items}); set "
                              f"WOLOFMRL_KALLAAMA_{kind.upper()}")
        found[kind] = env[kind] or match[0]
    return found


def kallaama_a2t(limit: int | None = None) -> RetrievalSet:
    from datasets import Audio, load_dataset

    repos = kallaama_repos()
    queries_ds = load_dataset(repos["queries"], split="train")
    if isinstance(queries_ds.features.get("audio"), Audio):
        queries_ds = queries_ds.cast_column("audio", Audio(decode=False))
    corpus_ds = load_dataset(repos["corpus"], split="train")
    qrels_ds = load_dataset(repos["qrels"], split="train")
    # the paper's evaluation drops corpus rows whose text is an error marker
    bad = {str(i) for i, t in zip(corpus_ds["_id"], corpus_ds["text"]) if "error" in (t or "").strip().lower()}
    corpus = [{"id": str(i), "text": t} for i, t in zip(corpus_ds["_id"], corpus_ds["text"]) if str(i) not in bad]
    relevant = defaultdict(dict)
    for q, c in zip(qrels_ds["query-id"], qrels_ds["corpus-id"]):
        if str(c) not in bad:
            relevant[str(q)][str(c)] = 1
    keep = keep_sentences([q for q in map(str, queries_ds["_id"]) if q in relevant], limit)
    idx = [i for i, q in enumerate(map(str, queries_ds["_id"])) if q in keep]
    sub = queries_ds.select(idx)
    queries = [{"id": str(q), "audio": audio_dict(a)} for q, a in zip(sub["_id"], sub["audio"])]
    gold = dict(zip(map(str, sub["_id"]), sub["text"])) if "text" in sub.column_names else {}
    return RetrievalSet("kallaama-a2t", queries, corpus, {q: relevant[q] for q in keep}, "audio", "text", gold)


# ----------------------------------------------------------------------------------------------- WolBanking77
WOLBANKING77_TEXT_COLUMNS = ("text", "transcription", "sentence", "wolof", "wo_text")


def sentence_overlap(train_texts, test_texts) -> set[str]:
    """Sentences (folded by `wolofmrl.curation.text.dedupe_key`: case, accents, punctuation) in both splits."""
    from wolofmrl.curation.text import dedupe_key

    train = {dedupe_key(t) for t in train_texts if t}
    return {k for k in (dedupe_key(t) for t in test_texts if t) if k in train}


def wolbanking77_intents(limit: int | None = None, root: str | Path | None = None,
                         overlap_free: bool = False) -> ClassificationSet:
    """WolBanking77 spoken intents from a local copy of the authors' Kaggle audio parquet files.

    The published splits share sentences between train and test; the set's `notes` count them
    (``overlap_sentences``, ``overlap_test_rows``). `overlap_free=True` drops every test row whose sentence
    (folded text) is also a train sentence (the name becomes ``wolbanking77-overlap-free``). Needs a text column
    (one of `WOLBANKING77_TEXT_COLUMNS`) for that; raises ValueError naming the columns otherwise.
    """
    from datasets import Audio, load_dataset
    from wolofmrl.curation.text import dedupe_key

    root = Path(root or os.environ.get("WOLBANKING77_DIR", ""))
    files = {s: root / f"{s}.parquet" for s in ("train", "test")}
    if not all(f.is_file() for f in files.values()):
        raise SourceUnavailable(f"WolBanking77 is distributed on Kaggle ({WOLBANKING77_KAGGLE[1]}); download it and "
                                f"set WOLBANKING77_DIR to the folder holding train.parquet and test.parquet")
    ds = load_dataset("parquet", data_files={s: str(f) for s, f in files.items()})
    col = next((c for c in ("label", "intent", "intent_class") if c in ds["train"].column_names), None)
    if col is None:
        raise ValueError(f"WolBanking77 audio files have no intent column (columns: {ds['train'].column_names})")
    text_col = next((c for c in WOLBANKING77_TEXT_COLUMNS if c in ds["train"].column_names), None)
    if text_col is None and overlap_free:
        raise ValueError(f"overlap_free=True needs a text column ({WOLBANKING77_TEXT_COLUMNS}); the files have "
                         f"{ds['train'].column_names}")
    names = sorted({str(x) for s in ds for x in ds[s][col]})
    overlap = sentence_overlap(ds["train"][text_col], ds["test"][text_col]) if text_col else set()
    notes = {"text_column": text_col, "overlap_sentences": len(overlap),
             "overlap_test_rows": sum(dedupe_key(t) in overlap for t in ds["test"][text_col]) if text_col else None,
             "official_test_rows": len(ds["test"])}
    out = {}
    for s in ("train", "test"):
        d = ds[s]
        if isinstance(d.features["audio"], Audio):
            d = d.cast_column("audio", Audio(decode=False))
        keep = sorted(range(len(d)), key=lambda i: stable_hash(f"{s}-{i}"))[: limit or len(d)]
        if s == "test" and overlap_free:
            keep = [i for i in keep if dedupe_key(d[i][text_col]) not in overlap]
        d = d.select(sorted(keep))
        out[s] = ([{"id": f"{s}-{i}", "audio": audio_dict(a), **({"text": t} if text_col else {})}
                   for i, (a, t) in enumerate(zip(d["audio"], d[text_col] if text_col else [None] * len(d)))],
                  [names.index(str(x)) for x in d[col]])
    if overlap:
        logger.warning("WolBanking77: %d sentences are in both train and test (%d of %d test rows)",
                       len(overlap), notes["overlap_test_rows"], len(ds["test"]))
    name = "wolbanking77-overlap-free" if overlap_free else "wolbanking77"
    return ClassificationSet(name, *out["train"], *out["test"], [n.replace("_", " ") for n in names], notes=notes)
