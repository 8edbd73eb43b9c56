"""The REST API (docs/architecture.md has the table).

Handlers are thin: authenticate, decode the body with msgspec into the
protocol's records, call ``operations``, encode the answer. Every error is
``{"error": "one line"}`` with its status; nothing changes on an error.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import secrets
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from farmtui.jobfields import explain
from farmtui.protocol import (
    IDEMPOTENCY_KEY,
    LOOK_OVER_BYTES,
    MAX_HISTORY,
    ApiError,
    ChunkAction,
    JobAction,
    JobPatch,
    JobSpec,
    JobView,
    LimitSpec,
    MoveWhere,
    Role,
    over_long_list,
)
from server import metrics as farm_metrics
from server import operations
from server.auth import authenticate, bearer_token
from server.errors import (
    BadRequest,
    Conflict,
    NotFound,
    RequestError,
    TooLarge,
    Unavailable,
    Unprocessable,
    UnsupportedMediaType,
    shown,
)
from server.joblogs import chunk_log_path, events_path
from server.leader import Leader
from server.operations import UploadFence
from server.path_mapping import OS_NAMES, node_os
from server.path_mapping import view as path_map_view
from server.rights import Action, Principal
from server.views import MAX_PAGE_CHUNKS, MAX_PAGE_JOBS, ChunkPage, JobPage

T = TypeVar("T", bound=msgspec.Struct)

# Logs served over HTTP: at most this much from their end.
MAX_LOG_BYTES = 32 * 1024 * 1024
# ``POST /api/jobs``: a client's key for one submit, so that sending it again is harmless.
_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


class JobActionBody(msgspec.Struct, kw_only=True):
    action: JobAction
    ids: list[str]


class JobActionResult(msgspec.Struct, kw_only=True):
    jobs: list[JobView]
    removed: list[str]


class PriorityBody(msgspec.Struct, kw_only=True):
    priority: int


class MoveBody(msgspec.Struct, kw_only=True):
    where: MoveWhere | None = None
    before: str | None = None


class ChunkActionBody(msgspec.Struct, kw_only=True):
    action: ChunkAction
    chunks: list[int]


class TokenBody(msgspec.Struct, kw_only=True):
    role: Role
    name: str = ""


class TokenResult(msgspec.Struct, kw_only=True):
    token: str
    role: Role
    name: str


class WhoAmI(msgspec.Struct, kw_only=True):
    name: str
    role: Role


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
        refused = explain(exc, msgspec.json.decode(body), kind)
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


# --- handlers --------------------------------------------------------------------


async def healthz(request: Request) -> Response:
    """Up, and its role: ``active`` or ``standby``, with the active leader's URL (null if
    none is known). A standby is healthy: it answers 200 too."""
    leader = leader_of(request)
    return json_response({"ok": True, "role": leader.role, "active": leader.active_url})


async def metrics(request: Request) -> Response:
    """``GET /metrics``: Prometheus text; a reading token or the leader's ``metrics_token``."""
    leader = leader_of(request)
    if not farm_metrics.is_metrics_token(leader, bearer_token(request.headers)):
        who(request, "read")
    # How long the loop takes to come back to us: the work queued ahead, in time.
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.sleep(0)
    lag = loop.time() - began
    return Response(farm_metrics.exposition(leader, lag), media_type=farm_metrics.CONTENT_TYPE)


async def openapi_document(request: Request) -> Response:
    """``GET /api/openapi.json``: made from the app's routes once, then served as is."""
    from server.openapi import document_json  # it imports this module's records

    state = request.app.state
    data: bytes | None = getattr(state, "openapi", None)
    if data is None:
        data = state.openapi = document_json(request.app.routes)
    return Response(data, media_type="application/json")


async def whoami(request: Request) -> Response:
    principal = who(request, "whoami")
    return json_response(WhoAmI(name=principal.name, role=principal.role))


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(IDEMPOTENCY_KEY)
    if key is not None and not _IDEMPOTENCY_KEY.fullmatch(key):
        raise BadRequest(f"{IDEMPOTENCY_KEY} must be 1-128 characters of A-Z a-z 0-9 _ . : -")
    return key


async def submit_job(request: Request) -> Response:
    """201 and the new job; 200 and the earlier job when its Idempotency-Key was seen."""
    principal = who(request, "submit")
    key = idempotency_key(request)
    spec = await decode_body(request, JobSpec)
    submitted = await operations.submit(leader_of(request), principal, spec, key)
    return json_response(submitted.view, 201 if submitted.created else 200)


