"""What a REST request or a console request may do, checked once for both.

Each function checks the principal's rights against the one table in
``server.rights`` (the README's "Who may do what"), validates what the scheduler
does not (paths, URLs), calls the scheduler through ``write`` (``Leader.run``)
and turns refusals into ``RequestError`` with the right status. Nothing
changes when one is raised: a change the store could not save (a full disk)
is undone by the leader and answered here, once for every write, with 503
``Unavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import NamedTuple

import msgspec

from farmtui.frames import OutputPatternError, check_output_pattern
from farmtui.protocol import (
    IDEMPOTENCY_KEY,
    LEADER_PATHS,
    LIMIT_NAME_PATTERN,
    ChunkAction,
    JobAction,
    JobDetail,
    JobPatch,
    JobSpec,
    JobView,
    LimitSpec,
    LimitView,
    MoveWhere,
    NodeView,
    TokenView,
    leader_owned,
)
from farmtui.protocol.limits import DEFAULT_PRIORITY
from server import dispatch_order
from server.assignments import expected_outputs
from server.auth import check_role, hash_token, token_id
from server.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RequestError,
    StoreError,
    Unavailable,
    Unprocessable,
    cut,
    shown,
)
from server.leader import Leader
from server.model import Changes, Chunk, Job
from server.paths import confine
from server.resources import LIMITS_SETTING, Limit, encode_limits
from server.rights import Principal, authorize, may
from server.scheduler import SchedulerError
from server.submission import check_paths, prepare, request_digest
from server.views import MAX_PAGE_CHUNKS, ChunkPage
from server.webhooks import check_job_webhook

log = logging.getLogger("farmtui.leader")


def job_or_404(leader: Leader, job_id: str) -> Job:
    job = leader.job(job_id)
    if job is None:
        raise NotFound(f"unknown job {cut(job_id)}")
    return job


def view_of(leader: Leader, job_id: str) -> JobView:
    """The job as it is now: NotFound if it was deleted while a change to it waited."""
    job_or_404(leader, job_id)
    return leader.scheduler.job_view(job_id)


def on_jobs(
    leader: Leader, job_ids: Sequence[str], step: Callable[[float], Changes]
) -> Callable[[float], Changes]:
    """``step``, once every job of ``job_ids`` is found still there as it is applied: one
    deleted while the change waited is answered 404, as one that never was."""

    def checked(now: float) -> Changes:
        for job_id in job_ids:
            job_or_404(leader, job_id)
        return step(now)

    return checked


def check_webhook(leader: Leader, principal: Principal, url: str | None) -> None:
    """A job webhook: within the leader's ``webhook_allow`` unless ``principal`` may go beyond."""
    allow = leader.config.webhook_allow
    check_job_webhook(url, allow, unrestricted=may(principal, "webhook_any"))


async def write(
    leader: Leader,
    step: Callable[[float], Changes],
    refused: type[RequestError],
    *,
    needs_room: bool = True,
) -> Changes:
    """``leader.write(step)``: the scheduler's refusal becomes ``refused``, a failed save 503.

    The leader has already undone a change it could not save (see ``Leader.commit``).
    ``needs_room``: False for a change that makes room (see ``Leader.run``). The
    farm may change while it waits (``Leader.write``): the step checks it when it
    is applied, and what is answered is read after it (``view_of``).
    """
    try:
        return await leader.write(step, needs_room=needs_room)
    except SchedulerError as exc:
        raise refused(str(exc)) from None
    except StoreError as exc:
        if not needs_room and leader.room_refusal() is not None:
            # A delete on a short disk whose pages did not fit in what was left.
            raise Unavailable(
                f"{exc} (too little room for it: delete fewer jobs at a time, or free space "
                "on the leader's disk)"
            ) from None
        raise Unavailable(str(exc)) from None


LIMIT_NAME = re.compile(LIMIT_NAME_PATTERN)


class Submitted(NamedTuple):
    """The job, and whether this request made it (False: its idempotency key had)."""

    view: JobView
    created: bool


