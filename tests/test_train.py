"""train/train.py on tiny random models (real tokenizer) and synthetic signals (not speech): a run whose loss
falls, exact resume, the text stage with its PCA baseline, outputs that AutoModel loads, the FLOPs formula."""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `train/` is a folder of scripts, not installed
from train.config import TrainConfig, load_config  # noqa: E402
from train.data import (BucketBatchSampler, Collator, SpeechPairs, cached_features, compute_features,  # noqa: E402
                        pad_features, synthetic_rows)
from train.flops import FlopCounter  # noqa: E402
from train.model import PairEncoder, load_model, select_trainable  # noqa: E402
from train.step import forward_backward, step_loss  # noqa: E402
from train.train import train  # noqa: E402
from wolofmrl.losses import MatryoshkaInfoNCE  # noqa: E402
from wolofmrl.testing import synthetic_waves, tiny_model  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "train" / "configs"


def tiny_cfg(tmp_path, name, **kw):
    base = dict(stage="speech", model={"tiny": {"strategy": "fusion", "num_prompt_tokens": 2}},
                data={"synthetic": 32, "dev": 8}, output_dir=str(tmp_path / name), batch_size=8, lr=1e-2,
                warmup_steps=2, logit_scale_init=20.0, bucket_batches=2, log_every=4, eval_every=0, save_every=0,
                save_model=False, resume=None)
    base.update(kw)
    return TrainConfig(**base)


def train_losses(output_dir):
    lines = [json.loads(line) for line in open(output_dir / "log.jsonl")]
    assert all("synthetic" in r["data"] for r in lines)  # every line names the data
    return [r["loss"] for r in lines if r.get("event") == "train"]


def test_config_yaml_and_overrides():
    cfg = load_config(CONFIGS / "cpu_tiny.yaml", ["max_steps=3", "model.tiny.strategy=dual", "dims=[48, 8]"])
    assert cfg.max_steps == 3 and cfg.model["tiny"]["strategy"] == "dual" and cfg.dims == [48, 8]
    with pytest.raises(ValueError, match="unknown config keys"):
        load_config(CONFIGS / "cpu_tiny.yaml", ["max_stpes=3"])
    for name in ("text_stage", "speech_fusion", "speech_dual"):
        assert load_config(CONFIGS / f"{name}.yaml").mixed_precision == "bf16"


def test_padding_matches_processor():
    _, processor = tiny_model("fusion")
    rows = synthetic_rows(3, "train", seed=0)
    feats, mask = pad_features(compute_features(rows, processor, 0), whisper=True)
    ref = processor(audio=[r["audio"] for r in rows], sampling_rate=16000, return_tensors="pt")
    assert torch.equal(feats, ref["input_features"]) and torch.equal(mask, ref["attention_mask"])


def test_bucket_sampler_is_deterministic_and_bucketed():
    lengths = np.random.default_rng(0).uniform(1, 10, size=50)
    sampler = BucketBatchSampler(lengths, batch_size=4, bucket_batches=3, seed=7)
    first = list(sampler)
    assert len(first) == len(sampler) == 12 and all(len(b) == 4 for b in first)
    flat = [i for b in first for i in b]
    assert len(set(flat)) == len(flat)
    assert first == list(sampler)  # same epoch, same batches
    spread = np.mean([np.ptp(lengths[b]) for b in first])
    assert spread < 0.5 * np.ptp(lengths)  # similar lengths batched together
    sampler.use_epoch(1)
    assert list(sampler) != first


