"""The reading objective (issue 23) on a tiny random model with the real XLM-R tokenizer and synthetic signals (not
speech): the tied CTC loss learns where it must, its gradient reaches the adapter only, rows that cannot fit are
counted, greedy decoding round-trips; a run with ctc_weight > 0 logs CER and hours, resumes to a larger step budget,
refuses another change, and its state survives the piecewise pack of train/device_reading.sh."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `train/` is a folder of scripts, not installed
from train.checkpoints import ResumeError, checkpoint_state, latest_checkpoint  # noqa: E402
from train.config import TrainConfig  # noqa: E402
from train.evaluation import dev_score, is_sentence  # noqa: E402
from train.learning_curve import main as learning_curve  # noqa: E402
from train.reading import CTCTargets, ctc_vocabulary  # noqa: E402
from train.export import run_config  # noqa: E402
from train.logger import accepted_starts  # noqa: E402
from train.reading_pack import finished, pack, unpack  # noqa: E402
from train.speech_data import speech_features  # noqa: E402
from train.train import train  # noqa: E402
from wolofmrl.losses import TiedCTCLoss, ctc_greedy  # noqa: E402
from wolofmrl.testing import synthetic_waves, tiny_model  # noqa: E402

TEXTS = ["kër gi", "ndox mi", "xale yi", "jant bi"]


def toy(strategy="fusion", adapter_layers=0):
    model, processor = tiny_model(strategy, adapter_stride=2, adapter_layers=adapter_layers)
    vocab = ctc_vocabulary(processor.tokenizer, TEXTS)
    targets = CTCTargets(processor.tokenizer, vocab)
    ctc = TiedCTCLoss(vocab, model.config.text_config.hidden_size, scale_init=10.0)
    feats = speech_features(processor, synthetic_waves(len(TEXTS), seconds=(0.8, 1.0), seed=3))
    return model, processor, targets, ctc, feats


# a transformer adapter fits the toy set more slowly (a smaller step, more of them), as it read no faster on the GPU
@pytest.mark.parametrize("strategy,adapter_layers,steps,lr", [("fusion", 0, 15, 2e-2), ("fusion", 1, 30, 2e-3),
                                                            ("dual", 0, 15, 2e-2)])
def test_ctc_learns_a_toy_set_and_its_gradient_reaches_the_adapter_only(strategy, adapter_layers, steps, lr):
    model, _, targets, ctc, feats = toy(strategy, adapter_layers)
    model.requires_grad_(False)
    model.adapter.requires_grad_(True)
    embed = model.text_model.get_input_embeddings().weight
    embed.requires_grad_(True)  # frozen in training; here to show the tied classifier sends it nothing
    if model.prompt is not None:
        model.prompt.requires_grad_(True)
    ids, lengths = targets(TEXTS)
    opt = torch.optim.Adam([p for p in model.adapter.parameters()] + list(ctc.parameters()), lr=lr)
    losses = []
    for step in range(steps):
        tokens, mask = model.reading_tokens(*model.speech_tokens(input_features=feats["input_features"],
                                                                attention_mask=feats["speech_mask"]))
        loss, parts = ctc(tokens, mask, ids, lengths, embed)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
            assert grads and all(n.startswith("adapter.") for n in grads), grads
            assert ctc.blank.grad is not None and ctc.log_scale.grad is not None
            assert parts["ctc_skipped"].item() == 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses[::8]  # four clips, four transcripts: CTC must fit them


def test_rows_that_cannot_fit_are_counted_and_left_out():
    ctc = TiedCTCLoss(torch.arange(5, 15), hidden=8)
    embed = torch.randn(20, 8)
    tokens = torch.randn(3, 4, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]])
    # row 0: 3 labels with a repeat need 4 steps, has 3 -> skipped; row 1: fits; row 2: 3 labels in 2 steps -> skipped
    targets = torch.tensor([[2, 2, 3], [2, 2, 3], [1, 2, 3]])
    loss, parts = ctc(tokens, mask, targets, torch.tensor([3, 3, 3]), embed)
    assert parts["ctc_skipped"].item() == 2 and parts["ctc_rows"].item() == 1 and torch.isfinite(loss)
    loss.backward()
    assert tokens.grad[1].abs().sum() > 0 and tokens.grad[0].abs().sum() == 0 and tokens.grad[2].abs().sum() == 0
    none, parts = ctc(tokens[[0, 2]], mask[[0, 2]], targets[[0, 2]], torch.tensor([3, 3]), embed)
    assert none.item() == 0 and parts["ctc_skipped"].item() == 2 and none.requires_grad  # a graph, no NaN
    with torch.autocast("cpu", dtype=torch.bfloat16):  # training runs under bf16 autocast: the loss stays fp32
        mixed, _ = ctc(tokens.bfloat16(), mask, targets, torch.tensor([3, 3, 3]), embed.bfloat16())
    assert mixed.dtype == torch.float32 and torch.allclose(mixed, loss, rtol=0.05)


def test_greedy_decoding_round_trips_a_perfect_posterior():
    _, processor = tiny_model("fusion")
    text = "Marse bi dafa ubbeeku ci suba, ndox mi tàng na"
    vocab = ctc_vocabulary(processor.tokenizer, [text, "xale yi"])
    targets = CTCTargets(processor.tokenizer, vocab)
    ids, lengths = targets([text])
    labels = ids[0, : lengths[0]].tolist()
    path = []
    for c in labels:  # each label twice, a blank between labels (needed between repeats)
        path += [c, c, 0]
    logits = torch.full((1, len(path), len(vocab) + 1), -5.0)
    logits[0, torch.arange(len(path)), torch.tensor(path)] = 5.0
    decoded = ctc_greedy(logits, torch.ones(1, len(path)))
    assert decoded == [labels]
    assert targets.decode(decoded[0]) == processor.tokenizer.decode(
        processor.tokenizer(text, add_special_tokens=False)["input_ids"]) == text
    assert targets.missing == 0
    targets(["zzqx"])  # subwords outside the training vocabulary are dropped and counted
    assert targets.missing > 0


def test_sentence_only_dev_score_and_unseen_first():
    cfg = TrainConfig()
    assert is_sentence("Marse bi dafa ubbeeku", "gettext:foo", cfg) and not is_sentence("kër gi", None, cfg)
    assert not is_sentence("benn ñaar ñett ñeent juróom", "wolof-numbers", cfg)
    text = {"text_wo2fr/R@1/8": 0.9, "text_wo2fr_sent/R@1/8": 0.2}
    assert dev_score(text) == 0.2
    speech = {"speech2fr_hard/R@1/8": 0.5, "speech2fr_unseen_hard/R@1/8": 0.1, "dev/cer_wo": 0.9}
    assert dev_score(speech) == 0.1 and dev_score({"speech2fr/R@1/8": 0.3, "dev/cer_wo": 0.9}) == 0.3


def run_cfg(out: Path, **kw) -> TrainConfig:
    base = dict(stage="speech", model={"tiny": {"strategy": "fusion", "num_prompt_tokens": 2}},
                data={"synthetic": 16, "dev": 6}, output_dir=str(out), batch_size=4, lr=1e-2, warmup_steps=1,
                logit_scale_init=20.0, bucket_batches=2, log_every=1, eval_every=2, save_every=2, save_model=False,
                tensorboard=False, ctc_weight=1.0, ctc_dev_clips=3, max_steps=2)
    base.update(kw)
    return TrainConfig(**base)


def test_train_with_ctc_then_resume_to_more_steps_and_pack(tmp_path, capsys):
    root = tmp_path / "runs" / "reading"
    out = root / "fusion_ctc_s0"
    train(run_cfg(out))
    first = [json.loads(line) for line in open(out / "log.jsonl")]
    evals = [r for r in first if r.get("event") == "eval"]
    assert evals and "dev/cer_wo" in evals[-1] and evals[-1]["hours_seen"] > 0
    assert any(r.get("event") == "ctc_samples" and r["samples"][0]["ref"] for r in first)
    assert "ctc" in next(r for r in first if r.get("event") == "train")
    assert (out / "delta" / "ctc_head.safetensors").is_file()
    with pytest.raises(ResumeError, match=r"ctc_weight=1.0 .* ctc_weight=0.5.*--resume none"):
        train(run_cfg(out, ctc_weight=0.5, max_steps=3))
    # the refused attempt is marked: export and pack still read the run's own settings from the log
    assert [s["config"]["ctc_weight"] for s in accepted_starts(out / "log.jsonl")] == [1.0]
    assert run_config(out).ctc_weight == 1.0 and finished(out)
    result = train(run_cfg(out, max_steps=3))  # only the step budget changed: the same run continues
    lines = [json.loads(line) for line in open(out / "log.jsonl")]
    assert any(r.get("event") == "resume" and r["step"] == 2 for r in lines) and result["step"] == 3
    hours = [r["hours_seen"] for r in lines if r.get("event") == "eval"]
    assert hours == sorted(hours) and hours[-1] > evals[-1]["hours_seen"]  # the audio count survives the resume

    pieces = pack(root, tmp_path / "out")
    other = tmp_path / "next" / "runs" / "reading"
    assert unpack(tmp_path / "out", other, tmp_path / "stage")
    moved = latest_checkpoint(other / out.name)
    assert moved is not None and checkpoint_state(moved, json.loads((moved / "trainer_state.json").read_text())["run"])
    assert len(pieces) <= 7 and (tmp_path / "out" / "reading.manifest").is_file()
    moved_on = train(run_cfg(other / out.name, max_steps=4))  # the next machine continues the same run
    resumed = [json.loads(line) for line in open(other / out.name / "log.jsonl")]
    assert any(r.get("event") == "resume" and r["step"] == 3 for r in resumed) and moved_on["step"] == 4

    learning_curve([str(out), "--out", str(tmp_path / "curve")])
    assert (tmp_path / "curve.png").stat().st_size > 0
    assert "speech2fr/R@10/48" in (tmp_path / "curve.md").read_text()


def test_pack_keeps_the_results_and_names_a_checkpoint_that_does_not_fit(tmp_path, monkeypatch, capsys):
    import train.reading_pack as rp

    root = tmp_path / "runs" / "reading"
    out = root / "fusion_ctc_s0"
    train(run_cfg(out))  # finished phase-2-style run: delta (result) + a checkpoint (to continue)
    full = json.loads((rp.pack(root, tmp_path / "full")[0].parent / "reading.manifest").read_text())
    assert full["left_out"] == [] and any("/checkpoints/" in n for n in full["files"])
    later = [n for n in full["files"] if "/checkpoints/" in n or "/best/" in n]  # what continues a run
    results = sum(1536 + -(-size // 512) * 512 for n, size in full["files"].items() if n not in later)
    checkpoint = sum(1536 + -(-full["files"][n] // 512) * 512 for n in later)
    # pieces that hold the results and half the checkpoint: the checkpoint is left out whole, and named
    monkeypatch.setattr(rp, "PIECE", -(-(results + 2 * 10240 + checkpoint // 2) // rp.MAX_PIECES))
    capsys.readouterr()
    pieces = rp.pack(root, tmp_path / "light")
    assert "left out checkpoint fusion_ctc_s0/checkpoints/step_0000002" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "light" / "reading.manifest").read_text())
    assert manifest["left_out"] == ["fusion_ctc_s0/checkpoints/step_0000002"]
    assert not set(later) & set(manifest["files"]) and len(pieces) <= rp.MAX_PIECES
    # as device_reading.sh runs it: a script, whose folder (train/) would shadow the `train` package
    script = subprocess.run([sys.executable, str(Path(rp.__file__)), "pack", "--root", str(root), "--out",
                             str(tmp_path / "script")], capture_output=True, text=True, cwd=tmp_path)
    assert script.returncode == 0 and "packed" in script.stdout, script.stderr  # real pieces: everything fits
    other = tmp_path / "next"
    assert rp.unpack(tmp_path / "light", other, tmp_path / "stage")
    for name in ("delta.safetensors", "ctc_head.safetensors"):
        assert (other / "fusion_ctc_s0" / "delta" / name).is_file()
    moved, original = (rp.metadata(r / "fusion_ctc_s0" / "delta" / "delta.safetensors") for r in (other, root))
    assert moved == original and "synthetic" in moved["data"]  # what the delta rests on travels with it
    (out / "best" / "trainable.safetensors").unlink()  # best.json alone: said, not a traceback
    rp.pack(root, tmp_path / "no_best")
    assert "best.json without trainable.safetensors" in capsys.readouterr().err
    monkeypatch.setattr(rp, "PIECE", 1024)  # not even the results fit: a clear refusal, nothing written
    with pytest.raises(SystemExit, match="results alone"):
        rp.pack(root, tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_ctc_needs_gradcache_off():
    with pytest.raises(ValueError, match="grad_cache_chunk"):
        TrainConfig(ctc_weight=1.0, grad_cache_chunk=4, batch_size=16)


def test_export_of_a_reading_run_carries_its_ctc_head(tmp_path):
    from safetensors.torch import load_file

    from train.export import export

    out = tmp_path / "run"
    # a transformer adapter (adapter_layers): its layers and its config field travel in the delta
    model = {"tiny": {"strategy": "fusion", "num_prompt_tokens": 2, "adapter_layers": 1}}
    train(run_cfg(out, keep_best=False, model=model))  # the last checkpoint (step 2) is the final state train.py writes
    exported = export(out, tmp_path / "exported", "last")
    assert json.loads((exported / "config_overrides.json").read_text())["adapter_layers"] == 1
    assert any(k.startswith("adapter.layers.0.") for k in load_file(str(exported / "delta.safetensors")))
    for name in ("delta.safetensors", "ctc_head.safetensors"):
        mine, theirs = load_file(str(exported / name)), load_file(str(out / "delta" / name))
        assert set(mine) == set(theirs), name
        for key in theirs:
            torch.testing.assert_close(mine[key].float(), theirs[key].float(), rtol=0, atol=0)


def test_device_pack_is_sent_over_as_many_calls_as_it_needs(tmp_path, monkeypatch):
    """device_reading.sh pack packs once and sends what one device call returns (64 MiB: SEND_BYTES here scaled
    down); `send` on the next call sends the pieces still to come, the same bytes (a second pack would differ: the
    logs grow), and unpack rebuilds the runs from the two calls' files."""
    import shutil

    import train.reading_pack as rp

    root = tmp_path / "runs" / "reading"
    train(run_cfg(root / "fusion_ctc_s0"))
    monkeypatch.setattr(rp, "PIECE", 96 * 1024)
    packed = tmp_path / "packed"
    pieces = rp.pack(root, packed)
    assert len(pieces) >= 3
    repo = tmp_path / "repo"
    (repo / "train").mkdir(parents=True)
    shutil.copy(Path(rp.__file__).parent / "device_reading.sh", repo / "train")
    limit = str(2 * 96 * 1024 + 8192)  # the manifest and two pieces a call
    calls = []
    for i in range(len(pieces)):
        out = tmp_path / f"out{i}"
        done = subprocess.run(["bash", "train/device_reading.sh", "send"], cwd=repo, capture_output=True, text=True,
                              env={**os.environ, "PACKED": str(packed), "OUT": str(out), "SEND_BYTES": limit},
                              timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        calls.append((out, done.stdout))
        if "every piece sent" in done.stdout:
            break
    assert "still to come" in calls[0][1] and "every piece sent" in calls[-1][1]
    sent = [p.name for out, _ in calls for p in sorted(out.glob("reading.tar.part-*"))]
    assert sorted(sent) == sorted(p.name for p in pieces) and len(sent) == len(set(sent))  # each piece once
    assert all(sum(f.stat().st_size for f in out.iterdir()) <= int(limit) for out, _ in calls)
    again = tmp_path / "again"  # a piece a call did not bring back: sent again by name
    done = subprocess.run(["bash", "train/device_reading.sh", "send"], cwd=repo, capture_output=True, text=True,
                          env={**os.environ, "PACKED": str(packed), "OUT": str(again), "SEND_BYTES": limit,
                               "RESEND": sent[0]}, timeout=60)
    assert done.returncode == 0 and sorted(p.name for p in again.glob("reading.tar.part-*")) == [sent[0]]
    stage, other = tmp_path / "stage", tmp_path / "next"
    results = [rp.unpack(out, other, stage) for out, _ in calls]
    assert results[-1] and not any(results[:-1])
    assert (other / "fusion_ctc_s0" / "delta" / "delta.safetensors").is_file()
