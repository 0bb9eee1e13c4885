"""`wolofmrl serve` on a real uvicorn server on 127.0.0.1 (random free port): the official `openai` client, plain
HTTP, every bad input a 4xx, and a bounded load test. Tiny random model + real tokenizer, FAISS and audio decoding."""

import base64
import io
import json
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wolofmrl.testing import synthetic_waves

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "eval"))

from server_fixture import PASSAGES, check_error_body, post, tiny_server  # noqa: E402


def wav_bytes(seconds: float = 1.5, rate: int = 22050) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, synthetic_waves(1, (seconds, seconds), rate=rate)[0], rate, format="WAV")
    return buf.getvalue()


def audio_item(raw: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(raw).decode(), "format": "wav"}}


@pytest.fixture(scope="module")
def server():
    return tiny_server()


def multipart(fields: dict, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "wolofmrl-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
              f"Content-Type: audio/wav\r\n\r\n".encode() + raw + b"\r\n" for name, raw in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_openai_client_text_embeddings_match_the_model(server):
    from openai import OpenAI

    from wolofmrl.cli.store import embed_texts

    client = OpenAI(base_url=server["url"] + "/v1", api_key="unused")
    eng = server["engine"]
    want = embed_texts(eng.model, eng.processor, PASSAGES[:2], "passage", 16)
    for fmt in ("float", "base64"):
        resp = client.embeddings.create(model="wolofmrl", input=PASSAGES[:2], dimensions=16, encoding_format=fmt)
        rows = [np.frombuffer(base64.b64decode(d.embedding), "<f4") if fmt == "base64" else d.embedding
                for d in resp.data]  # asked explicitly, base64 comes back as the string
        got = np.array(rows, dtype=np.float32)
        np.testing.assert_allclose(got, want, atol=1e-5)
        assert resp.usage.prompt_tokens > 0 and [d.index for d in resp.data] == [0, 1]
    default = client.embeddings.create(model="wolofmrl", input="Il pleut.")  # the client asks base64 by default
    assert len(default.data[0].embedding) == 48
    query = client.embeddings.create(model="wolofmrl", input="Il pleut.", extra_body={"input_type": "query"})
    assert not np.allclose(query.data[0].embedding, default.data[0].embedding)
    from openai import BadRequestError

    with pytest.raises(BadRequestError, match="dimensions"):
        client.embeddings.create(model="wolofmrl", input="x", dimensions=4096)


def test_speech_as_json_and_multipart_agree(server):
    from wolofmrl.cli.store import embed_audio

    raw = wav_bytes()
    status, js = post(server["url"] + "/v1/embeddings", {"input": [audio_item(raw), "texte"], "model": "model"})
    assert status == 200 and len(js["data"]) == 2
    body, ctype = multipart({"dimensions": "48", "encoding_format": "float"}, [("a.wav", raw), ("b.wav", raw)])
    status, mp = post(server["url"] + "/v1/embeddings/audio", body, ctype)
    assert status == 200 and len(mp["data"]) == 2
    want = embed_audio(server["engine"].model, server["engine"].processor, [raw])[0]
    np.testing.assert_allclose(js["data"][0]["embedding"], want, atol=1e-5)
    np.testing.assert_allclose(mp["data"][1]["embedding"], want, atol=1e-5)


def test_search_and_health(server):
    status, health = post(server["url"] + "/v1/search", {"query": "pluie", "k": 3})
    assert status == 200 and len(health["data"]) == 3
    assert {h["text"] for h in health["data"]} <= set(PASSAGES) and health["data"][0]["rank"] == 1
    body, ctype = multipart({"k": "2"}, [("q.wav", wav_bytes())])
    status, spoken = post(server["url"] + "/v1/search/audio", body, ctype)
    assert status == 200 and len(spoken["data"]) == 2
    status, spoken_json = post(server["url"] + "/v1/search", {"query": audio_item(wav_bytes()), "k": 2})
    assert [h["id"] for h in spoken_json["data"]] == [h["id"] for h in spoken["data"]]
    with urllib.request.urlopen(server["url"] + "/health", timeout=10) as resp:
        info = json.loads(resp.read())
    assert info["status"] == "ok" and info["embedding_dim"] == 48 and info["index_passages"] == 4


BAD = [
    ({"model": "model"}, "input"),
    ({"input": []}, "input"),
    ({"input": ""}, "empty"),
    ({"input": ["ok", "  \n\t "]}, "input[1] is an empty string"),
    ({"input": "\u200b\u200b"}, "no characters the model reads"),
    ({"input": [[1, 2, 3]]}, "token id"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": "64"}, "dimensions"),
    ({"input": "x", "dimensions": 16.0}, "dimensions"),
    ({"input": "x", "dimensions": True}, "dimensions"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "x", "input_type": "title"}, "input_type"),
    ({"input": ["x"] * 9}, "at most 8"),
    ({"input": "x" * 30_001}, "at most 30000"),
    ({"input": [{"type": "input_audio", "input_audio": {"data": "%%%"}}]}, "base64"),
    ({"input": [{"type": "input_audio"}]}, "input_audio"),
    ({"input": [{"type": "image_url", "input_audio": {"data": ""}}]}, "input_audio"),
    ({"input": [audio_item(b"not audio at all")]}, "decode"),
    ({"input": [audio_item(wav_bytes(6.0, 16000))]}, "at most 5"),
    ({"input": [audio_item(wav_bytes(0.01, 16000))]}, "ms"),
]


@pytest.mark.parametrize("body,words", BAD, ids=[w for _, w in BAD])
def test_bad_embedding_requests_are_4xx_with_a_message(server, body, words):
    status, js = post(server["url"] + "/v1/embeddings", body)
    assert words in check_error_body(status, js)["message"], js


def test_bad_transport_is_4xx(server):
    url = server["url"]
    assert post(url + "/v1/embeddings", b"{not json")[0] == 400
    assert post(url + "/v1/embeddings", b"[1, 2]")[0] == 400
    status, js = post(url + "/v1/embeddings", {"input": "x" * (2**20 + 10)})
    assert status == 413 and "limit" in js["error"]["message"]
    assert post(url + "/v1/search", {"query": "x", "k": 0})[0] == 400
    assert post(url + "/v1/search", {"query": 3})[0] == 400
    assert post(url + "/v1/search/audio", {"query": "x"})[0] == 400
    assert post(url + "/v1/embeddings/audio", *multipart({}, []))[0] == 400
    assert post(url + "/v1/nothing", {})[0] == 404


HOSTILE_JSON = [  # JSON that parses (or nearly) but that the handlers never met: all once 500s (issue 19)
    ("/v1/embeddings", b'{"input": "Le march\\u00e9 \\ud800 ouvre"}', "invalid_json"),
    ("/v1/search", b'{"query": "bonjour \\udfff", "k": 3}', "invalid_json"),
    ("/v1/embeddings", b'{"input": ' + b"[" * 50_000 + b"]" * 50_000 + b"}", "invalid_json"),
    ("/v1/embeddings", b'{"input": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_000 + b"}", "invalid_json"),
    ("/v1/search", b'{"query": "bonjour", "k": Infinity}', None),
    ("/v1/search", b'{"query": "bonjour", "k": 1e400}', None),
    ("/v1/search", b'{"query": "bonjour", "k": NaN}', None),
    ("/v1/search", b'{"query": "bonjour", "shortlist": 123456789012345678901234567890}', None),
    ("/v1/search", b'{"query": "bonjour", "k": 2.7}', None),
    ("/v1/search", b'{"query": "bonjour", "k": true}', None),
    ("/v1/search", b'{"query": ["bonjour"]}', None),
    ("/v1/search", b'{"query": ""}', "empty_input"),
    ("/v1/search", b'{"query": "\\u2028\\u3000"}', "empty_input"),
    ("/v1/embeddings", b'{"input": "x", "dimensions": -1e400}', None),
    ("/v1/embeddings", b'{"input": "x", "encoding_format": null}', None),
    ("/v1/embeddings", b'\xff\xfe{"input": "x"}', "invalid_json"),
    ("/v1/embeddings", b"null", "invalid_json"),
    ("/v1/embeddings", b"", "invalid_json"),
    ("/v1/embeddings", b'"input"', "invalid_json"),
]


@pytest.mark.parametrize("path,body,code", HOSTILE_JSON, ids=[f"{p}:{b[:36]!r}" for p, b, _ in HOSTILE_JSON])
def test_hostile_json_is_400_never_500(server, path, body, code):
    status, js = post(server["url"] + path, body)
    err = check_error_body(status, js)
    assert status == 400 and (code is None or err["code"] == code), err


def test_unknown_model_names_and_fields_are_refused_as_openai_does(server):
    url = server["url"]
    status, js = post(url + "/v1/embeddings", {"input": "bonjour", "model": "text-embedding-3-large"})
    assert status == 404 and check_error_body(status, js)["code"] == "model_not_found"
    assert "text-embedding-3-large" in js["error"]["message"] and "'model'" in js["error"]["message"]
    status, js = post(url + "/v1/embeddings", {"input": "bonjour", "dimension": 16})
    err = check_error_body(status, js)
    assert status == 400 and err["param"] == "dimension" and err["code"] == "unknown_parameter"
    assert err["message"].startswith("Unrecognized request argument supplied: dimension") and "dimensions" in \
        err["message"]
    for body in ({"input": "x", "model": 5}, {"input": "x", "model": None, "extra_body": {}}):
        assert post(url + "/v1/embeddings", body)[0] == 400
    assert post(url + "/v1/search", {"query": "pluie", "model": "gpt-4"})[0] == 404
    assert post(url + "/v1/search", {"query": "pluie", "top_k": 3})[1]["error"]["param"] == "top_k"
    for fields in ({"dimension": "16"}, {"model": "other"}, {"dimensions": "١٦"}, {"dimensions": "16.0"}):
        status, js = post(url + "/v1/embeddings/audio", *multipart(fields, [("a.wav", wav_bytes())]))
        check_error_body(status, js)
    body, ctype = multipart({}, [("a.wav", wav_bytes())])
    status, js = post(url + "/v1/embeddings/audio", body.replace(b'name="file"', b'name="model"', 1), ctype)
    assert check_error_body(status, js)["param"] == "model"  # a file where a plain field belongs
    status, js = post(url + "/v1/search/audio", *multipart({"top_k": "2"}, [("a.wav", wav_bytes())]))
    assert check_error_body(status, js)["param"] == "top_k"
    assert post(url + "/v1/embeddings", {"input": "x", "model": "wolofmrl", "user": "u-1"})[0] == 200
    with urllib.request.urlopen(url + "/v1/models", timeout=10) as resp:
        assert [m["id"] for m in json.loads(resp.read())["data"]] == ["model", "wolofmrl"]


def silence_flac(seconds: float) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", 16000, 1, format="FLAC") as f:
        for start in range(0, int(seconds * 16000), 160_000):  # 10 s at a time: no big array here either
            f.write(np.zeros(min(160_000, int(seconds * 16000) - start), np.float32))
    return buf.getvalue()


def test_audio_length_is_bounded_before_decoding(server):
    """A 1 h FLAC of silence is ~180 KB: its 413 must come from the header, not after decoding 230 MB of samples
    (tracemalloc sees numpy's allocations; the server runs in this process)."""
    import tracemalloc

    raw = silence_flac(3600)
    assert len(raw) < 300_000
    tracemalloc.start()
    try:
        status, js = post(server["url"] + "/v1/embeddings", {"input": [audio_item(raw)]})
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 413 and check_error_body(status, js)["code"] == "audio_too_long", js
    assert "3600.0 s" in js["error"]["message"] and "at most 5 s" in js["error"]["message"]
    assert peak < 40 * 2**20, f"{peak / 2**20:.0f} MiB allocated to refuse it"
    body, ctype = multipart({}, [("long.flac", raw)])
    assert post(server["url"] + "/v1/embeddings/audio", body, ctype)[0] == 413
    # the per-request budget (12 s): three 4.5 s items pass one by one, not together
    item = audio_item(wav_bytes(4.5, 16000))
    status, js = post(server["url"] + "/v1/embeddings", {"input": [item, item, item]})
    assert status == 413 and "input[2]" in js["error"]["message"] and "per request" in js["error"]["message"]


def test_a_stream_without_a_duration_in_its_header_is_cut_at_the_cap():
    """WebM/Opus written to a pipe (as browsers' MediaRecorder does) has no duration in its header: the decode
    stops at the cap instead of decoding the whole stream."""
    import shutil
    import subprocess

    from processing_wolofmrl import AudioTooLongError, load_audio

    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg (Debian package, `make sysdeps`) is needed to write WebM")
    raw = subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=16000:"
                          "duration=40", "-c:a", "libopus", "-b:a", "8k", "-f", "webm", "pipe:1"],
                         check=True, capture_output=True).stdout
    with pytest.raises(AudioTooLongError, match="over 5 s") as err:
        load_audio(raw, max_seconds=5)
    assert err.value.seconds is None  # not from a header: from a decode stopped past the cap
    assert abs(len(load_audio(raw, max_seconds=60)) - 40 * 16000) < 1600  # under the cap: decoded whole


