"""Make eval/device_speed.sh's backbone bundle fit the device's 64 MiB beside the faiss wheel (issue 20).

    python eval/speed_carry.py strip .device_speed/carry                  # here, after wolofmrl.portable pack
    python eval/speed_carry.py randomize /tmp/speed_backbones/whisper-base   # there, after portable unpack

The Whisper-base encoder (38 MB compressed) is carried as zeros of its exact shapes and dtypes (a few KB once
compressed) and filled there with seeded random values (normal, std 0.02; LayerNorm weights 1): the SAME
architecture and shapes, so the same FLOPs and kernels, but not Whisper's trained values. Speed does not depend
on the values; random rather than zero values keep the GPU's power draw (and clocks) those of real data. Every
speech figure from such a run says so. The text tower (multilingual-e5-small) travels exact.
"""

from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

MARK = "WHISPER_RANDOM"


def strip(carry: Path) -> None:
    path = carry / "whisper-base.safetensors.xz"
    tmp = carry / "whisper-base.tmp.safetensors"
    tmp.write_bytes(lzma.decompress(path.read_bytes()))
    with safe_open(str(tmp), "np") as f:
        meta = f.metadata()
    zeros = {k: np.zeros_like(v) for k, v in load_file(str(tmp)).items()}
    save_file(zeros, str(tmp), metadata=meta)
    path.write_bytes(lzma.compress(tmp.read_bytes(), preset=9, format=lzma.FORMAT_XZ))
    tmp.unlink()
    (carry / MARK).write_text(json.dumps({"tensors": len(zeros), "note": "zeros; randomized on arrival"}))
    print(f"stripped {len(zeros)} Whisper tensors: {path.stat().st_size / 2**20:.2f} MiB")


def randomize(folder: Path, seed: int = 0) -> None:
    """Overwrite `folder`'s weights with random values: only a folder unpacked from a stripped bundle (it must not
    be a real converted backbone: refuses unless its weights are all zero)."""
    import torch
    from safetensors.torch import load_file as load_pt
    from safetensors.torch import save_file as save_pt

    gen = torch.Generator().manual_seed(seed)
    state = load_pt(str(folder / "model.safetensors"))
    if any(bool(v.any()) for v in state.values()):
        raise SystemExit(f"{folder} holds non-zero weights: not a stripped bundle's unpack; refusing to randomize it")
    for key, value in state.items():
        if "layer_norm" in key and key.endswith("weight"):
            state[key] = torch.ones_like(value)
        else:
            state[key] = (torch.randn(value.shape, generator=gen) * 0.02).to(value.dtype)
    save_pt(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / MARK).write_text("random values of whisper-base's shapes (eval/speed_carry.py)\n")
    print(f"randomized {len(state)} tensors in {folder}")


if __name__ == "__main__":
    {"strip": strip, "randomize": randomize}[sys.argv[1]](Path(sys.argv[2]))
