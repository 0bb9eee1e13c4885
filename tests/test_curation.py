"""Curation pipeline: each stage on small fixtures, bad inputs reported, resume byte-identical,
reserved catalogs excluded, memory flat over 100k rows."""
from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from gettext_mo import write_mo

from wolofmrl.curation import offline_sources, pipeline
from wolofmrl.curation.config import load_config
from wolofmrl.curation.offline_sources import RESERVED, read_mo, reserved_name
from wolofmrl.curation.store import Drops, Stage, read_jsonl
from wolofmrl.curation.text import (clean, dedupe_key, junk_reason, normalize_wolof, spell_wolof_numbers,
                                    strip_accelerators, wolof_number)

ROOT = Path(__file__).resolve().parents[1]
FIX = ROOT / "tests" / "fixtures" / "curation"
TINY = ROOT / "train" / "configs" / "data" / "tiny.yaml"


def tiny_cfg(espeak_only: bool = True) -> dict:
    cfg = load_config(TINY)
    for s in cfg["sources"]:
        for k in ("root", "locale_dir", "control_dir", "dir"):
            if k in s:
                s[k] = str(ROOT / s[k])
    if espeak_only:  # fast: no Kokoro in the pipeline tests (test_curation_voice covers it)
        cfg["voice"]["engines"] = {"wo": {"espeak": 1.0}, "fr": {"espeak": 1.0}}
    return cfg


# --------------------------------------------------------------------------- text
@pytest.mark.parametrize("text,reason", [
    ("Enregistrer %s", "format_string"), ("Voir {0}", "format_string"), ("Supprimer $1", "format_string"),
    ("%(name)s fichiers", "format_string"), ("Lien [[Spécial:Accueil]]", "markup"), ("<b>gras</b>", "markup"),
    ("''italique''", "markup"), ("", "empty_text"), ("   ", "empty_text"), ("42 %", "no_letters"),
    ("...", "no_letters"), ("Enregistrer les modifications", None), ("Tànn ab làkk", None),
])
def test_junk_reasons(text, reason):
    assert junk_reason(text) == reason


def test_accelerators_and_clean():
    assert strip_accelerators("_Fichier") == ("Fichier", True)
    assert strip_accelerators("&Open") == ("Open", True)
    assert strip_accelerators("rock & roll")[1] is False
    assert clean("  a\u00a0b\\nc  ") == "a b c"


def test_wolof_normalisation_and_keys():
    assert normalize_wolof("Nanga def ? Mangui fi rek, dieuredieuf") == "Na nga def ? Maa ngi fi rekk, jërëjëf"
    assert dedupe_key("Enregistrer…") == dedupe_key("enregistrer") == "enregistrer"
    assert dedupe_key("Tànn ab LÀKK!") == "tann ab lakk"


def test_wolof_numbers_roundtrip():
    import wolof_numbers

    for n in (1, 6, 10, 12, 20, 25, 99, 100, 200, 345, 1000, 2024, 9999):
        assert wolof_numbers.parse_number(wolof_number(n)).value == n
    assert "fukk ak ñaar" in spell_wolof_numbers("12 xale")


# --------------------------------------------------------------------------- offline readers + reserved
def _segments(events) -> list[dict]:
    """The segments of a reader's ("seg", segment) events (offline readers yield nothing else)."""
    events = list(events)
    assert all(kind == "seg" for kind, _ in events)
    return [seg for _, seg in events]


def test_mo_parser_roundtrip(tmp_path):
    write_mo(tmp_path / "x.mo", {"": "header", "Open": "Ubbi", "ctx\x04Save": "Denc"})
    cat = read_mo(tmp_path / "x.mo")
    assert cat["Open"] == ("Open", "Ubbi") and cat["ctx\x04Save"] == ("Save", "Denc") and "" in cat


