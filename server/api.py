"""The REST API: its routes, and the handlers for jobs, nodes, limits and tokens.

Handlers are thin: authenticate, decode the body with msgspec into the
protocol's records, call ``operations``, encode the answer. Every error is
``{"error": "one line"}`` with its status; nothing changes on an error.
What they share is ``api_requests``; the logs are ``api_logs``, uploads
``api_uploads``.
"""

from __future__ import annotations

import asyncio
import re
import secrets

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from farmtui.protocol import (
    IDEMPOTENCY_KEY,
    ChunkAction,
    JobAction,
    JobPatch,
    JobSpec,
    JobView,
    LimitSpec,
    MoveWhere,
    Role,
)
from server import metrics as farm_metrics
from server import operations
from server.api_logs import chunk_log, farm_events, job_events, list_failures, node_log
from server.api_requests import decode_body, int_param, json_response, leader_of, who
from server.api_uploads import upload_file
from server.auth import bearer_token, hash_token, token_id
from server.errors import BadRequest
from server.path_mapping import OS_NAMES, node_os
from server.path_mapping import view as path_map_view
from server.views import MAX_PAGE_CHUNKS, MAX_PAGE_JOBS, ChunkPage, JobPage

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
    # What ``farm token revoke`` takes (``farm token list`` shows it too).
    id: str = ""


class WhoAmI(msgspec.Struct, kw_only=True):
    name: str
    role: Role


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


async def list_tokens(request: Request) -> Response:
    """``GET /api/tokens``: every token's id, name, role and age; never a secret."""
    principal = who(request, "manage_tokens")
    leader = leader_of(request)
    return json_response(await asyncio.to_thread(operations.list_tokens, leader, principal))


async def revoke_token(request: Request) -> Response:
    """``DELETE /api/tokens/{id}``: the token is refused from now on, its links closed."""
    principal = who(request, "manage_tokens")
    wanted = request.path_params["token_id"]
    return json_response(await operations.revoke_token(leader_of(request), principal, wanted))


async def create_token(request: Request) -> Response:
    principal = who(request, "manage_tokens")
    body = await decode_body(request, TokenBody)
    if body.role == "agent" and not body.name:
        raise BadRequest(
            "an agent token is for one node: give the node's name "
            "(farm token create --role agent --name NODE); the leader's agent.token serves any node"
        )
    name = body.name or f"{body.role}-{secrets.token_hex(3)}"
    token = await operations.create_token(leader_of(request), principal, body.role, name)
    made = TokenResult(token=token, role=body.role, name=name, id=token_id(hash_token(token)))
    return json_response(made, 201)


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
    Route("/api/tokens", list_tokens, methods=["GET"]),
    Route("/api/tokens/{token_id}", revoke_token, methods=["DELETE"]),
    Route("/api/files/{path:path}", upload_file, methods=["PUT"]),
]
