"""``GET /api/openapi.json``: the REST API as an OpenAPI 3.1 document.

Paths and methods come from the routes the app serves (``server.api.routes``),
the request and answer records from ``farmtui.protocol`` and ``server.api``
through ``msgspec.json.schema_components``: the document cannot drift from
the code that decodes the bodies. What a route's handler takes and answers is
said once, in ``OPERATIONS`` beside the handler's name; a route without an
entry there is an error (``tests/ops/test_openapi.py`` builds the document
from the live app).

OpenAPI 3.1 uses JSON Schema 2020-12, which is what msgspec writes, so the
components are msgspec's schemas unchanged.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import msgspec
from starlette.routing import BaseRoute, Route

from farmtui.protocol import (
    IDEMPOTENCY_KEY,
    LEVELS,
    ApiError,
    EventView,
    FailureView,
    JobDetail,
    JobPatch,
    JobSpec,
    JobView,
    LimitSpec,
    LimitView,
    NodeView,
    TokenView,
)
from server.api import (
    ChunkActionBody,
    JobActionBody,
    JobActionResult,
    MoveBody,
    PriorityBody,
    TokenBody,
    TokenResult,
    WhoAmI,
)
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.path_mapping import OS_NAMES, PathMapView

__all__ = ["OPERATIONS", "Operation", "Param", "document", "document_json"]

REF_TEMPLATE = "#/components/schemas/{name}"
TEXT = "text/plain; charset=utf-8"


class Health(msgspec.Struct, kw_only=True):
    """``GET /healthz``: the leader is up, and whether it is the active one or a standby."""

    ok: bool
    # "active", or "standby" (a leader on PostgreSQL waiting to take over).
    role: Literal["active", "standby"] = "active"
    # The active leader's advertised URL; null when none is known.
    active: str | None = None


@dataclass(frozen=True, slots=True)
class Param:
    """A query (or header) parameter of an operation."""

    name: str
    schema: dict[str, Any]
    description: str
    required: bool = False
    where: Literal["query", "header"] = "query"


@dataclass(frozen=True, slots=True)
class Operation:
    """What one handler takes and answers; the route table says where and how it is reached."""

    summary: str
    answer: Any = None  # a record type (JSON), or None for no JSON answer
    status: int = 200
    body: Any = None  # the JSON request record, if any
    media: str = "application/json"  # of the answer
    params: tuple[Param, ...] = ()
    public: bool = False  # no token needed
    raw_body: bool = False  # the request body is the bytes of a file


_INT = {"type": "integer"}
_LIMIT_JOBS = Param("limit", {"type": "integer", "minimum": 1}, "one page of at most N jobs")
_PAGE_AFTER_JOB = Param("after", {"type": "string"}, "the page after this job id")


# Keyed by the handler's name (``server.api.routes``); the route says path and method.
OPERATIONS: dict[str, Operation] = {
    "healthz": Operation(
        "The leader is up, and its role: active, or a standby that refuses everything else "
        "(no token needed).",
        Health,
        public=True,
    ),
    "whoami": Operation("Whose token this is, and its role.", WhoAmI),
    "submit_job": Operation(
        "Submit a job. 201 and the new job; 200 and the earlier job when the "
        "Idempotency-Key was seen (a retried submit never makes two jobs); 422 when that "
        "key was used for another spec.",
        JobView,
        status=201,
        body=JobSpec,
        params=(
            Param(
                IDEMPOTENCY_KEY,
                {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,128}$"},
                "the client's key for this submit; sending it again with the same spec is harmless",
                where="header",
            ),
        ),
    ),
    "list_jobs": Operation(
        "Jobs in dispatch order (priority, lower first; then queue order), or one page of them.",
        list[JobView],
        params=(
            Param("all", {"type": "string", "enum": ["1", "0"]}, "1: include archived jobs"),
            _LIMIT_JOBS,
            _PAGE_AFTER_JOB,
        ),
    ),
    "job_actions": Operation(
        "Apply one action (pause, resume, cancel, delete ...) to every listed job.",
        JobActionResult,
        body=JobActionBody,
    ),
    "show_job": Operation(
        "A job with one page of its chunks (with attempts) and its frame states.",
        JobDetail,
        params=(
            Param("limit", {"type": "integer", "minimum": 1}, "chunks in the page"),
            Param("after", {"type": "integer", "minimum": -1}, "the page after this chunk index"),
        ),
    ),
    "patch_job": Operation(
        "Change a submitted job's settings (timeouts, retries, limits ...).",
        JobView,
        body=JobPatch,
    ),
    "set_priority": Operation(
        "Set a job's priority, 0-100, lower renders sooner (admins).", JobView, body=PriorityBody
    ),
    "move_job": Operation(
        "Move a job within its priority group (up, down, top, bottom, or before another job).",
        list[JobView],
        body=MoveBody,
    ),
    "chunk_actions": Operation(
        "Act on chunks of one job (retry, hold, set failed, set done, exclude).",
        JobDetail,
        body=ChunkActionBody,
    ),
    "job_events": Operation(
        "The job's event log: every state change and who caused it.", media=TEXT
    ),
    "block_node": Operation("Keep a node off this job.", JobView),
    "unblock_node": Operation("Let a blocked node back onto this job.", JobView),
    "chunk_log": Operation(
        "The raw output of one chunk attempt (the latest attempt by default).",
        media=TEXT,
        params=(
            Param("chunk", {"type": "integer", "minimum": 0}, "the chunk index", required=True),
            Param("attempt", {"type": "integer", "minimum": 1}, "the attempt (default: latest)"),
        ),
    ),
    "list_failures": Operation(
        "Failed and timed-out attempts farm-wide, newest first.",
        list[FailureView],
        params=(Param("limit", {"type": "integer", "minimum": 1}, "at most N (default 200)"),),
    ),
    "farm_events": Operation(
        "The farm's latest events, oldest first.",
        list[EventView],
        params=(
            Param("limit", {"type": "integer", "minimum": 1}, "at most N (default 500)"),
            Param("job", {"type": "string"}, "only this job's, from its own log"),
            Param(
                "level",
                {"type": "string", "enum": list(LEVELS)},
                "this level and above (default info: all)",
            ),
        ),
    ),
    "list_nodes": Operation("Render nodes, their slots, load and running chunks.", list[NodeView]),
    "path_map": Operation(
        "A path as the leader's [[path_map]] rules give it to a node of one OS.",
        PathMapView,
        params=(
            Param("path", {"type": "string"}, "the path as submitted", required=True),
            Param("os", {"type": "string", "enum": list(OS_NAMES)}, "the node's OS", required=True),
        ),
    ),
    "list_limits": Operation(
        "The farm's limits (licences): units, units in use, per-node caps.", list[LimitView]
    ),
    "put_limit": Operation(
        "Define or change a limit (admins); the farm's limits.", list[LimitView], body=LimitSpec
    ),
    "delete_limit": Operation(
        "Remove a limit (admins): jobs that ask for it wait until it is defined again.",
        list[LimitView],
    ),
    "enable_node": Operation("Let a node take chunks again (admins).", NodeView),
    "disable_node": Operation("Give a node no new chunks (admins).", NodeView),
    "node_log": Operation(
        "The end of a node's agent log.",
        media=TEXT,
        params=(Param("tail", {"type": "integer", "minimum": 0}, "lines (default 500)"),),
    ),
    "create_token": Operation(
        "Make a token (admins); its secret is in this answer only.",
        TokenResult,
        status=201,
        body=TokenBody,
    ),
    "list_tokens": Operation(
        "Every token the farm accepts (admins): id, name, role, when made; never a secret.",
        list[TokenView],
    ),
    "revoke_token": Operation(
        "Revoke a token by its id (admins): refused from now on, its open links closed.",
        TokenView,
    ),
    "upload_file": Operation(
        "Store a finished file under the sync root (agents that cannot see it). "
        "With job, chunk and attempt, only while that attempt is current.",
        status=204,
        raw_body=True,
        params=(
            Param("job", {"type": "string"}, "the job whose chunk attempt wrote the file"),
            Param("chunk", _INT, "its chunk index"),
            Param("attempt", _INT, "its attempt number"),
        ),
    ),
    "metrics": Operation(
        "The farm's metrics in the Prometheus text format. A viewer, user or admin "
        "token, or the leader's metrics_token.",
        media=METRICS_CONTENT_TYPE,
    ),
    "openapi_document": Operation(
        "This document (no token needed).", media="application/json", public=True
    ),
}

# Statuses any operation may answer with {"error": "one line"}.
_ERRORS = {
    "400": "malformed request",
    "401": "missing, unknown or revoked token",
    "403": "the token's role may not do this",
    "404": "no such job, chunk or node",
    "409": "refused by the farm's rules (e.g. a move across priority groups)",
    "413": "body over the leader's limit",
    "422": "a field out of range or of the wrong type",
    "503": "the change could not be committed (disk full ...); nothing changed",
}


def _version() -> str:
    try:
        return importlib.metadata.version("farmtui")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _operation_id(name: str, method: str, taken: set[str]) -> str:
    operation_id = name if name not in taken else f"{name}_{method.lower()}"
    taken.add(operation_id)
    return operation_id


def _http_routes(routes: Iterable[BaseRoute]) -> list[tuple[str, str, str, list[str]]]:
    """(path template, method, handler name, path parameters) of every HTTP route."""
    found = []
    for route in routes:
        if not isinstance(route, Route):
            continue  # the WebSocket links are described in docs/architecture.md
        for method in sorted((route.methods or set()) - {"HEAD"}):
            found.append((route.path_format, method, route.name, list(route.param_convertors)))
    return found


def document(routes: Iterable[BaseRoute]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``routes``; KeyError for a route missing from ``OPERATIONS``."""
    found = _http_routes(routes)
    missing = sorted({name for _, _, name, _ in found} - set(OPERATIONS))
    if missing:
        raise KeyError(f"routes without an OpenAPI entry in server.openapi.OPERATIONS: {missing}")
    kinds: list[Any] = [ApiError]
    for _, _, name, _ in found:
        op = OPERATIONS[name]
        kinds += [kind for kind in (op.answer, op.body) if kind is not None]
    refs, components = msgspec.json.schema_components(kinds, ref_template=REF_TEMPLATE)
    # As JSON has it: a tuple default (``after_offset = (0, 0)``) is an array there.
    components = msgspec.json.decode(msgspec.json.encode(components))
    schema_of = dict(zip((_key(kind) for kind in kinds), refs, strict=True))
    error_ref = schema_of[_key(ApiError)]
    paths: dict[str, dict[str, Any]] = {}
    taken: set[str] = set()
    for path, method, name, path_params in found:
        op = OPERATIONS[name]
        item = paths.setdefault(path, {})
        entry: dict[str, Any] = {
            "operationId": _operation_id(name, method, taken),
            "summary": op.summary,
            "tags": [_tag(path)],
        }
        params = [
            {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
            for p in path_params
        ]
        params += [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "description": p.description,
                "schema": p.schema,
            }
            for p in op.params
        ]
        if params:
            entry["parameters"] = params
        if op.body is not None:
            entry["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[_key(op.body)]}},
            }
        elif op.raw_body:
            entry["requestBody"] = {
                "required": True,
                "content": {
                    "application/octet-stream": {
                        "schema": {"type": "string", "contentMediaType": "application/octet-stream"}
                    }
                },
            }
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": "OK" if op.status < 300 else "Created"}
        if op.status == 204:
            ok = {"description": "No content"}
        elif op.answer is not None:
            ok["content"] = {op.media: {"schema": schema_of[_key(op.answer)]}}
        elif op.media == "application/json":
            ok["content"] = {op.media: {"schema": {"type": "object"}}}
        else:
            ok["content"] = {op.media: {"schema": {"type": "string"}}}
        responses[str(op.status)] = ok
        if name == "submit_job":
            responses["200"] = {
                "description": "The job submitted earlier with this Idempotency-Key",
                "content": {"application/json": {"schema": schema_of[_key(JobView)]}},
            }
        for status in _ERRORS:
            if op.public and status in ("401", "403"):
                continue
            responses[status] = {"$ref": f"#/components/responses/{status}"}
        entry["responses"] = dict(sorted(responses.items()))
        if op.public:
            entry["security"] = []
        item[method.lower()] = entry
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "farmtui leader",
            "version": _version(),
            "description": (
                'The REST API of a farmtui leader. Every error is {"error": "one line"} '
                "with its status, and nothing changes on an error. Priority: lower numbers "
                "render sooner (0-100, default 50). The live links (/ws/agent, /ws/console) "
                "are WebSockets and not described here."
            ),
        },
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}],
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": dict(sorted(components.items())),
            "responses": {
                status: {
                    "description": text,
                    "content": {"application/json": {"schema": error_ref}},
                }
                for status, text in _ERRORS.items()
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "a token from `farm token create` (or the leader's admin.token)",
                }
            },
        },
    }


def _key(kind: Any) -> str:
    return repr(kind)


def _tag(path: str) -> str:
    parts = [p for p in path.split("/") if p and p != "api" and not p.startswith("{")]
    return parts[0] if parts else "leader"


def document_json(routes: Iterable[BaseRoute]) -> bytes:
    """The document, encoded."""
    return msgspec.json.encode(document(routes))
