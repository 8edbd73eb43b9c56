"""The records: what a submitter asks for, and the views of jobs, chunks, nodes and events.

``JobSpec``, ``Timeouts`` and ``JobPatch`` are what people type, so they refuse
unknown fields; the views are what the leader shows, shared by the REST API, the
WebSocket links and the CLI's ``--json`` output.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from farmtui.printable import CONTROL_CHARACTERS
from farmtui.protocol.limits import (
    MAX_LIMITS,
    MAX_NODE_GPUS,
    MAX_PREFETCH,
    MAX_SLOTS,
    ChunkSize,
    Command,
    Count,
    EnvName,
    FrameOffset,
    GpuCount,
    JobName,
    LimitName,
    MebiBytes,
    Multiplier,
    NonEmptyText,
    Percent,
    Priority,
    ProcessText,
    RendererName,
    Seconds,
    Tags,
    UserName,
)
from farmtui.protocol.vocabulary import (
    ChunkKind,
    ChunkState,
    FrameState,
    JobState,
    Level,
    NodeState,
    OnTimeout,
    Role,
)


class Record(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base of plain data records (not tagged)."""


class Timeouts(Record, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """Render time management for one job (Deadline's Timeouts page).

    Durations are seconds; ``None`` means no limit.
    """

    min_render: Seconds | None = None
    max_render: Seconds | None = None
    max_start: Seconds | None = None
    # Apply min/max render time per frame of the chunk rather than per chunk.
    per_frame: bool = False
    on_timeout: OnTimeout = "error"
    # Auto timeout: once auto_min_chunks chunks, or auto_min_percent percent of
    # the chunks, have completed, max_render becomes mean render time * multiplier.
    auto: bool = False
    auto_min_chunks: ChunkSize | None = None
    auto_min_percent: Percent | None = None
    auto_multiplier: Multiplier = 2.0
    # Timeout for the pre-job and post-job scripts.
    script_timeout: Seconds | None = None


class JobSpec(Record, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):
    """What a submitter asks for: the body of ``POST /api/jobs`` and a job file.

    Encoded without the fields left at their defaults: every JobView carries
    its spec, and a console's snapshot of 10,000 jobs is a third the size.
    """

    name: JobName = ""
    frames: NonEmptyText = "1"
    chunk: ChunkSize = 1
    # None: the submitter's default, which the leader stores as a number:
    # DEFAULT_PRIORITY, or ``user_priority_min`` for a user who may not go below it.
    priority: Priority | None = None
    renderer: RendererName = "generic"
    # Relative to the sync root, or an absolute path inside it.
    scene: NonEmptyText | None = None
    # Output pattern relative to the sync root, '#' marks padding.
    output: NonEmptyText | None = None
    # argv template; tokens {start} {end} {step} {frames} {outdir} {output} {scene}.
    argv: list[ProcessText] = []
    # Options the renderer's built command gets where it reads options (blender:
    # ["-E", "CYCLES"]); only for a renderer with a command builder.
    extra_args: list[ProcessText] = []
    scout: NonEmptyText | None = None
    after: list[str] = []
    # Frame by frame: frame N of this job waits for frames N+start .. N+end of each
    # job in ``after`` (those that exist there), not for the whole job.
    after_frames: bool = False
    after_offset: tuple[FrameOffset, FrameOffset] = (0, 0)
    # Machine limit: at most this many chunks at once (0 = no limit).
    max_running: Count = 0
    # Pool: nodes must carry every one of these tags.
    tags: Tags = []
    # GPUs each chunk gets to itself, and the least memory each must have (MiB; 0: any).
    gpus: GpuCount = 0
    gpu_memory: MebiBytes = 0
    # Farm-wide limits (licences): each running chunk holds one unit of each.
    limits: Annotated[list[LimitName], msgspec.Meta(max_length=MAX_LIMITS)] = []
    timeouts: Timeouts = msgspec.field(default_factory=Timeouts)
    retries: Count | None = None
    retry_delay: Seconds | None = None
    retry_cap: Seconds | None = None
    pre_job: Command | None = None
    post_job: Command | None = None
    env: dict[EnvName, ProcessText] = {}
    # Stage output on the node, copy to the sync root when the chunk completes.
    staging: bool = True
    webhook: NonEmptyText | None = None
    owner: UserName | None = None


class JobPatch(Record, kw_only=True, forbid_unknown_fields=True):
    """Settings that can change after submission (``PATCH /api/jobs/{id}``).

    ``None`` leaves a setting as it is; ``timeouts`` replaces them all.
    """

    name: JobName | None = None
    timeouts: Timeouts | None = None
    retries: Count | None = None
    retry_delay: Seconds | None = None
    retry_cap: Seconds | None = None
    max_running: Count | None = None
    tags: Tags | None = None
    webhook: NonEmptyText | None = None


class JobStats(Record, kw_only=True):
    frames_total: int = 0
    frames_done: int = 0
    frames_failed: int = 0
    chunks_total: int = 0
    chunks_done: int = 0
    chunks_running: int = 0
    chunks_failed: int = 0
    mean_render: float | None = None
    p90_render: float | None = None
    # Estimated seconds remaining, from completed chunk times and the slots the job can get.
    etr: float | None = None


ReasonKind = Literal[
    "paused",  # an operator paused it
    "held",  # an operator held it, or its scout frames are done and wait for a look
    "after",  # it waits for other jobs to finish (or for their frames, frame by frame)
    "stage",  # its next chunks wait for an earlier stage (pre-job, scout frames, renders)
    "limit",  # its machine limit is reached
    "licence",  # every unit of a farm limit it needs (a licence) is in use
    "gpus",  # no node it may use has the GPUs it asks for free (or at all)
    "retry",  # its waiting chunks are backing off after errors
    "tags",  # no node carries the tags it asks for
    "offline",  # the nodes it may use are offline or disabled
    "blocked",  # it is blocked on every node it may use
    "slots",  # every slot it may use is busy
    "stopping",  # a previous attempt has not yet been confirmed dead
    "failed",  # chunks ran out of retries: an operator must act
]


class WaitReason(Record, kw_only=True):
    """Why a job's waiting chunks do not run now, from the leader's own rules.

    ``until`` is when it ends by itself (a retry due, a node block over); a
    client shows it in its own clock (``farmtui.reasons.reason_line``).
    """

    kind: ReasonKind
    text: str
    until: float | None = None


class JobView(Record, kw_only=True):
    id: str
    name: str
    owner: str
    state: JobState
    priority: int
    # Rank in dispatch order among active jobs (0 = next to dispatch).
    position: int
    frames: str
    chunk: int
    renderer: str
    archived: bool = False
    reviewed: bool = False
    created: float = 0.0
    started: float | None = None
    finished: float | None = None
    stats: JobStats = msgspec.field(default_factory=JobStats)
    spec: JobSpec = msgspec.field(default_factory=JobSpec)
    # Why waiting chunks do not run now; None while nothing waits for a reason.
    reason: WaitReason | None = None
    # Nodes kept off this job (by its errors or an operator), with when the block ends.
    blocked_nodes: dict[str, float] = {}


class AttemptView(Record, kw_only=True):
    number: int
    node: str
    started: float
    finished: float | None = None
    # "running", "done", "failed", "timeout", "killed", "lost".
    outcome: str = "running"
    exit_status: str | None = None
    reason: str | None = None


class ChunkView(Record, kw_only=True):
    index: int
    kind: ChunkKind = "render"
    frames: list[int] = []
    state: ChunkState = "queued"
    node: str | None = None
    attempt: int = 0
    # Attempts that counted as errors (farm-caused failures do not).
    errors: int = 0
    retry_at: float | None = None
    started: float | None = None
    finished: float | None = None
    attempts: list[AttemptView] = []
    # A previous attempt told to stop on this node, not yet confirmed dead: the
    # chunk starts again only once it is.
    stopping_on: str | None = None
    # The successful attempt's render time as the agent measured it (the renderer's
    # own run, without dispatch and delivery), for estimates and heat maps.
    render_time: float | None = None


class FrameRun(msgspec.Struct, array_like=True):
    """Frames in one state, ``step`` apart: ``[1, 1000000, "unassigned", 1]``,
    ``[1, 1999999, "done", 2]`` (every other frame)."""

    first: int
    last: int
    state: FrameState
    step: int = 1


class JobDetail(Record, kw_only=True):
    """``GET /api/jobs/{id}`` and ``farm show --json``.

    With ``?limit=N&after=I`` (``farm show --chunks N --after I``) it holds one
    page of chunks: those after index ``I``, at most ``N``, and the states of
    their frames; ``frame_runs`` always covers the whole job, compactly.
    """

    job: JobView
    chunks: list[ChunkView]
    # Frame number (as a string, JSON keys are strings) -> frame state.
    frame_states: dict[str, FrameState]
    # Nodes blocked for this job, with the time the block ends.
    blocked_nodes: dict[str, float] = {}
    # Every frame of the job, as runs of evenly spaced frames in one state; False in
    # ``frame_runs_complete`` when a job too ragged for runs was cut short.
    frame_runs: list[FrameRun] = []
    frame_runs_complete: bool = True
    # The job's chunks in all, and the ``after`` of the next page (None: no more).
    chunk_count: int = 0
    next_after: int | None = None


class ChunkRef(Record, kw_only=True):
    job_id: str
    chunk: int
    attempt: int


class RunningRef(ChunkRef, kw_only=True, omit_defaults=True):
    """An attempt an agent still runs, as its hello lists it."""

    # How long its renderer has run, by the agent's clock; None: it waits for a slot.
    # A leader started again goes on timing the render from there (``server.prefetch``):
    # one that has run PREFETCH_BELOW seconds is long, whatever the leader saw of it.
    rendered_for: Seconds | None = None


# The attempts an agent can hold at once, whatever its --slots and --prefetch were.
HeldRefs = Annotated[list[ChunkRef], msgspec.Meta(max_length=MAX_SLOTS + MAX_PREFETCH)]
RunningRefs = Annotated[list[RunningRef], msgspec.Meta(max_length=MAX_SLOTS + MAX_PREFETCH)]
# The kept outputs (failed copies) one message lists: a hello, then ``KeptStaged`` pages.
MAX_KEPT_LISTED = 1024
KeptRefs = Annotated[list[ChunkRef], msgspec.Meta(max_length=MAX_KEPT_LISTED)]


class GpuInfo(Record, kw_only=True):
    """One GPU of a node, as the agent found it (``nvidia-smi``) or was told (``--gpus``)."""

    index: Annotated[int, msgspec.Meta(ge=0, lt=MAX_NODE_GPUS)]
    name: Annotated[str, msgspec.Meta(max_length=128, pattern=f"^[^{CONTROL_CHARACTERS}]*\\Z")] = ""
    # MiB; 0 when not known (given by hand without a size).
    memory: MebiBytes = 0


class NodeView(Record, kw_only=True):
    name: str
    state: NodeState
    slots: int
    running: list[ChunkRef] = []
    gpus: list[GpuInfo] = []
    # Indices of the GPUs held by the chunks running here.
    gpus_busy: list[int] = []
    # Only jobs that ask for GPUs run here.
    gpu_only: bool = False
    cpu_count: int = 0
    memory_total: int = 0
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    tags: list[str] = []
    last_seen: float = 0.0
    version: str = ""


class LimitView(Record, kw_only=True):
    """A farm-wide limit (a licence pool): how many units exist and how many are held."""

    name: str
    units: int
    in_use: int = 0
    # At most this many units on one node (0: no such cap).
    per_node: int = 0
    # Jobs that ask for it and have chunks waiting.
    waiting_jobs: int = 0


class TokenView(Record, kw_only=True):
    """A token as ``GET /api/tokens`` lists it: never its secret, nor its whole hash."""

    # The first digits of its SHA-256: what ``farm token revoke`` takes.
    id: str
    name: str
    role: Role
    created: float
    # The leader's own admin.token or agent.token: made again from its file at each start,
    # so never revoked (replace the file instead).
    leaders: bool = False


class LimitSpec(Record, kw_only=True, forbid_unknown_fields=True):
    """The body of ``PUT /api/limits/{name}``."""

    units: Count
    per_node: Count = 0


class EventView(Record, kw_only=True):
    """One line of a job's event log, or a farm-wide event."""

    time: float
    level: Level
    text: str
    job_id: str | None = None
    actor: str | None = None


class FailureView(Record, kw_only=True):
    """One failed or timed-out attempt, for the failures view and ``farm failures``."""

    job_id: str
    job_name: str
    chunk: int
    frames: str
    node: str
    attempt: int
    finished: float
    # "failed" or "timeout".
    outcome: str
    # Why it ended (exit status, which timeout), then the log's last error line.
    reason: str = ""
    error_line: str = ""
    # The chunk now: "waiting-retry", "failed", "assigned" (running again), "done" ...
    chunk_state: ChunkState = "failed"


class ApiError(Record, kw_only=True):
    error: str
