"""The run log: JSONL (+ TensorBoard when installed) on the main process; every line names the data."""

from __future__ import annotations

import json
import time
from pathlib import Path

from train.config import TrainConfig

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


def accepted_starts(log: Path) -> list[dict]:
    """The `start` events of a run's log.jsonl, oldest first: one per accepted attempt (train.py logs `start` only
    once resume_or_start has accepted it; a refused resume logs `refused` instead). The last one holds the settings
    the run's newest checkpoint and delta were trained with."""
    return [json.loads(line) for line in Path(log).open() if '"event": "start"' in line]
