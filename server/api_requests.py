"""What every REST handler shares: the request's leader and principal, its body read
within a limit and decoded into the protocol's records, and the answers.

Every refusal is a ``server.errors`` exception with one line, which the app
answers as ``{"error": "..."}`` with its status; nothing has changed then.
"""

from __future__ import annotations

import re
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from farmtui.jobfields import explain
from farmtui.protocol import LOOK_OVER_BYTES, ApiError, JobPatch, JobSpec, over_long_list
from server.auth import authenticate, bearer_token
from server.errors import BadRequest, TooLarge, Unprocessable, UnsupportedMediaType, shown
from server.leader import Leader
from server.rights import Action, Principal

T = TypeVar("T", bound=msgspec.Struct)

_encoder = msgspec.json.Encoder()


def json_response(body: Any, status: int = 200) -> Response:
    return Response(_encoder.encode(body), status_code=status, media_type="application/json")


def error_response(status: int, message: str) -> Response:
    return json_response(ApiError(error=" ".join(message.split())), status)


def text_response(text: str | bytes) -> Response:
    return Response(text, media_type="text/plain; charset=utf-8")


def leader_of(request: Request) -> Leader:
    leader: Leader = request.app.state.leader
    return leader


def who(request: Request, action: Action) -> Principal:
    """The token's principal if its role may do ``action`` at all (``server.rights``)."""
    return authenticate(leader_of(request).tokens, bearer_token(request.headers), action)


class Disconnected(BadRequest):
    """The client went away before its body was complete (nobody reads the answer)."""

    def __init__(self) -> None:
        super().__init__("the client disconnected before the body was complete; nothing written")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or 413 as soon as it passes ``limit``."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"body of {length} bytes is over the {limit} byte limit")
    parts: list[bytes] = []
    size = 0
    try:
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise TooLarge(f"body is over the {limit} byte limit")
            parts.append(part)
    except ClientDisconnect:
        raise Disconnected() from None
    return b"".join(parts)


_JSON_MEDIA = re.compile(r"application/(?:json|[a-z0-9!#$&^_.-]+\+json)")


def check_json_type(request: Request) -> None:
    """415 for a body that says it is not JSON (a form, XML) or not UTF-8: it would be
    read as JSON.

    A request with no Content-Type at all is read as JSON; curl's ``-d`` without ``-H``
    says it is a form, and is told the header to add.
    """
    given = request.headers.getlist("content-type")
    if not given:
        return
    if len(given) > 1:
        raise UnsupportedMediaType("body has two Content-Type headers; send one")
    media, _, parameters = given[0].partition(";")
    media = media.strip().lower()
    if not _JSON_MEDIA.fullmatch(media):
        said = f"is {shown(media)}" if media else "has an empty Content-Type"
        raise UnsupportedMediaType(
            f"body {said}, not JSON: send it with Content-Type: application/json"
        )
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise UnsupportedMediaType(f"JSON is UTF-8; charset={shown(charset)} refused")


async def decode_body(request: Request, kind: type[T]) -> T:
    check_json_type(request)
    body = await read_body(request, leader_of(request).config.max_request_bytes)
    try:
        if len(body) > LOOK_OVER_BYTES:
            problem = over_long_list(body, kind)
            if problem is not None:
                raise msgspec.ValidationError(problem)  # worded below, as msgspec's own
        return msgspec.json.decode(body, type=kind)
    except msgspec.ValidationError as exc:
        job_kind = JobSpec if kind is JobSpec else JobPatch if kind is JobPatch else None
        if job_kind is not None:
            # The same words as the CLI, the job file and the console use for that field.
            words = _job_field_words(exc, body, job_kind)
            if words is not None:
                raise Unprocessable(words) from None
        raise Unprocessable(f"invalid {kind.__name__}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise BadRequest(f"malformed JSON: {exc}") from None
    except RecursionError:
        raise BadRequest("malformed JSON: nested too deeply") from None


def _job_field_words(
    exc: msgspec.ValidationError, body: bytes, kind: type[JobSpec] | type[JobPatch]
) -> str | None:
    """How the CLI would word this refusal, or None when the body is too odd to say."""
    try:
        refused = explain(exc, msgspec.json.decode(body), kind, split_nothing=True)
    except (msgspec.DecodeError, RecursionError, ValueError, TypeError):
        return None  # e.g. nested past msgspec's depth limit, or a lone surrogate
    return str(refused) if refused.path else None


def int_param(request: Request, name: str, default: int | None = None) -> int | None:
    value = request.query_params.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"{name}={value!r} is not a whole number") from None
