"""Stage-2 speech corpus: the text build on a real sample (counts, splits, leakage rule), the voice plan's held-out
rule, and a tiny synthesis with real espeak-ng that resumes after a kill and redoes a corrupted chunk."""
from __future__ import annotations

import copy
import shutil
from collections import defaultdict
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from wolofmrl.curation import pipeline
from wolofmrl.curation.config import load_config
from wolofmrl.curation.speech_corpus import chunk_done, corpus_schema, plan_chunks, synth
from wolofmrl.curation.speech_texts import HELD, _apply_leakage, build_texts, read_texts, write_texts
from wolofmrl.curation.speech_voices import check_voice_config, parse_voice, plan_row, wolof_respelling
from wolofmrl.curation.store import Drops
from wolofmrl.curation.text import dedupe_key
from wolofmrl.curation.unseen import unseen_split
from wolofmrl.voices import engine, is_held_out

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures"
QUALITY = ROOT / "train" / "configs" / "data" / "quality.yaml"


def sample_cfg(tmp: Path) -> dict:
    """quality.yaml on committed fixtures: 80 real MediaWiki messages in 6 languages + the curation fixtures."""
    cfg = load_config(QUALITY)
    cfg["sources"] = [
        {"name": "mediawiki", "type": "mediawiki", "root": str(FIX / "speech_corpus" / "mediawiki"), "fr_only": True},
        {"name": "gettext", "type": "gettext", "locale_dir": str(FIX / "curation" / "locale"), "fr_only": True},
        {"name": "freedict", "type": "freedict", "dir": str(FIX / "curation" / "freedict"), "min_words": 1},
    ]
    cfg["fetch"] = {"root": str(tmp / "sources"), "debian": []}
    cfg["multilingual"].update(langs=["fr", "es", "sw", "id"], keep_fraction={})
    cfg["word_pairs"] = {"numbers": [0, 30]}
    return cfg


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("texts")
    cfg = sample_cfg(tmp)
    rows, report = build_texts(cfg, tmp / "work")
    return cfg, rows, report, tmp


def test_text_build_counts_splits_and_leakage(built):
    cfg, rows, report, tmp = built
    by_lang = defaultdict(int)
    for r in rows:
        by_lang[r["speech_lang"] or "text_only"] += 1
    assert by_lang["wo"] >= 40 and by_lang["fr"] >= 30 and by_lang["es"] >= 20 and by_lang["sw"] >= 20
    d = report["dropped"]
    # the numerals 0..30: each a text-only pair, or counted among the drops
    assert by_lang["text_only"] + sum(d.get(k, 0) for k in ("number_roundtrip_failed", "text_pair_duplicate_or_copy",
                                                            "leak_text_pair")) == 31
    assert report["distinct_spoken_strings"] == len({(r["speech_lang"], dedupe_key(r["transcript"]))
                                                     for r in rows if not r["text_only"]})
    assert sum(report["per_lang_split"].values()) == len(rows)
    assert {"format_string", "markup"} & set(report["dropped"])  # junk of the real messages is counted
    # the reserved catalogs (klavaro, tuxpaint fixtures) are never read, in any language
    assert d["reserved_source"] >= 2
    texts = {t for r in rows for t in (r["transcript"], r["wo_text"], r["fr_text"])}
    assert not texts & {"Tapez cette phrase", "Bindal kàddu gii ci kaw"}
    assert any(r["transcript"] == "Choisissez une langue" for r in rows)  # the demo catalog beside them is
    # the curation split rule: a sentence keeps the split the pair pipeline gives it (dev/test/intent stay held),
    # unless its whole source is held out (unseen_dev / unseen_test, `unseen`)
    specs = pipeline.source_specs(cfg)
    for r in rows:
        if not r["text_only"]:
            assert r["group"].startswith(r["source"] + "/")
            assert r["split"] == (unseen_split(r["source"], r["group"].split("/", 1)[1]) or pipeline.sentence_split(
                {"source": r["source"], "sentence_id": r["sentence_id"]}, cfg, specs))
    assert {"train", "dev", "test", "intent"} <= {r["split"] for r in rows}
    # leakage: no train text equals any held-out text
    held = {dedupe_key(t) for r in rows if r["split"] in HELD
            for t in (r["transcript"], r["wo_text"], r["fr_text"]) if t}
    for r in rows:
        if r["split"] == "train":
            assert not {dedupe_key(t) for t in (r["transcript"], r["wo_text"], r["fr_text"]) if t} & held, r
    # the gzip JSONL is byte-identical when rewritten
    a, b = write_texts(rows, tmp / "a.jsonl.gz"), write_texts(rows, tmp / "b.jsonl.gz")
    assert Path(a).read_bytes() == Path(b).read_bytes() and list(read_texts(a)) == rows


