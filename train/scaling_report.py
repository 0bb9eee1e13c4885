"""Like-for-like scaling of one training recipe on 1 and N GPUs (issue 22): samples/s, scaling efficiency, peak
memory and the dev metric at the end, from the runs' result.json files (written by train/train.py).

    python train/scaling_report.py runs/scale_1gpu runs/scale_2gpu [--json scaling.json]

Scaling efficiency = (samples/s on N GPUs) / (N x samples/s on 1 GPU): 1.0 is perfect linear scaling. The runs
must share the global batch, data, seed and step budget (train/device_multigpu.sh launches them so); the report
checks the step counts and global batch and says when they differ.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def read_run(folder: str | Path) -> dict:
    """{name, processes, global_batch, steps, samples_per_s, peak_memory_gib, dev_score} of one finished run.

    Raises:
        FileNotFoundError: the run has no result.json (it did not finish)."""
    folder = Path(folder)
    result = json.loads((folder / "result.json").read_text())
    perf = result.get("perf", {})
    procs = int(perf.get("processes", 1))
    delta_info = folder / "delta" / "training.json"
    cfg = json.loads(delta_info.read_text()).get("config", {}) if delta_info.is_file() else {}
    return {"name": folder.name, "processes": procs, "global_batch": cfg.get("batch_size", 0) * procs,
            "steps": result.get("step"), "samples_per_s": perf.get("samples_per_s"),
            "peak_memory_gib": perf.get("peak_memory_gib"), "dev_score": result.get("dev_score"),
            "device": perf.get("device")}


def report(runs: list[dict]) -> tuple[str, list[dict]]:
    """Markdown table + rows with `efficiency` against the 1-process run (the first run with processes == 1)."""
    base = next((r for r in runs if r["processes"] == 1), None)
    for r in runs:
        ok = base and base["samples_per_s"] and r["samples_per_s"]
        r["efficiency"] = r["samples_per_s"] / (r["processes"] * base["samples_per_s"]) if ok else None
    lines = ["| run | GPUs | global batch | steps | samples/s | scaling efficiency | peak memory (GiB/GPU) | dev score |",
             "|---|---|---|---|---|---|---|---|"]
    fmt = lambda v, f: "n/a" if v is None else format(v, f)  # noqa: E731
    for r in runs:
        lines.append(f"| {r['name']} | {r['processes']} | {r['global_batch']} | {r['steps']} | "
                     f"{fmt(r['samples_per_s'], '.0f')} | {fmt(r['efficiency'], '.1%')} | "
                     f"{fmt(r['peak_memory_gib'], '.1f')} | {fmt(r['dev_score'], '.4f')} |")
    if len({(r["global_batch"], r["steps"]) for r in runs}) > 1:
        lines.append("\nNOT like-for-like: the runs differ in global batch or steps (see the table).")
    return "\n".join(lines), runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders (output_dir of train/train.py), the 1-GPU run among them")
    p.add_argument("--json", help="also write the rows as JSON here")
    args = p.parse_args(argv)
    table, rows = report([read_run(r) for r in args.runs])
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
