"""Offline TTS: Kokoro (IPA) and espeak-ng voices for Wolof and French, 16 kHz, deterministic."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from wolofmrl.curation import voice
from processing_wolofmrl import decode_audio as decode
from wolofmrl.curation.audio import encode

WO = "Ndank-ndank mooy jàpp golo ci ñaay"
FR = "Doucement, on attrape le singe dans la brousse."


def test_list_voices():
    for lang in ("wo", "fr"):
        vs = voice.list_voices(lang)
        assert len(vs) == len(set(vs)) >= 40
        assert any(v.startswith("kokoro-") and "+" in v for v in vs)  # mixed style vectors
        assert any(v.startswith(f"espeak-{lang}-") for v in vs)
    with pytest.raises(ValueError):
        voice.list_voices("en")


def test_wolof_ipa_maps_into_kokoro_vocab():
    unmapped = Counter()
    ph = voice.wolof_ipa_to_kokoro("Mbokk yi, ñaari xale dem nañu Ndakaaru, 12 fan", unmapped)
    vocab = voice.kokoro_vocab()
    assert ph and all(c in vocab for c in ph)
    assert ph.startswith("mb")  # prenasalised ᵐb → mb, not dropped
    assert "͡" not in ph and not any(c.isdigit() for c in ph)  # tie bars mapped, digits spelled in Wolof
    assert sum(unmapped.values()) == 0
    odd = Counter()
    voice.ipa_to_kokoro("a☃b", odd)
    assert odd["☃"] == 1  # what cannot be mapped is counted, never hidden


@pytest.mark.parametrize("lang,text,v", [
    ("wo", WO, "kokoro-jf_alpha"), ("wo", WO, "kokoro-jf_nezumi+jm_kumo"), ("wo", WO, "espeak-wo-m3-p50"),
    ("fr", FR, "kokoro-jm_kumo"), ("fr", FR, "espeak-fr-f2-p65"),
])
def test_synthesize_16k_finite_plausible(lang, text, v):
    x = voice.synthesize(text, lang, v)
    assert x.dtype == np.float32 and x.ndim == 1
    dur = len(x) / voice.SAMPLE_RATE
    assert 0.8 < dur < 8.0, dur  # ~10-25 characters per second of speech
    assert np.isfinite(x).all() and 0.05 < np.abs(x).max() <= 1.0
    assert np.sqrt(np.mean(x**2)) > 0.01


def test_synthesis_and_encoding_are_deterministic():
    a = voice.synthesize(WO, "wo", "espeak-wo-f1-p35", speed=1.1)
    b = voice.synthesize(WO, "wo", "espeak-wo-f1-p35", speed=1.1)
    assert np.array_equal(a, b)
    rng1, rng2 = np.random.default_rng(7), np.random.default_rng(7)
    cfg = {"p_noise": 1.0, "snr_db": [10], "p_bandlimit": 1.0, "gain_db": [-3, 0]}
    (y1, t1), (y2, t2) = voice.augment(a, rng1, cfg), voice.augment(a, rng2, cfg)
    assert np.array_equal(y1, y2) and t1 == t2 and "snr10" in t1 and np.abs(y1).max() <= 0.98 + 1e-6
    for fmt in ("flac", "opus"):  # Ogg's random stream serial is fixed: same audio, same bytes
        assert encode(y1, fmt)[0] == encode(y1, fmt)[0]
        z, sr = decode(encode(y1, fmt)[0])
        assert sr == 16000 and abs(len(z) - len(y1)) < 400


def test_bad_requests_raise():
    with pytest.raises(ValueError):
        voice.synthesize("", "wo", "kokoro-jf_alpha")
    with pytest.raises(ValueError):
        voice.synthesize(WO, "wo", "espeak-fr-m1-p50")
    with pytest.raises(ValueError):
        voice.synthesize(WO, "wo", "nope-1")