async def list_jobs(request: Request) -> Response:
    """``GET /api/jobs[?all=1][&limit=N[&after=JOB]]``: in dispatch order, or one page of it."""
    who(request, "read")
    leader = leader_of(request)
    include_archived = request.query_params.get("all", "") not in ("", "0", "false", "no")
    limit = int_param(request, "limit")
    after = request.query_params.get("after") or None
    if limit is None and after is None:
        data = leader.job_list_json(include_archived)
        return Response(data, media_type="application/json")
    if limit is None:
        limit = MAX_PAGE_JOBS
    if not 1 <= limit <= MAX_PAGE_JOBS:
        raise BadRequest(f"limit={limit} is not between 1 and {MAX_PAGE_JOBS}")
    if after is not None:
        operations.job_or_404(leader, after)
    page = JobPage(limit, after)
    return json_response(leader.scheduler.job_views(include_archived, page=page))


async def show_job(request: Request) -> Response:
    who(request, "read")
    leader = leader_of(request)
    job_id = request.path_params["job_id"]
    operations.job_or_404(leader, job_id)
    limit = int_param(request, "limit", MAX_PAGE_CHUNKS)
    after = int_param(request, "after", -1)
    assert limit is not None
    assert after is not None
    if not 1 <= limit <= MAX_PAGE_CHUNKS:
        raise BadRequest(f"limit={limit} is not between 1 and {MAX_PAGE_CHUNKS}")
    if after < -1:
        raise BadRequest(f"after={after} is not a chunk index (0 or more, or -1)")
    return json_response(leader.scheduler.job_detail(job_id, ChunkPage(limit, after)))


async def patch_job(request: Request) -> Response:
    principal = who(request, "patch")
    patch = await decode_body(request, JobPatch)
    return json_response(
        await operations.patch(leader_of(request), principal, request.path_params["job_id"], patch)
    )


async def job_actions(request: Request) -> Response:
    principal = who(request, "job_action")
    body = await decode_body(request, JobActionBody)
    views, removed = await operations.job_action(
        leader_of(request), principal, body.action, body.ids
    )
    return json_response(JobActionResult(jobs=views, removed=removed))


async def set_priority(request: Request) -> Response:
    principal = who(request, "set_priority")
    body = await decode_body(request, PriorityBody)
    return json_response(
        await operations.set_priority(
            leader_of(request), principal, request.path_params["job_id"], body.priority
        )
    )


async def move_job(request: Request) -> Response:
    principal = who(request, "move")
    body = await decode_body(request, MoveBody)
    if body.where is not None and body.before is not None:
        raise BadRequest("give either where or before, not both")
    return json_response(
        await operations.move(
            leader_of(request), principal, request.path_params["job_id"], body.where, body.before
        )
    )


async def chunk_actions(request: Request) -> Response:
    principal = who(request, "chunk_action")
    body = await decode_body(request, ChunkActionBody)
    return json_response(
        await operations.chunk_action(
            leader_of(request), principal, request.path_params["job_id"], body.action, body.chunks
        )
    )


async def job_events(request: Request) -> Response:
    who(request, "read")
    leader = leader_of(request)
    job_id = request.path_params["job_id"]
    operations.job_or_404(leader, job_id)
    return text_response(await _read_log(leader, events_path(job_id)) or b"")


def _history_limit(request: Request, default: int) -> int:
    limit = int_param(request, "limit", default)
    assert limit is not None
    if not 1 <= limit <= MAX_HISTORY:
        raise BadRequest(f"limit={limit} is not between 1 and {MAX_HISTORY}")
    return limit


async def list_failures(request: Request) -> Response:
    """``GET /api/failures?limit=N``: failed and timed-out attempts farm-wide, newest first."""
    who(request, "read")
    leader = leader_of(request)
    limit = _history_limit(request, 200)
    return json_response(await leader.failures.newest_with_errors(leader.joblogs, limit))


async def farm_events(request: Request) -> Response:
    """``GET /api/events?limit=N``: the farm's latest events, oldest first."""
    who(request, "read")
    limit = _history_limit(request, 500)
    return json_response(await leader_of(request).history.latest(limit))


