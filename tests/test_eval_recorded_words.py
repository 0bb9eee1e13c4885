"""The real-speech task (recorded words, qabcs-data layout) on a fixture-sized folder, through mteb."""
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "eval"))

WORDS = {"fr": ["chat", "crème_glacée", "avion"], "de": ["affe", "große_trommel"]}


@pytest.fixture(scope="module")
def words_root(tmp_path_factory):
    import soundfile as sf
    import recorded_words as rw

    from wolofmrl.testing import synthetic_waves

    root = tmp_path_factory.mktemp("qabcs")
    waves = iter(synthetic_waves(5, seconds=(0.5, 0.8), seed=2))
    for lang, words in WORDS.items():
        folder = root / rw.WORDS_DIR.format(lang=lang)
        folder.mkdir(parents=True)
        for w in words:
            sf.write(folder / f"{w}.ogg", next(waves), 24000, format="OGG", subtype="VORBIS")
    return root


def test_recorded_words_set(words_root):
    import benchmark_data as bd
    import recorded_words as rw

    rset = rw.recorded_words("fr", words_root)
    assert sorted(d["text"] for d in rset.corpus) == ["avion", "chat", "crème glacée"]
    assert len(rset.queries) == 3 and all(q["audio"]["sampling_rate"] == 24000 for q in rset.queries)
    texts = {d["id"]: d["text"] for d in rset.corpus}
    assert {q: texts[next(iter(r))] for q, r in rset.relevant.items()} == rset.gold_text
    assert rset.gold_text["qabcs-fr-crème_glacée"] == "crème glacée" and not rset.synthetic_audio
    with pytest.raises(bd.SourceUnavailable, match="fetch"):
        rw.recorded_words("uk", words_root)
    with pytest.raises(ValueError, match="lang"):
        rw.recorded_words("wo", words_root)


def test_recorded_word_task_through_mteb(words_root, tmp_path):
    import mteb
    from mteb_tasks import wolofmrl_tasks
    from wolofmrl_mteb import WolofMRLEncoder

    from wolofmrl.build import save
    from wolofmrl.testing import tiny_model

    task = wolofmrl_tasks(["RecordedWord"], words_root=words_root, hub=False)[0]
    assert task.hf_subsets == ["fr", "de"] and "uk" in task.skipped
    model, processor = tiny_model()
    save(model, processor, tmp_path / "tiny")
    res = mteb.evaluate(WolofMRLEncoder(tmp_path / "tiny", embed_dim=16), [task], cache=None, co2_tracker=False,
                        overwrite_strategy="always", show_progress_bar=False)
    scores = {s["hf_subset"]: s for s in res.task_results[0].scores["test"]}
    assert set(scores) == {"fr", "de"}
    assert scores["de"]["recall_at_10"] == 1.0  # 2 documents: every word is in the top 10
    assert 0.0 <= scores["fr"]["recall_at_1"] <= 1.0


@pytest.mark.slow
def test_cascade_reads_recorded_french_words(tmp_path):
    """The Whisper-base cascade's first half on 4 real qabcs recordings: most transcripts are the word."""
    import recorded_words as rw
    from asr import cached_transcripts

    root, whisper = ROOT / "build" / "qabcs", ROOT / "build" / "backbones" / "whisper-base"
    if not (root / rw.WORDS_DIR.format(lang="fr")).is_dir() or not whisper.is_dir():
        pytest.skip("needs `python eval/recorded_words.py fetch` and build/backbones/whisper-base")
    rset = rw.recorded_words("fr", root, limit=4)
    clips = [q["audio"] for q in rset.queries]
    hyps = cached_transcripts(tmp_path / "t.json", clips, whisper, "fr")
    assert hyps == cached_transcripts(tmp_path / "t.json", clips, whisper, "fr")  # second call from the cache
    norm = [h.lower().strip(" .!?") for h in hyps]
    assert sum(n == rset.gold_text[q["id"]].lower() for n, q in zip(norm, rset.queries)) >= 2, hyps