def test_silent_audio_is_refused_not_ranked(server):
    url = server["url"]
    quiet = io.BytesIO()
    sf.write(quiet, np.full(16000, 1e-4, np.float32), 16000, format="WAV")  # -80 dBFS: a muted microphone
    for raw in (silence_flac(4), quiet.getvalue()):
        status, js = post(url + "/v1/search", {"query": audio_item(raw)})
        assert check_error_body(status, js)["code"] == "silent_audio" and "silent" in js["error"]["message"]
        status, js = post(url + "/v1/search/audio", *multipart({}, [("q.flac", raw)]))
        assert check_error_body(status, js)["code"] == "silent_audio"
        status, js = post(url + "/v1/embeddings", {"input": ["texte", audio_item(raw)]})
        assert "input[1]" in check_error_body(status, js)["message"]


def test_long_audio_is_trimmed_before_windowing(server):
    """60 s of silence after a 3 s synthetic signal (a recorder left running): the server embeds it as the signal
    alone, as the processor does (trim, then 30 s windows), not as the mean of silent windows."""
    eng = server["engine"]
    wave = synthetic_waves(1, (3.0, 3.0))[0]
    long = np.concatenate([wave, np.zeros(60 * 16000, np.float32)])
    emb, _ = eng.embed([], [(0, wave), (1, long)], 2, "query", None)
    assert float(emb[0] @ emb[1]) > 0.99


