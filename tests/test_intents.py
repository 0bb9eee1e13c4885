"""The offline spoken-intent set (eval/intents.py), its evaluation (eval/intent_tasks.py) and the WolBanking77
overlap check (eval/benchmark_data.py)."""

import io
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "eval"))

import benchmark_data as bd  # noqa: E402
import intent_tasks as it  # noqa: E402
import intents  # noqa: E402
from wolofmrl.curation.config import DEFAULTS  # noqa: E402
from wolofmrl.curation.pipeline import sentence_split, source_specs  # noqa: E402
from wolofmrl.voices import is_held_out  # noqa: E402

CFG = dict(DEFAULTS, **{"sources": [{"name": "mediawiki", "type": "mediawiki"}, {"name": "gettext", "type": "gettext"}],
                 "split": {"dev": 0.08, "test": 0.08, "intent": 0.12, "salt": "wolofmrl-split-v1"}})


@pytest.mark.parametrize("source,key,en,want", [
    ("mediawiki", "userlogin-resetpassword-link", "Forgot your password?", "login"),
    ("mediawiki", "tooltip-ca-history", "Past revisions of this page", "history"),  # presentation prefix removed
    ("mediawiki", "right-bigdelete", "Delete pages with large histories", "delete"),
    ("mediawiki", "databaseerror", "Database error", "error"),
    ("mediawiki", "prefs-watchlist-days", "Days to show in watchlist:", "settings"),  # first match wins
    ("mediawiki", "namespace", "Namespace:", None),
    ("gettext", "Failed, tap to retry", "Failed, tap to retry", "error"),
    ("gettext", "ctx\x04Open file..", "Open file..", "files"),
    ("debconf", "console-data/keymap/template/layout/desc0", "Keyboard layout:", "keyboard"),
    ("udhr", "art03/b01", "", None),  # not a UI source
])
def test_rule_reads_the_key_or_msgid(source, key, en, want):
    assert intents.intent_of(source, key, en) == want


def test_label_names_are_french_and_unique():
    names = intents.label_names()
    assert len(names) >= 10 and len(set(names.values())) == len(names)
    assert names["search"] == "rechercher"


def _sentences(n=400):
    keys = ["userlogin-a", "search-b", "prefs-c", "delete-d", "history-e", "edit-f", "upload-g", "namespace-h"]
    return [{"sentence_id": f"mediawiki-{i:016x}", "source": "mediawiki", "group": "i18n", "kind": "pair",
             "source_key": f"{keys[i % len(keys)]}{i}", "en_text": "", "wo_text": f"wo {i}", "fr_text": f"fr {i}"}
            for i in range(n)]


def test_selection_keeps_only_the_intent_bucket():
    sents = _sentences()
    by_intent, drops = intents.select_sentences(sents, CFG)
    chosen = [s for ss in by_intent.values() for s in ss]
    specs = source_specs(CFG)
    assert chosen and all(sentence_split(s, CFG, specs) == "intent" for s in chosen)
    in_bucket = sum(sentence_split(s, CFG, specs) == "intent" for s in sents)
    assert drops["not_intent_bucket"] == len(sents) - in_bucket
    assert len(chosen) + drops["no_rule_matches"] + drops.get("intent_below_2_sentences", 0) == in_bucket


def test_selection_refuses_a_config_without_intent_bucket():
    cfg = dict(DEFAULTS, **{"sources": [], "split": {"dev": 0.08, "test": 0.08, "salt": "s"}})
    with pytest.raises(ValueError, match="split.intent"):
        intents.select_sentences(_sentences(10), cfg)


def test_plan_is_sentence_and_voice_disjoint_and_held_out():
    by_intent, _ = intents.select_sentences(_sentences(), CFG)
    clips = intents.plan_clips(by_intent, "salt")
    assert clips == intents.plan_clips(by_intent, "salt")
    side = {r: {c["sentence_id"] for c in clips if c["role"] == r} for r in ("support", "test")}
    voices = {r: {c["voice"] for c in clips if c["role"] == r} for r in ("support", "test")}
    assert side["support"] and side["test"] and not side["support"] & side["test"]
    assert not voices["support"] & voices["test"]
    assert all(is_held_out(c["voice"]) for c in clips)
    for intent in by_intent:  # every intent has both sides
        assert {c["role"] for c in clips if c["intent"] == intent} == {"support", "test"}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """A real build (espeak-ng voices, the hard degradation) of 2 intents x 2 sentences."""
    mp = pytest.MonkeyPatch()
    mp.setattr(intents, "KOKORO_SHARE", 0.0)  # Kokoro is slow on CPU; espeak-ng voices the test clips
    tmp = tmp_path_factory.mktemp("intent-set")
    by_intent, _ = intents.select_sentences(_sentences(), CFG)
    small = {i: ss[:2] for i, ss in list(by_intent.items())[:2]}
    path = tmp / "sentences.jsonl"
    path.write_text("".join(json.dumps(s) + "\n" for ss in small.values() for s in ss))
    cfg_path = tmp / "cfg.yaml"
    cfg_path.write_text(json.dumps({"sources": [{"name": "mediawiki", "type": "mediawiki"}],
                                    "split": {"dev": 0.08, "test": 0.08, "intent": 0.12, "salt": "wolofmrl-split-v1"}}))
    manifest = intents.build(cfg_path, tmp / "set", path)
    yield {"cfg": cfg_path, "out": tmp / "set", "sentences": path, "manifest": manifest, "intents": set(small)}
    mp.undo()


