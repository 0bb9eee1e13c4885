"""The mteb wrapper and tasks end to end, on a tiny random model and a tiny synthetic benchmark fixture.

The model is `wolofmrl.testing.tiny_model` (random weights, real tokenizer) saved with `wolofmrl.build.save` and
loaded back through the wrapper (AutoModel + trust_remote_code); the data is `eval/fixture.py` (placeholder text,
`synthetic_waves` audio). Scores here only prove that the pipeline runs.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "eval"))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    from wolofmrl.build import save
    from wolofmrl.testing import tiny_model

    model, processor = tiny_model()
    out = tmp_path_factory.mktemp("tiny-wolofmrl")
    save(model, processor, out)
    return out


@pytest.fixture(scope="module")
def embedder(tiny_folder):
    from wolofmrl_mteb import WolofMRLEmbedder

    return WolofMRLEmbedder(tiny_folder, audio_batch_size=2, text_batch_size=3)


@pytest.fixture(scope="module")
def fixture_data(tmp_path_factory):
    from fixture import write_fixture

    return write_fixture(tmp_path_factory.mktemp("bench"))


def _clips(n, seed=0):
    from wolofmrl.testing import synthetic_waves

    return [{"array": w, "sampling_rate": 16000} for w in synthetic_waves(n, seconds=(0.4, 1.2), seed=seed)]


def test_wrapper_shapes_normalisation_and_dims(embedder):
    from mteb.types import PromptType
    from torch.utils.data import DataLoader
    from wolofmrl_mteb import WolofMRLEncoder
    from mteb_tasks import wolofmrl_tasks

    meta = wolofmrl_tasks(["WolofSpeechToFrench"], sources=[])[0].metadata
    texts = ["a", "un texte un peu plus long", "moyen texte"]
    for dim in (48, 16, 8):
        enc = WolofMRLEncoder(embedder=embedder, embed_dim=dim)
        assert enc.mteb_model_meta.embed_dim == dim and enc.mteb_model_meta.modalities == ["audio", "text"]
        t = enc.encode(DataLoader([{"text": x} for x in texts], batch_size=2), task_metadata=meta, hf_split="test",
                       hf_subset="offline", prompt_type=PromptType.document)
        a = enc.encode(DataLoader([{"audio": c} for c in _clips(3)], batch_size=2,
                                  collate_fn=lambda b: {"audio": [x["audio"] for x in b]}),
                       task_metadata=meta, hf_split="test", hf_subset="offline", prompt_type=PromptType.query)
        for e in (t, a):
            assert e.shape == (3, dim) and e.dtype == np.float32
            assert np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    for bad in (0, 49):
        with pytest.raises(ValueError):
            WolofMRLEncoder(embedder=embedder, embed_dim=bad)


def test_wrapper_matches_model_api_and_prompt_kinds(embedder):
    """The cached, length-sorted path gives what model.get_*_embeddings(dim=) gives, in input order."""
    model, proc = embedder.model, embedder.processor
    texts = ["bonjour le monde", "x", "une phrase nettement plus longue que les autres"]
    with torch.no_grad():
        want_p = model.get_text_embeddings(**proc(text=texts, text_kind="passage", return_tensors="pt"), dim=16)
        want_q = model.get_text_embeddings(**proc(text=texts, text_kind="query", return_tensors="pt"), dim=16)
    assert np.allclose(embedder.text(texts, "passage", 16), want_p.numpy(), atol=1e-5)
    assert np.allclose(embedder.text(texts, "query", 16), want_q.numpy(), atol=1e-5)
    assert not np.allclose(want_p.numpy(), want_q.numpy(), atol=1e-3)  # the prefix matters

    clips = _clips(3, seed=1)
    with torch.no_grad():
        want = [model.get_speech_embeddings(**proc(audio=c["array"], sampling_rate=16000, return_tensors="pt"),
                                            dim=32)[0].numpy() for c in clips]
    got = embedder.audio(clips[::-1], 32)[::-1]  # reversed input: sorting must not scramble the output
    assert np.allclose(got, np.stack(want), atol=1e-4)
    # another sampling rate is resampled by the processor, not rejected
    c8 = {"array": clips[0]["array"][::2].copy(), "sampling_rate": 8000}
    assert embedder.audio([c8], 8).shape == (1, 8)


def test_prompt_type_to_text_kind(embedder):
    from mteb.types import PromptType
    from wolofmrl_mteb import WolofMRLEncoder

    enc = WolofMRLEncoder(embedder=embedder, embed_dim=8)
    assert enc.text_kind(PromptType.query) == "query"
    assert enc.text_kind(PromptType.document) == "passage"
    assert enc.text_kind(None) == "passage"  # zero-shot label names: documents for a spoken query


def test_offline_sets_from_fixture(fixture_data):
    import benchmark_data as bd

    bench = bd.OfflineBenchmark(fixture_data)
    a2t, t2a, t2t = bench.a2t(), bench.t2a(), bench.t2t()
    n_sent = len({r["sentence_id"] for r in bench.rows})
    assert len(a2t.corpus) == n_sent and len(a2t.queries) == 2 * n_sent  # 2 Wolof voices; French clips left out
    assert all(len(r) == 1 for r in a2t.relevant.values())
    assert all(len(r) == 2 for r in t2a.relevant.values())  # every voice of the sentence
    assert len(t2t.queries) == n_sent
    lim = bd.OfflineBenchmark(fixture_data, limit=5)
    assert len({r["sentence_id"] for r in lim.rows}) == 5
    intents = bench.intents("mediawiki")
    assert set(intents.train_labels) == set(intents.test_labels)
    assert not {q["id"].rsplit("-", 2)[0] for q in intents.train} & {q["id"].rsplit("-", 2)[0] for q in intents.test}


def test_tasks_end_to_end_through_mteb(tiny_folder, fixture_data):
    import mteb
    from mteb_tasks import wolofmrl_tasks
    from wolofmrl_mteb import WolofMRLEncoder, wolofmrl_model_meta

    tasks = wolofmrl_tasks(["WolofSpeechToFrenchText", "ZeroShot", "WolofSpokenIntentClassification"],
                           data_dir=fixture_data, hub=False)
    assert [t.hf_subsets for t in tasks] == [["offline"], ["offline-mediawiki", "offline-udhr"],
                                             ["offline-mediawiki", "offline-udhr"]]
    assert "fleurs" in tasks[0].skipped and "kallaama" in tasks[0].skipped
    # loaded like a built-in model: from its ModelMeta, at a Matryoshka dim
    meta = wolofmrl_model_meta(tiny_folder)
    assert meta.embed_dim == [48, 32, 16, 8]
    model = meta.load_model(embed_dim=16)
    assert isinstance(model, WolofMRLEncoder) and model.embed_dim == 16
    res = mteb.evaluate(model, tasks, cache=None, overwrite_strategy="always", co2_tracker=False,
                        show_progress_bar=False, encode_kwargs={"batch_size": 4})
    scores = {tr.task_name: {s["hf_subset"]: s for s in tr.scores["test"]} for tr in res.task_results}
    a2t = scores["WolofSpeechToFrenchTextRetrieval"]["offline"]
    for key in ("ndcg_at_10", "recall_at_1", "recall_at_10", "mrr_at_10"):
        assert 0.0 <= a2t[key] <= 1.0
    assert a2t["main_score"] == a2t["ndcg_at_10"]
    for name in ("WolofSpokenIntentClassification", "WolofSpokenIntentZeroShotClassification"):
        for sub in ("offline-mediawiki", "offline-udhr"):
            assert 0.0 <= scores[name][sub]["accuracy"] <= 1.0 and "f1_weighted" in scores[name][sub]


def test_run_command_writes_results(tiny_folder, fixture_data, tmp_path):
    import run
    from fixture import write_fixture

    hard = tmp_path / "hard"
    write_fixture(hard / "clean")
    write_fixture(hard / "hard", seed=1)
    out = tmp_path / "out"
    run.main(["--model", str(tiny_folder), "--data", str(fixture_data), "--out", str(out), "--dims", "48,8",
              "--tasks", "FrenchTextToWolof,WolofSpeechToFrench,WolofFrenchText", "--limit", "8", "--no-hub", "--hard",
              str(hard)])
    rows = json.loads((out / "scores.json").read_text())
    tasks = ("FrenchTextToWolofSpeechRetrieval", "WolofSpeechToFrenchTextRetrieval", "WolofFrenchTextRetrieval")
    assert {(r["condition"], r["task"], r["dim"]) for r in rows} == {
        (c, t, d) for c in ("offline", "clean", "hard") for t in tasks for d in (48, 8)}
    md = (out / "scores.md").read_text()
    assert f"| {Path(tiny_folder).name} | offline | FrenchTextToWolofSpeechRetrieval | offline | nDCG@10 |" in md
    assert "## Clean vs hard" in md and "| offline R@1 | offline R@10 | clean R@1 | clean R@10 | hard R@1 |" in md
    index = yaml.safe_load((out / "model-index.yaml").read_text())["model-index"][0]["results"]
    configs = [r["dataset"]["config"] for r in index]  # every condition and task its own result, offline last
    assert sorted(configs) == sorted(f"{c}{t}" for c in ("clean/offline/", "hard/offline/", "offline/") for t in tasks)
    assert configs[-1].startswith("offline/") and all(len(r["metrics"]) == 2 * 4 for r in index)  # 2 dims x 4
    clean = next(r for r in index if r["dataset"]["config"] == "clean/offline/WolofFrenchTextRetrieval")
    expected = next(x for x in rows
                    if (x["condition"], x["task"], x["dim"]) == ("clean", "WolofFrenchTextRetrieval", 8))
    value = next(m["value"] for m in clean["metrics"] if m["args"]["embed_dim"] == 8 and m["type"] == "recall_at_1")
    assert value == round(100 * expected["metrics"]["recall_at_1"], 2) and "clean" in clean["dataset"]["name"]
    assert (out / "score_vs_dim.png").stat().st_size > 0
    mteb_files = list((out / "mteb").rglob("WolofFrenchTextRetrieval.json"))
    assert len(mteb_files) == 6 and {p.parent.name for p in mteb_files} == {"embed_dim_48", "embed_dim_8"}
    assert {p.relative_to(out / "mteb").parts[0] for p in mteb_files} == {"offline", "clean", "hard"}


@pytest.mark.slow
def test_real_backbones_through_the_wrapper(untrained_model_dir, fixture_data):
    """Whisper base + multilingual-e5-small (untrained adapter) through mteb on 3 fixture sentences: runs, and the
    text side at full width finds identical placeholder strings (t2t) while speech is at chance."""
    import mteb
    from mteb_tasks import wolofmrl_tasks
    from wolofmrl_mteb import WolofMRLEmbedder, WolofMRLEncoder

    embedder = WolofMRLEmbedder(untrained_model_dir)
    assert embedder.hidden == 384 and embedder.matryoshka_dims[0] == 384
    tasks = wolofmrl_tasks(["WolofSpeechToFrenchText", "WolofFrenchText"], data_dir=fixture_data, hub=False, limit=3)
    res = mteb.evaluate(WolofMRLEncoder(embedder=embedder, embed_dim=64), tasks, cache=None, co2_tracker=False,
                        overwrite_strategy="always", show_progress_bar=False)
    scores = {tr.task_name: tr.scores["test"][0] for tr in res.task_results}
    assert 0.0 <= scores["WolofSpeechToFrenchTextRetrieval"]["ndcg_at_10"] <= 1.0
    assert scores["WolofFrenchTextRetrieval"]["recall_at_1"] > 0.5


def _wav_cell(wave, rate=16000):
    import io

    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, wave, rate, format="WAV", subtype="PCM_16")
    return {"bytes": buf.getvalue(), "path": None}


def test_hub_loaders_on_stand_in_data(monkeypatch, tmp_path):
    """The Hub loaders' pairing logic on small stand-ins with the publishers' schemas (no network here)."""
    import benchmark_data as bd
    from datasets import Dataset

    from wolofmrl.testing import synthetic_waves

    waves = synthetic_waves(4, seconds=(0.3, 0.5))
    # FLEURS: wo_sn has two speakers of sentence 7 and one of 9; fr_fr has 7, 9 and 11 (a distractor)
    wo = Dataset.from_dict({"id": [7, 7, 9], "raw_transcription": ["wo seven", "wo seven", "wo nine"],
                            "audio": [_wav_cell(w) for w in waves[:3]]})
    fr = Dataset.from_dict({"id": [7, 9, 11], "raw_transcription": ["fr sept", "fr neuf", "fr onze"]})
    monkeypatch.setattr(bd, "_hub_split", lambda path, name, split: {"wo_sn": wo, "fr_fr": fr}[name])
    a2t = bd.fleurs_a2t()
    assert len(a2t.queries) == 3 and len(a2t.corpus) == 3
    assert [list(r) for r in a2t.relevant.values()] == [["fleurs-7"], ["fleurs-7"], ["fleurs-9"]]
    assert set(a2t.gold_text.values()) == {"wo seven", "wo nine"}
    t2a = bd.fleurs_t2a()
    assert {q: len(r) for q, r in t2a.relevant.items()} == {"fleurs-7": 2, "fleurs-9": 1}
    assert len(bd.fleurs_t2t().queries) == 2

    # Kallaama (the paper's layout): queries/corpus/qrels datasets, split "train", error rows dropped
    sets = {"q": Dataset.from_dict({"_id": ["q1", "q2"], "audio": [_wav_cell(w) for w in waves[:2]],
                                    "text": ["wo a", "wo b"]}),
            "c": Dataset.from_dict({"_id": ["c1", "c2", "c3"], "text": ["doc a", "Error: missing", "doc b"]}),
            "r": Dataset.from_dict({"query-id": ["q1", "q2", "q2"], "corpus-id": ["c1", "c2", "c3"]})}
    for kind, name in (("QUERIES", "q"), ("CORPUS", "c"), ("QRELS", "r")):
        monkeypatch.setenv(f"WOLOFMRL_KALLAAMA_{kind}", name)
    monkeypatch.setattr("datasets.load_dataset", lambda repo, split=None, **kw: sets[repo])
    kal = bd.kallaama_a2t()
    assert [d["id"] for d in kal.corpus] == ["c1", "c3"] and kal.relevant == {"q1": {"c1": 1}, "q2": {"c3": 1}}
    monkeypatch.undo()

    # WolBanking77: a local copy of the authors' audio parquet files
    for split, labels in (("train", ["card_arrival", "top_up_failed"]), ("test", ["top_up_failed", "card_arrival"])):
        Dataset.from_dict({"audio": [_wav_cell(w) for w in waves[:2]], "text": ["a", "b"], "label": labels}) \
            .to_parquet(str(tmp_path / f"{split}.parquet"))
    cs = bd.wolbanking77_intents(root=tmp_path)
    assert cs.label_names == ["card arrival", "top up failed"]
    assert cs.train_labels == [0, 1] and cs.test_labels == [1, 0]
    with pytest.raises(bd.SourceUnavailable):
        bd.wolbanking77_intents(root=tmp_path / "missing")
