"""Training data: rows (synthetic or corpus shards), the clip feature cache, the datasets, the length-bucketed
sampler and the collator. Speech targets and on-the-fly augmentation live in train/speech_data.py."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from processing_wolofmrl import pad_features as processing_pad_features
from train.config import TrainConfig
from train.speech_data import (AugmentedSpeechPairs, ClipFeatures, group_id, in_workers, own_transcript,
                               speech_features, speech_target)

FR_WORDS = "maison école eau pain marché route enfant soleil livre ami travail village mer ciel jour nuit".split()
WO_WORDS = "kër daara ndox mburu marse yoon xale jant téere xarit liggéey dëkk géej asamaan bés guddi".split()


def synthetic_rows(n: int, split: str, seed: int, langs: list[str] = ("wo",), words: int = 0) -> list[dict]:
    """Synthetic tone-chirp signals paired with random word strings: not speech, not Wolof; for tests only.

    Row i speaks `langs[i % len(langs)]`: "wo" rows have wo_text + fr_text, "fr" rows fr_text only, other languages
    a `transcript` only (the alignment rows of phase 1). The first `words` rows are one-word dictionary pairs
    (`source` "freedict")."""
    from wolofmrl.testing import synthetic_waves

    rng = np.random.default_rng(seed)
    waves = synthetic_waves(n, seconds=(0.4, 1.2), seed=seed)
    rows = []
    for i, wave in enumerate(waves):
        pick = rng.choice(len(FR_WORDS), size=1 if i < words else 4, replace=False)
        fr, wo = " ".join(FR_WORDS[j] for j in pick), " ".join(WO_WORDS[j] for j in pick)
        lang = langs[i % len(langs)]
        texts = {"wo": (wo, fr, wo), "fr": ("", fr, fr)}.get(lang, ("", "", f"{lang}: {wo}"))
        rows.append(dict(id=f"synthetic-{split}-{i}", sentence_id=f"synthetic-{split}-{i}", speech_lang=lang,
                         wo_text=texts[0], fr_text=texts[1], transcript=texts[2],
                         source="freedict" if i < words else "synthetic", audio=wave, sampling_rate=16000,
                         duration_s=len(wave) / 16000, synthetic=True, split=split))
    return rows


def corpus_files(root: str, split: str) -> list[Path]:
    files = sorted((Path(root) / split).glob("*.parquet"))
    if not files:
        raise FileNotFoundError(f"no parquet shards in {Path(root) / split} (build the corpus: make data)")
    return files


def read_corpus(root: str, split: str, audio: bool) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = ["id", "sentence_id", "wo_text", "fr_text", "speech_lang", "duration_s", "synthetic"]
    files = corpus_files(root, split)
    names = [set(pq.read_schema(f).names) for f in files]
    columns += [c for c in ("transcript", "source", "voice") if all(c in n for n in names)]  # newer corpora
    columns += ["audio"] if audio else []
    table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    rows = table.to_pylist()
    for row in rows:
        row["split"] = split
        if audio:
            row["shard_dir"] = str(files[0].parent)
    return rows


def pad_features(feats: list[np.ndarray], whisper: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-clip features into a batch + mask through the processor's own `pad_features` (even frame
    count for Whisper log-mel): ((B, ..., T) float32, (B, T) long)."""
    out = processing_pad_features(feats, even=whisper)
    return out["input_features"], out["attention_mask"]


def compute_features(rows: list[dict], processor, workers: int) -> list[np.ndarray]:
    """Features of every clip, computed once (in `workers` DataLoader processes): training epochs only pad."""
    return in_workers(ClipFeatures(rows, processor), workers)


def cached_features(rows, processor, cfg: TrainConfig, split: str, accelerator) -> list[np.ndarray]:
    """compute_features with a disk cache in output_dir/features keyed by shards, rows and feature extractor."""
    if "corpus" not in cfg.data or not cfg.feature_cache:
        return compute_features(rows, processor, cfg.num_workers)
    h = hashlib.sha256(processor.feature_extractor.to_json_string().encode())
    for f in corpus_files(cfg.data["corpus"], split):
        h.update(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}".encode())
    h.update("\n".join(r["id"] for r in rows).encode())
    folder = Path(cfg.feature_cache_dir) if cfg.feature_cache_dir else Path(cfg.output_dir).parent / "feature_cache"
    path = folder / f"{split}-{h.hexdigest()[:16]}.npz"
    if accelerator.is_main_process and not path.is_file():
        feats = compute_features(rows, processor, cfg.num_workers)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, flat=np.concatenate([f.reshape(-1, f.shape[-1]).T for f in feats]),
                 lengths=np.array([f.shape[-1] for f in feats]), lead=np.array(feats[0].shape[:-1], dtype=np.int64))
        tmp.rename(path)
    accelerator.wait_for_everyone()
    data = np.load(path)
    flat, lengths, lead = data["flat"], data["lengths"], tuple(data["lead"])
    ends = np.cumsum(lengths)
    return [np.ascontiguousarray(flat[e - n: e].T.reshape(*lead, n)) for e, n in zip(ends, lengths)]


