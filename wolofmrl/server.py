"""`wolofmrl serve`: an embeddings + search HTTP server (FastAPI + uvicorn), OpenAI-compatible for text.

    wolofmrl serve --model checkpoints/wolofmrl-base --index my_index --port 8000

Endpoints
- `GET /health` -> {"status": "ok", "model", "embedding_dim", "matryoshka_dims", "index_passages", "limits"}
- `GET /v1/models` -> OpenAI model list (one model).
- `POST /v1/embeddings` (OpenAI's): {"input": str | [str | audio item], "model", "dimensions"?,
  "encoding_format": "float" | "base64", "input_type"?: "query" | "passage" (extension; default "passage")}.
  Speech (extension): an input item `{"type": "input_audio", "input_audio": {"data": <base64 file bytes>,
  "format": "wav"}}` (OpenAI's audio content part), any format and rate the processor decodes, any length up to
  `--max-audio-seconds` (windows of 30 s, pooled). Response: OpenAI's `{"object": "list", "data": [{"object":
  "embedding", "index", "embedding"}], "model", "usage"}`; base64 = little-endian float32 bytes.
- `POST /v1/embeddings/audio` (extension): multipart upload, fields `file` (one or more), `dimensions`,
  `encoding_format`, `model`; same response.
- `POST /v1/search` (needs `--index`): {"query": str | audio item, "k": 10, "shortlist": 500} or a multipart
  upload (`file`, `k`, `shortlist`) at `/v1/search/audio` -> {"object": "list", "data": [hits], "model"}; hits as
  `wolofmrl search --json` prints them.

Every bad input is a 4xx with OpenAI's error body {"error": {"message", "type", "param", "code"}}: 400 for a bad
field, 413 for a body over `--max-body-mb`, 404 for /v1/search without an index, 422 never (validation is 400).
Model calls are serialised by a lock (one forward at a time; requests queue).
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import Request  # module level: the endpoints' annotations are strings resolved here

__all__ = ["Limits", "create_app", "serve", "APIError"]


@dataclass
class Limits:
    """Request limits: audio seconds per item, items per request, request body bytes."""

    max_audio_seconds: float = 120.0
    max_batch: int = 256
    max_body_bytes: int = 25 * 2**20


class APIError(Exception):
    """A client error: HTTP `status`, a message naming the field (`param`) and the fix."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.message, self.param, self.status = message, param, status