async def submit(
    leader: Leader, principal: Principal, spec: JobSpec, key: str | None = None
) -> Submitted:
    """Add a job; with the ``key`` of an earlier submit of the owner's, return that job instead.

    The key is stored with the job in the same commit, so a client that lost
    the answer (a dropped connection, a leader restart) can send the same
    request again and never gets two jobs.

    The spec is read and cut into chunks in a thread (``prepare``): the loop
    keeps serving while a million frames are counted.
    """
    owner = spec.owner or principal.name
    authorize(principal, "submit", owner)
    lowest = leader.config.user_priority_min
    urgent = may(principal, "submit_urgent", owner)
    if spec.priority is not None and spec.priority < lowest and not urgent:
        raise Forbidden(
            f"priority {spec.priority} needs an admin: users submit with priority "
            f"{lowest}-100 (lower renders sooner)"
        )
    # Of the request as asked, before its priority is filled in: a retry is the same request
    # whatever user_priority_min says by then.
    digest = None if key is None else await asyncio.to_thread(request_digest, spec, owner)
    earlier = _earlier(leader, owner, key, digest)
    if earlier is not None:
        return earlier
    if spec.priority is None:
        # Named by nobody: the default, but never below what the submitter may ask for (a farm
        # that raised user_priority_min refused every plain user's submit: break round 33c).
        spec = msgspec.structs.replace(
            spec, priority=DEFAULT_PRIORITY if urgent else max(DEFAULT_PRIORITY, lowest)
        )
    if spec.output is not None:
        try:
            pattern = check_output_pattern(spec.output)
        except OutputPatternError as exc:
            raise BadRequest(str(exc)) from None
        if leader_owned(pattern):
            raise BadRequest(
                f"output pattern {spec.output!r} is in {pattern.parts[0]}/, which only the "
                "leader writes"
            )
        # As the file system has it now: a symlink in the sync root (a renderer's) may
        # lead elsewhere. Nodes check again as they copy; this says so at once.
        try:  # already refused above if written to escape: only a symlink can
            target = await asyncio.to_thread(confine, leader.root, str(pattern.parent))
            real: PurePath | None = target.relative_to(leader.root.resolve())
        except BadRequest:
            real = None
        if real is None or (real.parts and leader_owned(real)):
            where = "outside the sync root" if real is None else f"into {real.parts[0]}/"
            raise BadRequest(
                f"output pattern {spec.output!r} leads {where} through a symlink; refused"
            )
        if real != pattern.parent:
            # Nodes write output through no symlink at all (``farmtui.no_follow``): every
            # chunk would fail at its end, after its render.
            raise BadRequest(
                f"output pattern {spec.output!r} goes through a symlink in the sync root; "
                f"nodes write through none: use the folder it leads to ({real}/)"
            )
    try:  # the scene stays in the sync root
        warning = await asyncio.to_thread(check_paths, spec, leader.root)
    except SchedulerError as exc:
        raise BadRequest(str(exc)) from None
    check_webhook(leader, principal, spec.webhook)
    job_id = leader.new_job_id()
    try:
        prepared = await asyncio.to_thread(prepare, job_id, spec)
    except SchedulerError as exc:
        raise BadRequest(str(exc)) from None
    found: list[Submitted] = []

    def step(now: float) -> Changes:
        # Checked as the job is added: the same key may have been submitted again while
        # this one was prepared, or waited in the group commit.
        earlier = _earlier(leader, owner, key, digest)
        if earlier is not None:
            found.append(earlier)
            return Changes()
        changes = leader.scheduler.submit(
            job_id, spec, owner, now, key=key, prepared=prepared, digest=digest
        )
        if warning is not None:
            changes.event(now, "warn", warning, job_id, None)
        return changes

    await write(leader, step, BadRequest)
    return found[0] if found else Submitted(view_of(leader, job_id), created=True)