def test_reserved_catalogs_excluded_everywhere():
    assert {"klavaro", "tuxpaint", "tuxtype"} <= RESERVED
    assert reserved_name("tuxtype.mo") == "tuxtype" and reserved_name("demo") is None
    d = Drops()
    segs = _segments(offline_sources.iter_gettext({"locale_dir": str(FIX / "locale")}, d, set()))
    assert segs and all("klavaro" not in s["group"] and "tuxpaint" not in s["group"] for s in segs)
    assert d.counts["reserved_source"] == 2  # klavaro.mo and tuxpaint.mo: counted, not read
    assert not any("Tapez" in s["text"] for s in segs)
    # a config cannot bring them back, and fetch refuses them
    from wolofmrl.curation.fetch import fetch_debs

    with pytest.raises(ValueError):
        fetch_debs(["klavaro"], Path("/nonexistent"))
    for cfg_path in (ROOT / "train/configs/data").glob("*.yaml"):
        text = cfg_path.read_text()
        for line in text.splitlines():
            if not line.strip().startswith("#") and "reserved" not in line and "RESERVED" not in line:
                assert not any(r in line for r in RESERVED), (cfg_path, line)


def test_offline_readers_on_fixtures():
    d = Drops()
    mw = _segments(offline_sources.iter_mediawiki({"root": str(FIX / "mediawiki")}, d, set()))
    assert {s["lang"] for s in mw} == {"wo", "fr"} and all(s["license"] for s in mw)
    assert any(s["key"] == "mainpage" and s["lang"] == "wo" for s in mw)
    deb = _segments(offline_sources.iter_debconf({"control_dir": str(FIX / "control")}, d, set()))
    assert {(s["key"], s["lang"]) for s in deb} >= {("demo/choose/desc0", "wo"), ("demo/choose/choice1", "fr")}
    ud = _segments(offline_sources.iter_udhr({"dir": str(FIX / "udhr")}, d, set()))
    assert ("art02/all" in {s["key"] for s in ud}) and d.notes["udhr_section_joined"] == 1
    fd = _segments(offline_sources.iter_freedict({"dir": str(FIX / "freedict")}, d, set()))
    assert {s["text"] for s in fd if s["lang"] == "fr"} == {"eau", "maison", "lire"}
    assert d.counts["empty_text"] == 1 and d.counts["dict_metadata"] == 1  # xale: no gloss
    missing = Drops()
    assert _segments(offline_sources.iter_udhr({"dir": "/nonexistent"}, missing, set())) == []
    assert missing.counts["missing_source_file"] == 1


# --------------------------------------------------------------------------- the pipeline, stage by stage
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    reports = pipeline.run(tiny_cfg(), out=out, workers=1)
    return out, reports


def test_every_row_accounted_for(tiny_run):
    out, rep = tiny_run
    ing, norm, pair, ded = rep["ingest"], rep["normalise"], rep["pair"], rep["dedupe"]
    assert ing["dropped"]["reserved_source"] == 2
    assert norm["kept"] + norm["dropped_total"] == ing["kept"]
    assert norm["dropped"]["format_string"] >= 2 and norm["dropped"]["markup"] >= 1
    assert pair["dropped"]["untranslated_copy"] >= 2  # wo == fr, and wo == English msgid
    assert ded["kept"] + ded["dropped_total"] == pair["kept"]
    # every voiced row is either kept or dropped with a reason downstream
    assert rep["filter"]["kept"] + rep["filter"]["dropped_total"] == rep["voice"]["kept"]
    assert rep["split"]["kept"] + rep["split"]["dropped_total"] == rep["filter"]["kept"]
    assert rep["write"]["kept"] == rep["split"]["kept"]
    for r in rep.values():
        for reason, n in r["dropped"].items():
            assert n > 0 and r["dropped_samples"][reason]  # a sample of ids is logged per reason


def test_sources_licences_and_fr_only(tiny_run):
    out, _ = tiny_run
    sents = list(read_jsonl(out / "_stages/dedupe/sentences.jsonl"))
    assert {s["source"] for s in sents} == {"mediawiki", "gettext", "debconf", "udhr", "wolof_nlp", "freedict"}
    assert all(s["license"] for s in sents)
    fr_only = [s for s in sents if s["kind"] == "fr_only"]
    assert fr_only and all(s["wo_text"] == "" for s in fr_only)
    assert any(s["wo_text"] == "Ubbi dencukaay bi" for s in sents)  # accelerator stripped