async def chunk_log(request: Request) -> Response:
    who(request, "read")
    leader = leader_of(request)
    job_id = request.path_params["job_id"]
    operations.job_or_404(leader, job_id)
    index = int_param(request, "chunk")
    if index is None:
        raise BadRequest("chunk=N is required")
    chunk = leader.chunk(job_id, index)
    if chunk is None:
        raise NotFound(f"job {job_id} has no chunk {index}")
    attempt = int_param(request, "attempt", chunk.attempt)
    if not attempt:
        raise NotFound(f"chunk {index} of job {job_id} has not run yet")
    data = await _read_log(leader, chunk_log_path(job_id, index, attempt))
    if data is None:
        raise NotFound(f"no log for chunk {index} attempt {attempt} of job {job_id}")
    return text_response(data)


async def _read_log(leader: Leader, relative: str) -> bytes | None:
    """The end of a log under the sync root, never through a planted symlink; None if absent."""
    try:
        return await leader.joblogs.read(relative, MAX_LOG_BYTES)
    except OSError as exc:
        raise Conflict(f"cannot read the log: {exc.strerror or type(exc).__name__}") from None


async def path_map(request: Request) -> Response:
    """``GET /api/pathmap?path=P&os=windows``: P as ``[[path_map]]`` gives it to such a node."""
    who(request, "read")
    path = request.query_params.get("path", "")
    os_name = request.query_params.get("os", "")
    if not path:
        raise BadRequest("path is required (?path=...)")
    if os_name not in OS_NAMES:
        raise BadRequest(f"os must be one of {', '.join(OS_NAMES)}, not {os_name!r}")
    rules = leader_of(request).config.path_map
    return json_response(path_map_view(path, rules, node_os(os_name)))


async def list_nodes(request: Request) -> Response:
    who(request, "read")
    return json_response(leader_of(request).scheduler.node_views())


async def list_limits(request: Request) -> Response:
    """``GET /api/limits``: the farm's limits (licences), with the units in use."""
    who(request, "read")
    return json_response(leader_of(request).scheduler.limit_views())


async def put_limit(request: Request) -> Response:
    """``PUT /api/limits/{name}`` ``{"units": N, "per_node": M}``: define or change a limit."""
    principal = who(request, "set_limit")
    spec = await decode_body(request, LimitSpec)
    name = request.path_params["name"]
    return json_response(await operations.set_limit(leader_of(request), principal, name, spec))


async def delete_limit(request: Request) -> Response:
    """``DELETE /api/limits/{name}``: jobs that ask for it wait until it is defined again."""
    principal = who(request, "set_limit")
    name = request.path_params["name"]
    return json_response(await operations.set_limit(leader_of(request), principal, name, None))


async def enable_node(request: Request) -> Response:
    return await _set_node(request, True)


async def disable_node(request: Request) -> Response:
    return await _set_node(request, False)


async def _set_node(request: Request, enabled: bool) -> Response:
    principal = who(request, "set_node_enabled")
    return json_response(
        await operations.set_node_enabled(
            leader_of(request), principal, request.path_params["name"], enabled
        )
    )


async def block_node(request: Request) -> Response:
    return await _block(request, True)


async def unblock_node(request: Request) -> Response:
    return await _block(request, False)


async def _block(request: Request, blocked: bool) -> Response:
    principal = who(request, "block_node")
    params = request.path_params
    return json_response(
        await operations.block_node(
            leader_of(request), principal, params["job_id"], params["name"], blocked
        )
    )


async def node_log(request: Request) -> Response:
    who(request, "read")
    leader = leader_of(request)
    name = request.path_params["name"]
    if name not in leader.scheduler.nodes:
        raise NotFound(f"unknown node {name}")
    tail = int_param(request, "tail", 500) or 0
    lines = leader.nodelogs.tail(name, tail)
    return text_response("".join(line + "\n" for line in lines))


async def create_token(request: Request) -> Response:
    principal = who(request, "create_token")
    body = await decode_body(request, TokenBody)
    if body.role == "agent" and not body.name:
        raise BadRequest(
            "an agent token is for one node: give the node's name "
            "(farm token create --role agent --name NODE); the leader's agent.token serves any node"
        )
    name = body.name or f"{body.role}-{secrets.token_hex(3)}"
    token = operations.create_token(leader_of(request), principal, body.role, name)
    return json_response(TokenResult(token=token, role=body.role, name=name), 201)


