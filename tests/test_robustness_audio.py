"""Robustness of the one audio path (issue 14 kinds 1, 2, 3, 4, 7, 10): every audio input a user can pass gives
the right features or an error that names the argument and the fix. Synthetic test signals, not speech."""

import io
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from processing_wolofmrl import decode_audio, load_audio, resample, split_windows
from wolofmrl.testing import synthetic_waves, tiny_model


@pytest.fixture(scope="module")
def tiny():
    return tiny_model("fusion")


@pytest.fixture(scope="module")
def wave():
    return synthetic_waves(1, seconds=(1.5, 1.5))[0]


def cosine(a, b) -> float:
    a, b = torch.as_tensor(a).flatten().double(), torch.as_tensor(b).flatten().double()
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def feats(processor, audio, sampling_rate=16000):
    return processor(audio=audio, sampling_rate=sampling_rate)["input_features"]


# ------------------------------------------------------------------------------------------- kind 1: values
def _pcm(wave, kind):
    if kind == "int16 list":
        return np.round(wave * 32767).astype(np.int16).tolist()
    if kind == "int16":
        return np.round(wave * 32767).astype(np.int16)
    if kind == "int32":
        return np.round(wave.astype(np.float64) * 2**31 * 0.999).astype(np.int32)
    if kind == "uint8":
        return np.round(wave * 127 + 128).astype(np.uint8)
    if kind == "float16 tensor":
        return torch.from_numpy(wave).half()
    if kind == "bfloat16 tensor":
        return torch.from_numpy(wave).bfloat16()
    if kind == "float64":
        return wave.astype(np.float64)
    raise KeyError(kind)


@pytest.mark.parametrize("kind", ["int16 list", "int16", "int32", "uint8", "float16 tensor", "bfloat16 tensor",
                                  "float64"])
def test_kind1_sample_values_are_scaled_right(tiny, wave, kind):
    """The same samples in any numeric form give the same features as the float32 array (cosine >= 0.999)."""
    _, processor = tiny
    ref = feats(processor, wave)
    got = feats(processor, _pcm(wave, kind))
    assert got.shape == ref.shape
    assert cosine(got, ref) >= 0.999, kind


@pytest.mark.parametrize("audio,error,match", [
    (np.ones(16000, dtype=bool), TypeError, "boolean samples"),
    (np.ones(16000, dtype=np.complex64), TypeError, "complex samples"),
    (np.array([0.1] * 100 + ["x"], dtype=object), TypeError, "object"),
    (np.array([0.1, np.nan] * 8000, np.float32), ValueError, "NaN or inf"),
    ([40000, -3, 5] * 6000, ValueError, "16-bit PCM.*int32"),
])
def test_kind1_bad_sample_values_are_clear_errors(tiny, audio, error, match):
    with pytest.raises(error, match=match):
        tiny[1](audio=audio, sampling_rate=16000)


@pytest.mark.parametrize("gain", [1e4, 1e19])
def test_kind1_huge_float_amplitude_is_rescaled_with_a_warning(tiny, wave, gain):
    model, processor = tiny
    with pytest.warns(UserWarning, match="outside \\[-1, 1\\].*rescaled"):
        got = feats(processor, (wave.astype(np.float64) * gain).astype(np.float32))
    assert torch.isfinite(got).all()
    assert cosine(got, feats(processor, wave / np.abs(wave).max())) >= 0.999
    with torch.no_grad():
        assert torch.isfinite(model.get_speech_embeddings(input_features=got)).all()


# ------------------------------------------------------------------------------------------- kind 2: shapes
@pytest.mark.parametrize("layout", ["(clips, samples) array", "(clips, samples) tensor", "list of clips",
                                    "list of stereo clips", "stereo (2, samples)", "stereo (samples, 2)",
                                    "6 channels in a list", "nested lists"])
def test_kind2_shape_rule(tiny, layout):
    """A list is a batch; a 2-D array is one mono/stereo clip when an axis has <= 2 entries, else rows are clips."""
    _, processor = tiny
    clips = synthetic_waves(4, seconds=(1.0, 1.0), seed=2)
    clips = [c[:16000] for c in clips]
    stack = np.stack(clips)
    ref = feats(processor, clips)
    audio, expect = {
        "(clips, samples) array": (stack, ref),
        "(clips, samples) tensor": (torch.from_numpy(stack), ref),
        "list of clips": (list(stack), ref),
        "list of stereo clips": ([np.stack([c, c]) for c in clips], ref),
        "stereo (2, samples)": (np.stack([clips[0], clips[0]]), ref[:1]),
        "stereo (samples, 2)": (np.stack([clips[0], clips[0]]).T, ref[:1]),
        "6 channels in a list": ([np.stack([clips[0]] * 6)], ref[:1]),
        "nested lists": (stack.tolist(), ref),
    }[layout]
    got = feats(processor, audio)
    assert got.shape == expect.shape
    torch.testing.assert_close(got, expect, atol=1e-4, rtol=0)