def test_leakage_rule_drops_and_counts():
    sents = {"s-held": {"texts": {"wo": "Bañ", "fr": "Annuler"}, "en": "Cancel"},
             "s-train": {"texts": {"wo": "Denc"}, "en": "Save"}}
    split_of = {"s-held": "test", "s-train": "train"}

    def row(i, lang, text, fr=None, en=None, split="train"):
        return {"id": i, "speech_lang": lang, "transcript": text, "wo_text": None, "fr_text": fr, "en_text": en,
                "split": split}

    rows = [row("a", "es", "Cancelar", fr="Annuler"),        # French twin is a test passage
            row("b", "fr", "annuler !"),                      # equal after normalisation
            row("c", "id", "Batal", en="Cancel"),             # translates the held-out sentence's message
            row("d", "es", "Guardar", fr="Enregistrer", en="Save"),
            row("e", "sw", "Ghairi", split="intent")]
    drops = Drops()
    kept = _apply_leakage(rows, sents, split_of, drops)
    assert [r["id"] for r in kept] == ["d", "e"]
    assert drops.counts == {"leak_text_es": 1, "leak_text_fr": 1, "leak_en_msgid_id": 1}


def test_voice_plan_held_out_rule():
    vc = load_config(QUALITY)["voices"]
    rows = [{"id": f"r{i}", "text_only": False, "speech_lang": lang, "transcript": "Ndax mën nga ñëw ci xew wi?",
             "split": split} for i, (lang, split) in enumerate(
                 [(lg, sp) for lg in ("wo", "fr", "sw") for sp in ("train", "dev", "test", "intent")] * 10)]
    for r in rows:
        clips = plan_row(r, vc)
        voices = [c["voice"] for c in clips]
        assert len(set(voices)) == len(voices)
        if r["split"] == "intent":
            assert not clips
        elif r["split"] == "train":
            assert not any(is_held_out(v) for v in voices)
            assert len(voices) == (vc["wo_train"] if r["speech_lang"] == "wo" else vc["other_train"])
        else:
            assert voices and all(is_held_out(v) for v in voices)
        if r["speech_lang"] == "wo":
            assert {parse_voice(v)[0] for v in voices} <= set(vc["wo_readers"])
            assert all(c["espeak_text"] == wolof_respelling(r["transcript"], c["reader"]) for c in clips)
        else:
            assert all(parse_voice(v)[0] == r["speech_lang"] for v in voices)
    assert wolof_respelling("Ñaata xaalis?", "es") == "ñaata jaalis?"
    assert wolof_respelling("ñaata xaalis 12", "id").startswith("nyaata khaalis fukk")
    bad = copy.deepcopy(vc)
    bad["train_variants"] = [*bad["train_variants"], "m7"]
    with pytest.raises(ValueError, match="held-out"):
        check_voice_config(bad)