def test_build_is_resumable_and_writes_both_conditions(tiny_set, monkeypatch):
    monkeypatch.setattr(intents, "KOKORO_SHARE", 0.0)
    out = tiny_set["out"]
    assert set(tiny_set["manifest"]["counts"]) == tiny_set["intents"]
    first = sorted(out.glob("*/chunk-*.parquet"))
    before = [p.read_bytes() for p in first]
    first[-1].unlink()  # a killed run: the rerun redoes only what is missing
    intents.build(tiny_set["cfg"], out, tiny_set["sentences"])
    assert [p.read_bytes() for p in sorted(out.glob("*/chunk-*.parquet"))] == before
    clean, hard = intents.read_set(out, "clean"), intents.read_set(out, "hard")
    tests_clean = [r for r in clean if r["role"] == "test"]
    tests_hard = [r for r in hard if r["role"] == "test"]
    assert [r["id"] for r in tests_clean] == [r["id"] for r in tests_hard]
    assert all(r["degradation"] for r in tests_hard) and all(r["audio"] != c["audio"]
                                                            for r, c in zip(tests_hard, tests_clean))


def test_run_command_runs_the_intent_set(tiny_set, tmp_path):
    """eval/run.py --intent-set on a tiny random model: every setting, dim and condition, mteb files, plot."""
    import run
    from wolofmrl.build import save
    from wolofmrl.testing import tiny_model

    model, processor = tiny_model()
    save(model, processor, tmp_path / "tiny")
    run.main(["--model", f"{model.config.strategy}={tmp_path / 'tiny'}", "--intent-set", str(tiny_set["out"]), "--intent-only",
              "--out", str(tmp_path / "r")])
    res = json.loads((tmp_path / "r" / "intent" / "scores.json").read_text())
    dims = set(model.config.matryoshka_dims) | {model.config.embedding_dim}
    speech = [r for r in res["rows"] if r["condition"] in ("clean", "hard")]
    assert {(r["condition"], r["setting"]) for r in speech} == {
        (c, s) for c in ("clean", "hard") for s in ("zero_shot", "k1", "k4", "k16", "probe")}
    assert {r["dim"] for r in speech} == dims
    assert {r["strategy"] for r in res["rows"]} == {model.config.strategy, "text", "majority", "bow"}
    assert (tmp_path / "r" / "intent" / "intent_accuracy_vs_dim.png").is_file()


# ------------------------------------------------------------------------------------------------ evaluation
def _clusters(n_labels=4, per=6, d=32, noise=0.3, seed=0, centres=None):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_labels, d)) * 3 if centres is None else centres
    y = np.repeat(np.arange(n_labels), per)
    return centres[y] + noise * rng.standard_normal((len(y), d)), y, centres


def test_settings_separate_clusters_and_fall_to_chance_on_shuffled_labels():
    sup, sup_y, centres = _clusters(seed=0)
    test, test_y, _ = _clusters(seed=1, centres=centres)
    rows = it.evaluate(sup, sup_y, test, test_y, centres, dims=[32, 8], n_labels=4, draws=3)
    assert {r["setting"] for r in rows} == {"zero_shot", "k1", "k4", "k16", "probe"}
    assert all(r["accuracy"] == 1.0 for r in rows if r["dim"] == 32)
    assert all(r["accuracy_std"] == 0.0 for r in rows if r["setting"] == "k16")  # k > pool: the whole pool
    shuffled = np.random.default_rng(2).permutation(sup_y)
    assert (it.probe(sup, shuffled, test) == test_y).mean() < 0.75


def test_k_shot_needs_support_for_every_label():
    sup, sup_y, _ = _clusters()
    with pytest.raises(ValueError, match="no support"):
        it.k_shot(sup, sup_y, sup, 4, n_labels=5, rng=np.random.default_rng(0))


