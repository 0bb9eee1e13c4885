"""`wolofmrl serve`: an embeddings + search HTTP server (FastAPI + uvicorn), OpenAI-compatible for text.

    wolofmrl serve --model checkpoints/wolofmrl-base --index my_index --port 8000

Endpoints
- `GET /health` -> {"status": "ok", "model", "models", "embedding_dim", "matryoshka_dims", "index_passages",
  "limits"}; answered while a long request is being processed (all heavy work runs in worker threads).
- `GET /v1/models` -> OpenAI model list: the served names (`--served-model-name`, default the model folder's name
  and "wolofmrl").
- `POST /v1/embeddings` (OpenAI's): {"input": str | [str | audio item], "model"?, "dimensions"?,
  "encoding_format": "float" | "base64", "user"?, "input_type"?: "query" | "passage" (extension; default
  "passage")}. Speech (extension): an input item `{"type": "input_audio", "input_audio": {"data": <base64 file
  bytes>, "format": "wav"}}` (OpenAI's audio content part), any format and rate the processor decodes. Response:
  OpenAI's `{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}`;
  base64 = little-endian float32 bytes; `usage` counts the tokens the model read (prefix, special tokens,
  truncation at 512 tokens).
- `POST /v1/embeddings/audio` (extension): multipart upload, fields `file` (one or more), `dimensions`,
  `encoding_format`, `model`; same response.
- `POST /v1/search` (needs `--index`): {"query": str | audio item, "k": 10, "shortlist": 500, "model"?} or a
  multipart upload (`file`, `k`, `shortlist`, `model`) at `/v1/search/audio` -> {"object": "list", "data": [hits],
  "model"}; hits as `wolofmrl search --json` prints them.

Limits (`Limits`, `wolofmrl serve --help`): request body 25 MiB (413); 256 inputs per request; 50,000 characters per
text (the model reads its first 512 tokens); 120 s per audio item and 1,200 s of audio per request (413), read from
the file's header before decoding, the decode stopped at the cap whatever the header says; at least 25 ms of audio.
Audio over 30 s is trimmed of leading/trailing silence, then embedded in overlapping 30 s windows that are pooled
(the processor's one path).

Every bad request is a 4xx with OpenAI's error body {"error": {"message", "type", "param", "code"}}, never a 5xx:
400 for a bad, missing or unknown field (code "unknown_parameter": "Unrecognized request argument supplied: X") or
JSON that does not parse (code "invalid_json"); 400 for an empty text and for silent audio (loudest 20 ms under
-60 dBFS: nothing to embed); 404 for an unknown `model` (code "model_not_found") or /v1/search without an index;
413 for a body or audio over a limit. Model calls, and every use of the shared tokenizer (the usage count, the
empty-text check), hold one lock: the tokenizer's truncation setting is mutable state, so a count never races the
model's call.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from fastapi import Request  # module level: the endpoints' annotations are strings resolved here

from wolofmrl.cli.schema import APIError, EmbeddingRequest, SearchRequest, error_body, validation_error

__all__ = ["Limits", "Engine", "create_app", "serve", "APIError"]

TEXT_MAX_TOKENS = 512  # encode_text's truncation: the text tower's positions


@dataclass
class Limits:
    """Request limits: audio seconds per item and per request, inputs per request, characters per text, body bytes."""

    max_audio_seconds: float = 120.0
    max_batch: int = 256
    max_body_bytes: int = 25 * 2**20
    max_request_audio_seconds: float = 1200.0
    max_input_chars: int = 50_000

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                flag = "--max-body-mb" if name == "max_body_bytes" else "--" + name.replace("_", "-")
                raise ValueError(f"{flag} {value!r}: a limit must be a positive finite number")


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
        body = json.dumps(error_body(f"request body is over the server's limit of {self.limit} bytes: send fewer "
                                     "or shorter inputs", None, 413, "request_too_large")).encode()
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
    """The model, processor (+ optional index) behind the endpoints. Every model call and every call of the
    processor's tokenizer holds `lock` (one at a time; requests queue). Its methods run in worker threads."""

    def __init__(self, model, processor, names=("wolofmrl",), index=None, limits: Limits | None = None,
                 autocast=None, batch_size: int | None = None):
        self.model, self.processor, self.autocast, self.batch_size = model, processor, autocast, batch_size
        self.names = tuple(dict.fromkeys(names))
        self.name = self.names[0]
        self.index = index
        self.limits = limits or Limits()
        self.lock = threading.Lock()
        self.hidden = int(model.config.embedding_dim)

    @classmethod
    def load(cls, model_path, index=None, device=None, dtype="auto", limits: Limits | None = None,
             batch_size: int | None = None, served_model_names=None) -> Engine:
        """Load a built model folder (and an INDEX folder). Raises what loading raises (bad folder or index)."""
        from wolofmrl.cli.store import DocumentIndex, load_model

        model, processor, autocast = load_model(model_path, device, dtype)
        opened = DocumentIndex.open(index) if index else None
        if opened is not None and opened.funnel.full_dim != model.config.embedding_dim:
            raise ValueError(f"--index {index} was built at width {opened.funnel.full_dim}, the model embeds "
                             f"at {model.config.embedding_dim}: serve the model that built it")
        names = served_model_names or (Path(model_path).resolve().name, "wolofmrl")
        return cls(model, processor, names, opened, limits, autocast, batch_size)

    # ------------------------------------------------------------------ checks
    def check_model(self, name) -> None:
        if name is not None and name not in self.names:
            served = ", ".join(map(repr, self.names))
            raise APIError(f"The model `{name[:100]}` does not exist: this server serves {served} (GET /v1/models)",
                           "model", 404, "model_not_found")

    def check_dim(self, dim) -> int | None:
        if dim is not None and not 1 <= dim <= self.hidden:
            raise APIError(f"dimensions={dim!r}: use an int in 1..{self.hidden} (trained Matryoshka dims: "
                           f"{list(self.model.config.matryoshka_dims)})", "dimensions")
        return dim

    def check_text(self, text: str, where: str) -> str:
        if not text.strip():
            raise APIError(f"{where} is an empty string: send the text to embed", where.split("[")[0],
                           code="empty_input")
        if len(text) > self.limits.max_input_chars:
            raise APIError(f"{where} is {len(text)} characters; this server takes at most "
                           f"{self.limits.max_input_chars} per text (the model reads only its first "
                           f"{TEXT_MAX_TOKENS} tokens, about 2,000 characters): split it into passages",
                           where.split("[")[0], code="input_too_long")
        return text

    # ------------------------------------------------------------------ audio
    def decode_audio(self, raw: bytes, where: str, max_seconds: float | None = None) -> np.ndarray:
        """Audio file bytes -> 16 kHz mono float32; the length cap is checked from the header before decoding and
        the decode stops at it. APIError: undecodable (400), too long (413), too short or silent (400)."""
        from processing_wolofmrl import MIN_SAMPLES, SILENT_DBFS, AudioTooLongError, load_audio, loudest_dbfs

        rate = self.processor.sampling_rate
        cap = self.limits.max_audio_seconds if max_seconds is None else max_seconds
        if not raw:
            raise APIError(f"{where}: the audio is empty (0 bytes)", where.split("[")[0])
        try:
            wave = load_audio(raw, None, rate, name=where, max_seconds=cap)
        except AudioTooLongError as err:
            length = f"{err.seconds:.1f} s long" if err.seconds else f"over {cap:g} s long"
            limit = ("per item" if cap == self.limits.max_audio_seconds else
                     f"(what is left of {self.limits.max_request_audio_seconds:g} s of audio per request)")
            raise APIError(f"{where}: the audio is {length}; this server takes at most {cap:g} s {limit}: cut it "
                           "shorter", where.split("[")[0], 413, "audio_too_long") from None
        except (ValueError, TypeError) as err:
            raise APIError(f"{where}: {err}", where.split("[")[0]) from None
        if len(wave) < MIN_SAMPLES:
            raise APIError(f"{where}: the audio is {1000 * len(wave) / rate:.0f} ms; at least "
                           f"{1000 * MIN_SAMPLES // rate} ms are needed", where.split("[")[0])
        level = loudest_dbfs(wave, rate)
        if level < SILENT_DBFS:
            raise APIError(f"{where}: the audio is silent (its loudest 20 ms is at {level:.0f} dBFS, under "
                           f"{SILENT_DBFS:g} dBFS): there is no speech to embed; check the microphone or the file",
                           where.split("[")[0], code="silent_audio")
        return wave

    def decode_items(self, raws: list[tuple[int, bytes, str]]) -> list[tuple[int, np.ndarray]]:
        """Decode (index, bytes, label) items in order, with the per-request audio budget shrinking as they come."""
        left, out = self.limits.max_request_audio_seconds, []
        for i, raw, where in raws:
            wave = self.decode_audio(raw, where, min(self.limits.max_audio_seconds, left))
            left -= len(wave) / self.processor.sampling_rate
            out.append((i, wave))
        return out

    # ------------------------------------------------------------------ model calls
    def text_tokens(self, texts: list[str], kind: str = "passage") -> list[int]:
        """Tokens the model reads for each text (prefix, special tokens, truncated as `encode_text` truncates).
        Tokenises under `lock`, with exactly the model call's arguments."""
        with self.lock:
            return self._count(texts, kind)

    def _count(self, texts: list[str], kind: str) -> list[int]:
        """Token counts; APIError naming text i when it holds nothing the model reads. Call under `lock`."""
        tok = self.processor.tokenizer
        ids = tok(self.processor.prefix(texts, kind), truncation=True, max_length=TEXT_MAX_TOKENS)["input_ids"]
        for i, text in enumerate(texts):  # only text without a letter or digit can tokenise to nothing
            if not any(ch.isalnum() for ch in text):
                own = tok([text], add_special_tokens=False, truncation=True, max_length=TEXT_MAX_TOKENS)
                if not tok.decode(own["input_ids"][0], skip_special_tokens=True).strip():
                    raise _EmptyText(i)
        return [len(x) for x in ids]

    def embed(self, texts: list[tuple[int, str]], waves: list[tuple[int, np.ndarray]], n: int, kind: str,
              dim: int | None, where: str = "input") -> tuple[np.ndarray, int]:
        """((n, dim or hidden) embeddings with texts and waves placed at their indices, tokens read). `where`
        names the field in errors ("input" -> "input[3]"; "query")."""
        from wolofmrl.inference import encode_speech, encode_text

        out = np.zeros((n, dim or self.hidden), dtype=np.float32)
        tokens = 0
        with self.lock:
            if texts:
                plain = [t for _, t in texts]
                try:
                    tokens = sum(self._count(plain, kind))
                except _EmptyText as err:
                    label = f"{where}[{texts[err.args[0]][0]}]" if where == "input" else where
                    raise APIError(f"{label} holds no characters the model reads (only whitespace, control or "
                                   "zero-width characters): send the text to embed", where,
                                   code="empty_input") from None
                out[[i for i, _ in texts]] = encode_text(self.model, self.processor, plain, self.batch_size, dim,
                                                         dtype=self.autocast, text_kind=kind, progress=False,
                                                         max_length=TEXT_MAX_TOKENS).numpy()
            if waves:  # the processor's one audio path: trim silence, then 30 s windows pooled per clip
                out[[i for i, _ in waves]] = encode_speech(
                    self.model, self.processor, [w for _, w in waves], self.batch_size, dim, dtype=self.autocast,
                    sampling_rate=self.processor.sampling_rate, progress=False, features_on_device=False).numpy()
        return out, tokens