def test_corpus_schema_fallback_matches_datasets(monkeypatch):
    with_datasets = corpus_schema()
    import builtins

    real_import = builtins.__import__

    def no_datasets(name, *a, **k):
        if name == "datasets" or name.startswith("datasets."):
            raise ImportError(name)
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_datasets)
    without = corpus_schema()
    assert without.equals(with_datasets, check_metadata=False)
    import json

    meta = lambda s: json.loads(s.metadata[b"huggingface"])["info"]["features"]  # noqa: E731
    assert meta(without) == meta(with_datasets)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_tiny_synth_resumes_and_redoes_corrupt_chunk(tmp_path):
    cfg = load_config(QUALITY)
    vc = {**cfg["voices"], "wo_train": 2, "other_train": 1}
    sc = {**cfg["synth"], "chunk_size": 2}
    rows = [{"id": "s1-wo", "sentence_id": "s1", "source": "t", "source_key": "k1", "license": "MIT",
             "speech_lang": "wo", "transcript": "Jërëjëf, ba beneen yoon", "wo_text": "Jërëjëf, ba beneen yoon",
             "fr_text": "Merci, à la prochaine", "split": "train", "text_only": False},
            {"id": "s2-fr", "sentence_id": "s2", "source": "t", "source_key": "k2", "license": "MIT",
             "speech_lang": "fr", "transcript": "Enregistrer les modifications", "wo_text": None,
             "fr_text": "Enregistrer les modifications", "split": "train", "text_only": False},
            {"id": "s3-wo", "sentence_id": "s3", "source": "t", "source_key": "k3", "license": "MIT",
             "speech_lang": "wo", "transcript": "Xët wu njëkk", "wo_text": "Xët wu njëkk", "fr_text": "Accueil",
             "split": "test", "text_only": False}]
    texts = write_texts(rows, tmp_path / "t.jsonl.gz")
    out = tmp_path / "corpus"
    chunks = plan_chunks(rows, vc, 2)
    assert [(s, i, len(c)) for s, i, c in chunks] == [("train", 0, 2), ("train", 1, 1), ("test", 0, 2)]
    with pytest.raises(KeyboardInterrupt):
        synth(texts, out, vc, sc, workers=1, stop_after_chunks=1, log=lambda m: None)
    assert [chunk_done(out, s, i)[0] for s, i, _ in chunks] == [True, False, False]
    card = synth(texts, out, vc, sc, workers=1, log=lambda m: None)
    assert card["run"]["chunks_voiced"] == 2 and card["splits"]["train"]["kept"] == 3
    assert card["checks"]["wo_voices_per_train_sentence_min"] == 2 and not card["checks"]["train_voices_held_out"]
    first = (out / "train" / "train-00000.parquet").read_bytes()
    (out / "train" / "train-00000.parquet").write_bytes(first[:-100] + b"x" * 100)  # corrupt a finished chunk
    assert chunk_done(out, "train", 0) == (False, "corrupt")
    card = synth(texts, out, vc, sc, workers=1, log=lambda m: None)
    assert card["run"]["corrupt_chunks_redone"] == 1 and card["run"]["chunks_voiced"] == 1
    assert (out / "train" / "train-00000.parquet").read_bytes() == first  # same input, same bytes
    from processing_wolofmrl import decode_audio
    from wolofmrl.curation.shards import load_split

    ds = load_split(out, "test", decode=False)
    assert len(ds) == 2 and all(is_held_out(v) for v in ds["voice"])
    x, sr = decode_audio(ds[0]["audio"]["bytes"])
    assert sr == 16000 and 0.3 < len(x) / sr < 5 and ds[0]["transcript"] == "Xët wu njëkk"
    assert pq.read_schema(out / "test" / "test-00000.parquet").names[-2:] == ["transcript", "group"]
    assert "synthetic" in (out / "DATACARD.md").read_text()


READING = ROOT / "train" / "configs" / "data" / "reading.yaml"


def test_voice_plan_mbrola_and_unseen_splits():
    vc = load_config(READING)["voices"]
    check_voice_config(vc)
    rows = [{"id": f"r{i}", "text_only": False, "speech_lang": lang, "transcript": "Ndax mën nga ñëw ci xew wi?",
             "split": split, "source": "t"} for i, (lang, split) in enumerate(
                 [(lg, sp) for lg in ("wo", "fr", "es", "de") for sp in ("train", "unseen_dev", "unseen_test")] * 20)]
    engines = {}
    for r in rows:
        clips = plan_row(r, vc)
        assert clips, r  # unseen rows are voiced (as eval data)
        for c in clips:
            assert is_held_out(c["voice"]) == (r["split"] != "train"), c["voice"]
            engines.setdefault((r["speech_lang"], r["split"] == "train"), set()).add(c["engine"])
    assert engines[("wo", True)] == {"espeak", "mbrola"} and engines[("fr", True)] == {"espeak", "mbrola"}
    assert engines[("wo", False)] == {"espeak", "mbrola"}  # the held-out MBROLA voice es3
    assert engines[("de", True)] == {"espeak"}  # no MBROLA voice for German in the plan
    for reserved in ("fr1", "fr4"):
        with pytest.raises(ValueError, match="reserved"):
            check_voice_config({**vc, "mbrola_train": [*vc["mbrola_train"], reserved]})
        with pytest.raises(ValueError, match="reserved"):
            is_held_out(f"mbrola-fr-{reserved}-p50-s100")


@pytest.mark.skipif(shutil.which("espeak-ng") is None or shutil.which("mbrola") is None
                    or not Path("/usr/share/mbrola/es1").exists(),
                    reason="espeak-ng / mbrola voices not installed (bash train/apt_contrib.sh install)")