def test_outputs_are_mteb_results(tmp_path):
    sup, sup_y, centres = _clusters()
    rows = [{"strategy": "fusion", "condition": "clean", **r}
            for r in it.evaluate(sup, sup_y, sup, sup_y, centres, dims=[32, 8], n_labels=4, draws=2)]
    texts = [f"w{y} x{i}" for i, y in enumerate(sup_y)]
    rows += [{"strategy": b, "condition": "text", "setting": "baseline", "dim": None, **s}
             for b, s in it.baselines(texts, sup_y, texts, sup_y).items()]
    info = {"set": "x", "revision": "r", "title": "t", "n_labels": 4, "support_clips": 24, "test_clips": {"clean": 24},
            "test_sentences": 24, "ks": it.KS, "draws": 2}
    it.write_outputs(rows, info, tmp_path, tmp_path / "p.png")
    from mteb import TaskResult

    files = sorted((tmp_path / "mteb").rglob("*.json"))
    assert len(files) == info["mteb_files"] == 2 * 3 + 2  # (fusion x 2 dims x 3 tasks) + 2 floors
    res = TaskResult.from_disk(next(f for f in files if f.name == "WolofOfflineSpokenIntentKShot.json"))
    assert {s["hf_subset"] for s in res.scores["test"]} == {"clean-k1", "clean-k4", "clean-k16"}
    md = (tmp_path / "scores.md").read_text()
    assert "| probe | fusion | clean |" in md and "| majority |" in md
    assert (tmp_path / "p.png").stat().st_size > 0


# ------------------------------------------------------------------------------------------------ WolBanking77
def _flac(freq):
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(8000) / 16000
    sf.write(buf, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 16000, format="FLAC")
    return buf.getvalue()


def _wolbanking(root: Path, text=True):
    import pyarrow as pa
    import pyarrow.parquet as pq

    train = [("Bëgg naa yónnee xaalis", "transfer"), ("Naka laa mëna ubbi kontu", "open_account"),
             ("Sama kàrt dafa réer", "lost_card")]
    test = [("bëgg naa yónnee xaalis!", "transfer"), ("Ana sama kàrt bi?", "lost_card"),
            ("Naka laa mëna ubbi kontu", "open_account")]  # two sentences are also in train
    for name, rows in (("train", train), ("test", test)):
        cols = {"audio": [{"bytes": _flac(200 + 50 * i), "path": None} for i in range(len(rows))],
                "label": [lab for _, lab in rows]}
        if text:
            cols["text"] = [t for t, _ in rows]
        pq.write_table(pa.table(cols), root / f"{name}.parquet")


def test_wolbanking77_reports_overlap_and_an_overlap_free_test(tmp_path):
    _wolbanking(tmp_path)
    official = bd.wolbanking77_intents(root=tmp_path)
    free = bd.wolbanking77_intents(root=tmp_path, overlap_free=True)
    assert official.notes["overlap_sentences"] == 2 and official.notes["overlap_test_rows"] == 2
    assert len(official.test) == 3 and len(free.test) == 1 and free.name == "wolbanking77-overlap-free"
    assert [free.label_names[y] for y in free.test_labels] == ["lost card"]
    assert len(free.train) == len(official.train) == 3
    data, names, info = it.wolbanking77_data(tmp_path)
    assert {c: len(d[2]) for c, d in data.items()} == {"official": 3, "overlap-free": 1}
    assert info["overlap_sentences"] == 2


def test_wolbanking77_overlap_free_needs_text(tmp_path):
    _wolbanking(tmp_path, text=False)
    assert bd.wolbanking77_intents(root=tmp_path).notes["overlap_sentences"] == 0
    with pytest.raises(ValueError, match="text column"):
        bd.wolbanking77_intents(root=tmp_path, overlap_free=True)


def test_a_changed_plan_is_refused(tmp_path):
    folder = tmp_path / "clean"
    intents._write_chunks([], folder, lambda x: x, "x")
    with pytest.raises(RuntimeError, match="different plan"):
        intents._write_chunks([{"id": "a"}], folder, lambda x: x, "x")


def test_training_texts_leak_check(tmp_path):
    import gzip

    by_intent, _ = intents.select_sentences(_sentences(), CFG)
    s = next(iter(by_intent.values()))[0]
    path = tmp_path / "texts.jsonl.gz"

    def write(rows):
        with gzip.open(path, "wt") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)

    write([{"id": "a", "sentence_id": s["sentence_id"], "split": "intent", "wo_text": s["wo_text"]}])
    assert intents.check_against_training_texts(by_intent, path)["rows_by_split"] == {"intent": 1}
    write([{"id": "b", "sentence_id": "other", "split": "train", "wo_text": s["wo_text"].upper() + "!"}])
    with pytest.raises(ValueError, match="share their text"):
        intents.check_against_training_texts(by_intent, path)


def test_the_committed_training_texts_hold_out_the_intent_bucket():
    """The training corpus's config and the intent builder's split agree (same salt and fractions)."""
    from wolofmrl.curation.config import load_config

    quality = load_config(REPO / "train" / "configs" / "data" / "quality.yaml")["split"]
    assert {k: quality[k] for k in ("salt", "test", "dev", "intent")} == {k: CFG["split"][k] for k in quality}
