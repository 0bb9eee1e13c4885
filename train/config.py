"""The training configuration: one dataclass read from YAML plus `--set key=value` overrides."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml


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
    # the reading loss (wolofmrl.losses.TiedCTCLoss, train/reading.py): CTC of the speech tokens over the transcript's
    # subwords, classifier tied to the frozen input embeddings of the subwords the training transcripts use
    ctc_weight: float = 0.0  # 0: off
    ctc_scale_init: float = 20.0  # logit scale of the tied CTC classifier (1 / temperature)
    ctc_learn_scale: bool = True
    ctc_dev_clips: int = 64  # dev clips per language for the reading diagnostic (greedy transcripts, dev/cer_<lang>)
    text_pairs: list[str] = field(default_factory=lambda: ["wo-fr", "fr-fr"])  # text stage: query-passage langs
    text_head_init: str = "identity"  # text stage: "identity" | "pca"
    speech_langs: list[str] = field(default_factory=lambda: ["wo"])  # [all]: every language the corpus speaks
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
        if self.ctc_weight and self.stage != "speech":
            raise ValueError("ctc_weight (the reading loss) applies to the speech stage; set ctc_weight: 0")
        if self.ctc_weight and 0 < self.grad_cache_chunk < self.batch_size:
            raise ValueError("ctc_weight > 0 needs GradCache off (the CTC loss is per row over (B, T', H) tokens): set "
                             "grad_cache_chunk: 0, or ctc_weight: 0")
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


