"""eval/hard.py: held-out voices only, resumable voicing, the two conditions in the benchmark split's columns."""
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "eval"))


def _sentences(n=4, fr_only=1):
    pairs = [{"sentence_id": f"gettext-{i:016x}", "kind": "pair", "source": "gettext", "source_key": f"k{i}",
              "license": "GPL", "wo_text": f"Naka nga def {i}", "fr_text": f"Comment vas-tu {i}"} for i in range(n)]
    extra = [{"sentence_id": f"gettext-f{i:015x}", "kind": "fr_only", "source": "gettext", "source_key": f"f{i}",
              "license": "GPL", "wo_text": "", "fr_text": f"Une phrase seule {i}"} for i in range(fr_only)]
    return pairs + extra


def test_voices_are_held_out_and_plan_is_deterministic():
    import hard

    from wolofmrl.voices import is_held_out

    for kokoro in (True, False):
        assert all(is_held_out(v) for v in hard.held_out_voices(kokoro))
    plan = hard.clip_plan(_sentences(6), n_voices=3, kokoro_share=0.5, seed=0)
    assert len(plan) == 18 and plan == hard.clip_plan(_sentences(6), 3, 0.5, 0)
    for sid in {t["sentence"]["sentence_id"] for t in plan}:  # distinct voices per sentence
        voices = [t["voice"] for t in plan if t["sentence"]["sentence_id"] == sid]
        assert len(set(voices)) == 3
    assert {t["voice"].split("-")[0] for t in plan} == {"kokoro", "espeak"}
    assert all(t["voice"].split("-")[0] == "espeak" for t in hard.clip_plan(_sentences(6), 2, 0.0, 0))


def test_voicing_resumes_from_finished_chunks(tmp_path):
    import hard

    tasks = hard.clip_plan(_sentences(3), n_voices=1, kokoro_share=0.0, seed=0)
    rows = hard.voice_clips(tasks, tmp_path, chunk=2)
    assert [r["id"] for r in rows] == [t["id"] for t in tasks] and all(r["flac"] for r in rows)
    chunks = sorted(tmp_path.glob("_clips/chunk-*.parquet"))
    assert len(chunks) == 2
    stamp = chunks[0].stat().st_mtime_ns
    again = hard.voice_clips(tasks, tmp_path, chunk=2)  # a rerun reads the chunks, synthesises nothing
    assert chunks[0].stat().st_mtime_ns == stamp and [r["flac"] for r in again] == [r["flac"] for r in rows]
    with pytest.raises(RuntimeError, match="another plan"):
        hard.voice_clips(tasks[::-1], tmp_path, chunk=2)


def test_conditions_written_in_the_split_columns(tmp_path):
    import benchmark_data as bd
    import hard

    from processing_wolofmrl import decode_audio
    from wolofmrl.testing import synthetic_waves

    sents = _sentences(4, fr_only=2)
    waves = synthetic_waves(8, seconds=(0.8, 1.2), seed=3)
    clips = [{"id": f"{s['sentence_id']}-wo-v{j}", "sentence_id": s["sentence_id"], "voice": f"espeak-wo-f5-p{j}",
              "flac": hard._flac(w, 16000)} for (s, j), w in zip([(s, j) for s in sents[:4] for j in (1, 2)], waves)]
    degraded = hard.degrade_clips(clips, seed=0)
    assert degraded == hard.degrade_clips(clips, seed=0)  # seeded per clip
    for (b, tag), c in zip(degraded, clips):
        wave, rate = decode_audio(b)
        assert tag.count(",") == 2 and (rate == int(tag.rsplit("rate", 1)[1]) if "rate" in tag else rate == 16000)
        assert not np.array_equal(wave, decode_audio(c["flac"])[0])
    by_id = {s["sentence_id"]: s for s in sents}
    fr_only = [hard._row(s, "test", s["sentence_id"] + "-fr", "fr", None, "", "") for s in sents[4:]]
    hard.write_condition(tmp_path / "hard" / "test", [hard._row(by_id[c["sentence_id"]], "test", c["id"], "wo", b,
                                                                c["voice"], t) for c, (b, t) in zip(clips, degraded)]
                         + fr_only)
    bench = bd.OfflineBenchmark(tmp_path / "hard", "test")
    a2t = bench.a2t()
    assert len(a2t.queries) == 8 and len(a2t.corpus) == 6  # French-only rows are distractor documents
    assert {q["audio"]["sampling_rate"] for q in a2t.queries} <= {8000, 16000, 22050, 44100}