def _earlier(leader: Leader, owner: str, key: str | None, digest: str | None) -> Submitted | None:
    """The job ``owner`` submitted with ``key`` before, if any is still there.

    Unprocessable when that submit asked for something else (``request_digest``): the
    key was reused for a new job, and answering with the old one would lose the new.
    """
    if key is None:
        return None
    earlier = leader.scheduler.job_for_key(owner, key)
    job = None if earlier is None else leader.job(earlier)
    if job is None:
        return None
    if job.submit_digest is not None and job.submit_digest != digest:
        raise Unprocessable(
            f"{IDEMPOTENCY_KEY} {shown(key)} was used for another submit (job {job.id}); "
            "a new job needs a new key"
        )
    return Submitted(leader.scheduler.job_view(job.id), created=False)


async def job_action(
    leader: Leader, principal: Principal, action: JobAction, job_ids: list[str]
) -> tuple[list[JobView], list[str]]:
    """Apply ``action`` to every job; all ids are checked before anything changes."""
    if not job_ids:
        raise BadRequest("no job ids given")
    ids = list(dict.fromkeys(job_ids))
    for job_id in ids:
        authorize(principal, "job_action", job_or_404(leader, job_id).owner, job_id)
    changes = await write(
        leader,
        on_jobs(
            leader, ids, lambda now: leader.scheduler.job_action(ids, action, principal.name, now)
        ),
        Conflict,
        needs_room=action != "delete",  # deleting jobs is how an operator makes room
    )
    removed = [job_id for job_id in ids if job_id in changes.removed or leader.job(job_id) is None]
    views = [leader.scheduler.job_view(job_id) for job_id in ids if leader.job(job_id) is not None]
    return views, removed


async def chunk_action(
    leader: Leader, principal: Principal, job_id: str, action: ChunkAction, chunks: list[int]
) -> JobDetail:
    job = job_or_404(leader, job_id)
    authorize(principal, "chunk_action", job.owner, job_id)
    if not chunks:
        raise BadRequest("no chunks given")
    unknown = [index for index in chunks if not 0 <= index < len(job.chunks)]
    if unknown:
        raise NotFound(f"job {job_id} has no chunk {', '.join(map(str, unknown))}")
    await write(
        leader,
        on_jobs(
            leader,
            [job_id],
            lambda now: leader.scheduler.chunk_action(job_id, chunks, action, principal.name, now),
        ),
        Conflict,
    )
    job_or_404(leader, job_id)  # deleted since its change was made
    return leader.scheduler.job_detail(job_id, ChunkPage(MAX_PAGE_CHUNKS))


async def set_priority(leader: Leader, principal: Principal, job_id: str, priority: int) -> JobView:
    authorize(principal, "set_priority", job_or_404(leader, job_id).owner, job_id)
    await write(
        leader,
        on_jobs(
            leader,
            [job_id],
            lambda now: leader.scheduler.set_priority(job_id, priority, principal.name, now),
        ),
        BadRequest,
    )
    return view_of(leader, job_id)


async def move(
    leader: Leader,
    principal: Principal,
    job_id: str,
    where: MoveWhere | None,
    before: str | None,
) -> list[JobView]:
    """Move within the priority group; returns the group in dispatch order."""
    job = job_or_404(leader, job_id)
    authorize(principal, "move", job.owner, job_id)
    if before is not None:
        job_or_404(leader, before)

    def step(now: float) -> Changes:
        # Checked as it moves (``on_jobs`` found it there): the queue may change while
        # the move waits.
        if not principal.is_admin:
            _only_past_own(leader, principal, leader.scheduler.jobs[job_id], where, before)
        return leader.scheduler.move(job_id, where, before, principal.name, now)

    await write(leader, on_jobs(leader, [job_id], step), Conflict)
    priority = job_or_404(leader, job_id).priority
    return [
        view
        for view in leader.scheduler.job_views(include_archived=False)
        if view.priority == priority
    ]


def _only_past_own(
    leader: Leader, principal: Principal, job: Job, where: MoveWhere | None, before: str | None
) -> None:
    """Forbidden if moving ``job`` would pass a job of someone else's."""
    target = job_or_404(leader, before) if before is not None else None
    jobs = list(leader.scheduler.jobs.values())
    for other in dispatch_order.passed_by(jobs, job, where, target):
        if other.owner != principal.name:
            raise Forbidden(
                f"moving job {job.id} would pass job {other.id} of {other.owner}; "
                "users reorder only among their own jobs"
            )


