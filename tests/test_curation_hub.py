"""Hub loaders, read through `datasets.load_dataset` on local fixtures in the exact Hub schemas,
with the bad inputs a real corpus has: corrupt audio, missing file, empty transcript,
mismatched pair ids, 44.1 kHz audio, transcripts with no translation."""
from __future__ import annotations

from pathlib import Path

import pytest

from wolofmrl.curation import hub_sources, pipeline
from wolofmrl.curation.config import load_config
from wolofmrl.curation.store import Drops

ROOT = Path(__file__).resolve().parents[1]
HUB = ROOT / "tests" / "fixtures" / "curation" / "hub"


def _local(spec: dict) -> dict:
    name = spec["name"]
    if spec["type"] == "fleurs":
        files = {cfg: {s: str(HUB / f"fleurs/{cfg}/{s}.parquet") for s in ("train", "validation", "test")}
                 for cfg in ("wo_sn", "fr_fr")}
        return {**spec, "local": {"builder": "parquet", "data_files": files}}
    if name == "alffa":
        return {**spec, "splits": ["train"], "columns": {"audio": "audio", "text": "sentence", "speaker": "speaker_id"},
                "local": {"data_files": {"train": str(HUB / "asr/train.parquet")}}}
    if name in ("mafand", "galsenai_text"):
        d = "mafand" if name == "mafand" else "galsenai"
        return {**spec, "splits": ["train", "test"],
                "local": {"data_files": {s: str(HUB / f"{d}/{s}.parquet") for s in ("train", "test")}}}
    return {**spec, "enabled": False}


def hub_cfg(mt: str = "lookup") -> dict:
    cfg = load_config(ROOT / "train/configs/data/hub.yaml")
    cfg["sources"] = [_local(s) for s in cfg["sources"]]
    cfg["mt"] = {"backend": "lookup", "path": str(HUB / "asr/mt.json")} if mt == "lookup" else {"backend": mt}
    cfg["voice"].update(workers=1, chunk_size=8, wo_voices_per_sentence=1,
                        engines={"wo": {"espeak": 1.0}, "fr": {"espeak": 1.0}})
    cfg["split"].update(dev=0.2, test=0.2)
    return cfg


def test_hub_config_names_the_real_corpora():
    cfg = load_config(ROOT / "train/configs/data/hub.yaml")
    ids = {s.get("path") for s in cfg["sources"]}
    assert {"google/fleurs", "Isma/alffa_wolof", "KeraCare/Wolof-Kallaama", "perrynelson/waxal-wolof",
            "galsenai/wolof-audio-data", "masakhane/mafand", "galsenai/french-wolof-translation"} <= ids
    assert all(not s.get("local") for s in cfg["sources"])  # the real loaders, not fixtures


def test_fleurs_reader_joins_wolof_speech_and_french_text_by_id():
    spec = _local({"name": "fleurs", "type": "fleurs", "path": "google/fleurs"})
    events = list(hub_sources.iter_fleurs(spec, Drops(), set()))
    segs = [e for k, e in events if k == "seg"]
    audio = [e for k, e in events if k == "audio"]
    assert len(audio) == 6 and all(a["bytes"] for a in audio)  # raw encoded bytes, not decoded
    assert {a["key"] for a in audio} == {"1", "2", "3", "4", "5"}
    assert {(s["key"], s["lang"]) for s in segs} >= {("1", "wo"), ("1", "fr"), ("9", "fr")}
    assert {a["source_split"] for a in audio} == {"train", "dev", "test"}


def test_translation_readers_use_each_schema():
    for name, wo_key in (("mafand", "wol"), ("galsenai_text", "wo")):
        spec = _local({"name": name, "type": "translation", "fr_key": "fr", "wo_key": wo_key})
        segs = [e for _, e in hub_sources.iter_translation(spec, Drops(), set())]
        assert len(segs) == 6 and {s["lang"] for s in segs} == {"wo", "fr"}
    d = Drops()  # the wrong key is a counted mismatch, not a crash
    spec = _local({"name": "mafand", "type": "translation", "fr_key": "fr", "wo_key": "wo"})
    assert list(hub_sources.iter_translation(spec, d, set())) == [] and d.counts["mismatched_pair"] == 3


@pytest.fixture(scope="module")
def hub_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hub")
    return out, pipeline.run(hub_cfg(), out=out, workers=1)


def test_bad_inputs_are_reported_with_a_reason(hub_run):
    out, rep = hub_run
    assert rep["normalise"]["dropped"]["empty_text"] == 1  # FLEURS id 5: empty transcript
    assert rep["pair"]["dropped"]["no_wo_twin"] == 2  # FLEURS fr id 9 (no Wolof twin) and id 5
    assert rep["pair"]["dropped"]["mt_failed"] == 1  # a transcript the MT could not translate
    v = rep["voice"]
    assert v["dropped"]["corrupt_audio"] == 1 and v["dropped"]["missing_audio_file"] == 1
    assert v["notes"]["resampled_from_44100"] == 1  # wrong sample rate: resampled, not lost
    assert v["dropped"]["text_dropped_upstream"] >= 2  # audio of FLEURS id 5 and the untranslated row
    assert rep["pair"]["mt"] == "lookup"


def test_real_audio_rows_keep_ids_and_sentence_grouping(hub_run):
    from wolofmrl.curation.shards import load_split

    out, rep = hub_run
    rows = []
    for split in ("train", "dev", "test"):
        rows += list(load_split(out, split, decode=False).remove_columns("audio"))
    fleurs = [r for r in rows if r["source"] == "fleurs"]
    assert fleurs and all(not r["synthetic"] for r in fleurs)
    # the two recordings of FLEURS id 2 share one sentence; FLEURS' own splits are kept
    two = [r for r in fleurs if r["source_key"] == "2"]
    assert len(two) == 2 and len({r["sentence_id"] for r in two}) == 1 and {r["split"] for r in two} == {"train"}
    assert {r["split"] for r in fleurs if r["source_key"] == "3"} == {"dev"}
    assert all(r["fr_text"] for r in rows)
    text_pairs = [r for r in rows if r["source"] in ("mafand", "galsenai_text")]
    assert text_pairs and all(r["synthetic"] for r in text_pairs)
    # ASR: the two recordings of one transcript were merged into one sentence (dedupe alias)
    voiced = [r for r in pipeline.iter_voice_meta(pipeline.Stage(out, "voice"), ["source", "sentence_id", "wo_text"])
              if r["source"] == "alffa"]
    same = [r for r in voiced if r["wo_text"] == "Maa ngi dem ca kër ga."]
    assert len(same) == 2 and len({r["sentence_id"] for r in same}) == 1
    assert len(voiced) == 3  # 6 items - corrupt - missing file - untranslatable transcript
    alffa = [r for r in rows if r["source"] == "alffa"]  # the rest: speaker held out of the sentence's split
    assert len(alffa) + rep["split"]["dropped"].get("voice_split_conflict", 0) == 3


def test_without_mt_wolof_only_rows_are_counted_no_mt(tmp_path):
    cfg = hub_cfg(mt="none")
    rep = pipeline.run(cfg, out=tmp_path, until="pair")
    assert rep["pair"]["dropped"]["no_mt"] == 6  # every ASR transcript (pairing comes before dedupe)
    assert "no MT backend" in rep["pair"]["mt"]
    cfg = hub_cfg(mt="nllb")  # no weights offline: unavailable, reported, still no_mt
    rep = pipeline.run(cfg, out=tmp_path / "nllb", until="pair")
    assert rep["pair"]["dropped"]["no_mt"] == 6 and "unavailable" in rep["pair"]["mt"]
