"""train/scaling_report.py: the like-for-like scaling table of issue 22 from two runs' result.json files."""
import json

from train.scaling_report import main, read_run, report


def _run(folder, processes, per_gpu_batch, samples_per_s, steps=200):
    (folder / "delta").mkdir(parents=True)
    (folder / "result.json").write_text(json.dumps({
        "step": steps, "dev_score": 0.25,
        "perf": {"samples_per_s": samples_per_s, "processes": processes, "peak_memory_gib": 7.5, "device": "GPU"}}))
    (folder / "delta" / "training.json").write_text(json.dumps({"config": {"batch_size": per_gpu_batch}}))
    return folder


def test_efficiency_against_one_gpu(tmp_path):
    one = _run(tmp_path / "scale_1gpu", 1, 256, 1000.0)
    two = _run(tmp_path / "scale_2gpu", 2, 128, 1800.0)
    table, rows = report([read_run(one), read_run(two)])
    assert [r["global_batch"] for r in rows] == [256, 256]
    assert rows[0]["efficiency"] == 1.0 and abs(rows[1]["efficiency"] - 0.9) < 1e-12
    assert "90.0%" in table and "NOT like-for-like" not in table


def test_unequal_runs_are_flagged(tmp_path, capsys):
    one = _run(tmp_path / "a", 1, 256, 1000.0)
    two = _run(tmp_path / "b", 2, 256, 1800.0, steps=100)  # global batch 512, other step count
    assert main([str(one), str(two), "--json", str(tmp_path / "s.json")]) == 0
    assert "NOT like-for-like" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())[1]["global_batch"] == 512
