"""train/device_reading.sh `chain`: what each phase of a run is launched with (the run name's options, STEPS1,
PHASE1_FROM, PHASE<n>_SET), read from a scratch copy of the script whose train/train.py only records its arguments
and writes the result.json a finished run leaves."""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "train" / "device_reading.sh"

RECORDER = '''import json, os, sys
args, sets = sys.argv[1:], {}
config = args[args.index("--config") + 1]
for i, a in enumerate(args):
    if a == "--set":
        key, _, value = args[i + 1].partition("=")
        sets[key] = value
with open("calls.jsonl", "a") as f:
    f.write(json.dumps({"config": config, "sets": sets}) + "\\n")
os.makedirs(sets["output_dir"], exist_ok=True)
with open(os.path.join(sets["output_dir"], "result.json"), "w") as f:
    json.dump({"step": int(sets["max_steps"])}, f)
'''


def chain(tmp_path: Path, run: str, **env) -> list[dict]:
    root = tmp_path / run
    (root / "train").mkdir(parents=True)
    shutil.copy(SCRIPT, root / "train" / "device_reading.sh")
    (root / "train" / "train.py").write_text(RECORDER)
    deadline = int(time.time()) + 3600
    out = subprocess.run(["bash", "train/device_reading.sh", "chain", run, str(deadline)], cwd=root,
                         capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return [json.loads(line) for line in open(root / "calls.jsonl")]


def test_chain_gives_each_phase_its_steps_options_and_start(tmp_path):
    calls = chain(tmp_path, "fusion_ctc_a2", STEPS1="5", STEPS="3", CTC_WEIGHT="2.0",
                  PHASE2_SET="speech_langs=[all] augment.prob=0.5")
    assert [c["config"] for c in calls] == ["train/configs/speech_align_fusion.yaml", "train/configs/speech_fusion.yaml"]
    one, two = (c["sets"] for c in calls)
    assert one["max_steps"] == "5" and two["max_steps"] == "3"  # STEPS1 is phase 1's alone
    for sets in (one, two):  # the run name's options reach both phases
        assert sets["ctc_weight"] == "2.0" and sets["model.builder.adapter_layers"] == "2"
    assert one["output_dir"] == "runs/reading/align_fusion_ctc_a2_s0" and one["init_delta"] == "runs/reading/text"
    assert two["init_delta"] == "runs/reading/align_fusion_ctc_a2_s0/delta"
    assert "speech_langs" not in one and two["speech_langs"] == "[all]" and two["augment.prob"] == "0.5"


def test_chain_from_a_committed_phase_1_runs_phase_2_only(tmp_path):
    calls = chain(tmp_path, "dual", STEPS="4", PHASE1_FROM="weights/wolofmrl-fusion-read")
    assert len(calls) == 1 and calls[0]["config"] == "train/configs/speech_dual.yaml"
    sets = calls[0]["sets"]
    assert sets["init_delta"] == "weights/wolofmrl-fusion-read" and sets["ctc_weight"] == "0"
    assert "model.builder.adapter_layers" not in sets and sets["output_dir"] == "runs/reading/dual_s0"


def test_chain_run_name_lora_reaches_both_phases(tmp_path):
    """_l<R>: a rank-R LoRA in the speech encoder, in phase 1 and phase 2 alike (phase 2's init_delta holds it)."""
    calls = chain(tmp_path, "fusion_ctc_l16", STEPS="2")
    assert len(calls) == 2
    for c in calls:
        assert c["sets"]["model.builder.speech_lora_rank"] == "16" and "model.builder.adapter_layers" not in c["sets"]
    assert calls[0]["sets"]["output_dir"] == "runs/reading/align_fusion_ctc_l16_s0"