class SpeechPairs(Dataset):
    def __init__(self, rows: list[dict], features: list[np.ndarray]):
        self.rows, self.features = rows, features

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        row = self.rows[i]
        target = row["target"] if "target" in row else speech_target(row, "auto")[0]  # rows not from speech_rows
        return {"features": self.features[i], "target": target, "transcript": own_transcript(row),
                "group": group_id(row["sentence_id"])}


class TextPairs(Dataset):
    def __init__(self, pairs: list[tuple[str, str, int]]):
        self.pairs = pairs

    def __len__(self):
        return len(self.pairs)

    def __getitem__(self, i):
        q, d, g = self.pairs[i]
        return {"query": q, "doc": d, "group": g}


def is_word_source(source: str | None, word_sources: list[str]) -> bool:
    """True for rows of a dictionary / word-list source (their name contains one of `word_sources`)."""
    return bool(source) and any(w in source for w in word_sources)


def text_pairs(rows: list[dict], kinds: list[str], word_sources: list[str] = (), word_repeat: int = 1,
               log=None) -> list[tuple[str, str, int]]:
    """(query text, passage text, group) for each unique sentence and each kind such as "wo-fr" or "fr-fr".

    Word-level pairs (rows whose `source` is one of `word_sources`: dictionaries, CLDR names, numbers) are kept
    beside the sentence pairs, each `word_repeat` times; `log` gets the counts of both."""
    unique = {}
    for row in rows:
        unique.setdefault(row["sentence_id"], row)
    pairs, counts = [], {}
    for kind in kinds:
        a, _, b = kind.partition("-")
        if {a, b} - {"wo", "fr"}:
            raise ValueError(f"text pair kind {kind!r}: use wo-fr, fr-fr, fr-wo or wo-wo")
        for sid, r in sorted(unique.items()):
            if not (r[f"{a}_text"] and r[f"{b}_text"]):  # French-only rows have no Wolof text
                continue
            word = is_word_source(r.get("source"), word_sources)
            pairs += [(r[f"{a}_text"], r[f"{b}_text"], group_id(sid))] * (word_repeat if word else 1)
            key = f"{kind}/{'word' if word else 'sentence'}"
            counts[key] = counts.get(key, 0) + 1
    if log is not None:
        log({"event": "text_pairs", "pairs": len(pairs), "word_repeat": word_repeat, **counts})
    return pairs


class BucketBatchSampler(Sampler):
    """Shuffled batches of similar length: each epoch shuffles, drops the remainder, cuts buckets of
    `bucket_batches` batches, sorts each bucket by length, and shuffles the batches. Deterministic in (seed, epoch).

    The epoch is set with `use_epoch`, not `set_epoch`: accelerate's DataLoaderShard calls `set_epoch` on its batch
    sampler with its own iteration counter, which restarts at 0 in a `skip_first_batches` loader (resume).
    """

    drop_last = True  # every batch full: all-gathered negatives need equal batch sizes on every process

    def __init__(self, lengths, batch_size: int, bucket_batches: int = 16, seed: int = 0, with_epoch: bool = False):
        if len(lengths) < batch_size:
            raise ValueError(f"{len(lengths)} training rows < batch_size {batch_size}")
        self.lengths = np.asarray(lengths, dtype=np.float64)
        self.batch_size, self.bucket_batches, self.seed, self.epoch = batch_size, bucket_batches, seed, 0
        self.with_epoch = with_epoch  # yield (row, epoch) keys: the dataset seeds its augmentation with them

    def use_epoch(self, epoch: int):
        self.epoch = epoch

    def __len__(self):
        return len(self.lengths) // self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))[: len(self) * self.batch_size]
        span = self.batch_size * self.bucket_batches
        batches = []
        for start in range(0, len(order), span):
            bucket = order[start: start + span]
            bucket = bucket[np.argsort(self.lengths[bucket], kind="stable")]
            batches += [bucket[i: i + self.batch_size].tolist() for i in range(0, len(bucket), self.batch_size)]
        for i in rng.permutation(len(batches)):
            yield [(j, self.epoch) for j in batches[i]] if self.with_epoch else batches[i]


