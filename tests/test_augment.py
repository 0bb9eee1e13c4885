"""wolofmrl.augment: each degradation does what it says, measured on the output."""
import re

import numpy as np
import pytest

from wolofmrl import augment as A

SR = 16000


def voiced(seconds=1.0, f0=150.0, amp=0.1):
    """A harmonic, amplitude-modulated signal with energy up to 7.5 kHz (a stand-in for a voiced clip)."""
    t = np.arange(int(seconds * SR)) / SR
    x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, int(7500 / f0)))
    x *= 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (amp * x / np.abs(x).max()).astype(np.float32)


def band_energy(x, lo, hi):
    spec = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(x.size, 1 / SR)
    return float(spec[(f >= lo) & (f < hi)].sum())


def peak_hz(x):
    spec = np.abs(np.fft.rfft(x * np.hanning(x.size)))
    return float(np.fft.rfftfreq(x.size, 1 / SR)[spec.argmax()])


@pytest.mark.parametrize("factor", [0.85, 1.15])
def test_speed_changes_duration_and_pitch(factor):
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(SR) / SR)).astype(np.float32)
    y = A.change_speed(tone, factor)
    assert abs(y.size - SR / factor) <= 2
    assert peak_hz(y) == pytest.approx(440 * factor, rel=0.01)


def test_speed_rejects_bad_factor():
    with pytest.raises(ValueError, match="factor"):
        A.change_speed(voiced(), 3.0)


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
@pytest.mark.parametrize("snr", [5.0, 20.0])
def test_noise_at_the_asked_snr(kind, snr):
    rng = np.random.default_rng(0)
    x = voiced()
    others = [voiced(0.7, f0=f) for f in (110, 190, 230)]
    y = A.add_noise(x, A.noise_of_kind(kind, x.size, rng, others), snr)
    assert np.abs(y).max() <= 0.99 + 1e-6
    # peak limiting scales speech and noise together: measure against the scaled speech
    scale = float(np.dot(y, x) / np.dot(x, x)) if kind != "babble" else 1.0
    if kind != "babble":  # babble is correlated with nothing here, but periodic clips correlate with x a little
        measured = 10 * np.log10(np.mean((scale * x) ** 2) / np.mean((y - scale * x) ** 2))
        assert measured == pytest.approx(snr, abs=0.3)
    else:
        measured = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
        assert measured == pytest.approx(snr, abs=0.01)


def test_pink_noise_falls_off_and_white_is_flat():
    rng = np.random.default_rng(1)
    pink, white = A.pink_noise(4 * SR, rng), A.white_noise(4 * SR, rng)
    per_hz = lambda x, lo, hi: band_energy(x, lo, hi) / (hi - lo)  # noqa: E731
    assert per_hz(pink, 100, 200) / per_hz(pink, 1000, 2000) == pytest.approx(10, rel=0.3)  # 1/f power
    assert per_hz(white, 100, 200) / per_hz(white, 1000, 2000) == pytest.approx(1, rel=0.3)


def test_babble_needs_other_clips():
    with pytest.raises(ValueError, match="others"):
        A.babble_noise(100, [], np.random.default_rng(0))


def test_reverb_adds_a_decaying_tail():
    rng = np.random.default_rng(2)
    rir = A.synthetic_rir(rng, rt60=0.6)
    assert rir.size == int(round(1.2 * 0.6 * SR)) and rir[0] == 1.0
    energy = np.cumsum(rir[::-1] ** 2)[::-1]  # Schroeder integral
    db = 10 * np.log10(energy / energy[1])
    assert -70 < db[int(0.6 * SR)] < -50  # ~60 dB down after rt60
    burst = np.zeros(SR, np.float32)
    burst[:1600] = voiced(0.1)
    wet = A.reverberate(burst, rir)
    assert wet.size == burst.size
    assert band_energy(wet[3200:], 0, 8000) > 1e-3 * band_energy(wet[:1600], 0, 8000)  # tail after the burst
    assert np.all(burst[3200:] == 0)


