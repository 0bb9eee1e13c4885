"""A tiny *synthetic* benchmark split in the corpus contract's schema, so the suite runs before the real corpus.

    python eval/fixture.py --out data/fixture            # then: python eval/run.py --data data/fixture ...

Texts are placeholders (not Wolof, not French) and the audio is `wolofmrl.testing.synthetic_waves` (tone chirps
plus noise, not speech). Source keys are chosen so that both offline intent label spaces (MediaWiki message-key
families, UDHR article themes) have labels. Scores on it only show that the pipeline runs.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# (source, source_key): 2 labelled sentences per family / theme, at least
KEYS = [
    ("mediawiki", "searchbutton"), ("mediawiki", "search-result-size"), ("mediawiki", "searchmenu-new"),
    ("mediawiki", "userlogin-title"), ("mediawiki", "login-remember"), ("mediawiki", "createaccount-text"),
    ("mediawiki", "editsection"), ("mediawiki", "edit-summary"), ("mediawiki", "savearticle"),
    ("mediawiki", "watchlist-details"), ("mediawiki", "watchthis"), ("mediawiki", "unwatch-text"),
    ("udhr", "art01/b01"), ("udhr", "art02/b01"), ("udhr", "art03/b01"), ("udhr", "art04/b01"),
    ("udhr", "art19/b01"), ("udhr", "art20/b01"), ("udhr", "art21/b01"), ("udhr", "art26/b01"),
    ("gettext", "Open file"), ("gettext", "Quit"),
]


def fixture_rows(n_voices: int = 2, seed: int = 0, french_clips: int = 2) -> list[dict]:
    import numpy as np

    from wolofmrl.testing import synthetic_waves

    n_sent = len(KEYS)
    waves = synthetic_waves(n_sent * n_voices + french_clips, seconds=(0.6, 1.6), seed=seed)
    rows = []
    for s, (source, key) in enumerate(KEYS):
        for v in range(n_voices):
            wave = waves[s * n_voices + v]
            rows.append(dict(
                id=f"fx-{s:03d}-wo-v{v}", sentence_id=f"fx-{s:03d}", source=source, source_key=key,
                license="synthetic fixture", wo_text=f"wo placeholder {s} {key}", fr_text=f"fr placeholder {s} {key}",
                speech_lang="wo", audio=wave, voice=f"synthetic-voice-{v}", duration_s=len(wave) / 16000,
                synthetic=True, split="test"))
    for j in range(french_clips):  # French clips must be left out of the Wolof-speech tasks
        wave = waves[n_sent * n_voices + j]
        source, key = KEYS[j]
        rows.append(dict(id=f"fx-{j:03d}-fr-v0", sentence_id=f"fx-{j:03d}", source=source, source_key=key,
                         license="synthetic fixture", wo_text=f"wo placeholder {j} {key}",
                         fr_text=f"fr placeholder {j} {key}", speech_lang="fr", audio=wave, voice="synthetic-voice-fr",
                         duration_s=len(wave) / 16000, synthetic=True, split="test"))
    assert all(np.isfinite(r["audio"]).all() for r in rows)
    return rows


def write_fixture(out: str | Path, split: str = "test", **kwargs) -> Path:
    """Write `fixture_rows()` to <out>/<split>/part-00000.parquet with a 16 kHz `datasets.Audio` column."""
    import soundfile as sf
    from datasets import Audio, Dataset

    rows = fixture_rows(**kwargs)
    for r in rows:
        buf = io.BytesIO()
        sf.write(buf, r["audio"], 16000, format="WAV", subtype="PCM_16")
        r["audio"] = {"bytes": buf.getvalue(), "path": f"{r['id']}.wav"}
    ds = Dataset.from_list(rows).cast_column("audio", Audio(sampling_rate=16000))
    path = Path(out) / split
    path.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(path / "part-00000.parquet"))
    return Path(out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="data/fixture")
    p.add_argument("--voices", type=int, default=2)
    args = p.parse_args(argv)
    out = write_fixture(args.out, n_voices=args.voices)
    print(f"wrote a synthetic benchmark fixture to {out}/test ({len(KEYS)} sentences x {args.voices} voices)")


if __name__ == "__main__":
    main()