def test_tiny_run_loss_falls_and_saves_loadable_model(tmp_path):
    cfg = tiny_cfg(tmp_path, "run", max_steps=24, save_model=True, delta_out=str(tmp_path / "weights"),
                   eval_every=12)
    result = train(cfg)
    losses = train_losses(tmp_path / "run")
    chance = 4 * math.log(8)  # 4 Matryoshka dims, 8 in-batch candidates
    assert losses[-1] < losses[0] - 0.5 and losses[-1] < chance, losses
    assert "speech2fr/R@10/48" in result and "topline/text_wo2fr/R@1/8" in result
    assert result["perf"]["samples_per_s"] > 0

    delta = load_file(str(tmp_path / "weights" / "delta.safetensors"))
    assert set(delta) == {"adapter.proj.weight", "adapter.proj.bias", "adapter.conv.weight", "adapter.conv.bias",
                          "prompt", "logit_scale"}
    assert all(t.dtype == torch.float16 for t in delta.values())
    overrides = json.loads((tmp_path / "weights" / "config_overrides.json").read_text())
    assert overrides == {"strategy": "fusion", "num_prompt_tokens": 2}

    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(tmp_path / "run" / "model", trust_remote_code=True).eval()
    rebuilt, processor = tiny_model("fusion", num_prompt_tokens=2)
    rebuilt.load_delta(delta)  # what the builder does: fresh backbones + the committed delta
    batch = processor(audio=synthetic_waves(3, seed=5), sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        a = loaded.get_speech_embeddings(**batch, dim=16)
        b = rebuilt.get_speech_embeddings(**batch, dim=16)
    assert torch.nn.functional.cosine_similarity(a, b).min() > 0.999  # fp16 delta vs fp32 folder


def test_resume_is_exact(tmp_path):
    # 20 rows / batch 4 = 5 micro-batches per epoch, 2 per step: steps straddle epochs, resume lands mid-epoch
    common = dict(data={"synthetic": 20, "dev": 8}, batch_size=4, grad_accum=2, max_steps=6, save_every=3)
    train(tiny_cfg(tmp_path, "straight", **common))
    stopped = train(tiny_cfg(tmp_path, "resumed", stop_after_steps=3, **common))
    assert stopped == {"stopped_at": 3}
    train(tiny_cfg(tmp_path, "resumed", resume="auto", **common))
    resumed_log = [json.loads(line) for line in open(tmp_path / "resumed" / "log.jsonl")]
    assert any(r.get("event") == "resume" and r["step"] == 3 for r in resumed_log)
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step_0000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoints" / "step_0000006" / "model.safetensors"))
    assert set(a) == set(b) and len(a) == 6  # trainable parameters only
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    at_3 = load_file(str(tmp_path / "resumed" / "checkpoints" / "step_0000003" / "model.safetensors"))
    assert not torch.equal(a["model.adapter.proj.weight"], at_3["model.adapter.proj.weight"])  # steps 4-6 did train


def test_resume_refuses_other_settings_and_names_damaged_files(tmp_path):
    from train.checkpoints import ResumeError, adapt_processes

    common = dict(data={"synthetic": 16, "dev": 8}, batch_size=4, max_steps=4, save_every=2)
    assert train(tiny_cfg(tmp_path, "run", stop_after_steps=2, **common)) == {"stopped_at": 2}
    for key, value in (("batch_size", 2), ("lr", 0.05), ("grad_accum", 2), ("seed", 3)):
        with pytest.raises(ResumeError, match=rf"{key}=.*--resume none"):
            train(tiny_cfg(tmp_path, "run", resume="auto", **{**common, key: value}))
    checkpoint = tmp_path / "run" / "checkpoints" / "step_0000002"
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    assert state["run"]["batch_size"] == 4 and state["run"]["processes"] == 1 and "optimizer.bin" in state["files"]
    with open(checkpoint / "optimizer.bin", "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    with pytest.raises(ResumeError, match=r"step_0000002/optimizer.bin is missing, truncated or corrupt.*--resume none"):
        train(tiny_cfg(tmp_path, "run", resume="auto", **common))
    # another process count is adapted explicitly: 2 processes x 3 batches = 6 batches of the sampler consumed
    state = {"step": 3, "epoch": 1, "batch_in_epoch": 3, "micro": 3, "run": {"processes": 2, "batch_size": 4}}
    logged = []
    assert adapt_processes(state, 1, logged.append)["batch_in_epoch"] == 6
    assert logged[0]["event"] == "resume_adapted" and "global batch changes from 8 to 4" in logged[0]["message"]


def test_text_stage_with_pca_baseline(tmp_path):
    cfg = tiny_cfg(tmp_path, "text", stage="text", data={"synthetic": 48, "dev": 16}, max_steps=8,
                   text_head_init="pca", lr=3e-3)
    result = train(cfg)
    for head in ("identity/", "pca/", ""):
        for m in (48, 32, 16, 8):
            assert f"{head}text_wo2fr/R@1/{m}" in result and f"{head}text_wo2fr/R@10/{m}" in result
    # a rotation keeps full-width cosines: same full-width recall as the frozen model
    assert result["pca/text_wo2fr/R@1/48"] == result["identity/text_wo2fr/R@1/48"]
    delta = load_file(str(tmp_path / "text" / "delta" / "delta.safetensors"))
    assert set(delta) == {"text_head.weight", "text_head.bias"}
    assert "strategy" not in json.loads((tmp_path / "text" / "delta" / "config_overrides.json").read_text())


def test_dual_with_distillation_gradcache_and_text_head_delta(tmp_path):
    text_delta = tmp_path / "head"
    torch.manual_seed(3)
    rotation = torch.linalg.qr(torch.randn(48, 48))[0]
    head = {"text_head.weight": rotation.half().contiguous(), "text_head.bias": torch.zeros(48).half()}
    text_delta.mkdir()
    from safetensors.torch import save_file

    save_file(head, str(text_delta / "delta.safetensors"))
    cfg = tiny_cfg(tmp_path, "dual", model={"tiny": {"strategy": "dual"}}, init_delta=str(text_delta), max_steps=3,
                   distill="cosine", distill_weight=0.5, transcript_weight=0.5, grad_cache_chunk=4, log_every=1)
    train(cfg)
    lines = [json.loads(line) for line in open(tmp_path / "dual" / "log.jsonl") if '"train"' in line]
    parts = [r for r in lines if r.get("event") == "train"][-1]
    assert math.isfinite(parts["loss"]) and "distill@8" in parts and "transcript_nce@48" in parts
    delta = load_file(str(tmp_path / "dual" / "delta" / "delta.safetensors"))
    # the speech delta carries the text head it started from, unchanged, so the builder rebuilds the same model
    assert torch.equal(delta["text_head.weight"], head["text_head.weight"])
    assert {"adapter.proj.weight", "adapter.mlp.1.weight", "logit_scale"} <= set(delta)


def test_flop_formula_matches_flop_counter():
    from torch.utils.flop_counter import FlopCounterMode

    cfg = TrainConfig(stage="speech", model={"tiny": {"strategy": "fusion", "num_prompt_tokens": 2}})
    model, processor, _ = load_model(cfg)
    select_trainable(model, cfg)
    rows = synthetic_rows(4, "train", seed=0)
    for r in rows:  # equal lengths: the formula counts real tokens, the counter counts padded shapes
        r["audio"], r["fr_text"] = rows[0]["audio"], rows[0]["fr_text"]
    data = SpeechPairs(rows, compute_features(rows, processor, 0))
    batch = Collator(processor, "speech", 64, need_transcript=False, whisper=True)([data[i] for i in range(4)])
    batch["groups"] = torch.arange(4)
    crit = MatryoshkaInfoNCE(model.config.matryoshka_dims)
    from accelerate import Accelerator

    with FlopCounterMode(display=False) as counter:
        forward_backward(PairEncoder(model, cfg, False), batch, lambda o, b: step_loss(o, b, crit, None, 0),
                         Accelerator(cpu=True), 1.0, True, 0)
    measured, estimated = counter.get_total_flops(), FlopCounter(model, cfg, False)(batch)
    print(f"FLOPs estimated {estimated:.4g}, measured {measured:.4g}")
    assert 0.8 < estimated / measured < 1.25, (estimated, measured)


def write_corpus(root, n_sentences=8, voices=2, seed=0):
    """A small corpus in the CONTRACT.md shard schema: FLAC bytes of synthetic signals (not speech), Wolof voices
    of each sentence, and French-only rows (empty wo_text, French speech) as the curation writes them."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq
    import soundfile as sf
    from datasets import Audio, Features, Value

    schema = Features({
        "id": Value("string"), "sentence_id": Value("string"), "source": Value("string"),
        "source_key": Value("string"), "license": Value("string"), "wo_text": Value("string"),
        "fr_text": Value("string"), "speech_lang": Value("string"), "audio": Audio(sampling_rate=16000),
        "voice": Value("string"), "duration_s": Value("float64"), "synthetic": Value("bool"), "split": Value("string"),
    }).arrow_schema
    for split, n in (("train", n_sentences), ("dev", n_sentences // 2)):
        texts = synthetic_rows(n + 2, split, seed)
        waves = synthetic_waves((n + 2) * voices, seconds=(0.3, 0.9), seed=seed + len(split))
        rows = []
        for i, t in enumerate(texts):
            fr_only = i >= n
            for v in range(1 if fr_only else voices):
                buf = io.BytesIO()
                wave = waves[i * voices + v]
                sf.write(buf, wave, 16000, format="FLAC")
                rows.append({"id": f"{split}-{i}-{v}", "sentence_id": f"{split}-s{i}", "source": "fixture",
                             "source_key": str(i), "license": "MIT", "wo_text": "" if fr_only else t["wo_text"],
                             "fr_text": t["fr_text"], "speech_lang": "fr" if fr_only else "wo",
                             "audio": {"bytes": buf.getvalue(), "path": f"{split}-{i}-{v}.flac"}, "voice": f"v{v}",
                             "duration_s": len(wave) / 16000, "synthetic": True, "split": split})
        (root / split).mkdir(parents=True)
        half = len(rows) // 2
        for k, part in enumerate((rows[:half], rows[half:])):
            pq.write_table(pa.Table.from_pylist(part, schema=schema), root / split / f"{split}-{k:05d}.parquet")
    return root


def test_corpus_shards_both_stages(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    text = train(tiny_cfg(tmp_path, "text", stage="text", data={"corpus": str(corpus)}, batch_size=4, max_steps=3))
    assert "pca/text_wo2fr/R@1/8" in text and "text_wo2fr/R@10/48" in text
    cfg = tiny_cfg(tmp_path, "speech", data={"corpus": str(corpus)}, speech_langs=["all"], batch_size=6,
                   num_workers=1, max_steps=3, distill="mse", distill_weight=0.1)
    speech = train(cfg)
    assert cfg.speech_langs == ["fr", "wo"]  # [all]: every language the corpus speaks
    lines = [json.loads(line) for line in open(tmp_path / "speech" / "log.jsonl")]
    rows = [r for r in lines if r.get("event") == "rows"]
    assert rows[0]["kept"] == 8 * 2 + 2  # French-only rows speak French: trained on with speech_langs [all]
    assert rows[1]["kept"] == 4 * 2 and rows[1]["dropped_speech_lang"] == 2  # dev queries: Wolof speech only
    assert all(r["data"] == f"corpus:{corpus}" for r in lines)
    assert "speech2fr/R@1/48" in speech and "topline/text_wo2fr/R@1/48" in speech
    # training features, shared by runs (dev clips are decoded once and embedded through wolofmrl/inference.py)
    assert len(list((tmp_path / "feature_cache").glob("train-*.npz"))) == 1


def test_feature_cache_round_trip(tmp_path):
    class OneProcess:
        is_main_process = True

        def wait_for_everyone(self):
            pass

    corpus = write_corpus(tmp_path / "corpus", n_sentences=2)
    _, processor = tiny_model("fusion")
    from train.data import read_corpus

    rows = read_corpus(str(corpus), "train", audio=True)
    cfg = TrainConfig(data={"corpus": str(corpus)}, output_dir=str(tmp_path / "out"))
    first = cached_features(rows, processor, cfg, "train", OneProcess())
    again = cached_features(rows, processor, cfg, "train", OneProcess())  # read back from the .npz
    for a, b, direct in zip(first, again, compute_features(rows, processor, 0)):
        assert a.shape == direct.shape and np.array_equal(b, direct)



def test_best_trainable_keeps_and_restores_the_best(tmp_path):
    from train.checkpoints import BestTrainable

    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)
    best = BestTrainable(tmp_path / "best")
    best.offer(2, 0.5, model)
    kept = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    best.offer(4, 0.3, model)  # worse: ignored
    assert BestTrainable(tmp_path / "best").state == {"step": 2, "score": 0.5}  # survives a restart (resume)
    assert not best.restore(model, final_step=2)
    assert best.restore(model, final_step=6) and torch.equal(model.weight, kept)
    best.offer(6, 0.5, model)  # a tie goes to the later step
    assert best.state["step"] == 6


def test_export_writes_the_delta_train_writes_from_best_and_last(tmp_path):
    from train.export import export

    cfg = tiny_cfg(tmp_path, "run", max_steps=8, eval_every=4, save_every=4)
    result = train(cfg)
    written = load_file(str(tmp_path / "run" / "delta" / "delta.safetensors"))  # best restored, then written
    best = load_file(str(export(tmp_path / "run", tmp_path / "best") / "delta.safetensors"))
    assert set(best) == set(written)
    for name in written:
        assert torch.equal(best[name], written[name]), name
    meta = json.loads((tmp_path / "best" / "training.json").read_text())
    assert meta["exported"]["step"] == result.get("best_step", 8)
    last = load_file(str(export(tmp_path / "run", tmp_path / "last", "last") / "delta.safetensors"))
    at_8 = load_file(str(tmp_path / "run" / "checkpoints" / "step_0000008" / "model.safetensors"))
    torch.testing.assert_close(last["adapter.proj.weight"], at_8["model.adapter.proj.weight"].half())
    with pytest.raises(FileNotFoundError, match="no log.jsonl"):
        export(tmp_path / "nothing", tmp_path / "x")
    # --base: what the base delta holds is left out and named; the builder's chain puts it back
    from wolofmrl.build import delta_state

    export(tmp_path / "run", tmp_path / "on_last", "last", base=str(tmp_path / "best"))
    assert (tmp_path / "on_last" / "BASE").read_text().strip() == str(tmp_path / "best")
    kept = load_file(str(tmp_path / "on_last" / "delta.safetensors"))
    assert "prompt" not in kept or not torch.equal(kept["prompt"], best["prompt"])
    assert set(kept) < set(last) or last == best
    chained = delta_state(tmp_path / "on_last")
    assert set(chained) == set(last) and all(torch.equal(chained[k], last[k]) for k in last)
    export(tmp_path / "run", tmp_path / "on_last", "last")  # again without --base: the old BASE goes
    assert not (tmp_path / "on_last" / "BASE").exists()
    # checked before anything is written: a missing base, a folder of other files
    with pytest.raises(FileNotFoundError, match="--base no-such-delta: not a delta folder"):
        export(tmp_path / "run", tmp_path / "never", base="no-such-delta")
    assert not (tmp_path / "never").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("important")
    with pytest.raises(ValueError, match="holds files an export does not write"):
        export(tmp_path / "run", tmp_path / "mine")
    assert sorted(f.name for f in (tmp_path / "mine").iterdir()) == ["notes.txt"]
