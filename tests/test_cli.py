"""The `wolofmrl` command (index / search / embed) on a tiny random model with the real tokenizer and FAISS."""

import json

import numpy as np
import pytest
import soundfile as sf

from wolofmrl.cli import main, parser
from wolofmrl.cli import store as store_mod
from wolofmrl.cli.documents import DropStats, read_passages, split_passages
from wolofmrl.testing import synthetic_waves

FRENCH = ["La pluie tombera demain sur Dakar. Prenez un parapluie.",
          "Le marché de Sandaga ouvre à huit heures. Les commerçants vendent du tissu.",
          "Le président a parlé à la radio ce matin.", "La mer est calme aujourd'hui.",
          "Le riz coûte plus cher cette année.", "Les enfants vont à l'école à pied."]


@pytest.fixture()
def docs(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("\n\n".join(FRENCH[:2]), encoding="utf-8")
    (d / "b.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in FRENCH[2:4]) + "\nnot json\n{\"x\": 1}\n")
    (d / "c.csv").write_text("id,text\n1," + FRENCH[4] + "\n2,\n", encoding="utf-8")
    (d / "ignored.pdf").write_bytes(b"%PDF")
    return d


def test_split_passages_bounds_words_and_keeps_sentences():
    text = "Une phrase courte. " * 30 + "\n\n# Titre\n- un point\n"
    out = split_passages(text, max_words=10, markdown=True)
    assert all(len(p.split()) <= 10 for p in out)
    assert out[0] == "Une phrase courte. Une phrase courte. Une phrase courte."
    assert out[-2:] == ["Titre", "un point"]
    assert split_passages("mot " * 25, max_words=10) == ["mot " * 9 + "mot"] * 2 + ["mot " * 4 + "mot"]
    with pytest.raises(ValueError, match="max_words"):
        split_passages("x", 0)


def test_read_passages_counts_every_drop(docs):
    stats = DropStats()
    got = [p.text for f in ("a.txt", "b.jsonl", "c.csv") for p in read_passages(docs / f, stats)]
    assert got == FRENCH[:5]
    assert stats.dropped == {"bad JSON line": 1, "no 'text' string field": 1, "empty document": 1}
    (docs / "d.csv").write_text("id,body\n1,x\n")
    with pytest.raises(ValueError, match="--text-field"):
        list(read_passages(docs / "d.csv"))


def test_every_subcommand_has_help(capsys):
    for cmd in ("index", "search", "embed", "serve"):
        with pytest.raises(SystemExit) as exit_:
            parser().parse_args([cmd, "--help"])
        assert exit_.value.code == 0
        assert "usage: wolofmrl " + cmd in capsys.readouterr().out


def test_index_then_search_matches_exact_full_width_ranking(tiny_dir, docs, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(docs), "--out", str(out), "--model", str(tiny_dir), "--dim", "16"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["coarse_dim"] == 16 and manifest["full_dim"] == 48
    assert manifest["dropped"] == {"bad JSON line": 1, "no 'text' string field": 1, "empty document": 1}
    capsys.readouterr()
    wav = tmp_path / "q.wav"
    sf.write(wav, synthetic_waves(1, (1.5, 1.5))[0], 16000)
    assert main(["search", str(out), str(wav), "--text", "marché", "--k", "5", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["query"] for r in results] == [str(wav), "marché"]
    model, processor, _ = store_mod.load_model(tiny_dir, "cpu")
    passages = store_mod.embed_texts(model, processor, FRENCH[:5], "passage")
    query = store_mod.embed_texts(model, processor, ["marché"], "query")
    want = np.argsort(-(query @ passages.T)[0])  # passages were indexed in file order: ids = FRENCH order
    hits = results[1]["results"]
    assert [h["id"] for h in hits] == want.tolist()
    assert hits[0]["text"] == FRENCH[want[0]] and hits[0]["source"].startswith(str(docs))
    np.testing.assert_allclose(hits[0]["score"], (query @ passages.T)[0, want[0]], atol=1e-3)


def test_add_is_incremental_and_refuses_to_overwrite(tiny_dir, docs, tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(docs / "a.txt"), "--out", str(out), "--model", str(tiny_dir), "--dim", "8"]) == 0
    assert main(["index", str(docs), "--out", str(out)]) == 2
    assert "--add" in capsys.readouterr().err
    assert main(["index", str(docs), "--out", str(out), "--add", "--dim", "16"]) == 2  # the INDEX keeps its width
    assert "built with --dim 8" in capsys.readouterr().err
    # without --model and --dim: the INDEX's own model and width (no default model is built here, as in CI)
    assert main(["index", str(docs), "--out", str(out), "--add"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 5 and manifest["dropped"]["file already indexed"] == 1
    ids = [json.loads(line)["id"] for line in (out / "passages.jsonl").read_text().splitlines()]
    assert ids == list(range(5))
    assert main(["index", str(docs), "--out", str(out), "--add"]) == 0
    assert "nothing to add" in capsys.readouterr().out


def test_index_resumes_from_finished_chunks(tiny_dir, docs, tmp_path, monkeypatch):
    calls = []
    real = store_mod.embed_texts

    def crash_on_third_chunk(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 3:
            raise KeyboardInterrupt  # the user stops a long run
        return real(*args, **kwargs)

    monkeypatch.setattr(store_mod, "embed_texts", crash_on_third_chunk)
    out = tmp_path / "idx"
    kwargs = dict(model_path=tiny_dir, coarse_dim=8, chunk=2, progress=False, log=lambda *_: None)
    with pytest.raises(KeyboardInterrupt):
        store_mod.index_documents(docs, out, **kwargs)
    assert not (out / "manifest.json").exists() and len(list(out.glob(".staging-*/*.npy"))) == 2
    monkeypatch.setattr(store_mod, "embed_texts", real)
    summary = store_mod.index_documents(docs, out, **kwargs)
    assert summary["resumed_chunks"] == 2 and summary["count"] == 5
    clean = store_mod.index_documents(docs, tmp_path / "clean", **kwargs)
    assert clean["resumed_chunks"] == 0
    a = store_mod.DocumentIndex.open(out).funnel.vectors
    b = store_mod.DocumentIndex.open(tmp_path / "clean").funnel.vectors
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not list(out.glob(".staging-*"))


def test_embed_npy_and_parquet(tiny_dir, tmp_path):
    import pyarrow.parquet as pq

    npy, par = tmp_path / "t.npy", tmp_path / "t.parquet"
    assert main(["embed", "--model", str(tiny_dir), "--text", FRENCH[0], "--text", FRENCH[1], "--dim", "16",
                 "--out", str(npy)]) == 0
    model, processor, _ = store_mod.load_model(tiny_dir, "cpu")
    np.testing.assert_allclose(np.load(npy), store_mod.embed_texts(model, processor, FRENCH[:2], "passage", 16),
                               atol=1e-6)
    wav = tmp_path / "a.wav"
    sf.write(wav, synthetic_waves(1)[0], 22050)  # any rate: resampled by the processor
    assert main(["embed", "--model", str(tiny_dir), "--audio", str(wav), "--out", str(par)]) == 0
    table = pq.read_table(par).to_pylist()
    assert table[0]["input"] == str(wav) and len(table[0]["embedding"]) == 48
    assert main(["embed", "--model", str(tiny_dir), "--text", "x", "--out", str(tmp_path / "x.txt")]) == 2


def test_bad_arguments_exit_2_with_a_message(tiny_dir, docs, tmp_path, capsys):
    assert main(["search", str(tmp_path / "nope"), "--text", "x"]) == 2
    assert "wolofmrl index" in capsys.readouterr().err
    assert main(["index", str(docs), "--out", str(tmp_path / "i"), "--model", str(tiny_dir), "--dim", "99"]) == 2
    assert "1..48" in capsys.readouterr().err
    assert main(["index", str(tmp_path / "missing"), "--out", str(tmp_path / "j")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_unsupported_document_files_are_named_not_dropped_silently(tmp_path, caplog):
    """A .docx given as DOCS is refused with its type; one inside a folder is skipped with a counted warning."""
    from wolofmrl.cli.documents import iter_document_files

    (tmp_path / "a.txt").write_text("Le marché ouvre à huit heures.", encoding="utf-8")
    (tmp_path / "b.docx").write_bytes(b"PK\x03\x04 not text")
    with pytest.raises(ValueError, match=r"unsupported file type '.docx'.*convert"):
        iter_document_files(tmp_path / "b.docx")
    with caplog.at_level("WARNING", logger="wolofmrl.cli"):
        assert iter_document_files(tmp_path) == [tmp_path / "a.txt"]
    assert "skipped 1 file(s) of unsupported types (.docx: 1)" in caplog.text


@pytest.mark.parametrize("argv,message", [
    (["embed", "--text", "x", "--dim", "0", "--out", "e.npy"], "leave out --dim"),
    (["embed", "--audio", "missing.wav", "--out", "e.npy"], "audio file 'missing.wav' not found"),
    (["search", "no_index", "missing.wav"], "audio file 'missing.wav' not found"),
])
def test_argument_mistakes_fail_before_the_model_loads(argv, message, capsys, tmp_path, monkeypatch):
    """Typos are refused by `check_arguments`, before the command (and its model load) runs: exit 2 and a message
    naming the argument."""
    from wolofmrl import cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(cli.COMMANDS, argv[0], lambda args: pytest.fail("the command ran: the check came too late"))
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err
