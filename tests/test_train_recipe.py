"""The quality recipe of train/ on tiny random models (real tokenizer, real feature extractor) and synthetic signals
(not speech): per-language speech targets, on-the-fly augmentation, the two-phase curriculum with keep-best on the
hard dev condition, the stage-1 text LoRA merged into a delta that loads without peft, and choosing by dev."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `train/` is a folder of scripts, not installed
from train.choose import choose  # noqa: E402
from train.speech_data import AugmentedSpeechPairs, speech_features, speech_rows, wave_features  # noqa: E402
from train.config import TrainConfig, load_config  # noqa: E402
from train.data import synthetic_rows  # noqa: E402
from train.train import train  # noqa: E402
from wolofmrl.testing import tiny_model  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"


def log_lines(folder: Path) -> list[dict]:
    return [json.loads(line) for line in open(folder / "log.jsonl")]


def test_speech_targets_per_language_and_counts():
    rows = synthetic_rows(9, "train", 0, langs=["wo", "fr", "sw"])
    rows[0]["fr_text"] = ""  # a Wolof string with no French twin
    del rows[3]["transcript"]  # an older corpus row: falls back to wo_text
    logged = []
    auto = speech_rows(rows, ["wo", "fr", "sw"], 30.0, "auto", logged.append)
    kinds = {(r["speech_lang"], r["target_kind"]) for r in auto}
    assert kinds == {("wo", "fr"), ("wo", "transcript"), ("fr", "fr"), ("sw", "transcript")}
    assert logged[0]["per_lang_target"] == {"fr->fr": 3, "sw->transcript": 3, "wo->fr": 2, "wo->transcript": 1}
    sw = next(r for r in auto if r["speech_lang"] == "sw")
    assert sw["target"] == sw["transcript"] and sw["target"].startswith("sw: ")
    older = next(r for r in auto if r["id"] == rows[3]["id"])
    assert older["speech_lang"] == "wo" and older["transcript"] == rows[3]["wo_text"]

    aligned = speech_rows(rows, ["wo", "sw"], 30.0, "transcript", logged.append)
    assert all(r["target"] == r["transcript"] for r in aligned) and len(aligned) == 6
    assert logged[1]["dropped_speech_lang"] == 3
    french = speech_rows(rows, ["wo", "sw"], 30.0, "fr", logged.append)
    assert {r["speech_lang"] for r in french} == {"wo"} and logged[2]["dropped_no_fr_target"] == 4
    with pytest.raises(ValueError, match="speech_target"):
        speech_rows(rows, ["wo"], 30.0, "french", logged.append)


def test_augmented_clips_change_each_epoch_and_features_match_the_processor():
    pytest.importorskip("wolofmrl.augment")
    rows = speech_rows(synthetic_rows(6, "train", 1), ["wo"], 30.0, "auto", lambda _: None)
    data = AugmentedSpeechPairs(rows, {"preset": "train", "prob": 1.0, "babble": 2}, seed=3, max_seconds=30.0)
    a, again, next_epoch = data[(2, 0)], data[(2, 0)], data[(2, 1)]
    assert np.array_equal(a["wave"], again["wave"])  # reproducible (resume)
    assert a["wave"].shape != next_epoch["wave"].shape or not np.allclose(a["wave"], next_epoch["wave"])
    assert a["target"] == rows[2]["fr_text"] and a["transcript"] == rows[2]["wo_text"]

    _, processor = tiny_model("fusion")
    # the processor trims silence to whole-frame margins; trimming is idempotent, so prepared clips go through
    # the processor unchanged and the device path (one batched STFT) must give its features
    waves = processor.prepare_audio([data[(i, 0)]["wave"] for i in range(4)], sampling_rate=16000)
    batched = speech_features(processor, waves, "cpu")
    reference = processor(audio=waves, sampling_rate=16000, return_tensors="pt")
    assert torch.equal(batched["speech_mask"], reference["attention_mask"])
    torch.testing.assert_close(batched["input_features"], reference["input_features"], atol=2e-4, rtol=0)
    alone = wave_features(processor, waves[1])
    torch.testing.assert_close(batched["input_features"][1, :, : alone.shape[-1]], torch.from_numpy(alone),
                               atol=2e-4, rtol=0)


def test_curriculum_phase1_alignment_then_phase2_with_hard_dev(tmp_path):
    pytest.importorskip("wolofmrl.augment")
    phase1 = load_config(CONFIGS / "cpu_tiny_recipe.yaml", [
        f"output_dir={tmp_path}/align_s{{seed}}", "seed=2", "max_steps=4", "eval_every=2", "save_every=0",
        "batch_size=6", "data.synthetic=24", "data.dev=8", "features_on=device"])
    assert phase1.output_dir == f"{tmp_path}/align_s2"  # "{seed}" in paths: one folder per seed
    result = train(phase1)
    lines = log_lines(tmp_path / "align_s2")
    rows = [r for r in lines if r.get("event") == "rows"]
    assert rows[0]["per_lang_target"] == {"fr->transcript": 8, "sw->transcript": 8, "wo->transcript": 8}
    assert any(r.get("event") == "augment" for r in lines)
    evals = [r for r in lines if r.get("event") == "eval"]
    hard = [np.mean([v for k, v in r.items() if k.startswith("speech2fr_hard/")]) for r in evals]
    assert all(abs(r["dev_score"] - h) < 1e-9 for r, h in zip(evals, hard))  # keep-best on the hard condition
    assert "speech2fr_hard/R@10/48" in result and "speech2fr/R@10/48" in result

    phase2 = TrainConfig(**{**{k: getattr(phase1, k) for k in ("stage", "model", "data", "augment", "dev_hard",
                                                               "batch_size", "bucket_batches", "distill",
                                                               "distill_weight")},
                            "speech_langs": ["wo"], "speech_target": "auto", "features_on": "worker",
                            "init_delta": str(tmp_path / "align_s2" / "delta"), "output_dir": str(tmp_path / "p2"),
                            "max_steps": 2, "eval_every": 0, "save_every": 0, "save_model": False, "resume": None,
                            "lr": 1e-3})
    train(phase2)
    start = load_file(str(tmp_path / "align_s2" / "delta" / "delta.safetensors"))
    end = load_file(str(tmp_path / "p2" / "delta" / "delta.safetensors"))
    assert set(end) == set(start)
    assert not torch.equal(start["adapter.proj.weight"], end["adapter.proj.weight"])  # phase 2 trained on
    info = json.loads((tmp_path / "p2" / "delta" / "training.json").read_text())
    assert "adapter.proj.weight" in info["started_from"]


def test_text_lora_is_merged_into_a_delta_that_loads_without_peft(tmp_path):
    cfg = TrainConfig(stage="text", model={"tiny": {"strategy": "fusion"}},
                      data={"synthetic": 24, "dev": 8, "words": 6}, output_dir=str(tmp_path / "lora"),
                      text_lora={"r": 4, "alpha": 8, "target_modules": ["query", "value"]}, word_repeat=2,
                      max_steps=4, batch_size=6, lr=5e-3, warmup_steps=1, eval_every=2, save_every=0,
                      save_model=True, resume=None, bucket_batches=2)
    result = train(cfg)
    assert "dev_score" in result and "text_wo2fr/R@1/48" in result
    pairs = next(r for r in log_lines(tmp_path / "lora") if r.get("event") == "text_pairs")
    assert pairs["wo-fr/word"] == 6 and pairs["pairs"] == 2 * (18 + 2 * 6)  # word pairs x word_repeat

    delta = load_file(str(tmp_path / "lora" / "delta" / "delta.safetensors"))
    assert not any("lora" in k for k in delta)
    layers = tiny_model("fusion")[0].config.text_config.num_hidden_layers
    merged = {k for k in delta if k.startswith("text_model.")}
    assert len(merged) == 2 * layers and all(k.endswith(("query.weight", "value.weight")) for k in merged)

    fresh, processor = tiny_model("fusion")  # what the builder does: fresh backbones + the delta, no peft
    base = {k: fresh.state_dict()[k].clone() for k in merged}
    assert any(not torch.allclose(base[k], delta[k].float(), atol=1e-3) for k in merged)  # the LoRA did train
    fresh.load_delta(delta)
    from transformers import AutoModel

    saved = AutoModel.from_pretrained(tmp_path / "lora" / "model", trust_remote_code=True).eval()
    text = processor(text=["kër ndox", "xale yi dëkk"], text_kind="query", return_tensors="pt")
    with torch.no_grad():
        a = fresh.eval().get_text_embeddings(**text)
        b = saved.get_text_embeddings(**text)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999  # fp16 delta vs the fp32 merged model


def test_choose_keeps_the_run_with_the_best_dev_score(tmp_path):
    for name, score in (("head", 0.4), ("lora", 0.6)):
        (tmp_path / name / "delta").mkdir(parents=True)
        (tmp_path / name / "delta" / "delta.safetensors").write_bytes(name.encode())
        (tmp_path / name / "result.json").write_text(json.dumps({"dev_score": score}))
    kept = choose([str(tmp_path / "head"), str(tmp_path / "lora")], tmp_path / "out")
    assert kept == str(tmp_path / "lora")
    assert (tmp_path / "out" / "delta.safetensors").read_bytes() == b"lora"
    assert json.loads((tmp_path / "out" / "choice.json").read_text())["kept"] == kept
    with pytest.raises(FileNotFoundError, match="has not finished"):
        choose([str(tmp_path / "missing")], tmp_path / "out2")