async def patch(leader: Leader, principal: Principal, job_id: str, changes: JobPatch) -> JobView:
    authorize(principal, "patch", job_or_404(leader, job_id).owner, job_id)
    check_webhook(leader, principal, changes.webhook)
    await write(
        leader,
        on_jobs(
            leader,
            [job_id],
            lambda now: leader.scheduler.patch(job_id, changes, principal.name, now),
        ),
        BadRequest,
    )
    return view_of(leader, job_id)


async def block_node(
    leader: Leader, principal: Principal, job_id: str, node: str, blocked: bool
) -> JobView:
    """Keep ``node`` off the job until unblocked, or let it back (the job's owner or an admin)."""
    authorize(principal, "block_node", job_or_404(leader, job_id).owner, job_id)
    if node not in leader.scheduler.nodes:
        raise NotFound(f"unknown node {node}")
    await write(
        leader,
        on_jobs(
            leader,
            [job_id],
            lambda now: leader.scheduler.block_node(job_id, node, blocked, principal.name, now),
        ),
        Conflict,
    )
    return view_of(leader, job_id)


async def set_node_enabled(
    leader: Leader, principal: Principal, node: str, enabled: bool
) -> NodeView:
    authorize(principal, "set_node_enabled")
    if node not in leader.scheduler.nodes:
        raise NotFound(f"unknown node {node}")
    await write(
        leader,
        lambda now: leader.scheduler.set_node_enabled(node, enabled, principal.name, now),
        Conflict,
    )
    view = leader.node_view(node)
    if view is None:
        raise NotFound(f"unknown node {node}")
    return view


async def set_limit(
    leader: Leader, principal: Principal, name: str, spec: LimitSpec | None
) -> list[LimitView]:
    """Define or change the limit ``name`` (``spec``), or remove it (None); the farm's limits.

    The limits are written to the store first: if that fails nothing changed,
    and once it succeeds memory follows, whether or not the event's commit does.
    One change at a time (``Leader.setting_writes``), so each starts from the one
    before; the write on a thread, so a commit in flight on the commits' thread
    (which holds the store) or a slow database never holds the event loop.
    """
    authorize(principal, "set_limit")
    if not LIMIT_NAME.fullmatch(name):
        raise BadRequest(f"{name!r} is not a limit name (letters, digits, '.', '-', '_')")
    scheduler = leader.scheduler
    async with leader.setting_writes:
        if (short := leader.room_refusal()) is not None:
            raise Unavailable(short)  # as every other change: not even the setting
        limits = dict(scheduler.resources.limits)
        if spec is None:
            if limits.pop(name, None) is None:
                raise NotFound(f"unknown limit {name}")
            limit = None
        else:
            limit = limits[name] = Limit(name, spec.units, spec.per_node)
        try:
            await asyncio.to_thread(
                leader.store.set_setting, LIMITS_SETTING, encode_limits(limits.values())
            )
        except StoreError as exc:
            raise Unavailable(str(exc)) from None
        await write(
            leader, lambda now: scheduler.set_limit(limit, name, principal.name, now), Conflict
        )
    return scheduler.limit_views()


async def create_token(leader: Leader, principal: Principal, role: str, name: str) -> str:
    """A new token; stored on a thread, one at a time (see ``set_limit``)."""
    authorize(principal, "manage_tokens")
    async with leader.setting_writes:
        if (short := leader.room_refusal()) is not None:
            raise Unavailable(short)  # as every other change: a full disk takes no new rows
        token, made = leader.tokens.new(role, name)
        try:
            await asyncio.to_thread(leader.tokens.add, token, made)
        except StoreError as exc:
            raise Unavailable(str(exc)) from None
    return token


def list_tokens(leader: Leader, principal: Principal) -> list[TokenView]:
    """Every token the farm accepts, oldest first: ids, names and roles, no secrets."""
    authorize(principal, "manage_tokens")
    rows = leader.store.tokens()  # on a thread: the caller's
    own = {hash_token(leader.admin_token), hash_token(leader.agent_token)}
    return [
        TokenView(
            id=token_id(row.hash),
            name=row.name,
            role=check_role(row.role),
            created=row.created,
            leaders=row.hash in own,
        )
        for row in sorted(rows, key=lambda row: (row.created, row.name))
    ]


