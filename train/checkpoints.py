"""Checkpoints (save / resume, with the run's identity and each file's checksum), the best parameters so far,
and the delta a run writes (through the model's own `delta_state_dict`).

A checkpoint records what a resume must match: batch size, learning rate, gradient accumulation, number of
processes, seed, stage and data. Resuming with another value is refused with a message naming the setting and the
two ways out (the old value, or `--resume none`), except the number of processes, which is adapted explicitly: the
data position is converted (the sampler's batches do not depend on it) and a warning names the new global batch.
A truncated or corrupt file is named, with the way out.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import shutil
import sys
from pathlib import Path

import torch

from train.config import TrainConfig
from train.text_lora import MAX_DELTA_MB, delta_megabytes

STATE_FILE = "trainer_state.json"  # written last: a checkpoint without it is incomplete and ignored
# config fields a resume may change: the step budget and run hygiene (where and how often to log, evaluate, save; how
# many loader workers). Any other field differing from the checkpoint's config is refused, with its name.
MAY_CHANGE_ON_RESUME = frozenset({
    "max_steps", "stop_after_steps", "max_train_minutes", "resume", "output_dir", "delta_out", "num_workers",
    "log_every", "eval_every", "save_every", "keep_checkpoints", "eval_max_queries", "eval_batch_size",
    "tensorboard", "save_model", "peak_tflops", "feature_cache_dir", "features_on", "ctc_dev_clips"})


class ResumeError(ValueError):
    """A checkpoint that this run cannot resume (another configuration, or a damaged file)."""


def run_identity(cfg: TrainConfig, processes: int, data_identity: str) -> dict:
    """What a resumed run must share with the run that wrote the checkpoint (the data position and the optimizer
    state mean nothing otherwise)."""
    return {"batch_size": cfg.batch_size, "lr": cfg.lr, "grad_accum": cfg.grad_accum, "processes": processes,
            "seed": cfg.seed, "stage": cfg.stage, "data": data_identity}


def keep_trainable_only(models, weights, output_dir):
    """save_state pre-hook: checkpoints hold trainable parameters only (frozen backbones come from the builder)."""
    for model, state in zip(models, weights):
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        for key in [k for k in state if k not in names]:
            del state[key]


def latest_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete checkpoint folder of a run (one with trainer_state.json), or None."""
    done = sorted((output_dir / "checkpoints").glob(f"step_*/{STATE_FILE}"))
    return done[-1].parent if done else None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(accelerator, output_dir: Path, position: dict, cfg: TrainConfig, identity: dict) -> Path:
    """accelerate `save_state` + trainer_state.json (data position, run identity, config, file checksums);
    keeps the newest `keep_checkpoints`."""
    path = output_dir / "checkpoints" / f"step_{position['step']:07d}"
    accelerator.save_state(str(path))
    accelerator.wait_for_everyone()  # every process's files are on disk before they are summed
    if accelerator.is_main_process:
        files = {f.name: _sha256(f) for f in sorted(path.iterdir()) if f.is_file() and f.name != STATE_FILE}
        state = {**position, "processes": identity["processes"], "run": identity, "files": files,
                 "config": dataclasses.asdict(cfg)}
        (path / STATE_FILE).write_text(json.dumps(state, indent=1))
        for folder in sorted((output_dir / "checkpoints").glob("step_*"))[: -max(cfg.keep_checkpoints, 1)]:
            shutil.rmtree(folder, ignore_errors=True)
    accelerator.wait_for_everyone()
    return path


