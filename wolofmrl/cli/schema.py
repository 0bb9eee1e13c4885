"""The HTTP API's request bodies (pydantic, strict, unknown fields refused) and its OpenAI-style errors.

Parsing is pydantic's (its Rust JSON parser): invalid UTF-8, a lone surrogate escape ("\\ud800"), nesting past its
recursion limit, `Infinity` / `1e400` where an integer belongs, a float or bool for an integer, a misspelt field:
each is a `ValidationError`, turned by `validation_error` into one `APIError` naming the field, as OpenAI answers
(400 `invalid_request_error`; "Unrecognized request argument supplied: dimension").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["APIError", "AudioItem", "EmbeddingRequest", "SearchRequest", "error_body", "validation_error"]


class APIError(Exception):
    """A client error: HTTP `status`, a message naming the field (`param`) and the fix, an OpenAI-style `code`."""

    def __init__(self, message: str, param: str | None = None, status: int = 400, code: str | None = "invalid_value"):
        super().__init__(message)
        self.message, self.param, self.status, self.code = message, param, status, code


def error_body(message: str, param: str | None = None, status: int = 400, code: str | None = None) -> dict:
    """OpenAI's error body: {"error": {"message", "type", "param", "code"}}."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AudioData(_Strict):
    data: str = Field(description="the audio file's bytes, base64 (any format the processor decodes)")
    format: str | None = Field(None, description="'wav', 'mp3', ... (informative: the container is sniffed)")


class AudioItem(_Strict):
    """OpenAI's audio content part: {"type": "input_audio", "input_audio": {"data": <base64>, "format": "wav"}}."""

    type: Literal["input_audio"]
    input_audio: AudioData


class EmbeddingRequest(_Strict):
    """POST /v1/embeddings: OpenAI's fields, plus `input_type` and audio items (extensions)."""

    input: str | AudioItem | list[str | AudioItem]
    model: str | None = None
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["query", "passage", "document"] = "passage"
    user: str | None = None  # OpenAI's end-user id: accepted, unused


class SearchRequest(_Strict):
    """POST /v1/search (extension)."""

    query: str | AudioItem
    k: int = Field(10, ge=1, le=1000)
    shortlist: int = Field(500, ge=1, le=100_000)
    model: str | None = None


FIELDS = {name for m in (EmbeddingRequest, SearchRequest, AudioItem, AudioData) for name in m.model_fields}
AUDIO_ITEM = "{'type': 'input_audio', 'input_audio': {'data': <base64 audio file>, 'format': 'wav'}}"
HELP = {
    "input": "a non-empty string, or a non-empty list of strings and audio items " + AUDIO_ITEM
             + " (token id arrays are not supported)",
    "query": "a non-empty string or one audio item " + AUDIO_ITEM,
    "model": "the served model's name (GET /v1/models lists it)",
    "dimensions": "an integer: the Matryoshka width (GET /health lists the trained ones)",
    "encoding_format": "'float' or 'base64'",
    "input_type": "'query' or 'passage' ('document' = 'passage')",
    "user": "a string",
    "k": "an integer in 1..1000",
    "shortlist": "an integer in 1..100000",
    "type": "'input_audio'",
    "input_audio": "{'data': <base64 audio file>, 'format': 'wav'}",
    "data": "a base64 string of the audio file's bytes",
    "format": "a string such as 'wav'",
}


def _path(loc: tuple) -> str:
    """pydantic's error location without its union-branch tags: ('input', 'list[...]', 0, 'str') -> 'input[0]'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in FIELDS:
            out += ("." if out else "") + part
    return out


def validation_error(err: ValidationError, allowed: list[str]) -> APIError:
    """The most specific of pydantic's errors as one APIError naming the field, what it must be, and the fix."""
    errors = err.errors(include_url=False)
    first = max(errors, key=lambda e: len(_path(e["loc"]))) if errors else {"type": "", "loc": (), "msg": ""}
    kind, path = first["type"], _path(first["loc"])
    top = path.split("[")[0].split(".")[0] or None
    if kind == "json_invalid":
        return APIError(f"the body is not valid JSON ({first['msg'].removeprefix('Invalid JSON: ')}): send one UTF-8 "
                        "JSON object with Content-Type application/json (a lone \\ud800-\\udfff escape is not a "
                        "character; nesting is limited)", None, code="invalid_json")
    if kind == "model_type" and not first["loc"]:
        return APIError("the body must be a JSON object, e.g. {\"input\": \"...\"}", None, code="invalid_json")
    if kind == "extra_forbidden":
        name = str(first["loc"][-1])
        return APIError(f"Unrecognized request argument supplied: {name} (this endpoint takes: {', '.join(allowed)})",
                        name, code="unknown_parameter")
    if kind == "missing":
        name = str(first["loc"][-1])
        return APIError(f"you must provide '{path or name}': {HELP.get(name, '')}".rstrip(": "), top,
                        code="missing_required_parameter")
    field = path.split(".")[-1].split("[")[0] if path else ""
    got = type(first.get("input")).__name__.replace("NoneType", "null").replace("dict", "object")
    return APIError(f"{path or 'body'}: {first['msg']} (got {got}); {field or 'it'} must be "
                    f"{HELP.get(field, 'as documented')}", top)