def test_shards_load_with_datasets(tiny_run):
    import numpy as np

    from wolofmrl.curation.shards import COLUMNS, decode_audio, load_split

    out, rep = tiny_run
    total = 0
    for split in ("train", "dev", "test"):
        ds = load_split(out, split, decode=False)
        assert ds.column_names == COLUMNS
        assert set(ds["split"]) == {split}
        total += len(ds)
        a = decode_audio(ds[0]["audio"])
        assert a["sampling_rate"] == 16000 and np.isfinite(a["array"]).all()
        assert abs(len(a["array"]) / 16000 - ds[0]["duration_s"]) < 0.01
        assert all(ds["synthetic"])
    assert total == rep["write"]["kept"]
    import datasets  # the plain data_dir form: datasets calls the dev/ folder "validation"

    plain = datasets.load_dataset("parquet", data_dir=str(out), split="validation")
    assert set(plain["split"]) == {"dev"} and plain.features["audio"].sampling_rate == 16000
    card = (out / "DATACARD.md").read_text()
    assert "synthetic" in card and "klavaro" in card
    report = json.loads((out / "report.json").read_text())
    assert report["summary"]["all_audio_synthetic"] is True


def test_audio_column_decodes_through_datasets_when_torchcodec_is_there(tiny_run):
    pytest.importorskip("torchcodec")  # datasets 5.x decodes Audio only through torchcodec
    from wolofmrl.curation.shards import load_split

    out, _ = tiny_run
    a = load_split(out, "train")[0]["audio"]
    assert a["sampling_rate"] == 16000 and a["array"].ndim == 1 and len(a["array"]) > 1000


def test_splits_disjoint_by_sentence_text_and_voice(tiny_run):
    from wolofmrl.curation.shards import load_split

    out, rep = tiny_run
    by = {s: load_split(out, s, decode=False).remove_columns("audio") for s in ("train", "dev", "test")}
    keys = {s: {dedupe_key(t) for t in ds["wo_text"] if t} | {"fr:" + dedupe_key(t) for t in ds["fr_text"]}
            for s, ds in by.items()}
    assert not keys["train"] & (keys["dev"] | keys["test"])
    assert not keys["dev"] & keys["test"]
    sids = {s: set(ds["sentence_id"]) for s, ds in by.items()}
    assert not sids["train"] & (sids["dev"] | sids["test"])
    voices = {s: set(ds["voice"]) for s, ds in by.items()}
    assert not voices["train"] & (voices["dev"] | voices["test"])
    assert rep["split"]["checks"]["n_train_voices_in_dev_or_test"] == 0


def test_rerun_skips_finished_stages(tiny_run):
    out, rep = tiny_run
    again = pipeline.run(tiny_cfg(), out=out, workers=1)
    assert {k: v["seconds"] for k, v in again.items()} == {k: v["seconds"] for k, v in rep.items()}


def _shard_hashes(out: Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(out.glob("*/*.parquet")) if not str(p.relative_to(out)).startswith("_")}


def test_killed_voice_stage_resumes_byte_identical(tmp_path, tiny_run):
    ref, _ = tiny_run
    cfg = tiny_cfg()
    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        pipeline.run(cfg, out=out, workers=1, stop_after_chunks=2)
    st = Stage(out, "voice")
    assert not st.done and len(list(st.tmp.glob("chunk-*.parquet"))) == 2
    (st.tmp / ".chunk-000002.parquet.tmp").write_bytes(b"half-written garbage")  # killed mid-write
    pipeline.run(cfg, out=out, workers=2)  # other worker count: same bytes
    hashes = _shard_hashes(out)
    assert hashes and hashes == _shard_hashes(ref)