async def upload_file(request: Request) -> Response:
    """Store a finished file under the sync root: written to a temporary name, then renamed.

    Who may write what is ``operations.upload_target``; it is asked again once
    the body is in, since the attempt may have been stopped meanwhile. A
    failed, refused or abandoned upload leaves no temporary file behind.
    """
    principal = who(request, "upload_output")
    leader = leader_of(request)
    relative = request.path_params["path"]
    fence = upload_fence(request)
    target = operations.upload_target(leader, principal, relative, fence)
    limit = leader.config.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"file of {length} bytes is over the {limit} byte limit")
    upload: Upload | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        upload = Upload(target)
        size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise TooLarge(f"file is over the {limit} byte limit")
            upload.write(part)
        if operations.upload_target(leader, principal, relative, fence) != target:
            raise Conflict(f"{shown(relative)} changed during the upload: not written")
        upload.commit()
    except OSError as exc:
        raise write_error(exc, relative) from None
    except ClientDisconnect:
        raise Disconnected() from None
    finally:
        if upload is not None:
            upload.abort()
    return Response(status_code=204)


def write_error(exc: OSError, relative: str) -> RequestError:
    """A failed write as one line: the reason, never the server's path."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Unavailable(f"cannot write {shown(relative)}: {reason}; try again later")
    return BadRequest(f"cannot write {shown(relative)}: {reason}")


def upload_fence(request: Request) -> UploadFence | None:
    """The chunk attempt an upload belongs to (``?job=&chunk=&attempt=``), if named."""
    params = request.query_params
    if "job" not in params:
        return None
    try:
        return params["job"], int(params.get("chunk", "")), int(params.get("attempt", ""))
    except ValueError:
        raise BadRequest("chunk and attempt must be whole numbers") from None


class Upload:
    """A file written under a temporary name and renamed into place only when complete.

    The temporary name is short (a long target name still fits) and made with
    ``O_EXCL | O_NOFOLLOW``, so it never writes through a planted link.
    """

    def __init__(self, target: Path) -> None:
        self.target = target
        self.temporary = target.parent / f".farmtui-{secrets.token_hex(8)}.upload"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        self.handle = os.fdopen(os.open(self.temporary, flags, 0o644), "wb")
        self.committed = False

    def write(self, data: bytes) -> None:
        self.handle.write(data)

    def commit(self) -> None:
        self.handle.close()
        os.replace(self.temporary, self.target)
        self.committed = True

    def abort(self) -> None:
        """Remove the temporary file unless it was committed (harmless after commit)."""
        self.handle.close()
        if not self.committed:
            self.temporary.unlink(missing_ok=True)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/api/openapi.json", openapi_document, methods=["GET"]),
    Route("/api/whoami", whoami, methods=["GET"]),
    Route("/api/jobs", submit_job, methods=["POST"]),
    Route("/api/jobs", list_jobs, methods=["GET"]),
    Route("/api/jobs/actions", job_actions, methods=["POST"]),
    Route("/api/jobs/{job_id}", show_job, methods=["GET"]),
    Route("/api/jobs/{job_id}", patch_job, methods=["PATCH"]),
    Route("/api/jobs/{job_id}/priority", set_priority, methods=["POST"]),
    Route("/api/jobs/{job_id}/move", move_job, methods=["POST"]),
    Route("/api/jobs/{job_id}/chunks/actions", chunk_actions, methods=["POST"]),
    Route("/api/jobs/{job_id}/events", job_events, methods=["GET"]),
    Route("/api/jobs/{job_id}/nodes/{name}/block", block_node, methods=["POST"]),
    Route("/api/jobs/{job_id}/nodes/{name}/unblock", unblock_node, methods=["POST"]),
    Route("/api/jobs/{job_id}/logs", chunk_log, methods=["GET"]),
    Route("/api/failures", list_failures, methods=["GET"]),
    Route("/api/events", farm_events, methods=["GET"]),
    Route("/api/nodes", list_nodes, methods=["GET"]),
    Route("/api/pathmap", path_map, methods=["GET"]),
    Route("/api/nodes/{name}/enable", enable_node, methods=["POST"]),
    Route("/api/nodes/{name}/disable", disable_node, methods=["POST"]),
    Route("/api/nodes/{name}/log", node_log, methods=["GET"]),
    Route("/api/limits", list_limits, methods=["GET"]),
    Route("/api/limits/{name}", put_limit, methods=["PUT"]),
    Route("/api/limits/{name}", delete_limit, methods=["DELETE"]),
    Route("/api/tokens", create_token, methods=["POST"]),
    Route("/api/files/{path:path}", upload_file, methods=["PUT"]),
]
