"""WolofMRLProcessor: inputs it takes, what it returns, and every bad input it refuses."""

import numpy as np
import pytest
import soundfile as sf
import torch

from processing_wolofmrl import trim_silence
from wolofmrl.testing import synthetic_waves, tiny_model


@pytest.fixture(scope="module")
def processor():
    return tiny_model("fusion")[1]


@pytest.fixture(scope="module")
def wave():
    return synthetic_waves(1, seconds=(1.5, 1.5))[0]


def test_input_kinds_give_the_same_features(processor, wave, tmp_path):
    path = tmp_path / "clip.wav"
    sf.write(path, wave, 16000, subtype="FLOAT")
    ref = processor(audio=wave, sampling_rate=16000)["input_features"]
    for audio in (torch.from_numpy(wave), wave.tolist(), [wave], str(path), path,
                  {"array": wave, "sampling_rate": 16000}):
        feats = processor(audio=audio, sampling_rate=None if isinstance(audio, (str, type(path), dict)) else 16000)
        torch.testing.assert_close(feats["input_features"], ref)


def test_no_padding_to_30_seconds_and_masks(processor):
    waves = synthetic_waves(2, seconds=(1.0, 3.0), seed=3)
    out = processor(audio=waves, sampling_rate=16000)
    n = [len(trim_silence(w)) // 160 for w in waves]  # trimmed, margins filled to 0.1 s
    assert out["input_features"].shape[-1] == max(n) + max(n) % 2 < 3000
    assert out["attention_mask"].sum(-1).tolist() == n


def test_resamples_and_downmixes(processor, wave):
    import torchaudio.functional as AF

    wave44 = AF.resample(torch.from_numpy(wave), 16000, 44100).numpy()
    stereo = np.stack([wave44, wave44])  # (channels, samples)
    a = processor(audio=stereo, sampling_rate=44100)["input_features"]
    b = processor(audio=stereo.T, sampling_rate=44100)["input_features"]  # (samples, channels)
    ref = processor(audio=wave, sampling_rate=16000)["input_features"]
    torch.testing.assert_close(a, b)
    assert a.shape == ref.shape
    assert torch.nn.functional.cosine_similarity(a.flatten(), ref.flatten(), dim=0) > 0.99


def test_int16_pcm_is_scaled(processor, wave):
    pcm = (wave * 32767).astype(np.int16)
    a = processor(audio=pcm, sampling_rate=16000)["input_features"]
    ref = processor(audio=wave, sampling_rate=16000)["input_features"]
    # int16 quantisation moves only the quietest mel bins
    assert (a - ref).abs().median() < 1e-3
    assert torch.nn.functional.cosine_similarity(a.flatten(), ref.flatten(), dim=0) > 0.9999


def test_text_prefixes_and_joint_keys(processor, wave):
    ids = processor(text="Naka nga def?", text_kind="query")["input_ids"][0].tolist()
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == "query: Naka nga def?"
    ids = processor(text=["Bonjour"])["input_ids"][0].tolist()
    assert processor.tokenizer.decode(ids, skip_special_tokens=True) == "passage: Bonjour"
    both = processor(audio=[wave], text=["x"], sampling_rate=16000)
    assert set(both) == {"input_features", "speech_attention_mask", "input_ids", "attention_mask"}


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(audio=np.zeros(16000, np.float32)), ValueError, "sampling_rate is required"),
        (dict(audio=np.zeros(0, np.float32), sampling_rate=16000), ValueError, "empty"),
        (dict(audio=np.full(150, 0.1, np.float32), sampling_rate=16000), ValueError, "ms long.*at least 25 ms"),
        (dict(audio=np.array([0.1, np.nan] * 800, np.float32), sampling_rate=16000), ValueError, "NaN or inf"),
        (dict(audio=np.array([0.1, np.inf] * 800, np.float32), sampling_rate=16000), ValueError, "NaN or inf"),
        (dict(audio=np.zeros(16000 * 31, np.float32), sampling_rate=16000, max_audio_seconds=30), ValueError,
         "at most 30 s.*Split"),
        (dict(audio="/nonexistent/clip.wav"), FileNotFoundError, "not found"),
        (dict(audio=[]), ValueError, "empty list"),
        (dict(audio=np.zeros((2, 2, 100), np.float32), sampling_rate=16000), ValueError, "1-D"),
        (dict(text=[]), ValueError, "non-empty list"),
        (dict(text=["a"], text_kind="doc"), ValueError, "text_kind"),
        (dict(), ValueError, "audio=.*text="),
    ],
)
def test_bad_inputs_are_clear_errors(processor, kwargs, error, match):
    with pytest.raises(error, match=match):
        processor(**kwargs)


def test_corrupt_file_is_a_clear_error(processor, tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt garbage")
    with pytest.raises(ValueError, match="could not decode audio file"):
        processor(audio=str(bad))