def test_bad_inputs_in_offline_sources(tmp_path):
    cfg = tiny_cfg()
    bad = tmp_path / "locale"
    shutil.copytree(FIX / "locale", bad)
    (bad / "wo/LC_MESSAGES/broken.mo").write_bytes(b"\x00garbage")  # corrupt
    write_mo(bad / "wo/LC_MESSAGES/orphan.mo", {"Hello there friend": "Salaam aleekum sama xarit"})
    cfg["sources"] = [{"name": "gettext", "type": "gettext", "locale_dir": str(bad), "fr_only": True},
                      {"name": "udhr", "type": "udhr", "dir": str(tmp_path / "missing")}]
    rep = pipeline.run(cfg, out=tmp_path / "out", until="pair")
    d = rep["ingest"]["dropped"]
    assert d["corrupt_catalog"] == 1 and d["no_fr_catalog"] == 1 and d["missing_source_file"] == 1


# --------------------------------------------------------------------------- scale
def _synthetic_reader(n):
    def reader(spec, drops, reserved):
        for i in range(n):
            key = f"k{i:07d}"
            j = i if i % 10 else i // 10  # ~10% near-duplicates of earlier rows
            wo = f"Xale bu {j} dafa dem ca kër ga ngir jàng téere bu bees"
            fr = f"L'enfant numéro {j} est allé à la maison pour lire un nouveau livre"
            if i % 97 == 0:
                wo = "Am na $1 xët"  # junk
            yield "seg", {"source": "synth", "group": "g", "key": key, "lang": "wo", "text": wo, "en": "", "license": "test"}
            yield "seg", {"source": "synth", "group": "g", "key": key, "lang": "fr", "text": fr, "en": "", "license": "test"}
    return reader


class _PeakRSS:
    """Polls this process's resident memory in a thread (tracemalloc would slow the run 5x)."""

    def __init__(self):
        import threading

        import psutil

        self.proc, self.peak, self._stop = psutil.Process(), 0, threading.Event()
        self._t = threading.Thread(target=self._poll, daemon=True)

    def _poll(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            self._stop.wait(0.02)

    def __enter__(self):
        self.start = self.proc.memory_info().rss
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    @property
    def delta(self) -> int:
        return self.peak - self.start


def _text_stages(tmp_path, n) -> tuple[int, dict]:
    offline_sources.READERS["synthetic"] = _synthetic_reader(n)
    try:
        cfg = copy.deepcopy(tiny_cfg())
        cfg["sources"] = [{"name": "synth", "type": "synthetic"}]
        with _PeakRSS() as mem:
            rep = pipeline.run(cfg, out=tmp_path / f"n{n}", until="dedupe")
    finally:
        offline_sources.READERS.pop("synthetic", None)
    return mem.delta, rep


def test_text_stages_stream_100k_rows_in_flat_memory(tmp_path):
    _text_stages(tmp_path, 5_000)  # warm-up: imports, caches, allocator arenas
    delta, rep = _text_stages(tmp_path, 100_000)
    assert rep["ingest"]["kept"] == 200_000  # 100k pairs = 200k segments
    assert rep["normalise"]["dropped"]["format_string"] == 2 * (100_000 // 97 + 1) // 2
    assert rep["dedupe"]["dropped"]["duplicate_wo"] > 5_000
    corpus_bytes = (tmp_path / "n100000/_stages/ingest/segments.jsonl").stat().st_size
    # holding the corpus would cost several times its 40+ MB on disk; streaming stays flat
    assert delta < 30e6, f"RSS grew {delta / 1e6:.1f} MB over a {corpus_bytes / 1e6:.1f} MB corpus"


def test_a_changed_config_redoes_the_stages_it_touches(tmp_path):
    cfg = tiny_cfg()
    first = pipeline.run(cfg, out=tmp_path, until="pair")
    same = pipeline.run(cfg, out=tmp_path, until="pair")
    assert same["pair"]["seconds"] == first["pair"]["seconds"]  # skipped
    cfg["text"]["min_words"] = 3
    changed = pipeline.run(cfg, out=tmp_path, until="pair")
    assert changed["pair"]["kept"] < first["pair"]["kept"]
