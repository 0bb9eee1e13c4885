"""Write the delta of a run that stopped before it wrote one: its best parameters (keep-best) or its latest checkpoint.

A run cut short by its time guard across device sessions (train/device_reading.sh) carries `best/` and its latest
`checkpoints/step_*` home (train/reading_pack.py), but no `delta/`: that is written when a run finishes. This
rebuilds the model as the run's logged config says (backbones, `init_delta`), loads the chosen parameters and
writes `delta.safetensors` + `config_overrides.json` + `training.json` exactly as `train/train.py` does (and, for a
run with the reading loss, `ctc_head.safetensors` from its latest checkpoint), so that
`python -m wolofmrl.build --delta OUT` and `eval/run.py` can load it.

    python train/export.py --run runs/reading/align_fusion_ctc_s0 --out runs/reading/export/align_fusion_ctc_s0
    python train/export.py --run RUN --which last --out OUT      # the latest checkpoint instead of the best
    python train/export.py --run RUN --out weights/NAME --base wolofmrl-text   # a committed delta: the stage-1
                                                                 # tensors left out, BASE names them

The backbones must be those the run trained on (`build/backbones`, `make backbones`); `init_delta` must exist here
at the path the run logged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
# run as a script, this folder is sys.path[0] and `import train` would find train/train.py instead of the package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "train"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from train.checkpoints import latest_checkpoint, write_delta  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.logger import accepted_starts  # noqa: E402
from train.model import load_init_delta, load_model, select_trainable  # noqa: E402


OWN_FILES = ("delta.safetensors", "config_overrides.json", "training.json", "ctc_head.safetensors", "BASE")


def check_out(out: Path) -> None:
    """`out` may be new, or a folder of an earlier export (only `OWN_FILES`, which this export replaces: a `BASE` or
    CTC head it does not write again is removed). Raises ValueError for a file or a folder of other files."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file: give a folder for the delta")
    other = sorted(f.name for f in out.iterdir() if f.name not in OWN_FILES) if out.is_dir() else []
    if other:
        raise ValueError(f"--out {out} holds files an export does not write ({other[:3]}): give a new folder")


def run_config(run: Path) -> TrainConfig:
    """The config the run logged in its `start` event (the last one: each accepted attempt, a resume too, logs one).

    Raises:
        FileNotFoundError: no log.jsonl; ValueError: no start event."""
    log = run / "log.jsonl"
    if not log.is_file():
        raise FileNotFoundError(f"--run {run}: no log.jsonl; pass a train/train.py output_dir")
    starts = accepted_starts(log)
    if not starts:
        raise ValueError(f"{log}: no start event; the run never started")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in starts[-1]["config"].items() if k in known})


def last_checkpoint(run: Path) -> tuple[Path, int, dict] | None:
    """(model.safetensors, step, its tensors) of the run's newest complete checkpoint (`train.checkpoints.
    latest_checkpoint`), or None. Accelerate saved the pair encoder: the model's names start with "model.", the
    reading head's with "ctc."."""
    from safetensors.torch import load_file

    folder = latest_checkpoint(run)
    if folder is None:
        return None
    path = folder / "model.safetensors"
    return path, int(folder.name.split("_")[-1]), load_file(str(path))


def chosen_parameters(run: Path, which: str, last: tuple[Path, int, dict] | None) -> tuple[dict, dict]:
    """({name: tensor}, {"which", "step", "file"}) of the run's best parameters, or of `last` (`last_checkpoint`).

    Raises:
        FileNotFoundError: the run has no such parameters."""
    from safetensors.torch import load_file

    if which == "best":
        path = run / "best" / "trainable.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the run kept no best parameters; use --which last")
        step = json.loads((run / "best" / "best.json").read_text())["step"]
        return load_file(str(path)), {"which": which, "step": step, "file": str(path)}
    if last is None:
        raise FileNotFoundError(f"{run}/checkpoints: no complete checkpoint (step_*/trainer_state.json)")
    path, step, tensors = last
    state = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    return state, {"which": which, "step": step, "file": str(path)}