def test_usage_counts_what_the_model_reads(server):
    """usage.prompt_tokens = tokens after the prefix and truncation at 512 (what the model reads), not the whole
    text's count."""
    long_text = "Le marché ouvre à huit heures. " * 400  # ~3,000 tokens
    status, js = post(server["url"] + "/v1/embeddings", {"input": [long_text, "Il pleut."]})
    assert status == 200, js
    tok = server["engine"].processor.tokenizer
    short = len(tok("passage: Il pleut.")["input_ids"])
    assert js["usage"]["prompt_tokens"] == 512 + short


def test_usage_count_never_races_the_model_call(server):
    """Two threads as two concurrent requests: the model call (tokenise with truncation at 512, then the model)
    and the usage count. The tokenizer's truncation setting is shared state: no call may reach the model with
    more than 512 ids. (Before the fix, the count switched truncation off under the model: 500 'index out of
    range'.)"""
    import threading
    import time

    eng = server["engine"]
    texts = [" ".join(f"Le marché numéro {i} ouvre à huit heures." for i in range(300))] * 2
    longest, real = [0], eng.model.get_text_embeddings

    def recording(input_ids=None, **kw):
        longest[0] = max(longest[0], input_ids.shape[1])
        return real(input_ids=input_ids[:, :512], **kw)

    eng.model.get_text_embeddings = recording
    stop = time.time() + 4
    try:
        def model_side():
            while time.time() < stop:
                eng.embed(list(enumerate(texts)), [], len(texts), "passage", 8)

        def usage_side():
            while time.time() < stop:
                eng.text_tokens(texts)

        threads = [threading.Thread(target=model_side), threading.Thread(target=usage_side)]
        [t.start() for t in threads]
        [t.join() for t in threads]
    finally:
        del eng.model.get_text_embeddings
    assert 0 < longest[0] <= 512


