"""Train WolofMRL with Accelerate: stage `text` (a Matryoshka head, optionally with a LoRA, on the text tower),
stage `speech` (the speech adapter, fusion or dual, with the text side frozen).

    accelerate launch train/train.py --config train/configs/speech_fusion.yaml
    python train/train.py --config train/configs/cpu_tiny.yaml --set max_steps=20
    torchrun --nproc_per_node 2 train/train.py --config train/configs/cpu_tiny.yaml     # 2 CPU processes (gloo)

`train()` reads top to bottom: start the run (model), the data, the text stage's baselines, the optimisation,
resume or start, the loop (micro-step, optimizer step, log / evaluate / checkpoint), the outputs. The pieces live
beside this file, one concern each: config, model, data + speech_data, step (+ wolofmrl/gradcache.py),
evaluation, flops, checkpoints, logger, text_lora. See train/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# run as a script, this folder is sys.path[0] and `import train` would find this file instead of the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "train"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from train.checkpoints import (BestTrainable, ResumeError, keep_trainable_only, latest_checkpoint,  # noqa: E402
                               resume, run_identity, save_checkpoint, write_delta)
from train.config import TrainConfig, load_config  # noqa: E402
from train.data import (BucketBatchSampler, Collator, TextPairs, data_identity, load_rows,  # noqa: E402
                        read_corpus, speech_training_set, text_pairs)
from train.reading import build_reading, save_ctc_head  # noqa: E402
from train.evaluation import DevSet, dev_score, head_weight, pca_rotation  # noqa: E402
from train.flops import FlopCounter, peak_flops  # noqa: E402
from train.logger import Logger  # noqa: E402
from train.model import PairEncoder, load_init_delta, load_model, select_trainable  # noqa: E402
from train.speech_data import ClipWaves, featurize_on_device, in_workers, resolve_langs, speech_rows  # noqa: E402
from train.step import forward_backward, step_loss  # noqa: E402
from train.text_lora import is_lora, merge_lora  # noqa: E402
from wolofmrl.inference import encode_text  # noqa: E402
from wolofmrl.losses import MatryoshkaInfoNCE  # noqa: E402

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class Run:
    """Everything one training run holds, filled in the order `train()` reads."""

    cfg: TrainConfig
    accelerator: object
    log: Logger
    model: object = None
    processor: object = None
    start_record: dict = field(default_factory=dict)  # the `start` event, logged once the attempt is accepted
    overrides: dict = field(default_factory=dict)
    started_from: dict = field(default_factory=dict)
    trainable: list = field(default_factory=list)
    dims: list = field(default_factory=list)
    eval_dims: list = field(default_factory=list)
    need_teacher: bool = False
    sampler: object = None
    loader: object = None
    pairs: list | None = None  # text stage: the training pairs (PCA fit)
    dev: DevSet | None = None
    identity: dict = field(default_factory=dict)
    encoder: object = None
    optimizer: object = None
    scheduler: object = None
    loss_fn: object = None
    best: BestTrainable | None = None
    position: dict = field(default_factory=lambda: {"step": 0, "epoch": 0, "batch_in_epoch": 0, "micro": 0,
                                                    "audio_seconds": 0.0})
    meter: object = None
    ctc: object = None  # the reading loss (ctc_weight > 0): TiedCTCLoss, its targets, its dev diagnostic
    ctc_targets: object = None
    reading: object = None
    unseen: DevSet | None = None  # dev clips of held-out sources (corpus split unseen_dev), when the corpus has them

    @property
    def device(self):
        return self.accelerator.device

    @property
    def output_dir(self) -> Path:
        return Path(self.cfg.output_dir)


# ---------------------------------------------------------------------------------------------- start the run
def start_run(cfg: TrainConfig) -> Run:
    """Accelerator, log, model (started from `init_delta`, trainable parts chosen, on the device)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision,
                              step_scheduler_with_optimizer=False)
    accelerator.register_save_state_pre_hook(keep_trainable_only)
    run = Run(cfg, accelerator, Logger(Path(cfg.output_dir), accelerator.is_main_process, cfg))
    set_seed(cfg.seed)
    run.model, run.processor, run.overrides = load_model(cfg)
    run.started_from = load_init_delta(run.model, cfg.init_delta)
    run.trainable = select_trainable(run.model, cfg)
    if cfg.stage == "speech" and cfg.logit_scale_init:
        run.model.logit_scale.data.fill_(math.log(cfg.logit_scale_init))
    run.model.to(run.device)
    run.dims = cfg.dims or run.model.config.matryoshka_dims
    run.eval_dims = sorted(set(run.dims) | set(run.model.config.matryoshka_dims), reverse=True)
    run.need_teacher = cfg.stage == "speech" and (cfg.distill is not None and cfg.distill_weight > 0 or
                                                  cfg.transcript_weight > 0)
    params = list(run.model.parameters())
    # logged once resume_or_start accepts this attempt: a refused or crashed attempt leaves no `start`
    run.start_record = {
        "event": "start", "trainable": run.trainable, "n_trainable": sum(p.numel() for p in params if p.requires_grad),
        "n_params": sum(p.numel() for p in params), "processes": accelerator.num_processes,
        "distributed": str(accelerator.distributed_type), "autocast": accelerator.mixed_precision,
        "device": str(run.device), "attn": run.model.text_model.config._attn_implementation,
        "config": dataclasses.asdict(cfg)}
    return run