class _EmptyText(Exception):
    """Text number args[0] of a batch tokenises to nothing."""


def _as_inputs(engine: Engine, raw) -> tuple[list[tuple[int, str]], list[tuple[int, np.ndarray]], int]:
    """A validated `input` -> (indexed texts, indexed waves, count); APIError for an empty or over-limit input."""
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise APIError("input is an empty list: send at least one text or audio item", "input", code="empty_input")
    if len(items) > engine.limits.max_batch:
        raise APIError(f"input has {len(items)} items; this server takes at most {engine.limits.max_batch} per "
                       "request: split it", "input")
    texts, audio = [], []
    for i, item in enumerate(items):
        if isinstance(item, str):
            texts.append((i, engine.check_text(item, f"input[{i}]")))
        else:
            audio.append((i, _b64(item.input_audio.data, f"input[{i}]"), f"input[{i}]"))
    return texts, engine.decode_items(audio), len(items)


def _b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise APIError(f"{where}: input_audio.data is not valid base64", where.split("[")[0]) from None


def _embedding_response(engine: Engine, emb: np.ndarray, encoding_format: str, tokens: int):
    """OpenAI's embeddings response, serialised here (in a worker thread), not by FastAPI on the event loop."""
    from fastapi.responses import JSONResponse

    if encoding_format == "base64":
        data = [base64.b64encode(row.astype("<f4").tobytes()).decode() for row in emb]
    else:
        data = [row.tolist() for row in emb]
    return JSONResponse({"object": "list", "model": engine.name,
                         "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(data)],
                         "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def _search(engine: Engine, texts, waves, k: int, shortlist: int) -> dict:
    emb, _ = engine.embed(texts, waves, 1, "query", None, where="query" if texts else "file")
    hits = engine.index.search(emb, k=k, shortlist=shortlist)[0]
    return {"object": "list", "model": engine.name, "data": hits}


def _need_index(engine: Engine) -> None:
    if engine.index is None:
        raise APIError("this server has no index: start it with `wolofmrl serve --index INDEX`", None, 404, "not_found")


# --------------------------------------------------------------------------- request parsing
def _parse(schema, raw: bytes):
    from pydantic import ValidationError

    try:
        return schema.model_validate_json(raw)
    except ValidationError as err:
        raise validation_error(err, list(schema.model_fields)) from None


_INT = re.compile(r"[0-9]{1,9}")


def _form_int(form, name: str, default: int | None, lo: int, hi: int) -> int | None:
    value = form.get(name)
    if value is None or value == "":
        return default
    if not isinstance(value, str) or not _INT.fullmatch(value) or not lo <= int(value) <= hi:
        raise APIError(f"{name}={str(value)[:40]!r}: use an integer in {lo}..{hi}", name)
    return int(value)


async def _form(request: Request, engine: Engine, allowed: tuple[str, ...]):
    """The multipart form (unknown fields refused), its uploaded files' bytes and the model name checked."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError("send multipart/form-data with the audio in the field 'file'", "file")
    try:
        form = await request.form(max_files=engine.limits.max_batch, max_fields=len(allowed) + 4,
                                  max_part_size=engine.limits.max_body_bytes)
    except Exception as err:  # malformed multipart bodies, too many parts: the parser's own exceptions
        raise APIError(f"could not parse the multipart body: {str(err)[:200]}", "file") from None
    unknown = sorted(set(form.keys()) - set(allowed))
    if unknown:
        raise APIError(f"Unrecognized request argument supplied: {unknown[0]} (this endpoint takes: "
                       f"{', '.join(allowed)})", unknown[0], code="unknown_parameter")
    uploaded = sorted({k for k, v in form.multi_items() if k != "file" and not isinstance(v, str)})
    if uploaded:
        raise APIError(f"'{uploaded[0]}' must be a plain form field, not a file upload", uploaded[0])
    model = form.get("model")
    engine.check_model(model if model not in (None, "") else None)
    files = form.getlist("file")
    if not files or len(files) > engine.limits.max_batch or any(isinstance(f, str) for f in files):
        raise APIError(f"upload 1..{engine.limits.max_batch} audio files in the multipart field 'file' (as files, "
                       "with a filename)", "file")
    return form, [await f.read() for f in files]


# --------------------------------------------------------------------------- the app
def _add_error_handlers(app) -> None:
    """Every error as an OpenAI-style error body: APIError its status, HTTP errors theirs; a bug 500."""
    import logging

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    @app.exception_handler(APIError)
    async def _api_error(_, err: APIError):
        return JSONResponse(error_body(err.message, err.param, err.status, err.code), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _validation(_, err: RequestValidationError):
        return JSONResponse(error_body(f"invalid request: {str(err)[:300]}", None, 400, "invalid_value"), 400)

    @app.exception_handler(HTTPException)
    async def _http(_, err: HTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code)
        return JSONResponse(error_body(str(err.detail), None, err.status_code, code), status_code=err.status_code)

    @app.exception_handler(Exception)
    async def _bug(_, err: Exception):  # a server fault, not a bad request: logged, and still OpenAI's body
        logging.getLogger("wolofmrl.server").exception("unhandled error")
        return JSONResponse(error_body(f"internal error ({type(err).__name__}); please report it", None, 500,
                                       "internal_error"), status_code=500)


def _add_info_routes(app, engine: Engine) -> None:
    @app.get("/health")
    def health():
        return {"status": "ok", "model": engine.name, "models": list(engine.names), "embedding_dim": engine.hidden,
                "matryoshka_dims": list(engine.model.config.matryoshka_dims),
                "index_passages": len(engine.index.passages) if engine.index else None,
                "limits": asdict(engine.limits)}

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": int(time.time()),
                                            "owned_by": "wolofmrl"} for name in engine.names]}


def _add_embedding_routes(app, engine: Engine) -> None:
    from starlette.concurrency import run_in_threadpool

    @app.post("/v1/embeddings")
    async def embeddings(request: Request):
        body = await run_in_threadpool(_parse, EmbeddingRequest, await request.body())
        engine.check_model(body.model)
        dim = engine.check_dim(body.dimensions)
        kind = {"document": "passage"}.get(body.input_type, body.input_type)
        texts, waves, n = await run_in_threadpool(_as_inputs, engine, body.input)
        emb, tokens = await run_in_threadpool(engine.embed, texts, waves, n, kind, dim)
        return await run_in_threadpool(_embedding_response, engine, emb, body.encoding_format, tokens)

    @app.post("/v1/embeddings/audio")
    async def embeddings_audio(request: Request):
        form, raws = await _form(request, engine, ("file", "model", "dimensions", "encoding_format"))
        dim = engine.check_dim(_form_int(form, "dimensions", None, 1, engine.hidden))
        fmt = form.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise APIError(f"encoding_format={str(fmt)[:40]!r}: use 'float' or 'base64'", "encoding_format")
        waves = await run_in_threadpool(engine.decode_items, [(i, r, f"file[{i}]") for i, r in enumerate(raws)])
        emb, _ = await run_in_threadpool(engine.embed, [], waves, len(waves), "query", dim)
        return await run_in_threadpool(_embedding_response, engine, emb, fmt, 0)


def _add_search_routes(app, engine: Engine) -> None:
    from starlette.concurrency import run_in_threadpool

    @app.post("/v1/search")
    async def search(request: Request):
        body = await run_in_threadpool(_parse, SearchRequest, await request.body())
        engine.check_model(body.model)
        _need_index(engine)
        if isinstance(body.query, str):
            texts, waves = [(0, engine.check_text(body.query, "query"))], []
        else:
            texts, waves = [], await run_in_threadpool(
                lambda: engine.decode_items([(0, _b64(body.query.input_audio.data, "query"), "query")]))
        return await run_in_threadpool(_search, engine, texts, waves, body.k, body.shortlist)

    @app.post("/v1/search/audio")
    async def search_audio(request: Request):
        _need_index(engine)
        form, raws = await _form(request, engine, ("file", "model", "k", "shortlist"))
        if len(raws) != 1:
            raise APIError(f"upload one spoken query in the field 'file', not {len(raws)}", "file")
        k, shortlist = _form_int(form, "k", 10, 1, 1000), _form_int(form, "shortlist", 500, 1, 100_000)
        waves = await run_in_threadpool(engine.decode_items, [(0, raws[0], "file")])
        return await run_in_threadpool(_search, engine, [], waves, k, shortlist)


def create_app(model_path=None, index=None, device=None, dtype="auto", limits: Limits | None = None,
               batch_size: int | None = None, engine: Engine | None = None, served_model_names=None):
    """The ASGI app: FastAPI behind the body-size limit (load the model, or reuse `engine`). The FastAPI app is
    `.app`, the engine `.app.state.engine`. Raises what loading raises (bad folder or index)."""
    from fastapi import FastAPI

    engine = engine or Engine.load(model_path, index, device, dtype, limits, batch_size, served_model_names)
    app = FastAPI(title="WolofMRL", description=__doc__)
    app.state.engine = engine
    _add_error_handlers(app)
    _add_info_routes(app, engine)
    _add_embedding_routes(app, engine)
    _add_search_routes(app, engine)
    return BodyLimit(app, engine.limits.max_body_bytes)


def serve(model_path, index=None, host: str = "127.0.0.1", port: int = 8000, device=None, dtype="auto",
          limits: Limits | None = None, batch_size: int | None = None, served_model_names=None):
    """Load the model (and index) and run the server with uvicorn until interrupted."""
    import uvicorn

    app = create_app(model_path, index, device, dtype, limits, batch_size, served_model_names=served_model_names)
    names = ", ".join(app.app.state.engine.names)
    print(f"wolofmrl serve: http://{host}:{port}  model {names}  (POST /v1/embeddings, /v1/search; GET /health)",
          flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning")
