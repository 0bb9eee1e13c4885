"""Train WolofMRL with Accelerate: stage `text` (a Matryoshka head on the frozen text tower), stage `speech`
(the speech adapter, fusion or dual, with the text side frozen).

    accelerate launch train/train.py --config train/configs/speech_fusion.yaml
    python train/train.py --config train/configs/cpu_tiny.yaml --set max_steps=20
    torchrun --nproc_per_node 2 train/train.py --config train/configs/cpu_tiny.yaml     # 2 CPU processes (gloo)

Reads top to bottom: config, model, data, the step (plain, accumulated or GradCache), evaluation, FLOPs,
checkpoints, outputs, the loop. See train/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

ROOT = Path(__file__).resolve().parent.parent
# run as a script, this folder is sys.path[0] and `import train` would find this file instead of the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "train"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from modeling_wolofmrl import pool  # noqa: E402
from train.speech_data import (AugmentedSpeechPairs, ClipFeatures, featurize_on_device, group_id,  # noqa: E402
                               own_transcript, row_wave, speech_features, speech_rows, speech_target, wave_features)
from train.text_lora import MAX_DELTA_MB, attach_lora, delta_megabytes, is_lora, merge_lora  # noqa: E402
from wolofmrl.losses import MatryoshkaInfoNCE  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# =============================================================================================== config
@dataclass
class TrainConfig:
    stage: str = "speech"  # "text": Matryoshka head on frozen text; "speech": adapter (+prompt, logit_scale)
    # {"builder": {speech, text, strategy, <WolofMRLConfig fields>}} (real backbones, wolofmrl.build.assemble)
    # or {"tiny": {strategy, speech, text, <WolofMRLConfig fields>}} (random tiny model, tests and CPU smoke runs)
    model: dict = field(default_factory=lambda: {"tiny": {"strategy": "fusion"}})
    init_delta: str | None = None  # delta folder applied before training (stage speech: the text stage's head)
    # {"corpus": "data/offline"} (CONTRACT.md parquet shards) or {"synthetic": N} (synthetic signals, not speech)
    data: dict = field(default_factory=lambda: {"synthetic": 64})
    output_dir: str = "runs/debug"
    delta_out: str | None = None  # also write delta.safetensors + config_overrides.json here
    seed: int = 0
    # optimisation
    max_steps: int = 100  # optimizer steps
    batch_size: int = 16  # per process and micro-batch; negatives are all-gathered across processes
    grad_accum: int = 1  # micro-batches per optimizer step (each micro-batch has its own negatives)
    grad_cache_chunk: int = 0  # >0: GradCache, the whole micro-batch's negatives at this chunk's memory
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_steps: int = 10
    lr_schedule: str = "cosine"  # any transformers.get_scheduler name
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no" | "bf16" (autocast; trainable weights stay fp32)
    frozen_dtype: str = "float32"  # storage dtype of frozen backbones ("bfloat16" needs mixed_precision bf16)
    # loss
    dims: list[int] | None = None  # Matryoshka dims of the loss; None: model.config.matryoshka_dims
    dim_weights: list[float] | None = None
    symmetric: bool = True
    gather_negatives: bool = True
    temperature: float = 0.02  # text stage: fixed logit scale 1/temperature
    logit_scale_init: float | None = None  # speech stage: initial 1/temperature (None: the model's own)
    train_logit_scale: bool = True
    max_logit_scale: float = 100.0
    # speech stage, the transcript = the text of what is spoken (wo_text for Wolof speech), query prefix, frozen:
    distill: str | None = None  # None | "cosine" | "mse": pull the speech embedding towards the transcript's
    distill_weight: float = 0.0
    transcript_weight: float = 0.0  # extra InfoNCE speech <-> transcript (the Wolof text as a second positive)
    text_pairs: list[str] = field(default_factory=lambda: ["wo-fr", "fr-fr"])  # text stage: query-passage langs
    text_head_init: str = "identity"  # text stage: "identity" | "pca"
    speech_langs: list[str] = field(default_factory=lambda: ["wo"])
    # "auto": Wolof clips with a French twin -> fr_text, every other clip -> its own transcript; "transcript": all
    # clips -> own transcript (phase 1 alignment); "fr": only clips with a French passage (train/speech_data.py)
    speech_target: str = "auto"
    # on-the-fly degradation of training clips ({preset: train, prob: 1.0}, wolofmrl.augment); None: feature cache
    augment: dict | None = None
    features_on: str = "auto"  # augmented clips' log-mel: "worker" (CPU), "device" (batched STFT), "auto": GPU->device
    # hard dev condition: dev clips degraded once with fixed settings ({preset: hard, seed: 0}); None: clean only
    dev_hard: dict | None = None
    best_on: str = "auto"  # keep-best score: mean of dev metrics starting with this; "auto": speech2fr_hard if any
    # text stage: LoRA on the text encoder beside the head ({r, alpha, dropout, target_modules}); merged at the end
    text_lora: dict | None = None
    word_sources: list[str] = field(default_factory=lambda: ["freedict", "cldr", "wolof_nlp", "wolof-nlp",
                                                             "wolof_numbers", "wolof-numbers", "dictionary"])
    word_repeat: int = 1  # text stage: each word-level pair (rows of word_sources) appears this many times
    # data
    bucket_batches: int = 16  # batches per length bucket (sorted by duration inside a bucket)
    max_text_tokens: int = 128
    max_audio_seconds: float | None = None  # None: model.config.max_audio_seconds
    num_workers: int = 0
    feature_cache: bool = True  # corpus data: keep every clip's features on disk (shared by runs, keyed by content)
    feature_cache_dir: str | None = None  # None: <output_dir>/../feature_cache
    max_rows: int | None = None  # cap train rows (smoke runs)
    # run hygiene
    log_every: int = 10
    eval_every: int = 100  # 0: only at the end
    eval_max_queries: int = 1000
    eval_batch_size: int = 64
    eval_speech_lang: str = "wo"  # dev speech queries: the task is Wolof speech -> French text
    keep_best: bool = True  # outputs hold the parameters of the best dev evaluation (mean Recall@1/10 over dims)
    save_every: int = 100  # 0: no intermediate checkpoints
    keep_checkpoints: int = 2
    resume: str | None = "auto"  # "auto": latest checkpoint of output_dir, None, or a checkpoint folder
    stop_after_steps: int | None = None  # checkpoint and stop here, as if killed (resume tests)
    max_train_minutes: float | None = None  # guard: end training early (then evaluate and save) past this
    peak_tflops: float | None = None  # per device, for MFU; None: guessed from the GPU name
    tensorboard: bool = True
    save_model: bool = True  # save_pretrained folder in output_dir/model

    def __post_init__(self):
        if isinstance(self.resume, str) and self.resume.lower() in ("none", "null", ""):
            self.resume = None
        for key in ("output_dir", "init_delta", "delta_out"):  # "{seed}" in a path: one folder per seed
            if isinstance(getattr(self, key), str):
                setattr(self, key, getattr(self, key).replace("{seed}", str(self.seed)))
        if self.features_on not in ("auto", "worker", "device"):
            raise ValueError(f"features_on must be auto, worker or device, got {self.features_on!r}")
        if self.text_lora is not None and self.stage != "text":
            raise ValueError("text_lora trains the text encoder: it belongs to stage: text (the speech stage starts "
                             "from its merged delta through init_delta)")
        if self.mixed_precision is False:  # YAML reads a bare `no` as false
            self.mixed_precision = "no"
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}")
        if self.stage not in ("text", "speech"):
            raise ValueError(f"stage must be 'text' or 'speech', got {self.stage!r}")
        if len(self.model) != 1 or next(iter(self.model)) not in ("builder", "tiny"):
            raise ValueError(f"model must be {{builder: {{...}}}} or {{tiny: {{...}}}}, got {self.model}")
        if len(set(self.data) & {"corpus", "synthetic"}) != 1:
            raise ValueError(f"data needs exactly one of corpus: <folder> or synthetic: <rows>, got {self.data}")
        if self.stage == "text" and (self.distill or self.transcript_weight):
            raise ValueError("distill / transcript_weight apply to the speech stage")
        if self.frozen_dtype == "bfloat16" and self.mixed_precision != "bf16":
            raise ValueError("frozen_dtype: bfloat16 needs mixed_precision: bf16")

    @property
    def data_name(self) -> str:
        if "synthetic" in self.data:
            return f"synthetic-{self.data['synthetic']} (synthetic signals and texts, not speech)"
        return f"corpus:{self.data['corpus']}"


def load_config(path: str | None, overrides: list[str] = ()) -> TrainConfig:
    """YAML file + `key=value` overrides; values are parsed as YAML, dotted keys reach into dicts
    (`model.tiny.strategy=dual`)."""
    raw = yaml.safe_load(Path(path).read_text()) if path else {}
    raw = raw or {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes key=value, got {item!r}")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValueError(f"unknown config keys {unknown}; known: {sorted(known)}")
    return TrainConfig(**raw)


# =============================================================================================== model
BUILDER_ARGS = ("speech", "text", "strategy", "hub", "backbone_root", "delta", "seed")


def load_model(cfg: TrainConfig):
    """The model (random tiny or assembled from backbones), its processor and the config fields set by `cfg`."""
    kind, spec = next(iter(cfg.model.items()))
    spec = dict(spec or {})
    if kind == "tiny":
        from wolofmrl.testing import tiny_model

        model, processor = tiny_model(seed=cfg.seed, **{k: v for k, v in spec.items() if k != "seed"})
    else:
        from wolofmrl.build import assemble

        spec.pop("delta", None)  # the starting delta is cfg.init_delta
        model, processor = assemble(**spec)
    overrides = {k: getattr(model.config, k) for k in spec if k not in BUILDER_ARGS}
    if cfg.stage == "speech":  # a head alone (text stage) fits either strategy
        overrides = {"strategy": model.config.strategy, **overrides}
    for module in (model.text_model, model.speech_tower.encoder):
        try:
            module.set_attn_implementation("sdpa")
        except (ValueError, AttributeError, NotImplementedError) as err:  # some encoders have no SDPA path
            print(f"[train] {type(module).__name__}: SDPA unavailable ({err}); keeping "
                  f"{module.config._attn_implementation}", file=sys.stderr)
    return model, processor, overrides


def load_init_delta(model, path: str | None) -> dict[str, torch.Tensor]:
    """Apply a delta folder (or file); returns its tensors (as stored: they go into this run's delta too)."""
    if not path:
        return {}
    from safetensors.torch import load_file

    folder = Path(path)
    file = folder / "delta.safetensors" if folder.is_dir() else folder
    delta = load_file(str(file))
    overrides_file = file.parent / "config_overrides.json"
    if overrides_file.is_file():
        for key, value in json.loads(overrides_file.read_text()).items():
            if key != "strategy" and getattr(model.config, key, value) != value:
                raise ValueError(f"init_delta {path} was trained with {key}={value!r}; this model has "
                                 f"{getattr(model.config, key)!r}")
    model.load_delta(delta)
    return delta


def select_trainable(model, cfg: TrainConfig) -> list[str]:
    model.requires_grad_(False)
    if cfg.stage == "text":
        model.text_head.requires_grad_(True)
        if cfg.text_lora is not None:  # before the cast below: a LoRA-trained encoder stays fp32
            attach_lora(model, cfg.text_lora)
    else:
        model.adapter.requires_grad_(True)
        if model.prompt is not None:
            model.prompt.requires_grad_(True)
        model.logit_scale.requires_grad_(cfg.train_logit_scale)
        if not model.config.freeze_speech_encoder:  # variant: fine-tune the speech encoder too
            model.speech_tower.requires_grad_(True)
    # trainable modules have no dropout or batch norm; frozen backbones run in eval mode (deterministic, and
    # GradCache's second forward then equals the first)
    model.eval()
    if cfg.frozen_dtype != "float32":
        dtype = getattr(torch, cfg.frozen_dtype)
        for module in (model.speech_tower, model.text_model):
            if not any(p.requires_grad for p in module.parameters()):
                module.to(dtype)
    return model.trainable_parameter_names()


class PairEncoder(nn.Module):
    """What one step runs under DDP: both sides' embeddings (full width, not normalised) and the logit scale.

    text stage:   q = query text,   d = passage text (both through the trainable head)
    speech stage: q = speech,       d = French passage (frozen), t = transcript as a query (frozen teacher)
    """

    def __init__(self, model, cfg: TrainConfig, need_teacher: bool):
        super().__init__()
        self.model = model
        self.stage = cfg.stage
        self.need_teacher = need_teacher
        self.fixed_scale = 1.0 / cfg.temperature
        self.max_scale = cfg.max_logit_scale
        self.scale_trainable = cfg.stage == "speech" and cfg.train_logit_scale
        self.d_trainable = cfg.stage == "text"

    def forward(self, batch: dict) -> dict:
        m = self.model
        out = {}
        if self.stage == "text":
            out["q"] = m.encode_text(batch["q_ids"], batch["q_mask"])
            out["d"] = m.encode_text(batch["d_ids"], batch["d_mask"])
        else:
            out["q"] = m.encode_speech(input_features=batch.get("input_features"), attention_mask=batch["speech_mask"],
                                       input_values=batch.get("input_values"))
            with torch.no_grad():
                out["d"] = m.encode_text(batch["d_ids"], batch["d_mask"])
                if self.need_teacher:
                    out["t"] = m.encode_text(batch["t_ids"], batch["t_mask"])
        if self.scale_trainable:
            out["scale"] = m.logit_scale.exp().clamp(max=self.max_scale)
        else:
            out["scale"] = (torch.tensor(self.fixed_scale, device=out["q"].device) if self.stage == "text" else
                            m.logit_scale.detach().exp().clamp(max=self.max_scale))
        return out


# =============================================================================================== data
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


def clip_features(processor, row: dict) -> np.ndarray:
    """One clip's features as the processor makes them alone, unpadded: (mels, frames) or (samples,)."""
    return wave_features(processor, row_wave(row))


def pad_features(feats: list[np.ndarray], whisper: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad per-clip features into a batch + mask, exactly as WolofMRLProcessor pads a batch of clips."""
    frames = max(f.shape[-1] for f in feats)
    frames += frames % 2 if whisper else 0
    batch = np.zeros((len(feats), *feats[0].shape[:-1], frames), dtype=np.float32)
    mask = np.zeros((len(feats), frames), dtype=np.int64)
    for i, f in enumerate(feats):
        batch[i, ..., : f.shape[-1]] = f
        mask[i, : f.shape[-1]] = 1
    return torch.from_numpy(batch), torch.from_numpy(mask)


def compute_features(rows: list[dict], processor, workers: int, hard: dict | None = None) -> list[np.ndarray]:
    """Features of every clip, computed once (in `workers` DataLoader processes): training epochs only pad.
    `hard`: degrade each clip first with fixed settings (train/speech_data.ClipFeatures)."""
    loader = DataLoader(ClipFeatures(rows, processor, hard), batch_size=None, num_workers=workers,
                        collate_fn=lambda x: x)
    return list(loader)


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
                 features_on_device: bool = False):
        self.processor, self.stage, self.max_len = processor, stage, max_text_tokens
        self.need_transcript, self.whisper = need_transcript, whisper
        self.features_on_device = features_on_device

    def _text(self, texts, kind):
        t = self.processor(text=texts, text_kind=kind, max_length=self.max_len, return_tensors="pt")
        return t["input_ids"], t["attention_mask"]

    def __call__(self, items: list[dict]) -> dict:
        batch = {"groups": torch.tensor([it["group"] for it in items], dtype=torch.long)}
        if self.stage == "text":
            batch["q_ids"], batch["q_mask"] = self._text([it["query"] for it in items], "query")
            batch["d_ids"], batch["d_mask"] = self._text([it["doc"] for it in items], "passage")
            return batch
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


def speech_datasets(cfg: TrainConfig, train_rows, dev_rows, model, processor, accelerator, log):
    """(training pairs, dev set, lengths for the sampler) of the speech stage. Training clips come from the feature
    cache, or, with `augment`, are decoded and degraded in the workers each time they are drawn. Dev speech queries
    are `eval_speech_lang` clips, clean and (with `dev_hard`) degraded once with fixed hard settings."""
    max_seconds = cfg.max_audio_seconds or model.config.max_audio_seconds
    train_rows = speech_rows(train_rows, cfg.speech_langs, max_seconds, cfg.speech_target, log)
    clips = speech_rows(dev_rows, [cfg.eval_speech_lang], max_seconds, "fr", log)
    clips = sorted(clips, key=lambda r: r["id"])[: cfg.eval_max_queries]
    if cfg.augment is not None:
        train_set = AugmentedSpeechPairs(train_rows, cfg.augment, cfg.seed, max_seconds)
        lengths = [r["duration_s"] for r in train_rows]
        log({"event": "augment", **cfg.augment, "features_on": cfg.features_on})
    else:
        train_set = SpeechPairs(train_rows, cached_features(train_rows, processor, cfg, "train", accelerator))
        lengths = [f.shape[-1] for f in train_set.features]
    hard = None
    if cfg.dev_hard is not None and accelerator.is_main_process:
        hard = compute_features(clips, processor, cfg.num_workers, {**cfg.dev_hard, "max_seconds": max_seconds})
        log({"event": "dev_hard", **cfg.dev_hard, "clips": len(hard)})
    dev = DevSet(dev_rows, cfg, processor, clips, cached_features(clips, processor, cfg, "dev", accelerator), hard)
    return train_set, dev, lengths


def load_rows(cfg: TrainConfig, split: str) -> list[dict]:
    if "synthetic" in cfg.data:
        n = int(cfg.data["synthetic"])
        if split == "train":
            return synthetic_rows(n, split, cfg.seed, cfg.data.get("langs", ["wo"]), int(cfg.data.get("words", 0)))
        return synthetic_rows(int(cfg.data.get("dev", max(8, n // 4))), split, cfg.seed + 1000)
    return read_corpus(cfg.data["corpus"], split, audio=cfg.stage == "speech")


# =============================================================================================== one step
def slice_batch(batch: dict, s: slice) -> dict:
    return {k: v[s] for k, v in batch.items()}


def step_loss(out: dict, batch: dict, criterion, transcript_criterion, transcript_weight: float):
    loss, parts = criterion(out["q"], out["d"], out["scale"], teacher=out.get("t"), groups=batch["groups"])
    if transcript_criterion is not None:
        extra, extra_parts = transcript_criterion(out["q"], out["t"], out["scale"], groups=batch["groups"])
        loss = loss + transcript_weight * extra
        parts.update({f"transcript_{k}": v for k, v in extra_parts.items()})
    return loss, parts


def forward_backward(encoder, batch, loss_fn, accelerator, factor: float, sync: bool, chunk: int):
    """One micro-batch: loss and its backward (scaled by `factor`), gradients all-reduced only when `sync`.

    chunk > 0 runs GradCache: embed the micro-batch chunk by chunk without graphs, take the loss and its gradient
    with respect to the embeddings on the whole micro-batch (all negatives), then re-run each chunk with a graph and
    back-propagate those embedding gradients. Same gradients as one pass, memory of one chunk.
    """
    sync_ctx = contextlib.nullcontext if sync else (lambda: accelerator.no_sync(encoder))
    n = batch["groups"].shape[0]
    if not chunk or chunk >= n:
        with sync_ctx():
            out = encoder(batch)
            loss, parts = loss_fn(out, batch)
            accelerator.backward(loss * factor)
        return loss.detach(), parts
    inner = accelerator.unwrap_model(encoder)
    slices = [slice(i, min(i + chunk, n)) for i in range(0, n, chunk)]
    with torch.no_grad():
        outs = [encoder(slice_batch(batch, s)) for s in slices]
    cached = {"q": torch.cat([o["q"] for o in outs]).float().requires_grad_(True),
              "d": torch.cat([o["d"] for o in outs]).float().requires_grad_(inner.d_trainable),
              "scale": outs[0]["scale"].detach().float().requires_grad_(inner.scale_trainable)}
    if "t" in outs[0]:
        cached["t"] = torch.cat([o["t"] for o in outs]).float()
    loss, parts = loss_fn(cached, batch)
    (loss * factor).backward()
    for k, s in enumerate(slices):
        last = k == len(slices) - 1
        with (sync_ctx() if last else accelerator.no_sync(encoder)):
            out = encoder(slice_batch(batch, s))
            surrogate = (out["q"].float() * cached["q"].grad[s]).sum()
            if inner.d_trainable:
                surrogate = surrogate + (out["d"].float() * cached["d"].grad[s]).sum()
            if last and inner.scale_trainable:  # the scale is shared: its gradient is added once
                surrogate = surrogate + out["scale"].float() * cached["scale"].grad
            accelerator.backward(surrogate)
    return loss.detach(), parts


# =============================================================================================== evaluation
def recall_table(q: torch.Tensor, d: torch.Tensor, relevant: torch.Tensor, dims: list[int], task: str) -> dict:
    """Recall@1/10 per Matryoshka dim; q (Nq, H), d (Nd, H) raw embeddings, relevant (Nq,) index into d."""
    out = {}
    for m in dims:
        scores = F.normalize(q[:, :m].float(), dim=-1) @ F.normalize(d[:, :m].float(), dim=-1).T
        rank = (scores > scores.gather(1, relevant[:, None])).sum(1)  # docs strictly better than the relevant one
        out[f"{task}/R@1/{m}"] = round((rank < 1).float().mean().item(), 4)
        out[f"{task}/R@10/{m}"] = round((rank < 10).float().mean().item(), 4)
    return out


@torch.no_grad()
def pooled_texts(model, processor, texts: list[str], kind: str, batch_size: int, max_len: int, device):
    """Frozen text tower + pooling, before the head: (N, H) float32 on CPU (sorted by length for speed)."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = torch.empty(len(texts), model.config.embedding_dim)
    for s in range(0, len(texts), batch_size):
        idx = order[s: s + batch_size]
        t = processor(text=[texts[i] for i in idx], text_kind=kind, max_length=max_len, return_tensors="pt").to(device)
        hidden = model.text_model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state
        out[torch.as_tensor(idx)] = pool(hidden, t["attention_mask"], model.config.text_pooling).float().cpu()
    return out


@torch.no_grad()
def apply_head(model, pooled: torch.Tensor, device, weight=None) -> torch.Tensor:
    head = model.text_head
    w = head.weight if weight is None else weight.to(device, head.weight.dtype)
    b = head.bias if weight is None else torch.zeros_like(head.bias)
    return F.linear(pooled.to(device, head.weight.dtype), w, b).float().cpu()


@torch.no_grad()
def speech_embeddings(model, features: list[np.ndarray], batch_size: int, whisper: bool, device) -> torch.Tensor:
    order = np.argsort([f.shape[-1] for f in features], kind="stable")
    out = torch.empty(len(features), model.config.embedding_dim)
    for s in range(0, len(features), batch_size):
        idx = order[s: s + batch_size]
        feats, mask = pad_features([features[i] for i in idx], whisper)
        key = "input_features" if whisper else "input_values"
        emb = model.encode_speech(**{key: feats.to(device)}, attention_mask=mask.to(device))
        out[torch.as_tensor(idx)] = emb.float().cpu()
    return out


class DevSet:
    """Dev queries and documents, embedded on the main process. Documents: the unique French passages of the
    dev sentences; text queries: their Wolof transcripts; speech queries: the dev clips (capped), clean
    (`features`) and, when given, degraded with the hard dev condition's fixed settings (`hard_features`).
    `frozen_text=False` (a text LoRA trains the encoder) re-embeds the texts at every evaluation."""

    def __init__(self, rows, cfg, processor, clips: list[dict] | None = None, features=None, hard_features=None,
                 frozen_text: bool = True):
        unique = {}
        for row in rows:
            if row["fr_text"]:  # sentences without French (other languages' alignment rows) are no documents
                unique.setdefault(row["sentence_id"], row)
        self.sids = sorted(unique)
        self.index = {sid: i for i, sid in enumerate(self.sids)}
        self.fr = [unique[s]["fr_text"] for s in self.sids]
        self.wo = [(unique[s]["wo_text"], i) for i, s in enumerate(self.sids) if unique[s]["wo_text"]]
        self.features, self.hard_features, self.frozen_text = features, hard_features, frozen_text
        self.clip_relevant = None if clips is None else torch.tensor([self.index[r["sentence_id"]] for r in clips])
        self.processor, self.cfg = processor, cfg
        self._pooled = None

    def pooled(self, model, device):
        """Pooled embeddings of (Wolof queries, French passages): computed once while the text encoder is frozen."""
        if self._pooled is None or not self.frozen_text:
            args = (self.cfg.eval_batch_size, self.cfg.max_text_tokens, device)
            self._pooled = (pooled_texts(model, self.processor, [t for t, _ in self.wo], "query", *args),
                            pooled_texts(model, self.processor, self.fr, "passage", *args))
        return self._pooled

    def text_recall(self, model, dims, device, weight=None, task="text_wo2fr"):
        q, d = self.pooled(model, device)
        return recall_table(apply_head(model, q, device, weight), apply_head(model, d, device, weight),
                            torch.tensor([i for _, i in self.wo]), dims, task)

    def speech_recall(self, model, dims, device, whisper):
        d = apply_head(model, self.pooled(model, device)[1], device)
        out = {}
        for task, features in (("speech2fr", self.features), ("speech2fr_hard", self.hard_features)):
            if features is not None:
                q = speech_embeddings(model, features, self.cfg.eval_batch_size, whisper, device)
                out.update(recall_table(q, d, self.clip_relevant, dims, task))
        return out


def dev_score(metrics: dict, best_on: str = "auto") -> float:
    """The keep-best score: mean of the dev metrics whose name starts with `best_on + "/"` ("auto": the hard speech
    condition when evaluated, else every metric; "all": every metric).

    Raises:
        ValueError: `best_on` names no metric."""
    if best_on == "auto":
        best_on = "speech2fr_hard" if any(k.startswith("speech2fr_hard/") for k in metrics) else "all"
    chosen = [v for k, v in metrics.items() if best_on == "all" or k.startswith(best_on + "/")]
    if not chosen:
        raise ValueError(f"best_on {best_on!r} matches no dev metric; the dev metrics are {sorted(metrics)}")
    return float(np.mean(chosen))


def pca_rotation(pooled: torch.Tensor) -> torch.Tensor:
    """(H, H) orthogonal matrix whose rows are the principal axes of `pooled`, largest variance first.
    As a head (no bias) it rotates the frozen embedding: full-width cosines are unchanged, and every prefix keeps
    the most variance a prefix of that size can."""
    x = pooled.double() - pooled.double().mean(0)
    _, vectors = torch.linalg.eigh(x.T @ x / max(len(x) - 1, 1))  # ascending eigenvalues
    return vectors.flip(1).T.float().contiguous()


# =============================================================================================== FLOPs
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
        self.fused_extra = len(c.fusion_prefix_ids) + len(c.fusion_suffix_ids) + (
            c.num_prompt_tokens if c.strategy == "fusion" else 0)
        self.speech_trains = not c.freeze_speech_encoder
        self.head_trains = cfg.stage == "text"

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
                total += self._transformer(self.text, lengths) + 2 * self.head * len(lengths)
            return total
        mask = batch["speech_mask"]
        b = mask.shape[0]
        up = self.speech_trains  # is something upstream of the current module trainable?
        if self.whisper:
            mel = mask.sum(1).double()
            frames = torch.ceil(mel / 2)
            speech = 2 * self.conv[0] * mel.sum() + 2 * self.conv[1] * frames.sum()
            speech += self._transformer(self.speech, frames)
        else:
            frames = torch.ceil(mask.sum(1).double() / 320)  # wav2vec2-style encoders: one frame per 20 ms
            speech = self._transformer(self.speech, frames)
        total = speech * (1 + 2 * self.speech_trains)
        if self.strategy == "fusion":
            tokens = torch.ceil(frames / self.stride)
            adapter = 2 * self.adapter_proj * frames.sum() + 2 * self.adapter_tail * tokens.sum()
            total += adapter * (2 + up)
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


# =============================================================================================== checkpoints
def keep_trainable_only(models, weights, output_dir):
    """save_state pre-hook: checkpoints hold trainable parameters only (frozen backbones come from the builder)."""
    for model, state in zip(models, weights):
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        for key in [k for k in state if k not in names]:
            del state[key]


def latest_checkpoint(output_dir: Path) -> Path | None:
    done = sorted((output_dir / "checkpoints").glob("step_*/trainer_state.json"))
    return done[-1].parent if done else None


def save_checkpoint(accelerator, output_dir: Path, position: dict, cfg: TrainConfig):
    path = output_dir / "checkpoints" / f"step_{position['step']:07d}"
    accelerator.save_state(str(path))
    if accelerator.is_main_process:  # written last: a checkpoint without it is incomplete and ignored
        (path / "trainer_state.json").write_text(json.dumps({**position, "config": dataclasses.asdict(cfg)}, indent=1))
        old = sorted((output_dir / "checkpoints").glob("step_*"))[: -max(cfg.keep_checkpoints, 1)]
        for folder in old:
            shutil.rmtree(folder, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


class BestTrainable:
    """The trainable parameters at the best dev score so far, on disk (so a resumed run keeps them)."""

    def __init__(self, folder: Path):
        self.folder = folder
        info = folder / "best.json"
        self.state = json.loads(info.read_text()) if info.is_file() else None

    def offer(self, step: int, score: float, model):
        if self.state is not None and score < self.state["score"]:  # ties go to the later, longer-trained step
            return
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        trainable = {n: p.detach().float().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, str(self.folder / "trainable.safetensors"))
        self.state = {"step": step, "score": score}
        (self.folder / "best.json").write_text(json.dumps(self.state))

    def restore(self, model, final_step: int) -> bool:
        """Load the best parameters into `model` unless the final step is the best; True if it did."""
        if self.state is None or self.state["step"] == final_step:
            return False
        from safetensors.torch import load_file

        with torch.no_grad():
            params = dict(model.named_parameters())
            for name, value in load_file(str(self.folder / "trainable.safetensors")).items():
                params[name].copy_(value)
        return True


# =============================================================================================== outputs
def write_delta(model, names: set[str], out: Path, overrides: dict, info: dict, started: dict | None = None):
    """delta.safetensors (fp16, the parameters this run trained or started from) + config_overrides.json.
    Tensors this run started from and did not train are written as `started` holds them (not re-read from a
    model whose frozen parts may be stored in bfloat16)."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    started = {n: t for n, t in (started or {}).items() if n not in info.get("trainable", ())}
    delta = {n: (started[n] if n in started else state[n]).detach().to(torch.float16).cpu().contiguous()
             for n in sorted(names)}
    size = delta_megabytes(delta)
    if size > MAX_DELTA_MB:
        print(f"[train] warning: delta {out} is {size:.1f} MB, over the {MAX_DELTA_MB:g} MB a committed delta may "
              "take (fewer LoRA targets or layers)", file=sys.stderr)
    save_file(delta, str(out / "delta.safetensors"), metadata={"format": "pt", "stage": info["stage"],
                                                                "data": info["data"]})
    (out / "config_overrides.json").write_text(json.dumps(overrides, indent=1) + "\n")
    (out / "training.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    return out


class Logger:
    """JSONL (+ TensorBoard when installed) on the main process; every line names the data."""

    def __init__(self, output_dir: Path, enabled: bool, cfg: TrainConfig):
        self.enabled, self.base = enabled, {"stage": cfg.stage, "data": cfg.data_name}
        self.file = self.tb = None
        if enabled:
            output_dir.mkdir(parents=True, exist_ok=True)
            self.file = open(output_dir / "log.jsonl", "a")
            if cfg.tensorboard:
                try:
                    from torch.utils.tensorboard import SummaryWriter

                    self.tb = SummaryWriter(str(output_dir / "tensorboard"))
                except ImportError:  # tensorboard not installed
                    pass

    def __call__(self, record: dict, echo: bool = False):
        if not self.enabled:
            return
        record = {**self.base, **record, "time": round(time.time(), 2)}
        self.file.write(json.dumps(record, default=float) + "\n")
        self.file.flush()
        if self.tb is not None and "step" in record:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self.tb.add_scalar(k, v, record["step"])
        if echo:
            from tqdm.auto import tqdm

            tqdm.write(json.dumps({k: v for k, v in record.items() if k not in ("time",)}, default=float))

    def close(self):
        if self.file:
            self.file.close()
        if self.tb:
            self.tb.close()


# =============================================================================================== the loop
def train(cfg: TrainConfig) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm
    from transformers import get_scheduler

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                              step_scheduler_with_optimizer=False)
    accelerator.register_save_state_pre_hook(keep_trainable_only)
    output_dir = Path(cfg.output_dir)
    log = Logger(output_dir, accelerator.is_main_process, cfg)
    set_seed(cfg.seed)
    device = accelerator.device
    start_wall = time.time()

    model, processor, overrides = load_model(cfg)
    started_from = load_init_delta(model, cfg.init_delta)
    trainable = select_trainable(model, cfg)
    if cfg.stage == "speech" and cfg.logit_scale_init:
        model.logit_scale.data.fill_(math.log(cfg.logit_scale_init))
    model.to(device)
    whisper = model.speech_tower.is_whisper
    dims = cfg.dims or model.config.matryoshka_dims
    eval_dims = sorted(set(dims) | set(model.config.matryoshka_dims), reverse=True)
    need_teacher = cfg.stage == "speech" and (cfg.distill is not None and cfg.distill_weight > 0 or
                                              cfg.transcript_weight > 0)
    log({"event": "start", "trainable": trainable, "n_trainable": sum(p.numel() for p in model.parameters()
                                                                        if p.requires_grad),
         "n_params": sum(p.numel() for p in model.parameters()), "processes": accelerator.num_processes,
         "distributed": str(accelerator.distributed_type), "autocast": accelerator.mixed_precision,
         "device": str(device),
         "attn": model.text_model.config._attn_implementation, "config": dataclasses.asdict(cfg)})

    # ---- data
    train_rows, dev_rows = load_rows(cfg, "train"), load_rows(cfg, "dev")
    if cfg.max_rows:
        train_rows = train_rows[: cfg.max_rows]
    on_device = False
    if cfg.stage == "speech":
        train_set, dev, lengths = speech_datasets(cfg, train_rows, dev_rows, model, processor, accelerator, log)
        on_device = cfg.augment is not None and (cfg.features_on == "device" or (
            cfg.features_on == "auto" and device.type == "cuda" and whisper))
    else:
        train_set = TextPairs(text_pairs(train_rows, cfg.text_pairs, cfg.word_sources, cfg.word_repeat, log))
        dev = DevSet(dev_rows, cfg, processor, frozen_text=cfg.text_lora is None)
        lengths = [len(q) + len(d) for q, d, _ in train_set.pairs]
    sampler = BucketBatchSampler(lengths, cfg.batch_size, cfg.bucket_batches, cfg.seed,
                                 with_epoch=isinstance(train_set, AugmentedSpeechPairs))
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                        persistent_workers=cfg.num_workers > 0, pin_memory=torch.cuda.is_available(),
                        collate_fn=Collator(processor, cfg.stage, cfg.max_text_tokens, need_teacher, whisper,
                                            features_on_device=on_device))

    # ---- text stage baselines: frozen identity head and PCA rotation
    baselines = {}
    if cfg.stage == "text":
        pca = None
        if cfg.text_head_init == "pca" or accelerator.is_main_process:
            fit = [(q, "query") for q, _, _ in train_set.pairs] + [(d, "passage") for _, d, _ in train_set.pairs]
            fit = sorted(set(fit))[:20000]
            pooled = torch.cat([pooled_texts(model, processor, [t for t, k in fit if k == kind], kind,
                                             cfg.eval_batch_size, cfg.max_text_tokens, device)
                                for kind in ("query", "passage")])
            pca = pca_rotation(pooled)
        if accelerator.is_main_process:
            eye = torch.eye(model.config.embedding_dim)
            baselines = {**dev.text_recall(model, eval_dims, device, eye, "identity/text_wo2fr"),
                         **dev.text_recall(model, eval_dims, device, pca, "pca/text_wo2fr")}
            log({"event": "baselines", "step": 0, **baselines}, echo=True)
        if cfg.text_head_init == "pca":
            model.text_head.weight.data.copy_(pca.to(device))
            model.text_head.bias.data.zero_()

    # ---- optimisation
    encoder = PairEncoder(model, cfg, need_teacher)
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    decayed = [p for n, p in named if p.dim() >= 2 and n != "prompt"]  # no decay: biases, logit_scale, prompt
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": cfg.weight_decay},
                                   {"params": [p for _, p in named if not any(p is q for q in decayed)],
                                    "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=max(cfg.max_steps, 1))
    encoder, optimizer, loader, scheduler = accelerator.prepare(encoder, optimizer, loader, scheduler)
    criterion = MatryoshkaInfoNCE(dims, cfg.dim_weights, cfg.symmetric, cfg.gather_negatives, cfg.distill,
                                  cfg.distill_weight)
    transcript_criterion = MatryoshkaInfoNCE(dims, cfg.dim_weights, cfg.symmetric, cfg.gather_negatives) \
        if cfg.transcript_weight > 0 else None

    def loss_fn(out, batch):
        return step_loss(out, batch, criterion, transcript_criterion, cfg.transcript_weight)

    position = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "micro": 0}
    resume_from = latest_checkpoint(output_dir) if cfg.resume == "auto" else (Path(cfg.resume) if cfg.resume else None)
    if resume_from is not None:
        accelerator.load_state(str(resume_from), strict=False)
        position = {k: json.loads((resume_from / "trainer_state.json").read_text())[k] for k in position}
        log({"event": "resume", "from": str(resume_from), **position}, echo=True)
    elif accelerator.is_main_process:  # a fresh start abandons an earlier run's checkpoints and best parameters
        for stale in (output_dir / "checkpoints", output_dir / "best"):
            if stale.exists():
                log({"event": "removed_stale", "path": str(stale)})
                shutil.rmtree(stale)
    accelerator.wait_for_everyone()
    best = BestTrainable(output_dir / "best")

    def evaluate(step: int) -> dict:
        metrics = {}
        if accelerator.is_main_process:
            inner = accelerator.unwrap_model(encoder).model
            with accelerator.autocast():
                if cfg.stage == "text":
                    metrics = dev.text_recall(inner, eval_dims, device)
                else:
                    metrics = dev.speech_recall(inner, eval_dims, device, whisper)
            score = dev_score(metrics, cfg.best_on)
            log({"event": "eval", "step": step, "dev_queries": len(dev.features) if dev.features else len(dev.wo),
                 "dev_docs": len(dev.sids), "dev_score": score, **metrics}, echo=True)
            if cfg.keep_best:
                best.offer(step, score, inner)
        accelerator.wait_for_everyone()
        return metrics

    flops_of = FlopCounter(model, cfg, need_teacher)
    peak = peak_flops(cfg)
    stats = {"samples": 0, "flops": 0.0, "seconds": 0.0, "loss": 0.0, "n": 0}
    totals = {"samples": 0, "flops": 0.0, "seconds": 0.0}
    bar = tqdm(total=cfg.max_steps, initial=position["step"], disable=not accelerator.is_main_process,
               desc=f"{cfg.stage} [{cfg.data_name.split(' ')[0]}]")
    metrics = {}
    stopped = False
    tick = loop_start = time.perf_counter()
    out_of_time = False
    while position["step"] < cfg.max_steps and not stopped and not out_of_time:
        sampler.use_epoch(position["epoch"])
        epoch_loader = accelerator.skip_first_batches(loader, position["batch_in_epoch"]) \
            if position["batch_in_epoch"] else loader
        for batch in epoch_loader:
            position["batch_in_epoch"] += 1
            position["micro"] += 1
            sync = position["micro"] % cfg.grad_accum == 0
            batch = featurize_on_device(batch, processor, device)
            loss, parts = forward_backward(encoder, batch, loss_fn, accelerator, 1.0 / cfg.grad_accum, sync,
                                           cfg.grad_cache_chunk)
            stats["samples"] += batch["groups"].shape[0]
            stats["flops"] += flops_of(batch)  # tensors: read back only when logging
            stats["loss"] += loss.double()
            stats["n"] += 1
            if not sync:
                continue
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            position["step"] += 1
            bar.update(1)
            step = position["step"]
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = time.perf_counter() - tick
                stats["flops"] = float(stats["flops"])
                reduced = accelerator.reduce(torch.stack([stats["loss"] / stats["n"], torch.tensor(
                    float(stats["samples"]), device=device, dtype=torch.float64)]), "sum")
                record = {"event": "train", "step": step, "epoch": position["epoch"],
                          "loss": reduced[0].item() / accelerator.num_processes,
                          "lr": scheduler.get_last_lr()[0], "samples_per_s": reduced[1].item() / elapsed,
                          "tflops_per_device": stats["flops"] / elapsed / 1e12,
                          **{k: round(v.item(), 4) for k, v in parts.items()}}
                if cfg.stage == "speech":
                    record["logit_scale"] = accelerator.unwrap_model(encoder).model.logit_scale.exp().item()
                if peak:
                    record["mfu"] = stats["flops"] / elapsed / peak
                log(record)
                bar.set_postfix(loss=f"{record['loss']:.3f}", sps=f"{record['samples_per_s']:.1f}")
                totals["samples"] += reduced[1].item()
                totals["flops"] += stats["flops"]
                totals["seconds"] += elapsed
                stats = {"samples": 0, "flops": 0.0, "seconds": 0.0, "loss": 0.0, "n": 0}
                tick = time.perf_counter()
            pause = time.perf_counter()
            if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
                metrics = evaluate(step)
            stopped = cfg.stop_after_steps is not None and step >= cfg.stop_after_steps
            if (cfg.save_every and step % cfg.save_every == 0) or stopped:
                save_checkpoint(accelerator, output_dir, position, cfg)
            tick += time.perf_counter() - pause  # throughput excludes evaluation and checkpoints
            minutes = (time.perf_counter() - loop_start) / 60
            out_of_time = bool(cfg.max_train_minutes) and minutes > cfg.max_train_minutes
            if out_of_time:
                log({"event": "time_budget", "step": step, "minutes": cfg.max_train_minutes}, echo=True)
            if step >= cfg.max_steps or stopped or out_of_time:
                break
        else:
            position["epoch"] += 1
            position["batch_in_epoch"] = 0
    bar.close()
    if stopped and position["step"] < cfg.max_steps:
        log({"event": "stopped", **position}, echo=True)
        log.close()
        return {"stopped_at": position["step"]}

    # ---- final evaluation and outputs
    metrics = evaluate(position["step"])
    model = accelerator.unwrap_model(encoder).model
    result = {"step": position["step"], **metrics}
    if accelerator.is_main_process:
        if cfg.keep_best and best.restore(model, position["step"]):
            with accelerator.autocast():
                metrics = (dev.text_recall(model, eval_dims, device) if cfg.stage == "text" else
                           dev.speech_recall(model, eval_dims, device, whisper))
            result = {"step": position["step"], "best_step": best.state["step"], **metrics}
            log({"event": "restored_best", **result}, echo=True)
        with accelerator.autocast():
            if cfg.stage == "speech":  # text topline: the gold Wolof transcript through the (frozen) text side
                result.update(dev.text_recall(model, eval_dims, device, task="topline/text_wo2fr"))
        if metrics:
            result["dev_score"] = dev_score(metrics, cfg.best_on)  # what keep-best compares; text LoRA vs head too
        result.update(baselines)
        if is_lora(model):  # the adapters become plain text-encoder weights: the delta needs no peft at run time
            trainable = [n for n in trainable if "lora_" not in n] + merge_lora(model)
        seconds = totals["seconds"] or 1e-9
        perf = {"samples_per_s": totals["samples"] / seconds, "tflops_per_device": totals["flops"] / seconds / 1e12,
                "mfu": totals["flops"] / seconds / peak if peak else None, "train_seconds": seconds,
                "wall_seconds": time.time() - start_wall, "processes": accelerator.num_processes,
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}
        result["perf"] = perf
        info = {"stage": cfg.stage, "data": cfg.data_name, "steps": position["step"], "metrics": result,
                "config": dataclasses.asdict(cfg), "trainable": trainable, "started_from": sorted(started_from)}
        names = set(trainable) | set(started_from)
        write_delta(model, names, output_dir / "delta", overrides, info, started_from)
        if cfg.delta_out:
            write_delta(model, names, Path(cfg.delta_out), overrides, info, started_from)
        if cfg.save_model:
            from wolofmrl.build import save

            model.float()  # frozen backbones stored in bf16 go back to fp32 in the saved folder
            save(model, processor, output_dir / "model")
        (output_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")
        log({"event": "done", **{k: v for k, v in result.items() if k != "perf"}, **perf}, echo=True)
    accelerator.wait_for_everyone()
    log.close()
    accelerator.end_training()
    return result


def main(argv: list[str] | None = None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file (train/configs/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--output-dir")
    p.add_argument("--delta-out", help="also write delta.safetensors + config_overrides.json here")
    p.add_argument("--resume", help="'auto', 'none' or a checkpoint folder")
    args = p.parse_args(argv)
    sets = list(args.set)
    if args.output_dir:
        sets.append(f"output_dir={args.output_dir}")
    if args.delta_out:
        sets.append(f"delta_out={args.delta_out}")
    if args.resume:
        sets.append(f"resume={'null' if args.resume == 'none' else args.resume}")
    train(load_config(args.config, sets))


if __name__ == "__main__":
    main()