# ---------------------------------------------------------------------------------------------- data
def build_data(run: Run):
    """Training rows -> dataset, length-bucketed sampler, loader; dev rows -> the dev set."""
    from torch.utils.data import DataLoader

    cfg, model = run.cfg, run.model
    train_rows, dev_rows = load_rows(cfg, "train"), load_rows(cfg, "dev")
    if cfg.max_rows:
        train_rows = train_rows[: cfg.max_rows]
    whisper = model.speech_tower.is_whisper
    on_device = False
    if cfg.stage == "speech":
        max_seconds = cfg.max_audio_seconds or model.config.max_audio_seconds
        cfg.speech_langs = resolve_langs(cfg.speech_langs, train_rows)  # [all]: every language of the corpus
        rows = speech_rows(train_rows, cfg.speech_langs, max_seconds, cfg.speech_target, run.log)
        train_set, lengths = speech_training_set(cfg, rows, run.processor, run.accelerator, run.log, max_seconds)
        run.dev = speech_dev_set(run, dev_rows, max_seconds)
        run.unseen = unseen_dev_set(run, max_seconds)
        if cfg.ctc_weight > 0:
            run.ctc, run.ctc_targets, run.reading = build_reading(cfg, model, run.processor, rows, dev_rows,
                                                                  cfg.num_workers, run.log,
                                                                  run.accelerator.is_main_process)
        on_device = cfg.augment is not None and (cfg.features_on == "device" or (
            cfg.features_on == "auto" and run.device.type == "cuda" and whisper))
    else:
        run.pairs = text_pairs(train_rows, cfg.text_pairs, cfg.word_sources, cfg.word_repeat, run.log)
        train_set, lengths = TextPairs(run.pairs), [len(q) + len(d) for q, d, _ in run.pairs]
        run.dev = DevSet(dev_rows, cfg, run.processor)
    run.sampler = BucketBatchSampler(lengths, cfg.batch_size, cfg.bucket_batches, cfg.seed,
                                     with_epoch=cfg.stage == "speech" and cfg.augment is not None)
    collate = Collator(run.processor, cfg.stage, cfg.max_text_tokens, run.need_teacher, whisper, on_device,
                       run.ctc_targets)
    run.loader = DataLoader(train_set, batch_sampler=run.sampler, num_workers=cfg.num_workers, collate_fn=collate,
                            persistent_workers=cfg.num_workers > 0, pin_memory=torch.cuda.is_available())
    run.identity = run_identity(cfg, run.accelerator.num_processes, data_identity(cfg))


def speech_dev_set(run: Run, dev_rows: list[dict], max_seconds: float) -> DevSet:
    """Dev speech queries: `eval_speech_lang` clips with a French passage (capped), decoded once (main process),
    clean and, with `dev_hard`, degraded with fixed hard settings."""
    cfg = run.cfg
    clips = speech_rows(dev_rows, [cfg.eval_speech_lang], max_seconds, "fr", run.log)
    clips = sorted(clips, key=lambda r: r["id"])[: cfg.eval_max_queries]
    waves = hard = None
    if run.accelerator.is_main_process:
        waves = in_workers(ClipWaves(clips), cfg.num_workers)
        if cfg.dev_hard is not None:
            hard = in_workers(ClipWaves(clips, {**cfg.dev_hard, "max_seconds": max_seconds}), cfg.num_workers)
            run.log({"event": "dev_hard", **cfg.dev_hard, "clips": len(hard)})
    return DevSet(dev_rows, cfg, run.processor, clips, waves, hard, cache_documents=True)