def _error_body(message: str, param: str | None = None, code: int = 400) -> dict:
    kind = "invalid_request_error" if code < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class BodyLimit:
    """ASGI middleware: 413 for a request body over `limit` bytes (by Content-Length, or counted as it arrives)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(receive, send)
        chunks, seen = [], 0  # read the whole body first (bounded by the limit), then replay it to the app
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, _replay([message]), send)
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await self._reject(receive, send, message)
            if not message.get("more_body", False):
                break
        await self.app(scope, _replay([{"type": "http.request", "body": b"".join(chunks), "more_body": False}],
                                      receive), send)

    async def _reject(self, receive, send, last: dict | None = None):
        """Drain (and drop) the rest of the body, so the client reads the 413 instead of a broken pipe."""
        import json

        message = last or {"more_body": True}
        while message.get("more_body", False) and message.get("type", "http.request") == "http.request":
            message = await receive()

        body = json.dumps(_error_body(f"request body is over the server's limit of {self.limit} bytes: send fewer "
                                      "or shorter inputs", None, 413)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})


def _replay(messages: list, receive=None):
    """An ASGI receive that yields `messages`, then defers to `receive` (e.g. to wait for a disconnect)."""
    queue = list(messages)

    async def replay():
        if queue:
            return queue.pop(0)
        if receive is not None:
            return await receive()
        return {"type": "http.disconnect"}

    return replay


class Engine:
    """The loaded model (+ optional index) behind the endpoints; every model call holds `lock`."""

    def __init__(self, model_path, index=None, device=None, dtype="auto", limits: Limits | None = None,
                 batch_size: int = 32):
        from wolofmrl.cli.store import DocumentIndex, load_model

        self.model, self.processor, self.autocast = load_model(model_path, device, dtype)
        self.name = Path(model_path).name
        self.index = DocumentIndex.open(index) if index else None
        if self.index is not None and self.index.funnel.full_dim != self.model.config.embedding_dim:
            raise ValueError(f"--index {index} was built at width {self.index.funnel.full_dim}, the model embeds "
                             f"at {self.model.config.embedding_dim}: serve the model that built it")
        self.limits = limits or Limits()
        self.batch_size = batch_size
        self.lock = threading.Lock()
        self.hidden = int(self.model.config.embedding_dim)

    # ------------------------------------------------------------------ inputs
    def decode_audio_item(self, item: Any, where: str) -> np.ndarray:
        """An OpenAI-style input_audio item (or raw bytes) -> 16 kHz mono float32, limits checked."""
        from processing_wolofmrl import load_audio

        if isinstance(item, (bytes, bytearray)):
            raw = bytes(item)
        else:
            audio = item.get("input_audio") if isinstance(item, dict) else None
            if not isinstance(audio, dict) or not isinstance(audio.get("data"), str):
                raise APIError(f"{where}: an audio item is {{'type': 'input_audio', 'input_audio': {{'data': "
                               "<base64 audio file>, 'format': 'wav'}}", where)
            try:
                raw = base64.b64decode(audio["data"], validate=True)
            except (binascii.Error, ValueError):
                raise APIError(f"{where}: input_audio.data is not valid base64", where) from None
        if not raw:
            raise APIError(f"{where}: the audio is empty", where)
        try:
            wave = load_audio(raw, None, self.processor.sampling_rate)
        except ValueError as err:
            raise APIError(f"{where}: {err}", where) from None
        seconds = len(wave) / self.processor.sampling_rate
        if seconds > self.limits.max_audio_seconds:
            raise APIError(f"{where}: the audio is {seconds:.1f} s; this server takes at most "
                           f"{self.limits.max_audio_seconds:g} s per item: cut it shorter", where, 413)
        if len(wave) < 400:
            raise APIError(f"{where}: the audio is {1000 * seconds:.0f} ms; at least 25 ms are needed", where)
        return wave

    def check_dim(self, dim) -> int | None:
        if dim is None:
            return None
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= self.hidden:
            raise APIError(f"dimensions={dim!r}: use an int in 1..{self.hidden} (trained Matryoshka dims: "
                           f"{self.model.config.matryoshka_dims})", "dimensions")
        return dim

    # ------------------------------------------------------------------ model calls
    def embed(self, texts: list[tuple[int, str]], waves: list[tuple[int, np.ndarray]], n: int, kind: str,
              dim: int | None) -> np.ndarray:
        """(n, dim or hidden) embeddings, texts and waves placed at their indices."""
        from wolofmrl.cli.store import embed_audio, embed_texts

        out = np.zeros((n, dim or self.hidden), dtype=np.float32)
        with self.lock:
            if texts:
                out[[i for i, _ in texts]] = embed_texts(self.model, self.processor, [t for _, t in texts], kind,
                                                         dim, self.autocast, self.batch_size)
            if waves:
                out[[i for i, _ in waves]] = embed_audio(self.model, self.processor, [w for _, w in waves], dim,
                                                         self.autocast, self.batch_size,
                                                         sampling_rate=self.processor.sampling_rate)
        return out

    def text_tokens(self, texts: list[str]) -> int:
        return sum(len(ids) for ids in self.processor.tokenizer(texts)["input_ids"]) if texts else 0


def _as_inputs(engine: Engine, raw) -> tuple[list[tuple[int, str]], list[tuple[int, np.ndarray]], int]:
    """OpenAI `input` -> (indexed texts, indexed waves, count); APIError for anything else."""
    items = [raw] if isinstance(raw, (str, dict)) else raw
    if not isinstance(items, list) or not items:
        raise APIError("input must be a non-empty string or list (texts, or input_audio items)", "input")
    if len(items) > engine.limits.max_batch:
        raise APIError(f"input has {len(items)} items; this server takes at most {engine.limits.max_batch} per "
                       "request: split it", "input")
    texts, waves = [], []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item.strip():
                raise APIError(f"input[{i}] is an empty string", "input")
            texts.append((i, item))
        elif isinstance(item, dict):
            waves.append((i, engine.decode_audio_item(item, f"input[{i}]")))
        else:
            raise APIError(f"input[{i}] is a {type(item).__name__}: send strings (token id lists are not "
                           "supported) or input_audio items", "input")
    return texts, waves, len(items)


def _embedding_response(engine: Engine, emb: np.ndarray, encoding_format: str, tokens: int) -> dict:
    if encoding_format == "base64":
        data = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in emb]
    else:
        data = [row.tolist() for row in emb]
    return {"object": "list", "model": engine.name,
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _check_format(fmt) -> str:
    if fmt not in ("float", "base64"):
        raise APIError(f"encoding_format={fmt!r}: use 'float' or 'base64'", "encoding_format")
    return fmt


def _check_kind(kind) -> str:
    kind = {"document": "passage"}.get(kind, kind)
    if kind not in ("query", "passage"):
        raise APIError(f"input_type={kind!r}: use 'query' or 'passage'", "input_type")
    return kind


def _int_field(value, name: str, lo: int, hi: int) -> int:
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise APIError(f"{name}={value!r} is not an integer", name) from None
    if not lo <= value <= hi:
        raise APIError(f"{name}={value}: use {lo}..{hi}", name)
    return value


def _search(engine: Engine, texts, waves, k, shortlist) -> dict:
    if engine.index is None:
        raise APIError("this server has no index: start it with `wolofmrl serve --index INDEX`", None, 404)
    k = _int_field(k, "k", 1, 1000)
    shortlist = _int_field(shortlist, "shortlist", 1, 100_000)
    emb = engine.embed(texts, waves, 1, "query", None)
    hits = engine.index.search(emb, k=k, shortlist=shortlist)[0]
    return {"object": "list", "model": engine.name, "data": hits}


# --------------------------------------------------------------------------- the app
async def _json_body(request: Request) -> dict:
    import json

    try:
        body = json.loads(await request.body())
    except (ValueError, UnicodeDecodeError):
        raise APIError("the body is not valid JSON: send Content-Type application/json") from None
    if not isinstance(body, dict):
        raise APIError("the body must be a JSON object")
    return body


async def _form(request: Request, engine: Engine):
    from starlette.exceptions import HTTPException

    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError("send multipart/form-data with the audio in the field 'file'", "file")
    try:
        return await request.form(max_files=engine.limits.max_batch, max_part_size=engine.limits.max_body_bytes)
    except HTTPException:
        raise
    except Exception as err:  # malformed multipart bodies raise parser-specific errors
        raise APIError(f"could not parse the multipart body: {err}", "file") from None


def _add_error_handlers(app) -> None:
    """Every error as an OpenAI-style error body: APIError and validation errors 400, HTTP errors their status."""
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(APIError)
    async def _api_error(_, err: APIError):
        return JSONResponse(_error_body(err.message, err.param, err.status), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_, err: RequestValidationError):
        first = err.errors()[0] if err.errors() else {}
        where = ".".join(str(x) for x in first.get("loc", ()) if x != "body")
        return JSONResponse(_error_body(f"{where or 'body'}: {first.get('msg', 'invalid request')}", where or None),
                            status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(_, err: HTTPException):
        return JSONResponse(_error_body(str(err.detail), None, err.status_code), status_code=err.status_code)


def _add_info_routes(app, engine: Engine) -> None:
    @app.get("/health")
    def health():
        return {"status": "ok", "model": engine.name, "embedding_dim": engine.hidden,
                "matryoshka_dims": list(engine.model.config.matryoshka_dims),
                "index_passages": len(engine.index.passages) if engine.index else None,
                "limits": asdict(engine.limits)}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": int(time.time()),
                                            "owned_by": "wolofmrl"}]}


def _add_embedding_routes(app, engine: Engine) -> None:
    from starlette.concurrency import run_in_threadpool

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await _json_body(request)
        if "input" not in body:
            raise APIError("the body has no 'input': send {'input': [...], 'model': ...}", "input")
        dim = engine.check_dim(body.get("dimensions"))
        fmt = _check_format(body.get("encoding_format", "float"))
        kind = _check_kind(body.get("input_type", "passage"))
        texts, waves, n = await run_in_threadpool(_as_inputs, engine, body["input"])
        emb = await run_in_threadpool(engine.embed, texts, waves, n, kind, dim)
        return _embedding_response(engine, emb, fmt, engine.text_tokens([t for _, t in texts]))

    @app.post("/v1/embeddings/audio")
    async def embeddings_audio(request: Request):
        form = await _form(request, engine)
        files = form.getlist("file")
        if not files or len(files) > engine.limits.max_batch:
            raise APIError(f"upload 1..{engine.limits.max_batch} audio files in the 'file' field", "file")
        dims = form.get("dimensions")
        dim = engine.check_dim(_int_field(dims, "dimensions", 1, engine.hidden) if dims not in (None, "") else None)
        fmt = _check_format(form.get("encoding_format") or "float")
        raws = [await f.read() if hasattr(f, "read") else None for f in files]
        if any(r is None for r in raws):
            raise APIError("'file' must be file uploads (multipart/form-data)", "file")
        waves = [(i, await run_in_threadpool(engine.decode_audio_item, r, f"file[{i}]")) for i, r in enumerate(raws)]
        emb = await run_in_threadpool(engine.embed, [], waves, len(waves), "query", dim)
        return _embedding_response(engine, emb, fmt, 0)


def _add_search_routes(app, engine: Engine) -> None:
    from starlette.concurrency import run_in_threadpool

    @app.post("/v1/search")
    async def search(request: Request):
        body = await _json_body(request)
        query = body.get("query")
        if isinstance(query, str) and query.strip():
            texts, waves = [(0, query)], []
        elif isinstance(query, dict):
            texts, waves = [], [(0, await run_in_threadpool(engine.decode_audio_item, query, "query"))]
        else:
            raise APIError("query must be a non-empty string or an input_audio item", "query")
        return await run_in_threadpool(_search, engine, texts, waves, body.get("k", 10), body.get("shortlist", 500))

    @app.post("/v1/search/audio")
    async def search_audio(request: Request):
        form = await _form(request, engine)
        upload = form.get("file")
        if upload is None or not hasattr(upload, "read"):
            raise APIError("upload the spoken query as the multipart field 'file'", "file")
        wave = await run_in_threadpool(engine.decode_audio_item, await upload.read(), "file")
        return await run_in_threadpool(_search, engine, [], [(0, wave)], form.get("k", 10),
                                       form.get("shortlist", 500))


def create_app(model_path=None, index=None, device=None, dtype="auto", limits: Limits | None = None,
               batch_size: int = 32, engine: Engine | None = None):
    """The FastAPI app (load the model, or reuse `engine`). Raises what loading raises (bad folder or index)."""
    from fastapi import FastAPI

    engine = engine or Engine(model_path, index, device, dtype, limits, batch_size)
    app = FastAPI(title="WolofMRL", description=__doc__)
    app.state.engine = engine
    _add_error_handlers(app)
    _add_info_routes(app, engine)
    _add_embedding_routes(app, engine)
    _add_search_routes(app, engine)
    return BodyLimit(app, engine.limits.max_body_bytes)


def serve(model_path, index=None, host: str = "127.0.0.1", port: int = 8000, device=None, dtype="auto",
          limits: Limits | None = None, batch_size: int = 32):
    """Load the model (and index) and run the server with uvicorn until interrupted."""
    import uvicorn

    app = create_app(model_path, index, device, dtype, limits, batch_size)
    print(f"wolofmrl serve: http://{host}:{port}  (POST /v1/embeddings, /v1/search; GET /health)", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
