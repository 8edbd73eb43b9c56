"""The logs over REST: a job's events, a chunk attempt's log, the farm's latest events
and failures, a node's agent log.

A job's logs are read back through the logs' writer (``leader.joblogs``),
after the commits in flight: a change shows in reads a little before its
commit returns, and its lines are logged only then. A log that cannot be read
(a filer that stopped answering) is one line, 409.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.requests import Request
from starlette.responses import Response

from farmtui.protocol import LEVELS, MAX_HISTORY
from server import operations
from server.api_requests import int_param, json_response, leader_of, text_response, who
from server.errors import BadRequest, Conflict, NotFound, shown
from server.joblogs import chunk_log_path, events_path
from server.leader import Leader
from server.nodelogs import KEEP_LINES

# Logs served over HTTP: at most this much from their end.
MAX_LOG_BYTES = 32 * 1024 * 1024
# Seconds a log read waits for the commits in flight at most (``_after_commits``).
SETTLE_WAIT = 5.0


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
    await _after_commits(leader)  # each failure's log is complete (``_read_log``)
    try:
        return json_response(await leader.failures.newest_with_errors(leader.joblogs, limit))
    except OSError as exc:
        raise _unreadable(exc) from None


async def farm_events(request: Request) -> Response:
    """``GET /api/events?limit=N[&job=ID][&level=warn]``: the farm's latest events, oldest
    first; ``job``: that job's (from its own log, however many the farm had since);
    ``level``: of that level and above."""
    who(request, "read")
    limit = _history_limit(request, 500)
    leader = leader_of(request)
    job_id = request.query_params.get("job")
    if job_id is not None:
        operations.job_or_404(leader, job_id)
    level = request.query_params.get("level", "info")
    if level not in LEVELS:
        raise BadRequest(f"level={shown(level)} is not one of {', '.join(LEVELS)}")
    await _after_commits(leader)  # the events of every change a read has shown
    try:
        levels = LEVELS[LEVELS.index(level) :]
        return json_response(await leader.history.latest(limit, job_id, levels))
    except OSError as exc:
        raise _unreadable(exc) from None


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


async def _after_commits(leader: Leader) -> None:
    """Wait for the commits in flight, whose changes reads may show already and whose
    events are logged when they land; ``SETTLE_WAIT`` at most: a database that stopped
    answering delays a log's freshest lines, not the log."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(leader.commit_line.settled(), SETTLE_WAIT)


async def _read_log(leader: Leader, relative: str) -> bytes | None:
    """The end of a log under the sync root, never through a planted symlink; None if absent.

    After the commits in flight: a change is seen by reads a little before its
    commit returns, and its log lines are written only then.
    """
    await _after_commits(leader)
    try:
        return await leader.joblogs.read(relative, MAX_LOG_BYTES)
    except OSError as exc:
        raise _unreadable(exc) from None


def _unreadable(exc: OSError) -> Conflict:
    return Conflict(f"cannot read the log: {exc.strerror or type(exc).__name__}")


async def node_log(request: Request) -> Response:
    who(request, "read")
    leader = leader_of(request)
    name = request.path_params["name"]
    if name not in leader.scheduler.nodes:
        raise NotFound(f"unknown node {name}")
    tail = int_param(request, "tail", 500)
    assert tail is not None
    if not 0 <= tail <= KEEP_LINES:
        raise BadRequest(f"tail={tail} is not between 0 and {KEEP_LINES}")
    try:
        lines = await leader.nodelogs.tail(name, tail)
    except OSError as exc:
        raise _unreadable(exc) from None
    return text_response("".join(line + "\n" for line in lines))
