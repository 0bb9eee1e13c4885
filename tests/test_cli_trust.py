"""A CLI users can trust (issue 19): owned INDEX folders, verified index files, resume keyed on what changes the
result, linear splitting, clear errors for bad text/audio, one long-audio path, fast failure. Tiny random model on the
real tokenizer and FAISS; audio is synthetic (tone chirps), named so."""

import functools
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wolofmrl.cli import folder as fs
from wolofmrl.cli import main
from wolofmrl.cli import store as store_mod
from wolofmrl.cli.documents import DropStats, iter_document_files, read_passages, split_passages
from wolofmrl.testing import synthetic_waves

ROOT = Path(__file__).resolve().parent.parent
FRENCH = ["Le marché ouvre à huit heures.", "La pluie arrive en juillet.", "Une seule main ne peut applaudir.",
          "Le bateau part de Ziguinchor le soir.", "Le mil pousse après les premières pluies.",
          "L'homme est le remède de l'homme."]


@pytest.fixture(scope="module", autouse=True)
def one_model_load():
    """Load each model folder once per module (the commands under test still call `store.load_model`)."""
    real = store_mod.load_model
    cached = functools.lru_cache(None)(lambda path, device, dtype: real(path, device, dtype))
    store_mod.load_model = lambda path, device=None, dtype="auto": cached(str(Path(path).resolve()), device, dtype)
    yield
    store_mod.load_model = real


