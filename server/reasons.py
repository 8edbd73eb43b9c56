"""Why isn't it rendering? The reason a job's waiting chunks do not run now.

Asked by views, never on an event's path. The answer comes from the same
predicates the dispatch pass uses (stage gates, machine limit, tags, node
blocks, retry times), checked in the order the pass meets them, so the reason
shown is the one that holds the job back.

What a reason depends on outside its job (a node going offline, a block
ending) does not mark the job changed by itself: ``Scheduler`` re-announces
the waiting jobs when the shape of a node changes, and a reason with ``until``
is read against the clock by the client.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from farmtui.frames import format_frames
from farmtui.protocol import WaitReason, is_operator_block
from server.agent_tokens import tokens_needed
from server.frame_states import PENDING, tally_of
from server.frame_waits import FrameWaits
from server.job_progress import STAGES, count, gates, stage_open, waiting_at_scouts
from server.model import Job, Node
from server.resources import Resources, fits_gpus
from server.retries import RetryPolicy
from server.transitions import job_name

# Names listed in a reason before "and N more".
_LISTED = 3


class Farm:
    """What a reason reads beyond its job: the other jobs, the nodes and their free slots.

    Built for one read (a view, a page of views); the slots per set of required
    tags are counted once per read, not once per job.
    """

    def __init__(
        self,
        jobs: Mapping[str, Job],
        nodes: Mapping[str, Node],
        free: Mapping[str, int],
        resources: Resources | None = None,
        frame_waits: FrameWaits | None = None,
    ) -> None:
        self.jobs = jobs
        self.nodes = nodes
        self.free = free
        self.resources = Resources() if resources is None else resources
        self.frame_waits = FrameWaits() if frame_waits is None else frame_waits
        self._matching: dict[frozenset[str], list[Node]] = {}

    def matching(self, tags: Iterable[str]) -> list[Node]:
        """Every known node that carries all of ``tags``."""
        wanted = frozenset(tags)
        found = self._matching.get(wanted)
        if found is None:
            found = [node for node in self.nodes.values() if wanted <= set(node.tags)]
            self._matching[wanted] = found
        return found


def why_waiting(job: Job, farm: Farm, policy: RetryPolicy, now: float) -> WaitReason | None:
    """The reason, or None while nothing waits for one (running, done, about to dispatch)."""
    if job.archived or job.state in ("done", "cancelled"):
        return None
    by = f" by {job.state_by}" if job.state_by else ""
    tally = tally_of(job)
    g = gates(job)
    if job.state == "paused":
        return WaitReason(kind="paused", text=f"paused{by}")
    if job.state == "holding":
        if waiting_at_scouts(job, g):
            return WaitReason(kind="held", text="held (scout frames done)")
        return WaitReason(kind="held", text=f"held{by}")
    if job.state == "failed":
        failed = count(tally, STAGES, ("failed",))
        word = "chunk" if failed == 1 else "chunks"
        return WaitReason(kind="failed", text=f"{failed} {word} out of retries")
    pending = [where for where in STAGES if count(tally, (where,), PENDING)]
    if not pending:
        held = count(tally, STAGES, ("held",))
        if held and not tally.running:
            word = "chunk" if held == 1 else "chunks"
            return WaitReason(kind="held", text=f"{held} {word} held")
        return None
    waiting_on = [
        farm.jobs[dep]
        for dep in job.spec.after
        if dep in farm.jobs and farm.jobs[dep].state != "done" and not job.spec.after_frames
    ]
    if waiting_on:
        names = ", ".join(f"{job_name(dep)} ({dep.state})" for dep in waiting_on[:_LISTED])
        more = f" and {len(waiting_on) - _LISTED} more" if len(waiting_on) > _LISTED else ""
        return WaitReason(kind="after", text=f"waiting on {names}{more}")
    if not any(stage_open(job, g, where) for where in pending):
        return _stage_reason(pending, g.pre_done, g.scouts_done)
    limit = job.spec.max_running
    if limit and len(tally.running) >= limit:
        return WaitReason(kind="limit", text=f"machine limit {limit} reached")
    short = farm.resources.exhausted(job.spec.limits)
    if short is not None:
        return _licence_reason(short, farm.resources)
    open_stages = tuple(where for where in pending if stage_open(job, g, where))
    retrying = count(tally, open_stages, ("waiting-retry",))
    if retrying == count(tally, open_stages, PENDING):
        due = _next_retry(job, now)
        if due is not None:
            retry_at, errors = due
            return WaitReason(
                kind="retry",
                # Retries used of those allowed, not the attempt's number: attempts the
                # farm cut short (a lost node, a take-back) use none.
                text=f"retry {errors} of {policy.retries}",
                until=retry_at,
            )
    parked = farm.frame_waits.waiting.get(job.id)
    if parked and len(parked) >= count(tally, open_stages, PENDING):
        return _frames_reason(parked, farm)
    return _node_reason(job, farm, now)


def _frames_reason(parked: dict[int, tuple[str, int]], farm: Farm) -> WaitReason:
    """Every chunk it could start waits for upstream frames: name the first ones."""
    dep_id, index = parked[min(parked)]
    dep = farm.jobs.get(dep_id)
    if dep is None:
        return WaitReason(kind="after", text=f"waiting on frames of {dep_id}")
    upstream = dep.chunks.look(index)
    frames = format_frames(list(upstream.frames))
    word = "frame" if len(upstream.frames) == 1 else "frames"
    state: str = {"assigned": "rendering"}.get(upstream.state, upstream.state)
    if upstream.state in PENDING:
        state = "waiting"
    if dep.state in ("failed", "cancelled", "paused", "holding"):
        state = f"{state}; job {dep.state}"
    return WaitReason(kind="after", text=f"waiting on {job_name(dep)} {word} {frames} ({state})")


def _licence_reason(name: str, resources: Resources) -> WaitReason:
    defined = resources.limits.get(name)
    if defined is None:
        return WaitReason(
            kind="licence", text=f"limit {name} is not defined (farm limit set {name} N)"
        )
    if defined.units == 0:
        return WaitReason(kind="licence", text=f"limit {name} has no units (farm limit set)")
    return WaitReason(
        kind="licence",
        text=f"waiting for a {name} licence ({resources.in_use[name]}/{defined.units} in use)",
    )


def _stage_reason(pending: list[str], pre_done: bool, scouts_done: bool) -> WaitReason:
    if not pre_done:
        return WaitReason(kind="stage", text="waiting for the pre-job script")
    if "render" in pending and not scouts_done:
        return WaitReason(kind="stage", text="waiting for the scout frames")
    return WaitReason(kind="stage", text="post-job script waits for the renders")


def _next_retry(job: Job, now: float) -> tuple[float, int] | None:
    """(when, errors so far) of the waiting-retry chunk due first, if none is due yet."""
    tally = tally_of(job)
    best: tuple[float, int] | None = None
    # Chunks not yet due sit in ``retry``; those the dispatch pass has not looked
    # at since their failure are still in ``ready``. Both hold only waiting chunks.
    for index in [i for _, i in tally.retry] + tally.ready:
        chunk = job.chunks.look(index)
        if chunk.state != "waiting-retry" or chunk.retry_at is None:
            continue
        if chunk.retry_at <= now:
            return None  # due now: the next dispatch pass takes it
        if best is None or chunk.retry_at < best[0]:
            best = (chunk.retry_at, chunk.errors)
    return best


def _node_reason(job: Job, farm: Farm, now: float) -> WaitReason | None:
    tags = job.spec.tags
    matching = farm.matching(tags)
    if not matching:
        if not tags:
            return WaitReason(kind="tags", text="no node has joined the farm")
        missing = [t for t in tags if not any(t in node.tags for node in farm.nodes.values())]
        named = missing or tags
        word = "tag" if len(named) == 1 else "tags"
        listed = " ".join(named) if missing else " + ".join(named)
        return WaitReason(kind="tags", text=f"no node has {word} {listed}")
    spec = job.spec
    if spec.gpus:
        matching = [node for node in matching if fits_gpus(node, spec.gpus, spec.gpu_memory)]
        if not matching:
            size = f" of {_mib(spec.gpu_memory)}" if spec.gpu_memory else ""
            word = "GPU" if spec.gpus == 1 else "GPUs"
            return WaitReason(kind="gpus", text=f"no node has {spec.gpus} {word}{size}")
    else:
        matching = [node for node in matching if not node.gpu_only]
        if not matching:
            return WaitReason(kind="gpus", text="every node it may use takes GPU jobs only")
    if needs := tokens_needed(job):
        matching = [node for node in matching if needs.issubset(node.tokens)]
        if not matching:
            listed = " ".join(f"{{{name}}}" for name in sorted(needs))
            return WaitReason(
                kind="tags",
                text=f"no node's agent knows {listed}: upgrade farmtui on the nodes",
            )
    usable = [node for node in matching if node.online and node.enabled]
    if not usable:
        offline = sum(1 for node in matching if not node.online)
        disabled = len(matching) - offline
        parts = [f"{n} {what}" for n, what in ((offline, "offline"), (disabled, "disabled")) if n]
        return WaitReason(kind="offline", text=f"every node it may use is {' or '.join(parts)}")
    ends = [job.blocked[n.name] for n in usable if job.blocked.get(n.name, 0.0) > now]
    if len(ends) == len(usable):
        text = f"blocked on {len(ends)}/{len(usable)} nodes"
        if is_operator_block(min(ends), now):
            # Every block is an operator's: it lasts till lifted, not till a time (its record
            # says a year from now, which read as a time passed today).
            return WaitReason(kind="blocked", text=f"{text} until unblocked")
        return WaitReason(kind="blocked", text=text, until=min(ends))
    open_nodes = [n for n in usable if job.blocked.get(n.name, 0.0) <= now]
    free = sum(farm.free.get(n.name, 0) for n in open_nodes)
    if free == 0:
        slots = sum(n.slots for n in open_nodes)
        word = "slot" if slots == 1 else "slots"
        return WaitReason(kind="slots", text=f"all {slots} {word} it may use are busy")
    room = [n for n in open_nodes if farm.free.get(n.name, 0)]
    resources = farm.resources
    if spec.gpus and not any(
        resources.free_gpus(n, spec.gpus, spec.gpu_memory) is not None for n in room
    ):
        busy = sum(len(resources.busy_gpus(n.name)) for n in open_nodes)
        total = sum(len(n.gpus) for n in open_nodes)
        word = "GPU" if spec.gpus == 1 else "GPUs"
        return WaitReason(
            kind="gpus", text=f"waiting for {spec.gpus} free {word} ({busy}/{total} in use)"
        )
    for name in spec.limits:
        cap = resources.limits[name].per_node if name in resources.limits else 0
        if cap and not any(resources.units_on(n.name, name) < cap for n in room):
            return WaitReason(
                kind="licence",
                text=f"every node with a free slot has {cap}/{cap} {name} in use (per node)",
            )
    return _stopping_reason(job)


def _mib(size: int) -> str:
    return f"{size / 1024:g} GiB" if size % 1024 == 0 else f"{size} MiB"


def _stopping_reason(job: Job) -> WaitReason | None:
    """Slots are free: only a chunk whose last attempt may still be alive waits then."""
    tally = tally_of(job)
    for index in tally.ready[:1]:
        chunk = job.chunks.look(index)
        if chunk.state in PENDING and chunk.stopping_node is not None:
            frames = format_frames(list(chunk.frames))
            return WaitReason(
                kind="stopping",
                text=f"frames {frames} wait for {chunk.stopping_node} to confirm "
                f"attempt {chunk.attempt} stopped",
            )
    return None
