"""eval/bench.py: its measuring helpers, and one end-to-end run on tiny random models (seconds, CPU)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "eval"))

import asr  # noqa: E402
import bench  # noqa: E402
import bench_env  # noqa: E402
import bench_inputs  # noqa: E402
import bench_retrieval as br  # noqa: E402
from wolofmrl.metrics import mean_recall_at_k, overlap_at_k  # noqa: E402

from wolofmrl.retrieval import prefix_normalize, rerank  # noqa: E402


def test_stratified_durations_spread_every_prefix():
    d = bench_inputs.stratified_durations(256)
    assert min(d) >= 2.0 and max(d) <= 30.0
    for n in (4, 16, 64, 256):
        assert abs(np.mean(d[:n]) - 16.0) < 3.0, n  # any prefix has about the pool's mean length
        assert max(d[:n]) - min(d[:n]) > 14.0


def test_make_clips_exact_durations_and_labels():
    utts = [(np.full(8000, 0.1, np.float32), "a", "v1"), (np.full(24000, -0.1, np.float32), "b", "v2")]
    clips, kind = bench_inputs.make_clips(utts, [2.0, 7.5], seed=0)
    assert [len(c) for c in clips] == [32000, 120000] and kind == "speech"
    clips, kind = bench_inputs.make_clips([], [3.0], seed=0)
    assert len(clips[0]) == 48000 and "NOT speech" in kind


def test_inputs_cache_roundtrip(tmp_path):
    inputs = {
        "pairs": [("wo", "fr")],
        "paragraphs": ["p"],
        "utterances": [(np.zeros(10, np.float32) + 0.5, "wo", "v")],
        "pair_source": "x",
        "passage_source": "y",
        "clip_source": "z",
    }
    bench_inputs.save_inputs(tmp_path / "i.npz", inputs)
    back = bench_inputs.load_inputs(tmp_path / "i.npz")
    assert back["pairs"] == [("wo", "fr")] and back["utterances"][0][1:] == ("wo", "v")
    np.testing.assert_allclose(back["utterances"][0][0], 0.5, atol=1e-4)


def test_synthetic_padding_follows_the_real_distribution():
    rng = np.random.default_rng(0)
    real = prefix_normalize(rng.standard_normal((300, 16)) * np.linspace(3, 0.2, 16) + 1.0, None)
    synth = br.synthetic_like(real, 20000, seed=0)
    np.testing.assert_allclose(synth.mean(0), real.mean(0), atol=0.02)
    ridge = 0.05 * real.var(0, ddof=1).mean()  # the ridge that makes a few hundred samples' covariance full rank
    np.testing.assert_allclose(synth.var(0), real.var(0, ddof=1) + ridge, rtol=0.1)


def test_funnel_pieces_are_exact_at_the_limits():
    rng = np.random.default_rng(1)
    docs = prefix_normalize(rng.standard_normal((500, 32)), None)
    q = prefix_normalize(rng.standard_normal((20, 32)), None)
    index, _ = br.make_index(prefix_normalize(docs, 32))
    _, full = br.search_flat(index, q, 10)
    want = np.argsort(-(q @ docs.T), axis=1)[:, :10]
    assert overlap_at_k(full, want) == 1.0
    # shortlist everything at a small dim, re-rank at full dim: the exact full-dim top 10
    small, _ = br.make_index(prefix_normalize(docs, 4))
    _, cand = br.search_flat(small, prefix_normalize(q, 4), 500)
    assert overlap_at_k(rerank(q, docs, cand)[1], want) == 1.0
    assert mean_recall_at_k(want, want[:, 3], 10) == 1.0 and mean_recall_at_k(want[:, :2], want[:, 3], 10) == 0.0
    torch_index = br.TorchFlatIP(prefix_normalize(docs, 32))
    assert overlap_at_k(torch_index.search(q, 10)[1], want) == 1.0


def tiny_setup(tmp_path):
    """A tiny WolofMRL folder, a tiny Whisper config (so the cost model runs) and a synthetic inputs cache."""
    from transformers import WhisperConfig

    from wolofmrl.build import save
    from wolofmrl.testing import synthetic_waves, tiny_model

    model, processor = tiny_model("fusion")
    save(model, processor, tmp_path / "model")
    whisper = tmp_path / "whisper"
    WhisperConfig(
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
    ).save_pretrained(whisper)
    waves = synthetic_waves(4, seconds=(0.8, 1.5), seed=2)
    pairs = [(f"Wolof {i}", f"Texte français numéro {i}.") for i in range(12)]
    bench_inputs.save_inputs(
        tmp_path / "inputs.npz",
        {
            "pairs": pairs,
            "paragraphs": [f"Un paragraphe de test numéro {i}, assez court." for i in range(40)],
            "utterances": [(w, pairs[i][0], "synthetic") for i, w in enumerate(waves)],
            "pair_source": "test pairs",
            "passage_source": "test paragraphs",
            "clip_source": "test signals",
        },
    )
    return [
        "--model",
        str(tmp_path / "model"),
        "--smoke",
        "--whisper",
        str(whisper),
        "--inputs",
        str(tmp_path / "inputs.npz"),
        "--cpu-threads",
        "1",
    ]


def test_end_to_end_smoke_on_tiny_models(tmp_path):
    """The whole script on a tiny WolofMRL, a tiny Whisper (cost model: no weights) and synthetic inputs."""
    out = tmp_path / "out"
    bench.main(tiny_setup(tmp_path) + ["--out", str(out), "--device", "cpu"])
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "bench.md"]
    r = json.loads((out / "bench.json").read_text())
    assert r["asr_mode"].startswith("COST MODEL")
    speech = [x for x in r["speech"] if "clips_per_s" in x]
    assert speech and speech[0]["speedup_vs_asr"] > 0 and speech[0]["asr_steps_per_batch"] >= 1
    assert r["length_sweep"] and r["text"][0]["passages_per_s"] > 0
    assert {x["dim"] for x in r["retrieval"]["index_rows"]} == {48, 32, 16, 8}
    assert r["retrieval"]["funnel_rows"] and "wo_speech" in r["retrieval"]["queries"]
    assert {x["variant"] for x in r["retrieval"]["funnel_rows"]} == {"as is", "PCA-rotated proxy"}
    assert "cpu_real_time" in r["summary"] and "funnel" in r["summary"]
    md = (out / "bench.md").read_text()
    assert "COST MODEL" in md and "## Retrieval scaling" in md and "threads" in md


def test_gpu_code_path_on_a_cpu_stand_in(tmp_path, monkeypatch):
    """The --device cuda branch (fp32 + bf16 rows, length sweep, torch search) with the CPU standing in for the GPU."""
    import torch

    monkeypatch.setattr(bench_env, "ACCEL", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "stand-in GPU")
    out = tmp_path / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the accelerator rows use every thread; on a busy 2-core runner one is faster
    try:
        bench.main(tiny_setup(tmp_path) + ["--out", str(out), "--device", "cuda", "--no-cpu"])
    finally:
        torch.set_num_threads(threads)
    r = json.loads((out / "bench.json").read_text())
    gpu = [x for x in r["speech"] if x["device_kind"] == "cuda"]
    assert {x["dtype"] for x in gpu} == {"fp32", "bf16"} and all(x["device"] == "stand-in GPU" for x in gpu)
    assert all("speedup_vs_asr" in x for x in gpu) and not [x for x in r["speech"] if x["device_kind"] == "cpu"]
    assert r["length_sweep"][0]["device_kind"] == "cuda" and len(r["text"]) == 2
    assert "torch_cuda_single_query_ms" in r["retrieval"]["index_rows"][0]
    assert r["summary"]["gpu_vs_whisper"]["best_vs_best_ratio"] > 0
    assert "stand-in GPU" in (out / "bench.md").read_text()


@pytest.mark.parametrize("weights", ["none", "encoder only"])
def test_whisper_cost_model_is_chosen_without_decoder_weights(tmp_path, weights):
    import argparse

    import torch
    from safetensors.torch import save_file

    if weights == "encoder only":  # what an encoder-only bundle (wolofmrl.portable) unpacks to
        save_file({"model.encoder.conv1.weight": torch.zeros(512, 80, 3)}, str(tmp_path / "model.safetensors"))
    args = argparse.Namespace(whisper=str(tmp_path), asr_token_rate=None)
    model, fe, tok, folder, mode = asr.load_whisper(args)
    assert tok is None and mode.startswith("COST MODEL") and args.asr_token_rate == asr.DEFAULT_TOKEN_RATE
    assert model.config.d_model == 512 and model.config.decoder_layers == 6  # Whisper-base's shape


def test_retrieval_scaling_without_faiss_uses_the_torch_stand_in(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)  # `import faiss` raises ImportError, as on a bare GPU image
    rng = np.random.default_rng(3)
    passages = prefix_normalize(rng.standard_normal((40, 16)), None)
    queries = {"q": (passages[:10] + 0.01, np.arange(10))}
    res = br.retrieval_scaling(passages, queries, [2000], [16, 8], [8], [20], bench_env.Budget(60), -600, 0, "cpu",
                                  False, lambda: None)
    assert {x["index"] for x in res["index_rows"]} == {"torch exact inner product (faiss not installed)"}
    assert res["index_rows"][0]["recall@10_q"] == 1.0  # each query sits next to its own passage
    assert {x["variant"] for x in res["funnel_rows"]} == {"as is", "PCA-rotated proxy"}


def test_export_texts_for_a_vocabulary_subset_bundle(tmp_path):
    args = tiny_setup(tmp_path)
    bench.main(args + ["--out", str(tmp_path / "o"), "--export-texts", str(tmp_path / "texts.txt")])
    lines = (tmp_path / "texts.txt").read_text().splitlines()
    assert "Wolof 3" in lines and "Texte français numéro 3." in lines and len(lines) == 24 + 40
