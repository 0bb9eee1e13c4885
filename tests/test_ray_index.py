"""`wolofmrl index --engine ray` on a real local Ray cluster (2 CPUs, 2 embedding actors), tiny random model with the
real tokenizer: the same passages, ids, embeddings and top 10 as the single-process index; a rerun after losing or
corrupting shards redoes only those and gives the same index."""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from wolofmrl.cli import main
from wolofmrl.cli.ray_index import ParquetPassages
from wolofmrl.cli.store import DocumentIndex
from wolofmrl.testing import synthetic_waves

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = ["La pluie tombera demain sur {c}.", "Le marché de {c} ouvre à {n} heures.",
             "Le prix du riz a monté de {n} francs à {c}.", "Les pêcheurs de {c} sont rentrés avec {n} caisses.",
             "L'école de {c} accueille {n} élèves cette année.", "Le dispensaire de {c} vaccine {n} enfants."]
CITIES = ["Dakar", "Thiès", "Saint-Louis", "Ziguinchor", "Kaolack", "Touba", "Mbour", "Louga", "Kolda", "Matam"]


def _passage(i: int) -> str:
    return " ".join(SENTENCES[(i + j) % len(SENTENCES)].format(c=CITIES[(i * 7 + j) % len(CITIES)], n=i + j)
                    for j in range(1 + i % 3))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from wolofmrl.build import save
    from wolofmrl.testing import tiny_model

    folder = tmp_path_factory.mktemp("tiny") / "model"
    save(*tiny_model(), folder)
    return folder


@pytest.fixture(scope="module")
def docs(tmp_path_factory):
    """2,400 passages in .txt, .jsonl and .parquet shards, plus rows that must be counted as dropped."""
    d = tmp_path_factory.mktemp("docs")
    i = 0
    for f in range(4):
        (d / f"news_{f}.txt").write_text("\n\n".join(_passage(i + k) for k in range(300)), encoding="utf-8")
        i += 300
    for f in range(3):
        lines = [json.dumps({"text": _passage(i + k)}, ensure_ascii=False) for k in range(300)]
        (d / f"part_{f}.jsonl").write_text("\n".join(lines + ["not json", '{"x": 1}']) + "\n", encoding="utf-8")
        i += 300
    pq.write_table(pa.table({"text": [_passage(i + k) for k in range(300)] + [None, ""]}), d / "part_3.parquet")
    return d


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
    yield ray
    ray.shutdown()


def _search(index: Path, queries: list[str], texts: list[str], shortlist: int, capsys) -> list[list[int]]:
    argv = ["search", str(index), *queries, "--k", "10", "--shortlist", str(shortlist), "--json"]
    for t in texts:
        argv += ["--text", t]
    capsys.readouterr()
    assert main(argv) == 0
    return [[h["id"] for h in r["results"]] for r in json.loads(capsys.readouterr().out)]


@pytest.fixture(scope="module")
def built(tiny_dir, docs, ray_cluster, tmp_path_factory):
    root = tmp_path_factory.mktemp("indexes")
    assert main(["index", str(docs), "--out", str(root / "local"), "--model", str(tiny_dir), "--dim", "16"]) == 0
    argv = ["index", str(docs), "--out", str(root / "ray"), "--model", str(tiny_dir), "--dim", "16", "--engine",
            "ray", "--shard-mb", "0.04", "--actors", "2", "--batch-size", "128", "--nprobe", "64"]
    assert main(argv) == 0
    return root, argv