def _docs(folder: Path, n: int = 6) -> Path:
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("\n\n".join(FRENCH[:n]), encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def built(tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("built")
    docs = _docs(base / "docs")
    store_mod.index_documents(docs, base / "idx", tiny_dir, coarse_dim=8, progress=False, log=lambda *_: None)
    return base / "idx"


# ------------------------------------------------------------------ 1. only folders it owns; never its own output
def test_out_that_is_not_an_owned_folder_is_refused_before_anything_is_written(tmp_path, capsys):
    docs = _docs(tmp_path / "docs")
    user = tmp_path / "corpus"
    user.mkdir()
    mine = json.dumps({"text": FRENCH[0], "author": "Awa"}) + "\n"
    (user / "passages.jsonl").write_text(mine, encoding="utf-8")
    cases = [(docs / "a.txt", "is an existing file"),            # --out a file
             (user, "not a wolofmrl INDEX"),                    # a user's own folder
             (docs / "sub" / "idx", "is inside DOCS")]          # a folder inside DOCS
    for out, message in cases:
        assert main(["index", str(docs), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert "--out" in err and message in err and len(err.splitlines()) == 1
    assert main(["index", str(user / "passages.jsonl"), "--out", str(user)]) == 2  # DOCS inside --out
    assert "holds DOCS" in capsys.readouterr().err
    assert (user / "passages.jsonl").read_text(encoding="utf-8") == mine
    assert (docs / "a.txt").read_text(encoding="utf-8") == "\n\n".join(FRENCH)
    assert sorted(p.name for p in docs.iterdir()) == ["a.txt"]


def test_an_index_may_share_its_docs_folder_without_overwriting_or_rereading(tiny_dir, tmp_path, capsys):
    docs = _docs(tmp_path / "docs", n=2)
    assert main(["index", str(docs), "--out", str(docs), "--model", str(tiny_dir), "--dim", "8"]) == 0
    assert (docs / "a.txt").read_text(encoding="utf-8") == "\n\n".join(FRENCH[:2])
    assert len((docs / "passages.jsonl").read_text(encoding="utf-8").splitlines()) == 2
    assert iter_document_files(docs) == [docs / "a.txt"]  # the index's own files are output, never documents
    capsys.readouterr()
    assert main(["index", str(docs), "--out", str(docs), "--add"]) == 0
    assert "nothing to add" in capsys.readouterr().out
    (docs / "b.txt").write_text(FRENCH[2], encoding="utf-8")
    assert main(["index", str(docs), "--out", str(docs), "--add"]) == 0
    rows = [json.loads(line) for line in (docs / "passages.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == FRENCH[:3]  # each passage once
    # a DOCS folder holding a file of the index's name is refused, the file untouched
    user = tmp_path / "corpus"
    user.mkdir()
    mine = json.dumps({"text": FRENCH[0], "author": "Awa"}) + "\n"
    (user / "passages.jsonl").write_text(mine, encoding="utf-8")
    capsys.readouterr()
    assert main(["index", str(user), "--out", str(user), "--model", str(tiny_dir), "--dim", "8"]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "already holds passages.jsonl" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in user.iterdir()) == ["passages.jsonl"]
    assert (user / "passages.jsonl").read_text(encoding="utf-8") == mine


def test_an_index_is_never_read_as_documents(built, tmp_path, caplog):
    docs = _docs(tmp_path / "docs")
    shutil.copytree(built, docs / "old_index")  # someone's INDEX inside the documents
    with caplog.at_level("WARNING", logger="wolofmrl.cli"):
        assert iter_document_files(docs) == [docs / "a.txt"]
    assert "inside wolofmrl INDEX folders" in caplog.text
    with pytest.raises(ValueError, match="is a wolofmrl INDEX folder"):
        iter_document_files(built)
    assert (built / fs.INDEX_MARKER).is_file()


# ------------------------------------------------------------------ 1. resume keys on everything that changes it
def test_resume_reuses_chunks_only_for_the_same_inputs_arguments_and_model(tiny_dir, tmp_path, monkeypatch):
    docs = _docs(tmp_path / "docs")
    real = store_mod.embed_texts
    calls = []

    def killed_on_third_chunk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    kwargs = dict(model_path=tiny_dir, coarse_dim=8, chunk=2, progress=False)
    out, lines = tmp_path / "idx", []
    monkeypatch.setattr(store_mod, "embed_texts", killed_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        store_mod.index_documents(docs, out, **kwargs, log=lines.append)
    monkeypatch.setattr(store_mod, "embed_texts", real)
    # other --max-words: the two finished chunks hold other passages' vectors -> discarded, said so
    summary = store_mod.index_documents(docs, out, **{**kwargs, "chunk": 3}, max_words=5, log=lines.append)
    assert summary["resumed_chunks"] == 0 and any("discarding 2 chunks" in line for line in lines)
    index = store_mod.DocumentIndex.open(out)
    model, processor, _ = store_mod.load_model(tiny_dir, "cpu")
    fresh = real(model, processor, [p["text"] for p in index.passages], "passage")
    np.testing.assert_allclose((fresh * index.funnel.vectors).sum(1), 1, atol=1e-4)
    # same arguments: resumed, and it says so
    calls.clear()
    monkeypatch.setattr(store_mod, "embed_texts", killed_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        store_mod.index_documents(docs, tmp_path / "idx2", **kwargs, log=lines.append)
    monkeypatch.setattr(store_mod, "embed_texts", real)
    lines.clear()
    summary = store_mod.index_documents(docs, tmp_path / "idx2", **kwargs, log=lines.append)
    assert summary["resumed_chunks"] == 2 and any("resuming an interrupted run: 2 of 3" in line for line in lines)
    # an input file changed in place (same name, same size): the key is its content, so nothing is reused
    calls.clear()
    monkeypatch.setattr(store_mod, "embed_texts", killed_on_third_chunk)
    with pytest.raises(KeyboardInterrupt):
        store_mod.index_documents(docs, tmp_path / "idx3", **kwargs, log=lines.append)
    monkeypatch.setattr(store_mod, "embed_texts", real)
    text = (docs / "a.txt").read_text(encoding="utf-8")
    (docs / "a.txt").write_text(text.replace("pluie", "PLUIE"), encoding="utf-8")
    assert store_mod.index_documents(docs, tmp_path / "idx3", **kwargs, log=lines.append)["resumed_chunks"] == 0


# ------------------------------------------------------------------ 2. every index file verified on open
def _damage(src: Path, dst: Path, name: str, fn) -> Path:
    shutil.copytree(src, dst)
    (dst / name).write_bytes(fn((dst / name).read_bytes()))
    return dst


def _flip_row(raw: bytes, row: int = 2, width: int = 48) -> bytes:
    import io

    fh = io.BytesIO(raw)
    np.lib.format.read_magic(fh)
    np.lib.format.read_array_header_1_0(fh)
    off = fh.tell() + row * width * 4 + 3  # the high byte of the row's first coordinate
    raw = bytearray(raw)
    raw[off:off + 4] = bytes(b ^ 0xFF for b in raw[off:off + 4])
    return bytes(raw)


def _swap_lines(raw: bytes) -> bytes:
    lines = raw.decode("utf-8").splitlines(keepends=True)
    lines[0], lines[1] = lines[1], lines[0]
    return "".join(lines).encode("utf-8")


@pytest.mark.parametrize("name,fn,verify,message", [
    ("full.npy", _flip_row, False, "row 2 has norm"),
    ("passages.jsonl", _swap_lines, False, "SHA-256 differs"),
    ("coarse.faiss", lambda raw: raw[:-4], False, "bytes"),
    ("coarse.faiss", lambda raw: raw[:-4] + bytes(b ^ 1 for b in raw[-4:]), True, "SHA-256 differs"),
    ("funnel.json", lambda raw: raw.replace(b'"nprobe": 16', b'"nprobe": 61'), False, "SHA-256 differs"),
    ("manifest.json", lambda raw: raw[:-10], False, "not valid JSON"),
])
def test_damaged_index_files_are_named_with_the_fix(built, tmp_path, capsys, name, fn, verify, message):
    folder = _damage(built, tmp_path / "idx", name, fn)
    with pytest.raises(fs.IndexDamaged, match=f"{name}.*{message}.*rebuild"):
        store_mod.DocumentIndex.open(folder, verify=verify)
    argv = ["search", str(folder), "--text", "marché"] + (["--verify"] if verify else [])
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and name in err and "rebuild" in err


def test_same_size_damage_to_a_large_file_needs_verify_and_ids_are_checked(built, tmp_path):
    folder = _damage(built, tmp_path / "idx", "coarse.faiss", lambda raw: raw[:-4] + bytes(b ^ 1 for b in raw[-4:]))
    store_mod.DocumentIndex.open(folder)  # cheap check: sizes only for the large files
    lines = (built / "passages.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == list(range(6))


def test_hits_carry_their_margin_to_the_next_hit(built, tiny_dir, capsys):
    assert main(["search", str(built), "--text", "marché", "--k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["results"]
    assert [h["rank"] for h in hits] == [1, 2, 3]
    for a, b in zip(hits, hits[1:]):
        assert a["margin"] == pytest.approx(a["score"] - b["score"], abs=2e-4)
    assert hits[-1]["margin"] is not None  # the 4th passage exists: the last hit has a margin too
    assert main(["search", str(built), "--text", "marché", "--k", "6"]) == 0
    out = capsys.readouterr().out
    assert "margin" in out and out.count("     -") == 1  # the last of all 6 passages has no next hit


# ------------------------------------------------------------------ 4. linear splitting, UTF-8, empty queries
def test_splitting_a_paragraph_without_sentence_ends_is_linear():
    words = "le marché ouvre tous les jours à huit heures et les commerçants vendent du tissu".split()
    n = 300_000
    plain = " ".join(words[i % len(words)] for i in range(n))
    dotted = " ".join(words[i % len(words)] + (". Et" if i % 15 == 14 else "") for i in range(n))
    t = time.perf_counter()
    out_dotted = split_passages(dotted, 120)
    t_dotted = time.perf_counter() - t
    t = time.perf_counter()
    out_plain = split_passages(plain, 120)
    t_plain = time.perf_counter() - t
    assert " ".join(out_plain) == plain and all(len(p.split()) <= 120 for p in out_plain)
    assert len(out_plain) == -(-n // 120) and out_dotted
    assert t_plain < max(1.0, 8 * t_dotted), (t_plain, t_dotted)  # quadratic: ~30x slower at this size


@pytest.mark.parametrize("name,data", [("notes.txt", "Le marché ouvre à huit heures.\n"),
                                       ("notes.jsonl", '{"text": "ok"}\n{"text": "Le marché"}\n'),
                                       ("notes.csv", "text\nLe marché ouvre.\n")])
def test_non_utf8_documents_are_named_with_the_fix(tmp_path, name, data):
    (tmp_path / name).write_bytes(data.encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{name} is not UTF-8 text \(byte 0xe9 on line \d.*re-save it as UTF-8"):
        list(read_passages(tmp_path / name, DropStats()))
    (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + data.encode("utf-8"))  # a BOM (Excel's CSV) is fine
    assert [p.text for p in read_passages(tmp_path / name)][-1].startswith("Le marché")


def test_passages_keep_line_separator_characters(tiny_dir, tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.jsonl").write_text(json.dumps({"text": "Le marché\u2028ouvre\x85tôt."}, ensure_ascii=False) + "\n",
                                  encoding="utf-8")
    store_mod.index_documents(docs, tmp_path / "idx", tiny_dir, coarse_dim=8, progress=False, log=lambda *_: None)
    assert len(store_mod.DocumentIndex.open(tmp_path / "idx").passages) == 1


def test_empty_and_silent_queries_are_refused(built, tmp_path, capsys):
    from processing_wolofmrl import is_silent

    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(3 * 16000, np.float32), 16000)
    for argv, message in [([str(silence)], "silent"), (["--text", ""], "is empty"), (["--text", "  "], "is empty")]:
        assert main(["search", str(built), *argv]) == 2
        assert message in capsys.readouterr().err
    assert is_silent(np.full(16000, 1e-4, np.float32)) and not is_silent(synthetic_waves(1)[0])


# ------------------------------------------------------------------ 5. one long-audio path: trim, then window
def test_cli_long_audio_equals_the_processor_and_model_path(tiny_dir):
    import torch

    from wolofmrl.inference import encode_speech

    model, processor, _ = store_mod.load_model(tiny_dir, "cpu")
    tone = synthetic_waves(1, (3.0, 3.0))[0]  # synthetic, not speech
    long_speech = np.concatenate(synthetic_waves(2, (20.0, 20.0), seed=1))  # 40 s: windows
    clips = [np.concatenate([tone, np.zeros(60 * 16000, np.float32)]), long_speech]
    got = store_mod.embed_audio(model, processor, clips, sampling_rate=16000)
    with torch.no_grad():
        want = model.get_speech_embeddings(**processor(audio=clips, sampling_rate=16000)).numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    batched = encode_speech(model, processor, clips, sampling_rate=16000, progress=False).numpy()
    np.testing.assert_allclose(batched, want, atol=1e-4)  # the batched encoder takes the same path
    alone = store_mod.embed_audio(model, processor, [tone], sampling_rate=16000)[0]
    assert float(got[0] @ alone) > 0.99  # the silent minute is trimmed before windowing, not pooled in


# ------------------------------------------------------------------ 6. fast failure, fast start, discoverable
def test_help_and_argument_errors_do_not_import_torch(tmp_path):
    code = ("import sys; from wolofmrl.cli import main; rc = main(['search', 'missing_index', '--text', 'x']);"
            "print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split() == ["2", "False", "False"], out.stderr


def test_version_and_every_help_entry_has_text_and_default(capsys, monkeypatch):
    from wolofmrl.cli import parser

    with pytest.raises(SystemExit):
        parser().parse_args(["--version"])
    assert capsys.readouterr().out.startswith("wolofmrl ")
    monkeypatch.setenv("COLUMNS", "400")
    sub = next(a for a in parser()._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        for action in p._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
            if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
                assert f"(default: {action.default})" in text, (name, action.option_strings)


def test_default_model_works_from_any_folder(monkeypatch, tmp_path, tiny_dir):
    from wolofmrl.cli import default_model, user_model_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WOLOFMRL_MODEL", str(tiny_dir))
    assert default_model() == str(tiny_dir)
    monkeypatch.delenv("WOLOFMRL_MODEL")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert Path(default_model()).is_absolute()
    assert user_model_dir() == tmp_path / "cache" / "wolofmrl" / "wolofmrl-base"


def test_embed_output_and_text_file_mistakes(tiny_dir, tmp_path, capsys, monkeypatch):
    from wolofmrl import cli

    monkeypatch.setitem(cli.COMMANDS, "embed", lambda args: pytest.fail("the command ran: the check came too late"))
    for out, message in [(tmp_path, "not a folder"), (tmp_path / "no" / "e.npy", "does not exist")]:
        assert main(["embed", "--model", str(tiny_dir), "--text", "x", "--out", str(out)]) == 2
        assert message in capsys.readouterr().err
    monkeypatch.undo()
    lines = tmp_path / "lines.txt"
    lines.write_text("un\n\ndeux\n", encoding="utf-8")
    assert main(["embed", "--model", str(tiny_dir), "--text-file", str(lines), "--out", str(tmp_path / "e.npy")]) == 0
    assert "skipped 1 blank line(s)" in capsys.readouterr().err and np.load(tmp_path / "e.npy").shape == (2, 48)


def test_bad_dim_is_refused_before_the_model_loads(tiny_dir, tmp_path, capsys, monkeypatch):
    from wolofmrl import cli

    monkeypatch.setitem(cli.COMMANDS, "index", lambda args: pytest.fail("the command ran: the check came too late"))
    docs = _docs(tmp_path / "docs")
    assert main(["index", str(docs), "--out", str(tmp_path / "i"), "--model", str(tiny_dir), "--dim", "49"]) == 2
    assert "1..48" in capsys.readouterr().err


# ------------------------------------------------------------------ 7. the library does not depend on eval/
def test_library_and_training_do_not_import_eval():
    import ast

    for path in list((ROOT / "wolofmrl").rglob("*.py")) + list((ROOT / "train").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n == "eval" or n.startswith("eval.") or n == "metrics" for n in names), path
    assert not (ROOT / "eval" / "metrics.py").exists()