@pytest.mark.parametrize("audio,match", [
    (np.zeros((16000, 4), np.float32), "inside a list"),
    ([np.zeros((20, 16000), np.float32)], "at most 8 channels.*list of 1-D clips"),
    (np.zeros((2, 2, 100), np.float32), "1-D"),
    (np.float32(0.5), "1-D"),
    ([np.zeros(16000, np.float32), np.zeros(8000, np.float32).reshape(2, 2, 2000)], "audio clip 1.*1-D"),
])
def test_kind2_ambiguous_or_bad_shapes_are_clear_errors(tiny, audio, match):
    with pytest.raises(ValueError, match=match):
        tiny[1](audio=audio, sampling_rate=16000)


# ------------------------------------------------------------------------------------------- kind 3: containers
def _encoded(wave, fmt="FLAC", rate=16000):
    buf = io.BytesIO()
    sf.write(buf, wave, rate, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("container", ["bytes", "file object", "bytes/path dict", "path dict", "raw dict",
                                       "datasets AudioDecoder", "list of AudioDecoders", "datasets Column",
                                       "torchcodec decoder"])
def test_kind3_containers(tiny, wave, tmp_path, container):
    import datasets
    from torchcodec.decoders import AudioDecoder

    _, processor = tiny
    data = _encoded(wave)
    path = tmp_path / "clip.flac"
    path.write_bytes(data)
    ds = datasets.Dataset.from_dict({"audio": [str(path), str(path)]}).cast_column("audio", datasets.Audio())
    audio, n = {
        "bytes": (data, 1),
        "file object": (io.BytesIO(data), 1),
        "bytes/path dict": ({"bytes": data, "path": "clip.flac"}, 1),
        "path dict": ({"bytes": None, "path": str(path)}, 1),
        "raw dict": ({"raw": wave, "sampling_rate": 16000}, 1),
        "datasets AudioDecoder": (ds[0]["audio"], 1),
        "list of AudioDecoders": (ds[:2]["audio"], 2),
        "datasets Column": (ds["audio"], 2),
        "torchcodec decoder": (AudioDecoder(data), 1),
    }[container]
    got = processor(audio=audio)["input_features"]
    ref = feats(processor, wave)
    assert got.shape[0] == n
    assert cosine(got[0], ref[0]) >= 0.9999  # FLAC is lossless up to 16-bit quantisation


@pytest.mark.parametrize("damage", ["truncated WAV", "truncated FLAC", "garbage bytes", "empty bytes",
                                    "text-mode file"])
def test_kind3_damaged_containers_are_clear_errors(tiny, wave, tmp_path, damage):
    _, processor = tiny
    wav = _encoded(wave, "WAV")
    flac = _encoded(wave, "FLAC")
    text_file = tmp_path / "t.txt"
    text_file.write_text("hello")
    audio, error, match = {
        "truncated WAV": (wav[: len(wav) // 2], ValueError, "truncated WAV"),
        "truncated FLAC": (flac[: len(flac) // 2], ValueError, "could not decode audio bytes"),
        "garbage bytes": (b"\x00\x01garbage" * 10, ValueError, "could not decode audio bytes"),
        "empty bytes": (b"", ValueError, "empty"),
        "text-mode file": (open(text_file), TypeError, "binary mode"),
    }[damage]
    with pytest.raises(error, match=match):
        processor(audio=audio)


def test_kind3_streamed_wav_with_placeholder_size_is_not_truncation(wave):
    """espeak-ng --stdout writes a WAV whose size fields are placeholders: it decodes whole."""
    wav = bytearray(_encoded(wave, "WAV"))
    data_at = wav.index(b"data")
    wav[data_at + 4:data_at + 8] = (0x7FFFF000).to_bytes(4, "little")
    got, rate = decode_audio(bytes(wav))
    assert rate == 16000 and len(got) == len(wave)


# ------------------------------------------------------------------------------------------- kind 4: sampling_rate
@pytest.mark.parametrize("rate,error", [(0, ValueError), (-16000, ValueError), ("16000", TypeError),
                                        (float("nan"), ValueError), (float("inf"), ValueError),
                                        (16000.5, ValueError), (True, TypeError), (10**12, ValueError)])
def test_kind4_bad_sampling_rate_names_the_argument(tiny, wave, rate, error):
    with pytest.raises(error, match="sampling_rate"):
        tiny[1](audio=wave, sampling_rate=rate)
    with pytest.raises(error, match="sampling_rate"):
        tiny[1](audio={"array": wave, "sampling_rate": rate})


@pytest.mark.parametrize("rate", [np.int64(16000), 16000.0, torch.tensor(16000)])
def test_kind4_integral_sampling_rates_are_accepted(tiny, wave, rate):
    torch.testing.assert_close(feats(tiny[1], wave, rate), feats(tiny[1], wave))


# ------------------------------------------------------------------------------------------- kind 7: long audio
@pytest.mark.parametrize("seconds", [35.0, 75.0])
def test_kind7_long_audio_is_windowed_and_pooled(tiny, seconds):
    model, processor = tiny
    long = synthetic_waves(1, seconds=(seconds, seconds), seed=5)[0]
    short = synthetic_waves(1, seconds=(2.0, 2.0), seed=6)[0]
    batch = processor(audio=[long, short], sampling_rate=16000)
    windows = batch["window_to_clip"].tolist()
    assert windows[-1] == 1 and windows.count(0) >= 2 and batch["input_features"].shape[-1] <= 3000
    with torch.no_grad():
        both = model.get_speech_embeddings(**batch, dim=32)
        alone = model.get_speech_embeddings(**processor(audio=long, sampling_rate=16000), dim=32)
        short_alone = model.get_speech_embeddings(**processor(audio=short, sampling_rate=16000), dim=32)
    assert both.shape == (2, 32)
    assert torch.dot(both[0], alone[0]) >= 0.999 and torch.dot(both[1], short_alone[0]) >= 0.999
    with pytest.raises(ValueError, match="max_audio_seconds"):
        processor(audio=long, sampling_rate=16000, max_audio_seconds=30)


def test_kind7_windows_cover_the_clip_with_overlap():
    clip = np.arange(16000 * 70, dtype=np.float32)
    windows, owner = split_windows([clip], window=16000 * 30, overlap=16000 * 5)
    assert owner == [0, 0, 0] and all(len(w) <= 16000 * 30 for w in windows)
    assert windows[0][0] == 0 and windows[-1][-1] == clip[-1]
    for a, b in zip(windows, windows[1:]):
        assert a[-1] - b[0] >= 16000 * 5 - 1  # consecutive windows overlap by >= 5 s


# ------------------------------------------------------------------------------------------- kind 10: one path
@pytest.mark.parametrize("orig,target", [(44100, 16000), (22050, 16000), (8000, 16000), (48000, 16000)])
def test_kind10_one_resampler_matches_torchaudio(wave, orig, target):
    import torchaudio.functional as AF

    x = synthetic_waves(1, seconds=(1.0, 1.0), rate=orig)[0]
    ref = AF.resample(torch.from_numpy(x), orig, target).numpy()
    got = resample(x, orig, target)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5


@pytest.mark.parametrize("form", ["path", "bytes", "dict", "array"])
def test_kind10_load_audio_is_the_same_from_every_form(wave, tmp_path, form):
    x = synthetic_waves(1, seconds=(1.0, 1.0), rate=22050)[0]
    data = _encoded(x, "WAV", 22050)
    (tmp_path / "a.wav").write_bytes(data)
    decoded, _ = sf.read(io.BytesIO(data), dtype="float32")
    audio = {"path": str(tmp_path / "a.wav"), "bytes": data, "dict": {"array": decoded, "sampling_rate": 22050},
             "array": decoded}[form]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_audio(audio, 22050 if form == "array" else None)
    np.testing.assert_allclose(got, resample(decoded, 22050, 16000), atol=1e-6)


def test_kind10_library_modules_decode_through_the_processor():
    """portable and testing hold no decoder of their own (they call processing_wolofmrl)."""
    import inspect

    import wolofmrl.portable
    import wolofmrl.testing

    for module in (wolofmrl.portable, wolofmrl.testing):
        source = inspect.getsource(module)
        assert "sf.read(" not in source and "decode_audio" in source or "load_audio" in source


# ------------------------------------------------------------------------------------------- silence around speech
def _espeak_clip(text: str) -> np.ndarray:
    import subprocess

    raw = subprocess.run(["espeak-ng", "-v", "sw", "--stdout", text], capture_output=True, check=True).stdout
    return load_audio(raw)


@pytest.mark.parametrize("lead,tail", [(0.5, 10.0), (3.0, 0.0), (0.0, 25.0)])
def test_silence_around_a_question_is_trimmed(tiny, lead, tail):
    """A spoken question with seconds of silence around it embeds as the question alone (found by trying the CLI:
    a 1.5 s question in a 10 s file lost its passage). Trimming off, the silence drags the embedding away."""
    model, processor = tiny
    speech = _espeak_clip("loxo benn du taar")
    padded = np.concatenate([np.zeros(int(lead * 16000), np.float32), speech, np.zeros(int(tail * 16000), np.float32)])
    kept = processor.prepare_audio([padded], sampling_rate=16000)[0]
    assert kept.size <= speech.size + int(0.25 * 16000), "leading/trailing silence was not cut"

    def embed(proc, audio):
        with torch.no_grad():
            return model.get_speech_embeddings(**proc(audio=[audio], sampling_rate=16000))[0]

    assert cosine(embed(processor, speech), embed(processor, padded)) >= 0.99
    processor.trim_silence = False
    try:
        assert cosine(embed(processor, speech), embed(processor, padded)) < 0.99
    finally:
        processor.trim_silence = True


def test_a_clip_cut_tight_and_the_same_clip_in_silence_give_the_same_input():
    """The margin around speech is filled to exactly pad_seconds (0.04 s): a question cut tight (no silence after
    it), with a little or with minutes of silence, becomes the same samples, so every model embeds it the same (the default's
    LoRA encoder moved to cosine 0.95-0.97 when 0.05-0.1 s of silence followed a question cut tight)."""
    from processing_wolofmrl import trim_silence

    speech = _espeak_clip("loxo benn du taar")
    loud = np.flatnonzero(np.abs(speech) > 0.05)
    tight = speech[loud[0]: loud[-1] + 1]  # no margin at all
    reference = trim_silence(tight)
    assert reference.size >= tight.size + 2 * 640 - 2 * 320  # the 0.04 s margins, less at most a 20 ms frame each
    np.testing.assert_array_equal(trim_silence(reference), reference)  # idempotent: the eval path trims twice
    for lead, tail in [(0.0, 0.05), (0.02, 0.0), (3.0, 60.0), (0.5, 0.013)]:  # leads on the 20 ms frame grid
        around = np.concatenate([np.zeros(int(lead * 16000), np.float32), tight,
                                 np.zeros(int(tail * 16000), np.float32)])
        np.testing.assert_array_equal(trim_silence(around), reference)


def test_the_margin_fill_never_pushes_a_clip_past_the_window(tiny):
    """A 30 s clip loud to both edges stays one 30 s window (the zero margins would make it 30.1 s: two
    windows, two encoder passes, another embedding); a loud blip shorter than a spectrogram window gets its margins
    like any clip, alone or in silence."""
    from processing_wolofmrl import trim_silence

    _, processor = tiny
    rng = np.random.default_rng(0)
    full = (0.3 * rng.standard_normal(30 * 16000)).astype(np.float32)
    assert trim_silence(full, max_samples=30 * 16000).size == full.size
    assert trim_silence(full).size > full.size  # without the window: margins filled
    out = processor(audio=[full], sampling_rate=16000)
    assert out.get("window_to_clip") is None and out["input_features"].shape[-1] == 3000
    blip = (0.3 * rng.standard_normal(390)).astype(np.float32)
    around = np.concatenate([np.zeros(3200, np.float32), blip, np.zeros(8000, np.float32)])
    np.testing.assert_array_equal(trim_silence(blip), trim_silence(around))
    assert trim_silence(blip).size >= 2 * 640


def test_all_silence_and_short_clips_are_left_alone(tiny):
    from processing_wolofmrl import trim_silence

    silent = np.zeros(16000, np.float32)
    assert trim_silence(silent).size == 16000
    blip = np.zeros(16000, np.float32)
    blip[8000:8100] = 0.5  # louder part shorter than one spectrogram window: the clip stays whole
    assert trim_silence(blip).size >= 400


def test_a_document_passed_as_audio_gets_a_short_clear_error(tmp_path):
    """A .docx (a zip) given as the query audio: one readable message, not the decoders' multi-line C++ traces."""
    doc = tmp_path / "notes.docx"
    doc.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 8)
    with pytest.raises(ValueError, match="not a readable audio file") as err:
        load_audio(str(doc))
    assert "\n" not in str(err.value) and len(str(err.value)) < 700