def test_telephone_removes_energy_above_4khz_and_below_300hz():
    x = voiced(f0=50.0)
    y = A.telephone(x)
    assert y.size == x.size
    assert band_energy(y, 4100, 8000) < 2e-3 * band_energy(x, 4100, 8000)  # > 27 dB down
    assert band_energy(y, 0, 150) < 0.05 * band_energy(x, 0, 150)
    assert band_energy(y, 800, 2500) > 0.5 * band_energy(x, 800, 2500)


@pytest.mark.parametrize("codec", sorted(A.CODECS))
def test_codec_roundtrip_is_lossy_aligned_and_same_length(codec):
    x = voiced()
    y = A.codec_roundtrip(x, codec)
    assert y.size == x.size and y.dtype == np.float32
    corr = float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))
    assert 0.7 < corr < 0.9999, corr  # aligned (delay removed), but not lossless


@pytest.mark.parametrize("rate", [8000, 22050, 44100])
def test_rate_roundtrip(rate):
    x = voiced()
    y = A.rate_roundtrip(x, rate)
    assert y.size == x.size
    if rate == 8000:
        # the resampler (torchaudio, rolloff 0.99) leaks ~-10 dB just above 4 kHz; above 5 kHz nothing is left
        assert band_energy(y, 5000, 8000) < 1e-3 * band_energy(x, 5000, 8000)
    else:
        assert band_energy(y, 0, 7000) == pytest.approx(band_energy(x, 0, 7000), rel=0.02)


@pytest.mark.parametrize("preset", A.PRESETS)
def test_degrade_is_deterministic_for_an_rng(preset):
    x, others = voiced(), [voiced(0.5, f0=200)]
    a = A.degrade(x, np.random.default_rng(7), preset, others)
    b = A.degrade(x, np.random.default_rng(7), preset, others)
    assert a[1] == b[1] and np.array_equal(a[0], b[0])
    outs = {A.degrade(x, np.random.default_rng(s), preset, others)[1] for s in range(12)}
    assert len(outs) > 3  # seeds give different chains


def test_hard_preset_applies_speed_noise_and_one_channel():
    x = voiced()
    kinds = set()
    for seed in range(24):
        y, tag = A.degrade(x, np.random.default_rng(seed), "hard")
        parts = tag.split(",")
        assert len(parts) == 3 and parts[0].startswith("speed")
        factor = float(parts[0][5:])
        assert 0.85 <= factor <= 1.15 and abs(y.size - x.size / factor) <= 2 + x.size * 0.006
        snr = float(parts[1].rstrip("dB").lstrip("whitepink"))
        assert 5.0 <= snr <= 20.0
        kinds.add(re.sub(r"[\d.]+s?$", "", parts[2]))
    assert {"reverb", "telephone", "rate"} <= kinds and kinds & {"opus", "mp3-8k", "mp3-16k"}


def test_train_noisy_preset_adds_louder_noise_more_often_and_keeps_the_hard_channels_unheard():
    x, others = voiced(0.5), [voiced(0.5, f0=200)]
    snrs = {}
    for preset in ("train", "train-noisy"):
        tags = [A.degrade(x, np.random.default_rng(s), preset, others)[1] for s in range(200)]
        snrs[preset] = [float(m) for t in tags for m in re.findall(r"(?:white|pink|babble)([\d.]+)dB", t)]
        channels = {p for t in tags for p in t.split(",")}
        assert not channels & {"opus", "mp3-8k", "mp3-16k", "rate8000", "rate22050", "rate44100"}, preset
    assert 140 <= len(snrs["train-noisy"]) <= 180 and 75 <= len(snrs["train"]) <= 125  # p 0.8 vs p 0.5 of 200
    assert min(snrs["train-noisy"]) >= 3.0 and max(snrs["train-noisy"]) <= 30.0 and min(snrs["train"]) >= 12.0
    assert sum(s < 12.0 for s in snrs["train-noisy"]) > 30  # below the train preset's floor, into the hard range


def test_degrade_rejects_bad_input():
    with pytest.raises(ValueError, match="preset"):
        A.degrade(voiced(), np.random.default_rng(0), "easy")
    with pytest.raises(ValueError, match="1-D"):
        A.degrade(np.zeros((2, 100), np.float32), np.random.default_rng(0))
