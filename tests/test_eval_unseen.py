"""The unseen-source benchmark (eval/unseen.py, eval/manpages.py, eval/unseen_tasks.py), its baselines (chance,
the length-only floor) in wolofmrl/metrics.py, run.py's headline tables and the hit / miss histograms.

Data: tests/fixtures/unseen/speech_texts.jsonl (a few rows in the texts file's shape, with `group` and the
unseen_dev / unseen_test splits), voiced by espeak-ng's held-out voices (real synthesis, synthetic speech). Model:
wolofmrl.testing.tiny_model (random weights, real tokenizer): scores here only prove that the pipeline runs.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "eval"))
from test_eval_mteb import tiny_folder  # noqa: E402,F401  (the tiny random model folder fixture)

TEXTS = ROOT / "tests" / "fixtures" / "unseen" / "speech_texts.jsonl"


def test_unseen_rule_items_and_leaks():
    import unseen

    rows = unseen.read_texts(TEXTS)
    info = unseen.check_unseen(rows)
    held = {g for gs in info["groups"].values() for g in gs}
    assert held == {"xfce4-panel:xfce4-panel", "debconf:tzdata"}
    assert not [r for r in rows if r["split"] == "train" and r["group"] in held]  # no unseen source in train
    for split, n_fr in (("dev", 7), ("test", 7)):
        qs, docs, drops = unseen.text_items(rows, split, "wo", None)
        assert len(qs) == 5 and len(docs) == n_fr and not drops  # twins + French-only distractors
        assert {q["group"] for q in qs} <= set(info["groups"][unseen.SPLITS[split]])
        fq, fdocs, _ = unseen.text_items(rows, split, "fr-strings", None)
        assert fdocs == docs and len(fq) == 7
        assert all(next(d["text"] for d in docs if d["id"] == q["doc"]) == q["text"] for q in fq)
    assert unseen.text_items(rows, "test", "wo", 2)[2] == {"over_limit": 3}
    assert unseen.text_items(rows, "test", "wo", 2)[0] == unseen.text_items(rows, "test", "wo", 2)[0]
    leak = [dict(r, group="debconf:tzdata") if r["split"] == "train" else r for r in rows]
    with pytest.raises(ValueError, match="other splits"):
        unseen.check_unseen(leak)
    with pytest.raises(ValueError, match="no unseen_dev"):
        unseen.check_unseen([r for r in rows if r["split"] == "train"])
    plan = unseen.voice_plan(qs, "fr", 0.5, seed=0)
    from wolofmrl.voices import is_held_out
    assert all(is_held_out(p["voice"]) for p in plan) and plan == unseen.voice_plan(qs, "fr", 0.5, seed=0)


def test_length_floor_exact_and_chance():
    from wolofmrl.metrics import (chance_scores, fit_length_floor, length_floor_scores, mean_recall_at_k,
                         score_matrix_metrics, top_k)

    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.arange(20, 220, 4))  # 50 passages, distinct lengths
    n = len(lengths)
    # length predicts the answer exactly: passage length = 7 + 12 x seconds
    dev_docs = rng.integers(0, n, 80)
    fit = fit_length_floor((lengths[dev_docs] - 7) / 12, lengths[dev_docs])
    assert fit == pytest.approx((7.0, 12.0))
    test_docs = rng.integers(0, n, 60)
    s = length_floor_scores((lengths[test_docs] - 7) / 12, lengths, fit)
    assert score_matrix_metrics(s, [{int(d): 1} for d in test_docs])["recall_at_1"] == 1.0
    # length cannot tell: durations drawn independently of the answer -> about chance
    q_docs = rng.integers(0, n, 3000)
    s = length_floor_scores(rng.uniform(1, 15, 3000), lengths, fit_length_floor(rng.uniform(1, 15, 200),
                                                                                  rng.choice(lengths, 200)))
    r10 = mean_recall_at_k(top_k(s, 10), [int(d) for d in q_docs], 10)
    chance = chance_scores([{int(d): 1} for d in q_docs], n)
    assert chance["recall_at_10"] == pytest.approx(10 / n) and chance["hit_rate_at_1"] == pytest.approx(1 / n)
    assert abs(r10 - chance["recall_at_10"]) < 0.03
    assert fit_length_floor([3.0, 3.0], [10, 20]) == (15.0, 0.0)
    with pytest.raises(ValueError, match="equal length"):
        fit_length_floor([1.0], [1, 2])


def test_hit_miss_stats():
    from wolofmrl.metrics import hit_miss_stats

    scores = np.array([[0.9, 0.2, 0.1], [0.5, 0.45, 0.4], [0.8, 0.3, 0.2], [0.6, 0.55, 0.1]])
    st = hit_miss_stats(scores, [{0: 1}, {2: 1}, {0: 1}, {1: 1}])  # hits: queries 0 and 2, the wide margins
    assert st["hit"].tolist() == [True, False, True, False] and st["auroc_margin"] == 1.0
    assert st["margin"] == pytest.approx([0.7, 0.05, 0.5, 0.05])
    assert hit_miss_stats(scores, [{0: 1}] * 4)["auroc_top1"] is None  # all hits: no AUROC
    with pytest.raises(ValueError, match="N >= 2"):
        hit_miss_stats(scores[:, :1], [{0: 1}] * 4)


def test_manpage_paragraphs_through_groff():
    import manpages

    roff = (".TH TEST 1\n.SH NOM\ntest \\- un exemple\n.SH DESCRIPTION\n"
            "Ce programme lit les fichiers donnés en argument et affiche leur contenu sur la sortie standard. "
            "Si aucun fichier n'est donné, il lit l'entrée standard jusqu'à la fin du flux.\n.PP\nTrop court.\n"
            ".TP\n\\fB\\-a\\fR\nune option décrite ici avec assez de mots pour passer le seuil de quinze mots "
            "mais elle est en retrait.\n.SH TRADUCTION\nCette traduction est une documentation libre ; veuillez vous reporter "
            "à la licence publique générale pour les conditions de copie et de distribution de ce texte.\n")
    paras = manpages.paragraphs(manpages.render(roff.encode()))
    assert len(paras) == 1 and paras[0].startswith("Ce programme lit les fichiers donnés")
    q = manpages.query_sentence(paras[0])
    assert q in paras[0] and 6 <= len(q.split()) <= 30
    assert {manpages.page_split(f"p{i}.1") for i in range(20)} == {"dev", "test"}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    import unseen

    out = tmp_path_factory.mktemp("unseen")
    card = unseen.build(out, TEXTS, subsets=("wo", "fr-strings"), n_queries={"wo": 4, "fr-strings": 4},
                        kokoro_share=0.0, chunk=4)
    return out, card


def test_build_card_sets_and_baselines(built):
    import unseen

    out, card = built
    assert set(card["splits"]) == {"dev/wo", "dev/fr-strings", "test/wo", "test/fr-strings"}
    assert card["splits"]["test/wo"]["queries"] == 4 and card["splits"]["test/wo"]["dropped_rows"] == {
        "over_limit": 1}
    assert json.loads((out / "unseen.json").read_text())["unseen_rule"]["rows"]["unseen_test"] == 12
    for cond in ("clean", "hard", None):
        rs = unseen.retrieval_set(out, "test", "wo", cond)
        assert len(rs.queries) == 4 and len(rs.corpus) == 7 and rs.query_modality == ("text" if cond is None
                                                                                        else "audio")
    clean, hard_ = unseen.retrieval_set(out, "test", "wo", "clean"), unseen.retrieval_set(out, "test", "wo", "hard")
    assert not np.array_equal(clean.queries[0]["audio"]["array"], hard_.queries[0]["audio"]["array"])
    b = unseen.baselines(out, "wo", "hard")
    assert b["chance"]["recall_at_10"] == 1.0 and b["queries"] == 4 and b["passages"] == 7  # 7 passages < 10
    assert 0.0 <= b["floor"]["recall_at_1"] <= 1.0


@pytest.mark.slow
def test_run_prints_unseen_tables_first_and_histograms(built, tiny_folder, tmp_path):
    import run
    import unseen
    from score_hist import score_histograms
    from wolofmrl_mteb import WolofMRLEmbedder

    data, _ = built
    out = tmp_path / "res"
    run.main(["--model", f"tiny={tiny_folder}", "--unseen", str(data), "--data", str(tmp_path / "none"), "--no-hub",
              "--tasks", "unseen", "--dims", "48,8", "--out", str(out), "--batch-size", "4"])
    md = (out / "scores.md").read_text()
    assert md.index("## Unseen sources") < md.index("## Main score by embedding dim")
    for needle in ("### unseen-clean", "### unseen-hard", "| tiny | UnseenWolofSpeechToFrenchTextRetrieval | wo | 48 |",
                   "| tiny | UnseenFrenchSpeechToFrenchTextRetrieval | fr-strings | 8 |", "floor R@10"):
        assert needle in md
    rows = json.loads((out / "scores.json").read_text())
    assert {r["condition"] for r in rows} == {"unseen-clean", "unseen-hard"}
    assert {r["task"] for r in rows} == {"UnseenWolofSpeechToFrenchTextRetrieval",
                                         "UnseenFrenchSpeechToFrenchTextRetrieval", "UnseenTextToFrenchTextRetrieval"}
    info = json.loads((out / "run.json").read_text())
    assert set(info["baselines"]) == {f"unseen-{c}/{s}" for c in ("clean", "hard") for s in ("wo", "fr-strings")}

    # the model card carries them (model-index), and `make demo` prints them from the card
    import shutil

    from wolofmrl.card import write_model_card
    from wolofmrl.demo import recorded_unseen_results

    card_dir = tmp_path / "card"
    card_dir.mkdir()
    shutil.copy(Path(tiny_folder) / "config.json", card_dir)
    write_model_card(card_dir, {}, eval_results=out / "model-index.yaml")
    lines = recorded_unseen_results(card_dir, 48)
    assert len(lines) == len({(r["task"], r["source"]) for r in rows})
    wo = {r["condition"]: r["metrics"] for r in rows
          if r["task"] == "UnseenWolofSpeechToFrenchTextRetrieval" and r["dim"] == 48}
    line = next(x for x in lines if "UnseenWolofSpeechToFrenchTextRetrieval (wo)" in x)
    for c in ("clean", "hard"):
        m = wo[f"unseen-{c}"]
        assert f"{c} {100 * m['recall_at_1']:5.1f} / {100 * m['recall_at_10']:5.1f}" in line
    assert recorded_unseen_results(tmp_path / "none", 48) == []
    s = score_histograms(WolofMRLEmbedder(tiny_folder), unseen.retrieval_set(data, "dev", "wo", "hard"), 48,
                         tmp_path / "hist", "tiny-dev-wo", "tiny random model")
    assert (tmp_path / "hist" / "tiny-dev-wo.png").stat().st_size > 1000 and s["queries"] == 4
    assert "AUROC margin" in (tmp_path / "hist" / "tiny-dev-wo.md").read_text()