@pytest.mark.slow
def test_ray_index_equals_the_single_process_index(built, tmp_path, capsys):
    root, _ = built
    local, ray_ix = DocumentIndex.open(root / "local"), DocumentIndex.open(root / "ray")
    manifest = ray_ix.manifest
    assert len(manifest["shards"]) >= 4 and manifest["kind"] == "ivfpq" and manifest["count"] == 2400
    assert manifest["dropped"] == local.manifest["dropped"] == {
        "bad JSON line": 3, "no 'text' string field": 4, "empty document": 1}
    assert isinstance(ray_ix.passages, ParquetPassages)
    assert [ray_ix.passages[i] for i in range(len(ray_ix.passages))] == local.passages  # ids, texts, sources
    a, b = np.asarray(local.funnel.vectors, np.float32), np.asarray(ray_ix.funnel.vectors, np.float32)
    cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert b.dtype == np.float32 and ray_ix.funnel.vectors.dtype == np.float16 and cosine.min() >= 0.9999

    waves = synthetic_waves(3, (1.0, 2.5), seed=3)
    queries = []
    for i, w in enumerate(waves):
        sf.write(tmp_path / f"q{i}.wav", w, 16000)
        queries.append(str(tmp_path / f"q{i}.wav"))
    texts = ["marché de Dakar", "riz à Thiès", "école de Matam", "pêcheurs de Mbour"]
    from wolofmrl.cli.store import embed_audio, embed_texts, load_model

    model, processor, _ = load_model(local.manifest["model"], "cpu", "float32")
    q = np.concatenate([embed_audio(model, processor, queries), embed_texts(model, processor, texts, "query")])
    # re-ranking every candidate: both funnels reduce to exact full-width search: the same top 10, up to the order
    # of passages whose fp32 scores differ by less than the fp16 store's rounding (the tiny random model scores many
    # passages alike)
    exact = local.funnel.search(q, 10, 2400)[1]
    assert ray_ix.funnel.params["nprobe"] >= ray_ix.funnel.params["nlist"]  # built with --nprobe 64: every list
    _same_top10(ray_ix.funnel.search(q, 10, 2400)[1], exact, q, a)
    # the same through `wolofmrl search` on the Ray index (its shortlist quality at scale: test_sharded.py and
    # eval/funnel_ivfpq.py; a d = 16 prefix of a random tiny model is no Matryoshka shortlist)
    _same_top10(np.array(_search(root / "ray", queries, texts, 2400, capsys)), exact, q, a)


def _same_top10(got: np.ndarray, exact: np.ndarray, q: np.ndarray, vectors: np.ndarray, tol: float = 1e-3):
    """Rank by rank, `got` and exact search's top 10 score the same (fp32, against the single-process vectors) within
    tol: the same passages, up to the order of ties (the tiny random model scores many passages alike)."""
    assert got.shape == exact.shape
    score = lambda ids: np.einsum("qd,qkd->qk", q, vectors[ids])  # noqa: E731
    assert np.allclose(score(got), score(exact), atol=tol, rtol=0), (got, exact)
    assert (got == exact).mean() >= 0.5, (got, exact)


@pytest.mark.slow
def test_rerun_redoes_only_missing_or_corrupt_shards(built, capsys):
    from wolofmrl.cli.ray_index import index_from_args
    from wolofmrl.cli import parser

    root, argv = built
    again = root / "again"
    shutil.copytree(root / "ray" / "shards", again / "shards")  # a run killed after embedding, before the index
    shutil.copy(root / "ray" / ".wolofmrl-index", again)  # the killed run had claimed its folder first
    (again / "shards" / "00001.parquet").unlink()
    data = bytearray((again / "shards" / "00003.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (again / "shards" / "00003.parquet").write_bytes(bytes(data))
    args = parser().parse_args(argv[:3] + [str(again)] + argv[4:])
    summary = index_from_args(args)
    assert summary["embedded"] == 2 and summary["reused"] == summary["shards"] - 2
    first, second = DocumentIndex.open(root / "ray"), DocumentIndex.open(again)
    assert [r["sha256"] for r in first.manifest["shards"]] == [r["sha256"] for r in second.manifest["shards"]]
    assert np.array_equal(np.asarray(first.funnel.vectors), np.asarray(second.funnel.vectors))
    queries = np.asarray(first.funnel.vectors[::97], np.float32)
    assert np.array_equal(first.funnel.search(queries, 10, 200)[1], second.funnel.search(queries, 10, 200)[1])
    with pytest.raises(FileExistsError, match="(?i)already an index"):
        index_from_args(args)


def test_ray_engine_argument_mistakes(tiny_dir, docs, tmp_path, capsys):
    base = ["index", str(docs), "--model", str(tiny_dir), "--engine", "ray", "--dim", "16"]
    cases = [(["--out", str(tmp_path / "a"), "--kind", "hnsw"], "--kind hnsw is for --engine local"),
             (["--out", str(tmp_path / "b"), "--add"], "--add is not supported with --engine ray"),
             (["--out", str(tmp_path / "c"), "--pq-m", "5"], "--pq-m 5 must divide --dim 16"),
             (["--out", str(docs)], "is DOCS: --engine ray")]
    for extra, message in cases:
        assert main(base + extra) == 2
        assert message in capsys.readouterr().err
    assert not any(os.listdir(tmp_path))