def test_health_answers_while_a_big_request_is_processed(server):
    """Tokenising and decoding run in worker threads: /health stays fast during a request that keeps the server
    busy for seconds (here 8 texts of 30,000 characters: ~1 MB to tokenise)."""
    import threading
    import time

    big = {"input": [" ".join(f"Le marché numéro {i} ouvre à huit heures." for i in range(700))[:30_000]] * 8,
           "dimensions": 8}
    latencies, done = [], threading.Event()

    def poll():
        while not done.is_set():
            start = time.perf_counter()
            with urllib.request.urlopen(server["url"] + "/health", timeout=60) as resp:
                resp.read()
            latencies.append(time.perf_counter() - start)
            time.sleep(0.02)

    poller = threading.Thread(target=poll)
    poller.start()
    start = time.perf_counter()
    status, js = post(server["url"] + "/v1/embeddings", big)
    took = time.perf_counter() - start
    done.set()
    poller.join()
    assert status == 200 and js["usage"]["prompt_tokens"] == 8 * 512, js
    # measured on 2 busy cores: slowest /health 0.12 s of 53 polls here; 0.95 s with the usage count on the loop
    assert len(latencies) >= 3 and max(latencies) < min(0.4, took / 4), (took, latencies)


def test_bounded_load_test_loses_no_request(server):
    from server_load import run

    r = run(server["url"], clients=4, seconds=3.0, batch=2, max_requests=400)
    assert r["lost"] == 0 and r["server_errors"] == 0 and r["client_errors"] == 0
    assert r["sent"] == r["ok"] > 0 and r["sent"] <= 400 and r["p99_ms"] >= r["p50_ms"] > 0


def test_serve_help_documents_every_limit_with_the_servers_defaults():
    """Each `Limits` field is a `wolofmrl serve` flag whose help gives the default, equal to the server's."""
    from dataclasses import fields

    from wolofmrl.cli import parser
    from wolofmrl.cli.server import Limits

    serve = parser()._subparsers._group_actions[0].choices["serve"]
    flags = {a.dest: a for a in serve._actions}
    text = " ".join(serve.format_help().split())
    for f in fields(Limits):
        dest = "max_body_mb" if f.name == "max_body_bytes" else f.name
        default = f.default / 2**20 if f.name == "max_body_bytes" else f.default
        assert flags[dest].default == default and f"(default {default:g}" in text, (f.name, flags[dest].help)
    assert "4xx" in text and "silent" in text and "header" in text
    with pytest.raises(ValueError, match="--max-audio-seconds"):
        Limits(max_audio_seconds=0)
    with pytest.raises(ValueError, match="--max-body-mb"):
        Limits(max_body_bytes=float("inf"))
