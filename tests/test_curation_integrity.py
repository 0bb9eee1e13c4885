"""A rerun and a reader trust nothing blindly: damaged stage files are detected and rebuilt (no rows lost with
exit 0), damaged shards are named with their rows, an unknown source type is named, the intent split is written."""
from __future__ import annotations

import hashlib
import logging
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from test_curation import tiny_cfg

from wolofmrl.curation import pipeline
from wolofmrl.curation.shards import ShardIntegrityError, decode_audio, load_split, verify_split
from wolofmrl.curation.store import Stage, read_jsonl


def small_cfg() -> dict:
    """Three sources of the tiny config, espeak only: ~30 clips in 8-clip chunks (a few seconds of TTS)."""
    cfg = tiny_cfg()
    keep = {"udhr", "wolof_nlp", "freedict"}
    cfg["sources"] = [dict(s, limit=8) if s["name"] == "wolof_nlp" else s for s in cfg["sources"] if s["name"] in keep]
    return cfg


def shard_hashes(out: Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*/*.parquet"))
            if not p.parent.name.startswith("_")}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("built") / "corpus"
    reports = pipeline.run(small_cfg(), out=out, workers=1)
    return out, reports, shard_hashes(out)


def _copy(built, tmp_path) -> Path:
    dst = tmp_path / "corpus"
    shutil.copytree(built[0], dst)
    return dst


def test_unknown_source_type_names_the_source_the_type_and_the_valid_ones(tmp_path):
    cfg = small_cfg()
    cfg["sources"].append({"name": "my_corpus", "type": "gettxt", "locale_dir": "x"})
    with pytest.raises(ValueError) as err:
        pipeline.run(cfg, out=tmp_path)
    msg = str(err.value)
    assert "my_corpus" in msg and "'gettxt'" in msg and "gettext" in msg and "fleurs" in msg
    assert not (tmp_path / "_stages").exists()  # refused before any work
    cfg["sources"][-1] = {"name": "untyped"}
    with pytest.raises(ValueError, match="untyped.*no `type`"):
        pipeline.run(cfg, out=tmp_path)


def test_a_deleted_voice_chunk_is_detected_and_only_it_is_rebuilt(built, tmp_path, caplog):
    out = _copy(built, tmp_path)
    voice_kept = built[1]["voice"]["kept"]
    chunk = out / "_stages/voice/chunk-000002.parquet"
    lost = pq.ParquetFile(chunk).metadata.num_rows
    assert lost > 0 and built[1]["voice"]["chunks"] >= 3
    chunk.unlink()
    with caplog.at_level(logging.WARNING, logger="wolofmrl.curation"):
        rep = pipeline.run(small_cfg(), out=out, workers=1)
    assert "chunk-000002.parquet is missing" in caplog.text
    assert rep["voice"]["kept"] == voice_kept and rep["voice"]["clips_this_run"] == lost  # one chunk remade
    assert rep["filter"]["kept"] + rep["filter"]["dropped_total"] == voice_kept
    assert shard_hashes(out) == built[2]


def test_a_chunk_made_from_other_tasks_is_not_kept(built):
    from wolofmrl.curation.stages_voice import chunk_is_sound

    voice_dir = Stage(built[0], "voice").final
    assert not chunk_is_sound(voice_dir, 0, [{"id": "some-other-sentence-wo-espeak-wo-m1-p50"}])


def test_a_truncated_stage_file_redoes_that_stage_and_the_later_ones(built, tmp_path, caplog):
    out = _copy(built, tmp_path)
    sentences = out / "_stages/dedupe/sentences.jsonl"
    lines = sentences.read_text().splitlines(keepends=True)
    sentences.write_text("".join(lines[: len(lines) // 2]))  # cut at a line boundary: still valid JSON Lines
    with caplog.at_level(logging.WARNING, logger="wolofmrl.curation"):
        rep = pipeline.run(small_cfg(), out=out, workers=1)
    assert "dedupe is damaged" in caplog.text and "sentences.jsonl" in caplog.text
    assert rep["dedupe"]["kept"] == len(lines) and rep["write"]["kept"] == built[1]["write"]["kept"]
    assert rep["voice"]["clips_this_run"] == 0  # same tasks, sound chunks: no clip spoken again
    assert shard_hashes(out) == built[2]


def test_an_unrecorded_file_in_a_stage_is_not_read_as_rows(built, tmp_path, caplog):
    out = _copy(built, tmp_path)
    extra = out / "_stages/voice/chunk-999999.parquet"
    shutil.copy(out / "_stages/voice/chunk-000000.parquet", extra)  # would be read as more rows
    with caplog.at_level(logging.WARNING, logger="wolofmrl.curation"):
        rep = pipeline.run(small_cfg(), out=out, workers=1)
    assert "chunk-999999.parquet was not written by this stage" in caplog.text
    assert rep["voice"]["kept"] == built[1]["voice"]["kept"] and not extra.exists()
    assert shard_hashes(out) == built[2]


def _flip_row_audio(shard: Path) -> str:
    """Flip 32 bytes inside one row's audio (found in the file: FLAC does not compress) and return its id."""
    table = pq.read_table(shard)
    data = bytearray(shard.read_bytes())
    for rid, audio in zip(table.column("id").to_pylist(), table.column("audio").to_pylist()):
        window = audio["bytes"][len(audio["bytes"]) // 2:][:32]
        at = data.find(window)
        if len(window) == 32 and at > 0 and data.count(window) == 1:
            data[at:at + 32] = bytes(b ^ 0xFF for b in window)
            shard.write_bytes(bytes(data))
            return rid
    raise AssertionError(f"no row's audio bytes lie contiguously in {shard}")


def test_flipped_shard_bytes_are_caught_on_load_naming_the_shard_and_the_row(built, tmp_path):
    out = _copy(built, tmp_path)
    assert verify_split(out, "train") == len(list((out / "train").glob("*.parquet"))) > 0
    shard = sorted((out / "train").glob("*.parquet"))[-1]
    rid = _flip_row_audio(shard)
    for check in (lambda: verify_split(out, "train"), lambda: load_split(out, "train", decode=False)):
        with pytest.raises(ShardIntegrityError) as err:
            check()
        assert str(shard) in str(err.value) and rid in str(err.value) and "rebuild" in str(err.value)
    verify_split(out, "dev")  # the other splits are sound
    rep = pipeline.run(small_cfg(), out=out, workers=1)  # a rerun redoes the write stage only
    assert rep["voice"]["seconds"] == built[1]["voice"]["seconds"] and shard_hashes(out) == built[2]
    shard.unlink()
    with pytest.raises(ShardIntegrityError, match="missing"):
        verify_split(out, "train")


def test_undecodable_audio_names_its_row():
    with pytest.raises(ValueError, match="'udhr-abc-wo-espeak-wo-m1-p50'"):
        decode_audio({"bytes": b"fLaC garbage", "path": "udhr-abc-wo-espeak-wo-m1-p50.flac"})


def test_an_intent_split_is_written_apart_from_train_and_test(tmp_path):
    cfg = small_cfg()
    cfg["split"]["intent"] = 0.3
    rep = pipeline.run(cfg, out=tmp_path, workers=1)
    rows = {s: list(load_split(tmp_path, s, decode=False).remove_columns("audio")) for s in ("train", "test", "intent")}
    assert rows["intent"] and {r["split"] for r in rows["intent"]} == {"intent"}
    assert rep["write"]["kept"] == rep["split"]["kept"] == sum(rep["split"]["per_split"].values())
    sids = {s: {r["sentence_id"] for r in rs} for s, rs in rows.items()}
    assert not sids["intent"] & (sids["train"] | sids["test"])
    assert not {r["voice"] for r in rows["intent"]} & {r["voice"] for r in rows["train"]}
    assert rep["split"]["checks"]["n_train_voices_in_dev_or_test"] == 0
    assert "intent" in (tmp_path / "DATACARD.md").read_text()
    assigned = {a["id"] for a in read_jsonl(Stage(tmp_path, "split").path("assign.jsonl"))}
    assert {r["id"] for r in rows["intent"]} <= assigned
