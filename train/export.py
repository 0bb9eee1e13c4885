"""Write the delta of a run that stopped before it wrote one: its best parameters (keep-best) or its latest checkpoint.

A run cut short by its time guard across device sessions (train/device_reading.sh) carries `best/` and its latest
`checkpoints/step_*` home (train/reading_pack.py), but no `delta/`: that is written when a run finishes. This
rebuilds the model as the run's logged config says (backbones, `init_delta`), loads the chosen parameters and
writes `delta.safetensors` + `config_overrides.json` + `training.json` exactly as `train/train.py` does, so that
`python -m wolofmrl.build --delta OUT` and `eval/run.py` can load it.

    python train/export.py --run runs/reading/align_fusion_ctc_s0 --out runs/reading/export/align_fusion_ctc_s0
    python train/export.py --run RUN --which last --out OUT      # the latest checkpoint instead of the best

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

from train.checkpoints import write_delta  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.model import load_init_delta, load_model, select_trainable  # noqa: E402


def run_config(run: Path) -> TrainConfig:
    """The config the run logged in its `start` event (the last one: a resumed run logs one per start).

    Raises:
        FileNotFoundError: no log.jsonl; ValueError: no start event."""
    log = run / "log.jsonl"
    if not log.is_file():
        raise FileNotFoundError(f"--run {run}: no log.jsonl; pass a train/train.py output_dir")
    starts = [json.loads(line) for line in log.open() if '"event": "start"' in line]
    if not starts:
        raise ValueError(f"{log}: no start event; the run never started")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in starts[-1]["config"].items() if k in known})


def chosen_parameters(run: Path, which: str) -> tuple[dict, dict]:
    """({name: tensor}, {"which", "step", "file"}) of the run's best parameters or latest checkpoint.

    Raises:
        FileNotFoundError: the run has no such parameters."""
    from safetensors.torch import load_file

    if which == "best":
        path = run / "best" / "trainable.safetensors"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: the run kept no best parameters; use --which last")
        step = json.loads((run / "best" / "best.json").read_text())["step"]
    else:
        done = sorted((run / "checkpoints").glob("step_*/model.safetensors"))
        if not done:
            raise FileNotFoundError(f"{run}/checkpoints: no checkpoint with model.safetensors")
        path, step = done[-1], int(done[-1].parent.name.split("_")[-1])
        # accelerate saved the pair encoder that wraps the model: its names start with "model."
        state = {k.removeprefix("model."): v for k, v in load_file(str(path)).items()}
        return state, {"which": which, "step": step, "file": str(path)}
    return load_file(str(path)), {"which": which, "step": step, "file": str(path)}


def export(run: Path, out: Path, which: str = "best") -> Path:
    """Write the delta of `run`'s chosen parameters to `out` (see the module docstring); returns `out`.

    Raises:
        ValueError: the parameters do not match the model the config builds (names or shapes listed)."""
    cfg = run_config(run)
    state, chosen = chosen_parameters(run, which)
    model, _processor, overrides = load_model(cfg)
    started = load_init_delta(model, cfg.init_delta)
    trainable = select_trainable(model, cfg)
    params = dict(model.named_parameters())
    missing = sorted(set(trainable) - set(state))
    wrong = sorted(n for n in state if n not in params or params[n].shape != state[n].shape)
    if missing or wrong:
        raise ValueError(f"{chosen['file']} does not fit the model of {run}/log.jsonl: missing {missing[:5]}, "
                         f"unknown or misshapen {wrong[:5]}")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value.to(params[name].dtype))
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    info = {"stage": cfg.stage, "data": cfg.data_name, "steps": chosen["step"], "metrics": result,
            "config": dataclasses.asdict(cfg), "trainable": trainable, "started_from": sorted(started),
            "exported": chosen}
    return write_delta(model, out, overrides, info, started)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="a train/train.py output_dir (log.jsonl, best/, checkpoints/)")
    p.add_argument("--out", required=True, help="folder for delta.safetensors + config_overrides.json")
    p.add_argument("--which", choices=("best", "last"), default="best")
    args = p.parse_args(argv)
    out = export(Path(args.run), Path(args.out), args.which)
    print(f"wrote {out}/delta.safetensors ({args.which} parameters of {args.run})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