async def revoke_token(leader: Leader, principal: Principal, wanted: str) -> TokenView:
    """Forget the token whose id is ``wanted`` and close the links it opened."""
    authorize(principal, "manage_tokens")
    async with leader.setting_writes:
        token_hash = leader.tokens.find(wanted)
        if token_hash in (hash_token(leader.admin_token), hash_token(leader.agent_token)):
            raise Conflict(
                f"token {token_id(token_hash)} is the leader's own (admin.token or agent.token "
                "in its data folder), made again from that file at each start: replace the "
                "file and restart the leader instead"
            )
        try:
            created = await asyncio.to_thread(_remove_token, leader, token_hash)
        except StoreError as exc:
            raise Unavailable(str(exc)) from None
        # In memory on the loop, once the store has it: from this turn on, no request,
        # hello or console with it is let in (they ask again as they register).
        gone = leader.tokens.forget(token_hash)
    closed = leader.revoked(token_hash)
    log.warning(
        "token %s (%s, %s) revoked by %s; %d link(s) it opened closed",
        token_id(token_hash),
        gone.name,
        gone.role,
        principal.name,
        closed,
    )
    return TokenView(id=token_id(token_hash), name=gone.name, role=gone.role, created=created)


def _remove_token(leader: Leader, token_hash: str) -> float:
    """Remove a token's row (on a thread: it waits for the disk); when it was made."""
    made = next((row.created for row in leader.store.tokens() if row.hash == token_hash), 0.0)
    leader.store.remove_token(token_hash)
    return made


# ``?job=&chunk=&attempt=`` of an upload: the chunk attempt whose output it is.
UploadFence = tuple[str, int, int]


def upload_allowed(
    leader: Leader,
    principal: Principal,
    relative: str,
    target: Path,
    fence: UploadFence | None,
) -> None:
    """Whether ``principal`` may write ``relative`` (``target``: ``paths.confine`` of it,
    found on a thread, as it reads the disk); 403 or 409 if not.

    Nobody writes the leader's own files (``protocol.LEADER_PATHS``). Admins
    write anything else. An agent writes only an output file of a chunk
    attempt that is current; with a per-node token, of an attempt assigned
    to its node (the shared token cannot tell which node it is, so any
    node's). Asked before the body is read and again before the file lands.
    """
    if leader_owned(PurePosixPath(relative)) or leader_owned(target.relative_to(leader.root)):
        raise Forbidden(
            f"{shown(relative)} is the leader's own ({', '.join(LEADER_PATHS)}): not written"
        )
    if fence is None:
        if not may(principal, "upload_any"):
            raise Forbidden(
                "agent tokens upload only the output files of a chunk attempt: "
                "name it with ?job=&chunk=&attempt="
            )
        return
    authorize(principal, "upload_output")
    job_id, index, number = fence
    job = leader.job(job_id)
    chunk = leader.chunk(job_id, index)
    attempt = f"attempt {number} of chunk {index} of job {job_id}"
    node = _running_on(chunk, number)
    if job is None or chunk is None or node is None:
        raise Conflict(f"{attempt} is not current: not written")
    if principal.is_admin:
        return
    if principal.node is not None and principal.node != node:
        raise Forbidden(f"{attempt} runs on node {node}, not {principal.node}: not written")
    outputs = {PurePosixPath(path) for path in expected_outputs(job, chunk)}
    if PurePosixPath(relative) not in outputs:
        raise Forbidden(f"{shown(relative)} is not an output file of {attempt}: not written")


def _running_on(chunk: Chunk | None, number: int) -> str | None:
    """The node running attempt ``number`` of ``chunk``, if that is the chunk's current attempt."""
    if chunk is None or chunk.state != "assigned" or chunk.attempt != number:
        return None
    return next((a.node for a in reversed(chunk.attempts) if a.number == number), None)
