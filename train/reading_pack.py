"""Carry the reading recipe's runs (train/device_reading.sh) from one bare GPU machine to the next, in pieces.

    python train/reading_pack.py pack --root runs/reading --out $OUT         # there, at the end of a session
    python train/reading_pack.py unpack --pieces .reading_resume --root runs/reading   # there, the next session

`pack` writes reading.tar.part-aa, -ab, ... (at most 15 MiB each, at most 7) and reading.manifest (every piece's
sha256). Per run folder: log.jsonl, result.json; an unfinished run (or any phase-2 run, which a larger max_steps
may continue) also its latest complete checkpoint as accelerate wrote it (trainable parameters, optimizer,
scheduler, RNG states, trainer_state.json with the data position; byte for byte, its checksums still hold) and its
best parameters (fp16: the delta they end in is fp16); a finished run its delta, without the tensors equal to the
chosen stage-1 delta (`<root>/text`, carried once). Results come first: a checkpoint that does not fit the 7 pieces
beside them is left out whole and named (in the output and the manifest's `left_out`), never dropped silently.
Paths are relative to the repository root.

`unpack` gathers pieces from `--pieces` into a staging folder (the pieces may come over several calls, each carrying
what fits beside the backbones), and once the manifest's set is complete and every checksum holds, extracts them and
puts the stripped stage-1 tensors back into each delta. Raises SystemExit naming a missing or damaged piece.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# run as a script (device_reading.sh pack), this folder is sys.path[0] and `import train` would find train/train.py
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "train"]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from train.logger import accepted_starts  # noqa: E402

PIECE = 15 * 1024 * 1024
MAX_PIECES = 7  # 105 MiB: two device calls' worth (64 MiB a call; train/device_reading.sh pack, then send)
STAGE = Path("/tmp/reading_pieces")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def latest_checkpoint(run: Path) -> Path | None:
    done = sorted((run / "checkpoints").glob("step_*/trainer_state.json"))
    return done[-1].parent if done else None


def finished(run: Path) -> bool:
    result = run / "result.json"
    if not result.is_file() or not (run / "log.jsonl").is_file():
        return False
    starts = accepted_starts(run / "log.jsonl")  # the last accepted: a continued run's larger max_steps counts
    steps = starts[-1].get("config", {}).get("max_steps", 0) if starts else 0
    return json.loads(result.read_text()).get("step", 0) >= steps > 0


def metadata(path: Path) -> dict | None:
    """A safetensors file's own metadata (what wrote it, on what data), kept through pack and unpack."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.metadata()


def fp16_bytes(path: Path) -> bytes:
    from safetensors.torch import load_file, save

    import torch
    return save({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in load_file(str(path)).items()},
                metadata=metadata(path))


def stripped_delta(delta: Path, base: dict) -> tuple[bytes, list[str]]:
    from safetensors.torch import load_file, save

    tensors = load_file(str(delta / "delta.safetensors"))
    same = sorted(k for k, v in tensors.items() if k in base and base[k].shape == v.shape and bool((base[k] == v).all()))
    kept = {k: v for k, v in tensors.items() if k not in same}
    return save(kept, metadata=metadata(delta / "delta.safetensors")), same


