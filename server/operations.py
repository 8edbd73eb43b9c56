"""What a REST request or a console request may do, checked once for both.

Each function checks the principal's rights, validates what the scheduler
does not (paths, URLs), calls the scheduler through ``write`` (``Leader.run``)
and turns refusals into ``RequestError`` with the right status. Nothing
changes when one is raised: a change the store could not save (a full disk)
is undone by the leader and answered here, once for every write, with 503
``Unavailable``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from farmtui.frames import OutputPatternError, check_output_pattern
from farmtui.protocol import (
    ChunkAction,
    JobAction,
    JobDetail,
    JobPatch,
    JobSpec,
    JobView,
    MoveWhere,
    NodeView,
)
from server import dispatch_order
from server.auth import Principal, require_admin, require_control
from server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RequestError,
    StoreError,
    Unavailable,
)
from server.leader import Leader
from server.model import Changes, Job
from server.scheduler import SchedulerError


def job_or_404(leader: Leader, job_id: str) -> Job:
    job = leader.job(job_id)
    if job is None:
        raise NotFound(f"unknown job {job_id}")
    return job


def check_webhook(url: str | None) -> None:
    if url is not None and not url.startswith(("http://", "https://")):
        raise BadRequest(f"webhook {url!r} must be an http:// or https:// URL")


def write(leader: Leader, step: Callable[[float], Changes], refused: type[RequestError]) -> Changes:
    """``leader.run(step)``: the scheduler's refusal becomes ``refused``, a failed save 503.

    The leader has already undone a change it could not save (see ``Leader.commit``).
    """
    try:
        return leader.run(step)
    except SchedulerError as exc:
        raise refused(str(exc)) from None
    except StoreError as exc:
        raise Unavailable(str(exc)) from None


class Submitted(NamedTuple):
    """The job, and whether this request made it (False: its idempotency key had)."""

    view: JobView
    created: bool


def submit(
    leader: Leader, principal: Principal, spec: JobSpec, key: str | None = None
) -> Submitted:
    """Add a job; with the ``key`` of an earlier submit of the owner's, return that job instead.

    The key is stored with the job in the same commit, so a client that lost
    the answer (a dropped connection, a leader restart) can send the same
    request again and never gets two jobs.
    """
    if principal.role not in ("user", "admin"):
        raise Forbidden(f"role {principal.role} may not submit jobs")
    lowest = leader.config.user_priority_min
    if not principal.is_admin and spec.priority < lowest:
        raise Forbidden(
            f"priority {spec.priority} needs an admin: users submit with priority "
            f"{lowest}-100 (lower renders sooner)"
        )
    owner = spec.owner if (principal.is_admin and spec.owner) else principal.name
    if key is not None:
        earlier = leader.scheduler.job_for_key(owner, key)
        if earlier is not None and leader.job(earlier) is not None:
            return Submitted(leader.scheduler.job_view(earlier), created=False)
    if spec.output is not None:
        try:
            check_output_pattern(spec.output)
        except OutputPatternError as exc:
            raise BadRequest(str(exc)) from None
    check_webhook(spec.webhook)
    job_id = leader.new_job_id()
    write(
        leader, lambda now: leader.scheduler.submit(job_id, spec, owner, now, key=key), BadRequest
    )
    return Submitted(leader.scheduler.job_view(job_id), created=True)


def job_action(
    leader: Leader, principal: Principal, action: JobAction, job_ids: list[str]
) -> tuple[list[JobView], list[str]]:
    """Apply ``action`` to every job; all ids are checked before anything changes."""
    if not job_ids:
        raise BadRequest("no job ids given")
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        require_control(principal, job_or_404(leader, job_id))
    changes = write(
        leader, lambda now: leader.scheduler.job_action(ids, action, principal.name, now), Conflict
    )
    removed = [job_id for job_id in ids if job_id in changes.removed or leader.job(job_id) is None]
    views = [leader.scheduler.job_view(job_id) for job_id in ids if leader.job(job_id) is not None]
    return views, removed


def chunk_action(
    leader: Leader, principal: Principal, job_id: str, action: ChunkAction, chunks: list[int]
) -> JobDetail:
    job = job_or_404(leader, job_id)
    require_control(principal, job)
    if not chunks:
        raise BadRequest("no chunks given")
    known = {chunk.index for chunk in job.chunks}
    unknown = [index for index in chunks if index not in known]
    if unknown:
        raise NotFound(f"job {job_id} has no chunk {', '.join(map(str, unknown))}")
    write(
        leader,
        lambda now: leader.scheduler.chunk_action(job_id, chunks, action, principal.name, now),
        Conflict,
    )
    return leader.scheduler.job_detail(job_id)


def set_priority(leader: Leader, principal: Principal, job_id: str, priority: int) -> JobView:
    require_admin(principal, "change priority")
    job_or_404(leader, job_id)
    write(
        leader,
        lambda now: leader.scheduler.set_priority(job_id, priority, principal.name, now),
        BadRequest,
    )
    return leader.scheduler.job_view(job_id)


def move(
    leader: Leader,
    principal: Principal,
    job_id: str,
    where: MoveWhere | None,
    before: str | None,
) -> list[JobView]:
    """Move within the priority group; returns the group in dispatch order."""
    job = job_or_404(leader, job_id)
    require_control(principal, job)
    target = job_or_404(leader, before) if before is not None else None
    if not principal.is_admin:
        jobs = list(leader.scheduler.jobs.values())
        for other in dispatch_order.passed_by(jobs, job, where, target):
            if other.owner != principal.name:
                raise Forbidden(
                    f"moving job {job.id} would pass job {other.id} of {other.owner}; "
                    "users reorder only among their own jobs"
                )
    write(
        leader,
        lambda now: leader.scheduler.move(job_id, where, before, principal.name, now),
        Conflict,
    )
    priority = leader.scheduler.jobs[job_id].priority
    return [
        view
        for view in leader.scheduler.job_views(include_archived=False)
        if view.priority == priority
    ]


def patch(leader: Leader, principal: Principal, job_id: str, changes: JobPatch) -> JobView:
    require_control(principal, job_or_404(leader, job_id))
    check_webhook(changes.webhook)
    write(
        leader,
        lambda now: leader.scheduler.patch(job_id, changes, principal.name, now),
        BadRequest,
    )
    return leader.scheduler.job_view(job_id)


def set_node_enabled(leader: Leader, principal: Principal, node: str, enabled: bool) -> NodeView:
    require_admin(principal, "enable or disable nodes")
    if node not in leader.scheduler.nodes:
        raise NotFound(f"unknown node {node}")
    write(
        leader,
        lambda now: leader.scheduler.set_node_enabled(node, enabled, principal.name, now),
        Conflict,
    )
    view = leader.node_view(node)
    if view is None:
        raise NotFound(f"unknown node {node}")
    return view


def create_token(leader: Leader, principal: Principal, role: str, name: str) -> str:
    require_admin(principal, "create tokens")
    try:
        return leader.tokens.create(role, name)
    except StoreError as exc:
        raise Unavailable(str(exc)) from None
