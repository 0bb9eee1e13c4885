"""`wolofmrl serve` on a real uvicorn server on 127.0.0.1 (random free port): the official `openai` client, plain
HTTP, every bad input a 4xx, and a bounded load test. Tiny random model + real tokenizer, FAISS and audio decoding."""

import base64
import io
import json
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from wolofmrl.testing import synthetic_waves

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "eval"))

PASSAGES = ["La pluie tombera demain sur Dakar.", "Le marché ouvre à huit heures.",
            "Le président a parlé à la radio ce matin.", "La mer est calme aujourd'hui."]


def wav_bytes(seconds: float = 1.5, rate: int = 22050) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, synthetic_waves(1, (seconds, seconds), rate=rate)[0], rate, format="WAV")
    return buf.getvalue()


def audio_item(raw: bytes) -> dict:
    return {"type": "input_audio", "input_audio": {"data": base64.b64encode(raw).decode(), "format": "wav"}}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import uvicorn

    from wolofmrl.build import save
    from wolofmrl.cli.store import index_documents
    from wolofmrl.cli.server import Limits, create_app
    from wolofmrl.testing import tiny_model

    root = tmp_path_factory.mktemp("serve")
    save(*tiny_model(), root / "model")
    (root / "docs.txt").write_text("\n\n".join(PASSAGES), encoding="utf-8")
    index_documents(root / "docs.txt", root / "idx", root / "model", coarse_dim=8, progress=False, log=lambda *_: 0)
    app = create_app(root / "model", index=root / "idx", device="cpu",
                     limits=Limits(max_audio_seconds=5.0, max_batch=8, max_body_bytes=2**20))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield {"url": f"http://127.0.0.1:{port}", "engine": app.app.state.engine}
    srv.should_exit = True
    thread.join(10)


def post(url: str, body, content_type: str = "application/json") -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


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
    ({"model": "m"}, "input"),
    ({"input": []}, "input"),
    ({"input": ""}, "empty"),
    ({"input": [[1, 2, 3]]}, "token id"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": "64"}, "dimensions"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
    ({"input": "x", "input_type": "title"}, "input_type"),
    ({"input": ["x"] * 9}, "at most 8"),
    ({"input": [{"type": "input_audio", "input_audio": {"data": "%%%"}}]}, "base64"),
    ({"input": [{"type": "input_audio"}]}, "input_audio"),
    ({"input": [audio_item(b"not audio at all")]}, "decode"),
    ({"input": [audio_item(wav_bytes(6.0, 16000))]}, "at most 5"),
    ({"input": [audio_item(wav_bytes(0.01, 16000))]}, "ms"),
]


@pytest.mark.parametrize("body,words", BAD, ids=[w for _, w in BAD])
def test_bad_embedding_requests_are_4xx_with_a_message(server, body, words):
    status, js = post(server["url"] + "/v1/embeddings", body)
    assert 400 <= status < 500, (status, js)
    assert words in js["error"]["message"], js


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


def test_bounded_load_test_loses_no_request(server):
    from server_load import run

    r = run(server["url"], clients=4, seconds=3.0, batch=2)
    assert r["lost"] == 0 and r["server_errors"] == 0 and r["client_errors"] == 0
    assert r["sent"] == r["ok"] > 0 and r["p99_ms"] >= r["p50_ms"] > 0
