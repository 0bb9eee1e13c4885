"""eval/bench.py's environment: machine facts, the time budget, peak memory, device sync, the log line."""
from __future__ import annotations

import os
import platform
import threading
import time
from pathlib import Path

import numpy as np
import torch

ACCEL = "cuda"  # the accelerator's torch device (a test points it at the CPU to run the GPU code path)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"

def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()

def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1

def device_label(device: str, threads: int | None = None) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    return f"{cpu_model()} ({threads or torch.get_num_threads()} threads; {cpu_cores()} cores visible)"

def environment(args) -> dict:
    import transformers

    env = {"cpu": cpu_model(), "cpu_cores_visible": cpu_cores(), "python": platform.python_version(),
           "torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__,
           "cpu_threads_for_cpu_rows": args.cpu_threads, "hostname_kind": platform.machine()}
    try:
        import faiss

        env["faiss"] = faiss.__version__
    except ImportError:
        env["faiss"] = None
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    env["load_average_at_start"] = [round(x, 2) for x in load] if load else None
    return env

class Budget:
    def __init__(self, seconds: float):
        self.start, self.seconds = time.time(), seconds

    def used(self) -> float:
        return time.time() - self.start

    def left(self) -> float:
        return self.seconds - self.used()

def log(msg: str):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)

def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

class PeakMemory:
    """Peak memory while the block runs: CUDA allocator peak on GPU, sampled process RSS on CPU."""

    def __init__(self, device: str):
        self.device, self.peak_mb, self.above_start_mb = device, None, None

    def __enter__(self):
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self.peak = rss_bytes()
            self.stop = threading.Event()
            self.thread = threading.Thread(target=self._sample, daemon=True)
            self.thread.start()
        return self

    def _sample(self):
        while not self.stop.wait(0.005):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc):
        if self.device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated()
        else:
            self.stop.set()
            self.thread.join()
            peak = max(self.peak, rss_bytes())
        self.peak_mb = round(peak / 2**20, 1)
        self.above_start_mb = round((peak - self.base) / 2**20, 1)
        return False

def sync(device: str):
    if device == "cuda":
        torch.cuda.synchronize()
