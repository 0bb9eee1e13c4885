"""Model and processor inputs that look right but are not (issue 19, m01 / m03): a (waveform, rate) tuple, and Whisper
features padded to 30 s without a mask. Tiny random model, real tokenizer and Whisper feature extractor; the audio is
synthetic (tone chirps), not speech."""

import warnings

import numpy as np
import pytest
import torch

from wolofmrl.testing import synthetic_waves, tiny_model


@pytest.fixture(scope="module")
def tiny():
    model, processor = tiny_model()
    return model.eval(), processor


@pytest.mark.parametrize("make", [
    lambda w: (torch.from_numpy(w)[None], 16000),                 # torchaudio.load
    lambda w: (w, 16000),                                         # librosa.load
    lambda w: (16000, (w * 32767).astype(np.int16)),              # scipy.io.wavfile.read
    lambda w: [w, 22050],                                         # the same pair as a list
])
def test_a_waveform_rate_pair_is_named_not_read_as_two_clips(tiny, make):
    _, processor = tiny
    wave = synthetic_waves(1)[0]
    for kwargs in ({}, {"sampling_rate": 16000}):
        with pytest.raises(ValueError, match=r"\(waveform, sampling_rate\) tuple.*sampling_rate=rate"):
            processor(audio=make(wave), **kwargs)
    assert processor(audio=[wave, wave], sampling_rate=16000)["input_features"].shape[0] == 2  # a real batch


def test_whisper_features_padded_to_30s_without_a_mask_are_masked_with_a_warning(tiny):
    model, processor = tiny
    wave = synthetic_waves(1, (2.0, 2.0))[0]
    with torch.no_grad():
        right = model.get_speech_embeddings(**processor(audio=wave, sampling_rate=16000))[0]
        padded = processor.feature_extractor(wave, sampling_rate=16000, return_tensors="pt")
        assert padded["input_features"].shape[-1] == 3000 and "attention_mask" not in padded
        with pytest.warns(UserWarning, match="without an attention_mask.*padding"):
            got = model.get_speech_embeddings(**padded)[0]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the processor's own features carry their mask: no warning
            model.get_speech_embeddings(**processor(audio=wave, sampling_rate=16000))
    assert float(got @ right) > 0.98