def checkpoint_state(path: Path, identity: dict, config: dict | None = None) -> dict:
    """The trainer state of checkpoint `path` after checking it: same run identity, same config but for
    MAY_CHANGE_ON_RESUME (when `config` is given), every file intact.

    Raises:
        ResumeError: a setting differs from the checkpoint's (named, with its old and new value), or a file is
            missing, truncated or corrupt (named)."""
    fresh = "start over with --resume none (or delete the folder to resume from an older checkpoint)"
    try:
        state = json.loads((path / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ResumeError(f"checkpoint file {path / STATE_FILE} is unreadable ({err}); {fresh}") from err
    recorded = state.get("run", {})
    for key, value in identity.items():
        if key in recorded and recorded[key] != value and key != "processes":
            raise ResumeError(
                f"checkpoint {path} was written with {key}={recorded[key]!r} but this run has {key}={value!r}; "
                f"resume with the old value ({_how_to_set(key, recorded[key])}) or start over with --resume none")
    old_config = state.get("config", {})
    for key, value in (config or {}).items():
        if key in MAY_CHANGE_ON_RESUME or key in identity or key == "data" or key not in old_config:
            continue  # identity keys and data were checked above, with their own advice
        if old_config[key] != value:
            raise ResumeError(
                f"checkpoint {path} was written with {key}={old_config[key]!r} but this run has {key}={value!r}; "
                f"only the step budget and run hygiene ({', '.join(sorted(MAY_CHANGE_ON_RESUME))}) may change on "
                f"resume: resume with {_set_arg(key, json.dumps(old_config[key]))} or start over with --resume none")
    for name, digest in state.get("files", {}).items():
        file = path / name
        if not file.is_file() or _sha256(file) != digest:
            raise ResumeError(f"checkpoint file {file} is missing, truncated or corrupt (checksum mismatch); {fresh}")
    return state


def _how_to_set(key: str, value) -> str:
    if key == "processes":
        return f"launch {value} processes, e.g. torchrun --nproc_per_node {value}"
    if key == "data":
        return f"the data the checkpoint was trained on: {value}"
    return _set_arg(key, json.dumps(value) if isinstance(value, (dict, list)) else value)


def _set_arg(key: str, text) -> str:
    """`--set key=text`, quoted for a shell when it needs it (JSON values hold spaces and braces)."""
    return f"--set {shlex.quote(f'{key}={text}')}"


def adapt_processes(state: dict, processes: int, log) -> dict:
    """The data position of a checkpoint written by another number of processes, for `processes`.

    Every process draws every k-th batch of the same batch sampler, so after n batches per process on k processes
    k*n batches of the epoch are consumed: this run skips k*n/processes per process (rounded down: at most
    processes-1 batches are seen twice). The global batch changes with the process count; a warning says so."""
    old = state["run"]["processes"]
    batch = state["run"]["batch_size"]
    consumed = state["batch_in_epoch"] * old
    position = {**state, "batch_in_epoch": consumed // processes}
    message = (f"warning: checkpoint written by {old} processes, resumed with {processes}: the global batch changes "
               f"from {old * batch} to {processes * batch} rows (batch_size {batch} per process); data position "
               f"converted ({consumed} batches of epoch {state['epoch']} consumed). Launch {old} processes to resume "
               "exactly, or --resume none to start over.")
    print(message, file=sys.stderr)
    log({"event": "resume_adapted", "setting": "processes", "old": old, "new": processes, "message": message})
    return position


def resume(accelerator, path: Path, identity: dict, position: dict, log=lambda record: None,
           config: dict | None = None) -> dict:
    """Load checkpoint `path` into the prepared objects; returns the data position to continue from. A larger
    `max_steps` continues the same run (the scheduler's horizon becomes the new budget).

    Raises:
        ResumeError: see `checkpoint_state`, or accelerate could not load a file (named with the fix)."""
    state = checkpoint_state(path, identity, config)
    if state.get("run", {}).get("processes", identity["processes"]) != identity["processes"]:
        state = adapt_processes(state, identity["processes"], log)
    try:
        accelerator.load_state(str(path), strict=False)
    except Exception as err:  # torch / safetensors raise OSError, RuntimeError, SafetensorError...
        raise ResumeError(f"checkpoint {path} could not be loaded ({type(err).__name__}: {err}); start over with "
                          "--resume none (or delete the folder to resume from an older checkpoint)") from err
    return {k: state.get(k, position[k]) for k in position}  # older checkpoints lack audio_seconds


class BestTrainable:
    """The trainable parameters at the best dev score so far, on disk (so a resumed run keeps them)."""

    def __init__(self, folder: Path):
        self.folder = folder
        info = folder / "best.json"
        self.state = json.loads(info.read_text()) if info.is_file() else None

    def offer(self, step: int, score: float, model):
        """Keep the model's trainable parameters if `score` is at least the best so far (ties: the later step)."""
        if self.state is not None and score < self.state["score"]:
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


def write_delta(model, out: Path, overrides: dict, info: dict, started: dict | None = None) -> Path:
    """delta.safetensors (fp16: `model.delta_state_dict()`, what this run trained, plus the tensors it started
    from, as `started` holds them) + config_overrides.json + training.json: what `wolofmrl.build` applies."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    delta = {**{n: t.to(torch.float16) for n, t in (started or {}).items()}, **model.delta_state_dict(torch.float16)}
    delta = {n: delta[n].contiguous() for n in sorted(delta)}
    size = delta_megabytes(delta)
    if size > MAX_DELTA_MB:
        print(f"[train] warning: delta {out} is {size:.1f} MB, over the {MAX_DELTA_MB:g} MB a committed delta may "
              "take (fewer LoRA targets or layers)", file=sys.stderr)
    save_file(delta, str(out / "delta.safetensors"), metadata={"format": "pt", "stage": info["stage"],
                                                                "data": info["data"]})
    (out / "config_overrides.json").write_text(json.dumps(overrides, indent=1) + "\n")
    (out / "training.json").write_text(json.dumps(info, indent=1, default=str) + "\n")
    return out