def unseen_dev_set(run: Run, max_seconds: float) -> DevSet | None:
    """The dev clips of sources training never saw (corpus split `unseen_dev`), or None (logged) without them."""
    cfg = run.cfg
    folder = Path(cfg.data["corpus"]) / "unseen_dev" if "corpus" in cfg.data else None
    if folder is None or not any(folder.glob("*.parquet")):
        run.log({"event": "unseen_dev", "present": False, "looked_in": str(folder)})
        return None
    run.log({"event": "unseen_dev", "present": True, "looked_in": str(folder)})
    return speech_dev_set(run, read_corpus(cfg.data["corpus"], "unseen_dev", audio=True), max_seconds)


# ---------------------------------------------------------------------------------------------- text baselines
def text_baselines(run: Run) -> dict:
    """Text stage: dev recall of the frozen identity head and of a PCA rotation (fitted on the training texts);
    with `text_head_init: pca` the head starts from that rotation. {} for the speech stage."""
    cfg, model, device = run.cfg, run.model, run.device
    if cfg.stage != "text":
        return {}
    eye, pca, baselines = torch.eye(model.config.embedding_dim), None, {}
    if cfg.text_head_init == "pca" or run.accelerator.is_main_process:
        fit = sorted({(q, "query") for q, _, _ in run.pairs} | {(d, "passage") for _, d, _ in run.pairs})[:20000]
        with head_weight(model, eye):
            frozen = torch.cat([encode_text(model, run.processor, [t for t, k in fit if k == kind], device=device,
                                            batch_size=cfg.eval_batch_size, progress=False, text_kind=kind,
                                            max_length=cfg.max_text_tokens) for kind in ("query", "passage")])
        pca = pca_rotation(frozen)
    if run.accelerator.is_main_process:
        baselines = {**run.dev.text_recall(model, run.eval_dims, device, eye, "identity/text_wo2fr"),
                     **run.dev.text_recall(model, run.eval_dims, device, pca, "pca/text_wo2fr")}
        run.log({"event": "baselines", "step": 0, **baselines}, echo=True)
    if cfg.text_head_init == "pca":
        model.text_head.weight.data.copy_(pca.to(device))
        model.text_head.bias.data.zero_()
    return baselines