def export(run: Path, out: Path, which: str = "best", base: str | None = None) -> Path:
    """Write the delta of `run`'s chosen parameters to `out` (see the module docstring); returns `out`.

    `base`: a delta folder (a name under weights/, e.g. "wolofmrl-text") the run started from: the tensors equal to
    its own are left out and `out`/BASE names it, as the committed speech deltas do (`wolofmrl.build.delta_chain`).

    Raises:
        ValueError: the parameters do not match the model the config builds (names or shapes listed), or `out`
            holds files an export does not write (`check_out`).
        FileNotFoundError: no such run, parameters or `base`. Every check is made before anything is written."""
    check_out(out)
    if base:
        from wolofmrl.build import load_delta_dir

        try:
            load_delta_dir(base)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"--base {base}: not a delta folder (a name under weights/ or a path holding "
                                    "delta.safetensors)") from err
    cfg = run_config(run)
    last = last_checkpoint(run)  # read once: the "last" parameters and the reading head
    state, chosen = chosen_parameters(run, which, last)
    model, _processor, overrides = load_model(cfg)
    started = load_init_delta(model, cfg.init_delta)
    trainable = select_trainable(model, cfg)
    params = dict(model.named_parameters())
    missing = sorted(set(trainable) - set(state))
    wrong = sorted(n for n in state if n not in params or params[n].shape != state[n].shape)
    if missing or wrong:
        raise ValueError(f"{chosen['file']} does not fit the model of {run}/log.jsonl: missing {missing[:5]}, "
                         f"unknown or misshapen {wrong[:5]}")
    for name in ("BASE", "ctc_head.safetensors"):  # an earlier export's, not rewritten by this one
        (out / name).unlink(missing_ok=True)
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    info = {"stage": cfg.stage, "data": cfg.data_name, "steps": chosen["step"], "metrics": result,
            "config": dataclasses.asdict(cfg), "trainable": trainable, "started_from": sorted(started),
            "exported": chosen}
    write_delta(model, out, overrides, info, started)
    write_ctc_head(last, out)
    if base:
        strip_base(out, base)
    return out


def strip_base(out: Path, base: str) -> list[str]:
    """Leave out of `out`/delta.safetensors the tensors equal to those of delta folder `base` and write `out`/BASE
    naming it; returns the names left out. Raises FileNotFoundError for a `base` that is no delta folder."""
    from safetensors.torch import load_file, save_file

    from wolofmrl.build import delta_state, load_delta_dir

    under, _ = load_delta_dir(base)
    below = delta_state(under)
    path = out / "delta.safetensors"
    mine = load_file(str(path))
    same = sorted(k for k, v in mine.items() if k in below and below[k].shape == v.shape
                  and torch.equal(below[k].to(v.dtype), v))
    save_file({k: v for k, v in mine.items() if k not in same}, str(path),
              metadata={"format": "pt", "base": str(base)})
    (out / "BASE").write_text(f"{base}\n")
    return same


def write_ctc_head(last: tuple[Path, int, dict] | None, out: Path) -> bool:
    """With a reading loss (ctc_weight > 0), its head's blank and scale beside the delta (`CTC_HEAD`, which phase 2
    starts from), taken from the latest checkpoint `last`: keep-best keeps the model's parameters only. True if
    written."""
    from safetensors.torch import save_file

    from train.reading import CTC_HEAD

    state = last[2] if last else {}
    if "ctc.blank" not in state:
        return False
    save_file({"blank": state["ctc.blank"].float().contiguous(),
               "log_scale": state["ctc.log_scale"].float().reshape(1)}, str(out / CTC_HEAD))
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a train/train.py output_dir (log.jsonl, best/, checkpoints/)")
    p.add_argument("--out", required=True, help="folder for delta.safetensors + config_overrides.json")
    p.add_argument("--which", choices=("best", "last"), default="best")
    p.add_argument("--base", help="a delta folder the run started from (e.g. wolofmrl-text): its tensors are left "
                                  "out and named in BASE, as the committed speech deltas do")
    args = p.parse_args(argv)
    try:
        out = export(Path(args.run), Path(args.out), args.which, args.base)
    except (ValueError, FileNotFoundError) as err:
        raise SystemExit(f"train/export.py: {err}") from err
    print(f"wrote {out}/delta.safetensors ({args.which} parameters of {args.run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
