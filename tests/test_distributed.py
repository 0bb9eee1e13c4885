"""Two processes give the loss and gradients of one process on the combined batch: on CPU (torchrun, gloo) in
`make test`, and on two GPUs (NCCL) when the machine has them. On a GPU machine, the same check by one command:

    NCCL_NVLS_ENABLE=0 torchrun --standalone --nproc_per_node 2 tests/dist_worker.py dist.json --device cuda
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
CASES = ("fusion", "fusion-gradcache", "dual", "text")


def run_worker(tmp_path, device: str) -> dict:
    out = tmp_path / "dist.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "NCCL_NVLS_ENABLE": "0"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(ROOT / "tests" / "dist_worker.py"), str(out), "--device", device]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def check(report: dict, tolerance: float):
    assert report["world"] == 2 and report["tolerance"] == tolerance
    for case in CASES:
        r = report[case]
        assert r["loss_2proc"] == pytest.approx(r["loss_1proc"], rel=1e-5), case
        assert r["max_abs_grad_diff"] <= tolerance * max(1.0, r["max_abs_grad"]), case
        assert r["params"] and r["ok"], case


def test_two_processes_equal_one(tmp_path):
    check(run_worker(tmp_path, "cpu"), 1e-5)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs (NCCL)")
def test_two_gpus_equal_one(tmp_path):
    report = run_worker(tmp_path, "cuda")
    assert "MULTI_GPU" in report["backend"]
    check(report, 1e-4)
