"""One `wolofmrl serve` app on a real uvicorn server on 127.0.0.1 (random free port), shared by the server test
modules (built once per test process): a tiny random model with the real tokenizer and feature extractor, a real
FAISS index of four French passages, small limits so that the limit paths are cheap to reach."""

import functools
import json
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

PASSAGES = ["La pluie tombera demain sur Dakar.", "Le marché ouvre à huit heures.",
            "Le président a parlé à la radio ce matin.", "La mer est calme aujourd'hui."]
LIMITS = dict(max_audio_seconds=5.0, max_batch=8, max_body_bytes=2**20, max_request_audio_seconds=12.0,
              max_input_chars=30_000)


@functools.lru_cache(maxsize=1)
def tiny_server() -> dict:
    """{"url", "engine", "root"} of the running server (a daemon thread; it ends with the test process)."""
    import uvicorn

    from wolofmrl.build import save
    from wolofmrl.cli.server import Engine, Limits, create_app
    from wolofmrl.cli.store import DocumentIndex, index_documents
    from wolofmrl.testing import tiny_model

    root = Path(tempfile.mkdtemp(prefix="wolofmrl_serve_"))
    model, processor = tiny_model()
    save(model, processor, root / "model")
    (root / "docs.txt").write_text("\n\n".join(PASSAGES), encoding="utf-8")
    index_documents(root / "docs.txt", root / "idx", root / "model", coarse_dim=8, progress=False, log=lambda *_: 0)
    engine = Engine(model, processor, names=("model", "wolofmrl"), index=DocumentIndex.open(root / "idx"),
                    limits=Limits(**LIMITS))
    app = create_app(engine=engine)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 60
    while not srv.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    return {"url": f"http://127.0.0.1:{port}", "engine": engine, "root": root}


def post(url: str, body, content_type: str = "application/json", timeout: float = 120) -> tuple[int, object]:
    """(status, parsed JSON body, or the raw text when it is not JSON) of one POST; HTTP errors are returned."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as err:
        status, raw = err.code, err.read()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode("utf-8", "replace")


def check_error_body(status: int, body) -> dict:
    """Assert an OpenAI-style 4xx error body: {"error": {"message": str, "type", "param", "code"}}; returns it."""
    assert 400 <= status < 500, (status, str(body)[:300])
    assert isinstance(body, dict) and set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}, err
    assert isinstance(err["message"], str) and err["message"], err
    assert err["type"] == "invalid_request_error", err
    assert err["param"] is None or isinstance(err["param"], str), err
    assert err["code"] is None or isinstance(err["code"], str), err
    return err
