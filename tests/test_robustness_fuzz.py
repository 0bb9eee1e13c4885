"""Property-based fuzz of the processor (issue 14): for any input, the right result — finite features, one row
per clip, masks that match — or a ValueError/TypeError (FileNotFoundError for paths) whose message names the
argument. No other exception, no silent NaN.

`WOLOFMRL_FUZZ_EXAMPLES=2000 pytest tests/test_robustness_fuzz.py -s` runs a longer fuzz and prints the counts
(inputs tried / right / clear error / wrong)."""

import collections
import os
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wolofmrl.testing import tiny_model

EXAMPLES = int(os.environ.get("WOLOFMRL_FUZZ_EXAMPLES", "150"))
ARGUMENTS = ("audio", "sampling_rate", "text", "max_length", "text_kind", "prompt_name", "max_audio_seconds",
             "keyword argument", "pass audio=")
COUNTS = collections.Counter()
PROCESSOR = tiny_model("fusion")[1]

DTYPES = [np.float32, np.float64, np.float16, np.int16, np.int32, np.int8, np.uint8, np.uint16, np.int64, bool,
          np.complex64]
VALUES = st.one_of(st.floats(-1, 1, width=32), st.floats(allow_nan=True, allow_infinity=True, width=32),
                   st.integers(-40000, 40000), st.sampled_from([0.0, 1e19, -1e30, 5e-40]))
GOOD_RATES = st.sampled_from([8000, 16000, 22050, 44100, 48000, np.int64(16000), 16000.0])
RATES = st.one_of(GOOD_RATES, GOOD_RATES, st.none(), st.integers(-10, 200_000),
                  st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(["16000", True]))


@st.composite
def arrays(draw):
    dtype = draw(st.one_of(st.sampled_from([np.float32, np.int16]), st.sampled_from(DTYPES)))
    length = draw(st.sampled_from([0, 1, 399, 400, 4000, 4000, 16000, 16000]))
    shape = draw(st.sampled_from([(length,), (length,), (2, length), (length, 2), (3, length), (length, 9),
                                  (2, 2, 50), ()]))
    size = int(np.prod(shape)) if shape else 1
    values = draw(st.one_of(st.lists(st.floats(-1, 1, width=32), min_size=1, max_size=8),
                            st.lists(VALUES, min_size=1, max_size=8)))
    with np.errstate(all="ignore"):
        data = np.resize(np.array(values, dtype=np.float64), size).reshape(shape)
        if dtype is bool:
            return data > 0
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return np.nan_to_num(data, nan=0, posinf=info.max, neginf=info.min).clip(info.min, info.max).astype(dtype)
        data = data.astype(dtype)
    kind = draw(st.sampled_from(["numpy", "torch", "list", "dict"]))
    if kind == "torch" and dtype not in (np.uint16,):
        return torch.from_numpy(np.ascontiguousarray(data))
    if kind == "list":
        return data.tolist()
    if kind == "dict":
        return {"array": data, "sampling_rate": draw(RATES)}
    return data


AUDIO = st.one_of(st.none(), arrays(), arrays(), st.lists(arrays(), max_size=3), st.binary(max_size=64),
                  st.sampled_from(["/nonexistent.wav", 3, 2.5, object(), {"foo": 1}, [], [[]]]))
TEXT = st.one_of(st.none(), st.none(), st.text(max_size=30), st.lists(st.text(max_size=20), max_size=3), st.integers(),
                 st.sampled_from(["a\ud800", ["ok", None], b"bytes", ("t",)]))


def _check_result(out, audio_given, text_given):
    if audio_given:
        key = "input_features"
        assert torch.isfinite(out[key]).all(), "non-finite features"
        mask = out["speech_attention_mask" if text_given else "attention_mask"]
        assert mask.shape[0] == out[key].shape[0] and mask.shape[-1] == out[key].shape[-1]
        assert (mask.sum(-1) > 0).all(), "an all-padding row"
    if text_given:
        assert out["input_ids"].shape == out["attention_mask"].shape


@settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(audio=AUDIO, text=TEXT, sampling_rate=RATES,
       max_length=st.one_of(st.none(), st.none(), st.integers(-2, 600), st.sampled_from([2.5, True])),
       text_kind=st.sampled_from(["query", "passage", "document", None, "query", "passage", "bad"]),
       mode=st.sampled_from(["audio", "text", "both"]))
def test_processor_gives_the_right_result_or_a_clear_error(audio, text, sampling_rate, max_length, text_kind, mode):
    audio, text = (None if mode == "text" else audio), (None if mode == "audio" else text)
    COUNTS["tried"] += 1
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = PROCESSOR(audio=audio, text=text, sampling_rate=sampling_rate, max_length=max_length,
                            text_kind=text_kind)
    except (ValueError, TypeError, FileNotFoundError) as err:
        message = str(err)
        assert any(name in message for name in ARGUMENTS), f"error names no argument: {type(err).__name__}: {err}"
        COUNTS["clear error"] += 1
        return
    _check_result(out, audio is not None, text is not None)
    COUNTS["right"] += 1


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    print(f"\nfuzz: {COUNTS['tried']} inputs tried, {COUNTS['right']} right, {COUNTS['clear error']} clear errors, "
          f"{COUNTS['tried'] - COUNTS['right'] - COUNTS['clear error']} wrong")