class Collator:
    """Items -> a padded batch. Speech items carry cached `features`, or a `wave` (augmented on the fly): waves
    are featurized here, in the worker (`features_on_device=False`), or passed on as `waves` for the training
    loop to featurize on the device in one batched STFT (train/speech_data.featurize_on_device)."""

    def __init__(self, processor, stage: str, max_text_tokens: int, need_transcript: bool, whisper: bool,
                 features_on_device: bool = False, ctc_targets=None):
        self.processor, self.stage, self.max_len = processor, stage, max_text_tokens
        self.need_transcript, self.whisper = need_transcript, whisper
        self.features_on_device = features_on_device
        self.ctc_targets = ctc_targets  # train/reading.CTCTargets: the transcript's subword classes (reading loss)

    def _text(self, texts, kind):
        t = self.processor(text=texts, text_kind=kind, max_length=self.max_len, return_tensors="pt")
        return t["input_ids"], t["attention_mask"]

    def __call__(self, items: list[dict]) -> dict:
        batch = {"groups": torch.tensor([it["group"] for it in items], dtype=torch.long)}
        if self.stage == "text":
            batch["q_ids"], batch["q_mask"] = self._text([it["query"] for it in items], "query")
            batch["d_ids"], batch["d_mask"] = self._text([it["doc"] for it in items], "passage")
            return batch
        # seconds of audio per clip (the learning curve's hours of audio seen)
        batch["seconds"] = torch.tensor([len(it["wave"]) / 16000 if "wave" in it else
                                         it["features"].shape[-1] / (100 if self.whisper else 16000) for it in items])
        if self.ctc_targets is not None:
            batch["ctc_ids"], batch["ctc_lens"] = self.ctc_targets([it["transcript"] for it in items])
        if "wave" in items[0] and self.features_on_device:
            batch["waves"] = [it["wave"] for it in items]
        elif "wave" in items[0]:
            batch.update(speech_features(self.processor, [it["wave"] for it in items]))
        else:
            feats, mask = pad_features([it["features"] for it in items], self.whisper)
            batch["input_features" if self.whisper else "input_values"] = feats
            batch["speech_mask"] = mask
        batch["d_ids"], batch["d_mask"] = self._text([it["target"] for it in items], "passage")
        if self.need_transcript:
            batch["t_ids"], batch["t_mask"] = self._text([it["transcript"] for it in items], "query")
        return batch


def speech_training_set(cfg: TrainConfig, rows: list[dict], processor, accelerator, log, max_seconds: float):
    """(dataset, lengths for the sampler) of the speech stage's training clips (rows from `speech_rows`): from the
    feature cache, or, with `augment`, decoded and degraded in the workers each time they are drawn."""
    if cfg.augment is None:
        data = SpeechPairs(rows, cached_features(rows, processor, cfg, "train", accelerator))
        return data, [f.shape[-1] for f in data.features]
    log({"event": "augment", **cfg.augment, "features_on": cfg.features_on})
    return AugmentedSpeechPairs(rows, cfg.augment, cfg.seed, max_seconds), [r["duration_s"] for r in rows]


def data_identity(cfg: TrainConfig) -> str:
    """What the training data is, for checkpoints: the synthetic spec, or the corpus folder + a hash of its
    training shards' names and sizes (a rebuilt corpus is other data)."""
    if "synthetic" in cfg.data:
        return f"synthetic:{sorted(cfg.data.items())}"
    h = hashlib.sha256()
    for f in corpus_files(cfg.data["corpus"], "train"):
        h.update(f"{f.name}:{f.stat().st_size}".encode())
    return f"corpus:{cfg.data['corpus']}#{h.hexdigest()[:12]}"


def load_rows(cfg: TrainConfig, split: str) -> list[dict]:
    """The rows of a split: synthetic (`data: {synthetic: N, dev, langs, words}`) or the corpus' parquet shards."""
    if "synthetic" in cfg.data:
        n = int(cfg.data["synthetic"])
        if split == "train":
            return synthetic_rows(n, split, cfg.seed, cfg.data.get("langs", ["wo"]), int(cfg.data.get("words", 0)))
        return synthetic_rows(int(cfg.data.get("dev", max(8, n // 4))), split, cfg.seed + 1000)
    return read_corpus(cfg.data["corpus"], split, audio=cfg.stage == "speech")