def tar_bytes(group: list[tuple[str, bytes]]) -> int:
    """An upper bound of what `group`'s files take in a tar: a header and 512-byte blocks per file, + room for a long
    name's extra header."""
    return sum(1536 + -(-len(d) // 512) * 512 for _, d in group)


def pack(root: Path, out: Path) -> list[Path]:
    """The tar of `root`'s runs, split into pieces in `out`, + reading.manifest.

    What a session must bring home comes first and always goes in: the calls' logs, stage 1, each run's log and
    result, a finished run's delta (stripped of the stage-1 tensors), an unfinished run's best parameters (fp16).
    Then, as far as the pieces allow, the checkpoints that let a run continue: an unfinished run's first, then a
    finished phase-2 run's (which a larger max_steps may continue). A checkpoint that does not fit is left out whole,
    printed and listed in the manifest's `left_out` (that run then cannot continue from where it stopped; its
    results are home). Raises SystemExit if the results alone need more than MAX_PIECES pieces."""
    from safetensors.torch import load_file

    base = load_file(str(root / "text" / "delta.safetensors")) if (root / "text" / "delta.safetensors").is_file() else {}
    results, resumable, optional = [], [], []  # (path, bytes); checkpoints as one group each: all or nothing

    def add(group, path, data: bytes):
        group.append((str(Path(path).relative_to(root)), data))  # relative: extracted under the next machine's root

    for path in sorted((root / "text").glob("*")) if base else []:
        add(results, path, path.read_bytes())
    for path in sorted((root / "logs").glob("*.log")):  # the calls' own logs (chains, synth, text runs)
        add(results, path, path.read_bytes())
    for run in sorted(p for p in root.iterdir() if p.is_dir() and p.name not in ("text", "logs")):
        for name in ("log.jsonl", "result.json"):
            if (run / name).is_file():
                add(results, run / name, (run / name).read_bytes())
        done, checkpoint = finished(run), latest_checkpoint(run)
        if done and (run / "delta" / "delta.safetensors").is_file():
            data, same = stripped_delta(run / "delta", base)
            add(results, run / "delta" / "delta.safetensors", data)
            add(results, run / "delta" / "stripped.json", json.dumps(same).encode())
            for extra in sorted((run / "delta").glob("*")):
                if extra.name != "delta.safetensors":
                    add(results, extra, extra.read_bytes())
        continues = checkpoint is not None and (not done or not run.name.startswith(("align_", "text_")))
        # the best parameters: an unfinished run's result (train/export.py reads them), or the keep-best state
        # that goes with a checkpoint that continues; a finished run's delta already is them
        best = []
        if (not done or continues) and (run / "best" / "best.json").is_file():
            if (run / "best" / "trainable.safetensors").is_file():
                add(best, run / "best" / "best.json", (run / "best" / "best.json").read_bytes())
                add(best, run / "best" / "trainable.safetensors", fp16_bytes(run / "best" / "trainable.safetensors"))
            else:
                print(f"pack: {run / 'best'} has best.json without trainable.safetensors: left out", file=sys.stderr)
        if not done:
            results += best
        if continues:
            group = [] if not done else best
            for f in sorted(checkpoint.iterdir()):
                add(group, f, f.read_bytes())
            (resumable if not done else optional).append((str(checkpoint.relative_to(root)), group))
    budget = MAX_PIECES * PIECE - 2 * 10240  # less the end blocks and the last record's padding
    used = tar_bytes(results)
    if used > budget:
        biggest = sorted(((n, len(d)) for n, d in results), key=lambda kv: -kv[1])[:8]
        raise SystemExit(f"pack: the results alone are {used / 2**20:.1f} MiB, more than {MAX_PIECES} pieces of "
                         f"15 MiB; biggest files: {biggest}. Train fewer runs at once (RUNS=...).")
    files, left_out = list(results), []
    for name, group in resumable + optional:
        size = tar_bytes(group)
        if used + size <= budget:
            files += group
            used += size
        else:
            left_out.append(name)
            print(f"pack: left out checkpoint {name} ({size / 2**20:.1f} MiB; it does not fit {MAX_PIECES} pieces "
                  f"beside the results): that run cannot continue from it, its results are packed", file=sys.stderr)
    buffer, listing = io.BytesIO(), {}
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            listing[name] = len(data)
    data = buffer.getvalue()
    pieces = [data[i: i + PIECE] for i in range(0, len(data), PIECE)]
    if len(pieces) > MAX_PIECES:  # tar_bytes over-counts: this would be a bug
        raise SystemExit(f"pack: {len(data) / 2**20:.1f} MiB needs {len(pieces)} pieces, more than {MAX_PIECES}")
    out.mkdir(parents=True, exist_ok=True)
    names = [f"reading.tar.part-{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(len(pieces))]
    for name, piece in zip(names, pieces):
        (out / name).write_bytes(piece)
    manifest = {"pieces": {n: sha256(p) for n, p in zip(names, pieces)}, "tar_sha256": sha256(data),
                "files": listing, "mib": round(len(data) / 2**20, 2), "left_out": left_out}
    (out / "reading.manifest").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"packed {len(listing)} files, {manifest['mib']} MiB, into {len(pieces)} pieces in {out}"
          + (f"; left out {len(left_out)} checkpoint(s): {left_out}" if left_out else ""))
    return [out / n for n in names]


def unpack(pieces: Path, root: Path, stage: Path = STAGE) -> bool:
    """Gather `pieces` into `stage`; extract under `root` when complete. Returns True when extracted."""
    from safetensors.torch import load_file, save_file

    stage.mkdir(parents=True, exist_ok=True)
    for f in sorted(pieces.glob("reading*")) if pieces.is_dir() else []:
        shutil.copyfile(f, stage / f.name)
    if not (stage / "reading.manifest").is_file():
        raise SystemExit(f"unpack: no reading.manifest in {pieces} or {stage}: carry it with the pieces")
    manifest = json.loads((stage / "reading.manifest").read_text())
    missing = [n for n in manifest["pieces"] if not (stage / n).is_file()]
    if missing:
        print(f"unpack: have {len(manifest['pieces']) - len(missing)} of {len(manifest['pieces'])} pieces; "
              f"still missing {missing} (carry them in the next call)")
        return False
    data = b""
    for name, digest in manifest["pieces"].items():
        piece = (stage / name).read_bytes()
        if sha256(piece) != digest:
            raise SystemExit(f"unpack: piece {name} is damaged (sha256 mismatch): carry it again")
        data += piece
    if sha256(data) != manifest["tar_sha256"]:
        raise SystemExit("unpack: the pieces do not make the packed tar (sha256 mismatch): pack again")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(root, filter="data")
    base_file = root / "text" / "delta.safetensors"
    for listed in root.glob("*/delta/stripped.json"):
        names = json.loads(listed.read_text())
        if names:
            base = load_file(str(base_file))
            delta = listed.parent / "delta.safetensors"
            save_file({**load_file(str(delta)), **{k: base[k] for k in names}}, str(delta), metadata=metadata(delta))
        listed.unlink()
    left_out = manifest.get("left_out") or []
    print(f"unpacked {len(manifest['files'])} files ({manifest['mib']} MiB) under {root}"
          + (f"; pack left out {left_out}: those runs cannot continue from there" if left_out else ""))
    return True


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pk = sub.add_parser("pack")
    pk.add_argument("--root", default="runs/reading")
    pk.add_argument("--out", required=True)
    up = sub.add_parser("unpack")
    up.add_argument("--pieces", default=".reading_resume")
    up.add_argument("--root", default="runs/reading")
    up.add_argument("--stage", default=str(STAGE), help="where pieces gather over several calls")
    args = p.parse_args(argv)
    if args.cmd == "pack":
        pack(Path(args.root), Path(args.out))
    else:
        unpack(Path(args.pieces), Path(args.root), Path(args.stage))


if __name__ == "__main__":
    sys.exit(main())
