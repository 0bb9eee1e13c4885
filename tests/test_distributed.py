"""Two CPU processes (torchrun, gloo) give the loss and gradients of one process on the combined batch."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_two_processes_equal_one(tmp_path):
    out = tmp_path / "dist.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "dist_worker.py"), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["world"] == 2
    for case in ("fusion", "fusion-gradcache", "dual", "text"):
        r = report[case]
        assert r["loss_2proc"] == pytest.approx(r["loss_1proc"], rel=1e-5), case
        assert r["max_abs_grad_diff"] <= 1e-5 * max(1.0, r["max_abs_grad"]), case
        assert r["params"], case