# ---------------------------------------------------------------------------------------------- optimisation
def build_optimization(run: Run):
    """Pair encoder, AdamW (no decay on biases, logit scale, prompt), schedule, loss; all through `prepare`."""
    from transformers import get_scheduler

    cfg = run.cfg
    named = [(n, p) for n, p in run.model.named_parameters() if p.requires_grad]
    decayed = [p for n, p in named if p.dim() >= 2 and n != "prompt"]
    rest = [p for _, p in named if not any(p is q for q in decayed)]
    rest += [p for p in (run.ctc.parameters() if run.ctc is not None else []) if p.requires_grad]
    optimizer = torch.optim.AdamW([{"params": decayed, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.lr)
    scheduler = get_scheduler(cfg.lr_schedule, optimizer, num_warmup_steps=cfg.warmup_steps,
                              num_training_steps=max(cfg.max_steps, 1))
    encoder = PairEncoder(run.model, cfg, run.need_teacher, run.ctc)
    run.encoder, run.optimizer, run.loader, run.scheduler = run.accelerator.prepare(encoder, optimizer, run.loader,
                                                                                   scheduler)
    criterion = MatryoshkaInfoNCE(run.dims, cfg.dim_weights, cfg.symmetric, cfg.gather_negatives, cfg.distill,
                                  cfg.distill_weight)
    transcript = MatryoshkaInfoNCE(run.dims, cfg.dim_weights, cfg.symmetric, cfg.gather_negatives) \
        if cfg.transcript_weight > 0 else None
    run.loss_fn = lambda out, batch: step_loss(out, batch, criterion, transcript, cfg.transcript_weight,
                                               cfg.ctc_weight)


def resume_or_start(run: Run):
    """Continue from the latest (or the named) checkpoint after checking it belongs to this run's settings, or
    start afresh (an earlier run's checkpoints and best parameters in output_dir are removed)."""
    cfg, out = run.cfg, run.output_dir
    path = latest_checkpoint(out) if cfg.resume == "auto" else (Path(cfg.resume) if cfg.resume else None)
    if path is not None:
        run.position = resume(run.accelerator, path, run.identity, run.position, run.log, dataclasses.asdict(cfg))
        run.log({"event": "resume", "from": str(path), **run.position}, echo=True)
    elif run.accelerator.is_main_process:
        for stale in (out / "checkpoints", out / "best"):
            if stale.exists():
                run.log({"event": "removed_stale", "path": str(stale)})
                shutil.rmtree(stale)
    run.accelerator.wait_for_everyone()
    run.best = BestTrainable(out / "best")


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(run: Run, step: int) -> dict:
    """Dev metrics on the main process (offered to keep-best); {} on the others."""
    metrics = {}
    if run.accelerator.is_main_process:
        inner = run.accelerator.unwrap_model(run.encoder).model
        metrics = dev_metrics(run, inner)
        score = dev_score(metrics, run.cfg.best_on)
        reading = {} if run.reading is None else run.reading.report(
            inner, run.accelerator.unwrap_model(run.encoder).ctc, run.device, run.dev.dtype, run.log, step)
        hours = run.position["audio_seconds"] * run.accelerator.num_processes / 3600
        run.log({"event": "eval", "step": step, "hours_seen": round(hours, 4), "dev_queries": run.dev.n_queries,
                 "dev_docs": len(run.dev.sids), "dev_score": score, **metrics, **reading}, echo=True)
        metrics = {**metrics, **reading}
        if run.cfg.keep_best:
            run.best.offer(step, score, inner)
    run.accelerator.wait_for_everyone()
    return metrics


def dev_metrics(run: Run, model) -> dict:
    if run.cfg.stage == "text":
        return run.dev.text_recall(model, run.eval_dims, run.device)
    metrics = run.dev.speech_recall(model, run.eval_dims, run.device)
    if run.unseen is not None:
        metrics.update(run.unseen.speech_recall(model, run.eval_dims, run.device, "speech2fr_unseen"))
    return metrics


# ---------------------------------------------------------------------------------------------- the loop
class Meter:
    """Loss, samples and model FLOPs between two log lines; throughput excludes evaluation and checkpoints."""

    def __init__(self, run: Run):
        self.flops_of, self.peak = FlopCounter(run.model, run.cfg, run.need_teacher), peak_flops(run.cfg)
        self.totals = {"samples": 0.0, "flops": 0.0, "seconds": 0.0}
        self.reset()

    def reset(self):
        self.samples, self.flops, self.loss, self.n, self.ctc_skipped = 0, 0.0, 0.0, 0, 0.0
        self.tick = time.perf_counter()

    def add(self, batch: dict, loss: torch.Tensor, parts: dict | None = None):
        self.samples += batch["groups"].shape[0]
        if parts and "ctc_skipped" in parts:  # every micro-batch's rows the reading loss left out (T' too short)
            self.ctc_skipped += parts["ctc_skipped"]
        self.flops += self.flops_of(batch)  # tensors: read back only when logging
        self.loss += loss.double()
        self.n += 1

    def pause(self, seconds: float):
        self.tick += seconds

    def record(self, run: Run, parts: dict) -> dict:
        """The `train` log line (loss and samples summed over processes); starts a new window."""
        acc, elapsed, flops = run.accelerator, time.perf_counter() - self.tick, float(self.flops)
        reduced = acc.reduce(torch.stack([self.loss / self.n, torch.tensor(float(self.samples), device=run.device,
                                                                           dtype=torch.float64)]), "sum")
        record = {"event": "train", "step": run.position["step"], "epoch": run.position["epoch"],
                  "loss": reduced[0].item() / acc.num_processes, "lr": run.scheduler.get_last_lr()[0],
                  "samples_per_s": reduced[1].item() / elapsed, "tflops_per_device": flops / elapsed / 1e12,
                  **{k: round(v.item(), 4) for k, v in parts.items()}}
        if run.cfg.ctc_weight > 0:
            record["ctc_skipped"] = float(self.ctc_skipped)  # this window's rows, summed over its micro-batches
            self.totals["ctc_skipped"] = self.totals.get("ctc_skipped", 0.0) + float(self.ctc_skipped)
        if run.cfg.stage == "speech":
            record["logit_scale"] = acc.unwrap_model(run.encoder).model.logit_scale.exp().item()
        if self.peak:
            record["mfu"] = flops / elapsed / self.peak
        for key, value in (("samples", reduced[1].item()), ("flops", flops), ("seconds", elapsed)):
            self.totals[key] += value
        self.reset()
        return record

    def perf(self, run: Run, start_wall: float) -> dict:
        t, seconds = self.totals, self.totals["seconds"] or 1e-9
        return {"samples_per_s": t["samples"] / seconds, "tflops_per_device": t["flops"] / seconds / 1e12,
                "mfu": t["flops"] / seconds / self.peak if self.peak else None, "train_seconds": seconds,
                "wall_seconds": time.time() - start_wall, "processes": run.accelerator.num_processes,
                "ctc_skipped_rows": t.get("ctc_skipped"), "hours_seen": run.position["audio_seconds"] / 3600,
                "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}


def micro_step(run: Run, batch: dict) -> tuple[bool, dict]:
    """Forward + backward of one micro-batch; returns (whether this micro-batch ends an optimizer step, parts)."""
    run.position["batch_in_epoch"] += 1
    run.position["micro"] += 1
    sync = run.position["micro"] % run.cfg.grad_accum == 0
    batch = featurize_on_device(batch, run.processor, run.device)
    loss, parts = forward_backward(run.encoder, batch, run.loss_fn, run.accelerator, 1.0 / run.cfg.grad_accum, sync,
                                   run.cfg.grad_cache_chunk)
    run.meter.add(batch, loss, parts)
    run.position["audio_seconds"] += float(batch["seconds"].sum()) if "seconds" in batch else 0.0
    return sync, parts


def optimizer_step(run: Run):
    if run.cfg.max_grad_norm:
        run.accelerator.clip_grad_norm_([p for p in run.encoder.parameters() if p.requires_grad],
                                        run.cfg.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.position["step"] += 1


def after_step(run: Run, parts: dict, loop_start: float) -> str | None:
    """Log, evaluate and checkpoint as configured; returns why training stops ("done", "stopped", "time") or None."""
    cfg, step = run.cfg, run.position["step"]
    if step % cfg.log_every == 0 or step == cfg.max_steps:
        record = run.meter.record(run, parts)
        run.log(record)
    pause = time.perf_counter()
    if cfg.eval_every and step % cfg.eval_every == 0 and step < cfg.max_steps:
        evaluate(run, step)
    stopped = cfg.stop_after_steps is not None and step >= cfg.stop_after_steps
    # the last step too: a larger max_steps later continues from exactly here
    if (cfg.save_every and (step % cfg.save_every == 0 or step >= cfg.max_steps)) or stopped:
        save_checkpoint(run.accelerator, run.output_dir, run.position, cfg, run.identity)
    run.meter.pause(time.perf_counter() - pause)
    if step >= cfg.max_steps:
        return "done"
    if stopped:
        return "stopped"
    if cfg.max_train_minutes and (time.perf_counter() - loop_start) / 60 > cfg.max_train_minutes:
        run.log({"event": "time_budget", "step": step, "minutes": cfg.max_train_minutes}, echo=True)
        if not (cfg.save_every and step % cfg.save_every == 0):  # a later call resumes from here
            save_checkpoint(run.accelerator, run.output_dir, run.position, cfg, run.identity)
        return "time"
    return None


def train_loop(run: Run) -> str:
    """Epochs of micro-batches until max_steps, stop_after_steps or max_train_minutes; returns why it ended."""
    from tqdm.auto import tqdm

    cfg, acc = run.cfg, run.accelerator
    run.meter = Meter(run)
    bar = tqdm(total=cfg.max_steps, initial=run.position["step"], disable=not acc.is_main_process,
               desc=f"{cfg.stage} [{cfg.data_name.split(' ')[0]}]")
    loop_start, why = time.perf_counter(), "done" if run.position["step"] >= cfg.max_steps else None
    while why is None:
        run.sampler.use_epoch(run.position["epoch"])
        skip = run.position["batch_in_epoch"]
        for batch in (acc.skip_first_batches(run.loader, skip) if skip else run.loader):
            sync, parts = micro_step(run, batch)
            if not sync:
                continue
            optimizer_step(run)
            bar.update(1)
            why = after_step(run, parts, loop_start)
            if why is not None:
                break
        else:
            run.position["epoch"] += 1
            run.position["batch_in_epoch"] = 0
    bar.close()
    return why


# ---------------------------------------------------------------------------------------------- outputs
def final_metrics(run: Run, metrics: dict, baselines: dict) -> dict:
    """Main process: dev metrics of the best parameters (restored unless the last step, `metrics`, was best), the
    text topline (speech stage), the baselines (text stage) and `dev_score`."""
    model, step = run.model, run.position["step"]
    result = {"step": step, **metrics}
    if run.cfg.keep_best and run.best.restore(model, step):
        metrics = dev_metrics(run, model)
        result = {"step": step, "best_step": run.best.state["step"], **metrics}
        run.log({"event": "restored_best", **result}, echo=True)
    if run.cfg.stage == "speech":  # text topline: the gold Wolof transcript through the (frozen) text side
        result.update(run.dev.text_recall(model, run.eval_dims, run.device, task="topline/text_wo2fr"))
    if metrics:
        result["dev_score"] = dev_score(metrics, run.cfg.best_on)  # what keep-best compares; head vs LoRA too
    return {**result, **baselines}


def write_outputs(run: Run, result: dict):
    """Main process: the delta (output_dir/delta and `delta_out`), the save_pretrained folder, result.json."""
    cfg, model = run.cfg, run.model
    if is_lora(model):  # the adapters become plain text-encoder weights: the delta needs no peft at run time
        run.trainable = [n for n in run.trainable if "lora_" not in n] + merge_lora(model)
    info = {"stage": cfg.stage, "data": cfg.data_name, "steps": run.position["step"], "metrics": result,
            "config": dataclasses.asdict(cfg), "trainable": run.trainable, "started_from": sorted(run.started_from),
            "run": run.identity}
    for folder in [run.output_dir / "delta"] + ([Path(cfg.delta_out)] if cfg.delta_out else []):
        write_delta(model, folder, run.overrides, info, run.started_from)
        if run.ctc is not None:  # phase 2 starts its reading head from phase 1's
            save_ctc_head(run.ctc, folder)
    if cfg.save_model:
        from wolofmrl.build import save

        model.float()  # frozen backbones stored in bf16 go back to fp32 in the saved folder
        save(model, run.processor, run.output_dir / "model")
    (run.output_dir / "result.json").write_text(json.dumps(result, indent=1) + "\n")


def train(cfg: TrainConfig) -> dict:
    """One training run (see the module docstring); returns the result dict (main process: dev metrics, perf)."""
    start_wall = time.time()
    run = start_run(cfg)
    build_data(run)
    baselines = text_baselines(run)
    build_optimization(run)
    try:
        resume_or_start(run)
    except ResumeError as err:  # nothing trained: this attempt logs `refused`, never `start`
        run.log({"event": "refused", "error": str(err)})
        run.log.close()
        raise
    run.log(run.start_record)
    why = train_loop(run)
    if why == "stopped" and run.position["step"] < cfg.max_steps:
        run.log({"event": "stopped", **run.position}, echo=True)
        run.log.close()
        return {"stopped_at": run.position["step"]}
    metrics = evaluate(run, run.position["step"])
    result = {"step": run.position["step"]}
    if run.accelerator.is_main_process:
        result = final_metrics(run, metrics, baselines)
        perf = run.meter.perf(run, start_wall)
        result["perf"] = perf
        write_outputs(run, result)
        run.log({"event": "done", **{k: v for k, v in result.items() if k != "perf"}, **perf}, echo=True)
    run.accelerator.wait_for_everyone()
    run.log.close()
    run.accelerator.end_training()
    return result


def main(argv: list[str] | None = None):
    """Command line: --config YAML, --set KEY=VALUE overrides, --output-dir, --delta-out, --resume."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML file (train/configs/*.yaml)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    p.add_argument("--output-dir")
    p.add_argument("--delta-out", help="also write delta.safetensors + config_overrides.json here")
    p.add_argument("--resume", help="'auto', 'none' or a checkpoint folder")
    args = p.parse_args(argv)
    sets = list(args.set)
    sets += [f"{k}={v}" for k, v in (("output_dir", args.output_dir), ("delta_out", args.delta_out),
                                        ("resume", args.resume)) if v]
    try:
        train(load_config(args.config, sets))
    except ResumeError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