def test_tiny_synth_two_engines_unseen_split_and_budget(tmp_path):
    cfg = load_config(READING)
    vc = {**cfg["voices"], "wo_train": 4, "other_train": 2, "mbrola_share": 0.5}
    sc = {**cfg["synth"], "chunk_size": 4}
    base = {"source": "t", "license": "MIT", "text_only": False, "group": "t/g"}
    rows = [{**base, "id": f"s{i}-{lg}", "sentence_id": f"s{i}", "source_key": str(i), "speech_lang": lg,
             "transcript": t, "wo_text": t if lg == "wo" else None, "fr_text": "Merci" if lg == "wo" else t,
             "split": sp} for i, (lg, t, sp) in enumerate([
                 ("wo", "Jërëjëf, ba beneen yoon", "train"), ("wo", "Xët wu njëkk", "train"),
                 ("fr", "Enregistrer les modifications", "train"), ("es", "Guardar los cambios", "train"),
                 ("wo", "Ndax mën nga ñëw?", "unseen_test"), ("fr", "Nouvelle partie", "unseen_dev")])]
    texts = write_texts(rows, tmp_path / "t.jsonl.gz")
    card = synth(texts, tmp_path / "c", vc, sc, workers=1, log=lambda m: None)
    assert not card["dropped"], card["dropped"]
    assert {"espeak", "mbrola"} <= set(card["hours_per_engine"])
    assert card["hours_per_engine"]["mbrola"]["train"] > 0
    assert card["splits"]["unseen_test"]["kept"] == 2 and card["splits"]["unseen_dev"]["kept"] == 1
    from wolofmrl.curation.shards import load_split

    ds = load_split(tmp_path / "c", "unseen_test", decode=False)
    assert all(is_held_out(v) for v in ds["voice"]) and set(ds["group"]) == {"t/g"}
    assert {engine(v) for v in load_split(tmp_path / "c", "train", decode=False)["voice"]} == {"espeak", "mbrola"}
    # a budget keeps fewer train clips, every held-out clip
    small = synth(texts, tmp_path / "b", vc, sc, workers=1, log=lambda m: None, max_train_hours=0.001)
    assert 0 < small["splits"]["train"]["clips"] < card["splits"]["train"]["clips"]
    assert small["splits"]["unseen_test"]["clips"] == card["splits"]["unseen_test"]["clips"]


def test_synth_voices_only_the_splits_asked_for_and_resumes_with_the_rest(tmp_path):
    cfg = load_config(READING)
    vc, sc = {**cfg["voices"], "wo_train": 1, "other_train": 1, "mbrola_share": 0.0}, {**cfg["synth"], "chunk_size": 2}
    base = {"source": "t", "license": "MIT", "text_only": False, "group": "t/g"}
    rows = [{**base, "id": f"s{i}", "sentence_id": f"s{i}", "source_key": str(i), "speech_lang": "fr",
             "transcript": t, "wo_text": None, "fr_text": t, "split": sp}
            for i, (t, sp) in enumerate([("Enregistrer", "train"), ("Ouvrir le fichier", "train"),
                                         ("Nouvelle partie", "unseen_dev"), ("Quitter le jeu", "unseen_test")])]
    texts = write_texts(rows, tmp_path / "t.jsonl.gz")
    with pytest.raises(ValueError, match=r"splits \['tset'\] are not corpus splits"):
        synth(texts, tmp_path / "c", vc, sc, workers=1, log=lambda m: None, splits=["train", "tset"])
    with pytest.raises(ValueError, match="splits is empty"):
        synth(texts, tmp_path / "c", vc, sc, workers=1, log=lambda m: None, splits=[])
    assert not (tmp_path / "c").exists()  # refused before anything is written
    part = synth(texts, tmp_path / "c", vc, sc, workers=1, log=lambda m: None, splits=["train", "unseen_dev"])
    assert part["run"]["splits"] == ["train", "unseen_dev"]
    assert part["splits"]["train"]["clips"] == 2 and part["splits"]["unseen_dev"]["clips"] == 1
    assert part["splits"]["unseen_test"].get("clips", 0) == 0
    said = []
    whole = synth(texts, tmp_path / "c", vc, sc, workers=1, log=said.append)  # every split: resumes the rest
    assert whole["splits"]["unseen_test"]["clips"] == 1 and whole["splits"]["train"]["clips"] == 2
    assert "2 done already" in said[0] and "1 to voice" in said[0], said[0]
