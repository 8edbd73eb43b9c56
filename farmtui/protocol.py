"""Every message and record that crosses a wire or lands on disk.

One tagged union per direction (agent -> leader, leader -> agent,
console -> leader, leader -> console), each with a module-level typed decoder.
Records (``JobSpec``, ``JobView`` ...) are shared by the REST API, the
WebSocket links and the CLI's ``--json`` output, so a script sees the same
shape everywhere.

Schema evolution: every field added later gets a default, and unknown fields
are ignored on decode, so an older agent keeps talking to a newer leader.
The exceptions are what people type: ``JobSpec``, ``Timeouts`` and ``JobPatch``
refuse unknown fields, so a typo (``"prority": 10``) is an error instead of a
silent default. Their fields carry their limits (``msgspec.Meta``), so every
entry point (flags, job files, POST, PATCH, the console) checks a value the
same way; ``farmtui.jobfields`` adds the rules between fields. (A ``JobView``
carries its spec, so a field added to ``JobSpec`` reaches older consoles and
clients as an unknown field they refuse: add one together with a protocol bump.)
The first message on each link carries ``PROTOCOL_VERSION``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePath
from typing import Annotated, Literal, TypeVar

import msgspec
import msgspec.inspect

from farmtui.printable import CONTROL_CHARACTERS

PROTOCOL_VERSION = 1
# Set on a leader's refusals when it is a standby (issue 14): a client with several
# leader URLs tries the next one. ``GET /healthz`` says the same in its body.
ROLE_HEADER = "X-Farm-Role"
# How a standby's one-line refusal begins (clients recognise it without the header).
STANDBY_REFUSAL = "this leader is a standby"

# A message bigger than this is refused before it is decoded.
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
# The longest frame the leader reads from anyone: an agent's hello, the largest of its
# peers' messages (every GPU and tag a node may list). Longer ones close the link before
# they are read, so a peer cannot make the leader read megabytes it would then refuse.
MAX_FRAME_READ_BYTES = 1024 * 1024

OnTimeout = Literal["notify", "requeue", "error", "fail", "complete"]
JobState = Literal["queued", "rendering", "paused", "holding", "done", "failed", "cancelled"]
ChunkState = Literal[
    "queued",  # waiting for a slot
    "assigned",  # dispatched; the agent has it (waiting to start or rendering)
    "waiting-retry",  # failed, backing off until retry_at
    "preempted",  # its node vanished; requeued without using a retry (shown until redispatch)
    "done",
    "failed",  # out of retries, timed out with on_timeout=fail, or set failed by hand
    "held",
    "excluded",
    "cancelled",
]
FrameState = Literal["unassigned", "assigned", "staged", "done", "failed", "held", "excluded"]
ChunkKind = Literal["render", "pre", "post"]
Role = Literal["viewer", "user", "admin", "agent"]
NodeState = Literal["online", "offline", "disabled"]
# A node's OS as path mapping names it (``AgentHello.os``, ``[[path_map]]`` to.<os>).
OsName = Literal["linux", "windows", "darwin"]


def platform_os(platform: str) -> OsName:
    """The OS name for a ``sys.platform`` value (anything not Windows or macOS is linux)."""
    if platform.startswith(("win", "cygwin", "msys")):
        return "windows"
    return "darwin" if platform == "darwin" else "linux"


Level = Literal["info", "warn", "error"]

# Job actions, as named on the CLI, the REST API and the console link.
JobAction = Literal[
    "pause",
    "resume",
    "retry-failed",
    "requeue",
    "archive",
    "unarchive",
    "cancel",
    "delete",
    "hold",
    "unhold",
    "complete",
    "review",
    "unreview",
    "retry-sync",
]
ChunkAction = Literal["retry", "hold", "set-failed", "set-done", "exclude"]
MoveWhere = Literal["up", "down", "top", "bottom"]


class Record(msgspec.Struct, kw_only=True, omit_defaults=False):
    """Base of plain data records (not tagged)."""


# --- the limits of a job's fields ---------------------------------------------------
# One definition each, used by JobSpec, Timeouts and JobPatch alike.

MAX_NAME_LENGTH = 200
# Longest duration a job may set (a year): keeps infinities out of the records.
MAX_SECONDS = 365 * 86400.0

# Printable text of at most MAX_NAME_LENGTH characters.
JobName = Annotated[
    str, msgspec.Meta(max_length=MAX_NAME_LENGTH, pattern=f"^[^{CONTROL_CHARACTERS}]*\\Z")
]
RendererName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\Z")
]
Priority = Annotated[int, msgspec.Meta(ge=0, le=100)]
# A chunk of more frames than a job may have is a typo (the job's limit, farmtui.frames).
ChunkSize = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
# Retries, machine limits: bounded, so that a typo cannot store an absurd number.
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
# A duration in seconds; 0 is allowed here, farmtui.jobfields says where it means nothing.
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
# A node's wall clock as it reports a render's times (0: not known). Bounded so that what
# the leader writes from it (a chunk log's times, render times) is a date: 2100-01-01.
MAX_TIMESTAMP = 4_102_444_800.0
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMESTAMP)]
Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]
# How many records a history read (failures, events) may ask for at once.
MAX_HISTORY = 5000
HistoryLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY)]
Multiplier = Annotated[float, msgspec.Meta(gt=0, le=1000)]
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]
# A word of a command or an environment value: the system cannot pass a NUL byte on,
# so every attempt would fail on every node ("embedded null byte").
ProcessText = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*\Z")]
# A command as an argv list: never empty.
Command = Annotated[list[ProcessText], msgspec.Meta(min_length=1)]
EnvName = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^=\x00]+\Z")]
# Tags (pools) and version strings: short printable text, shown by every front end.
Label = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=f"^[^{CONTROL_CHARACTERS}]+\\Z")
]
# A job's pool or a node's tags: a handful; thousands are a script gone wrong.
MAX_TAGS = 64
Tags = Annotated[list[Label], msgspec.Meta(max_length=MAX_TAGS)]
Version = Annotated[str, msgspec.Meta(max_length=64, pattern=f"^[^{CONTROL_CHARACTERS}]*\\Z")]
# Who owns a job: a token's name (the leader's token-name rule is this pattern).
USER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
UserName = Annotated[str, msgspec.Meta(pattern=f"^{USER_NAME_PATTERN}\\Z")]
# A farm-wide limit's name (a licence: "nuke", "houdini-engine"): a word, as typed in job files.
LIMIT_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
LimitName = Annotated[str, msgspec.Meta(pattern=f"^{LIMIT_NAME_PATTERN}\\Z")]
# GPUs a chunk asks for: more than any machine holds is a typo.
MAX_GPUS = 64
# Chunks an agent runs at once (``--slots``; 0: a node that takes none) and may
# hold ahead of them (``--prefetch``). A bound keeps one hello from taking the queue.
MAX_SLOTS = 256
SlotCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_SLOTS)]
MAX_PREFETCH = 64
# GPUs a node may list, numbered 0 .. MAX_NODE_GPUS - 1.
MAX_NODE_GPUS = 1024
GpuCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_GPUS)]
# GPU memory in MiB (what nvidia-smi reports): up to 16 TiB.
MebiBytes = Annotated[int, msgspec.Meta(ge=0, le=16 * 1024 * 1024)]
# How far a frame dependency reaches: frame N waits for upstream frames N+start .. N+end,
# at most MAX_FRAME_WINDOW + 1 of them (a temporal filter reads a few neighbours; the
# checks of a chunk grow with its window).
MAX_FRAME_OFFSET = 10_000
MAX_FRAME_WINDOW = 100
FrameOffset = Annotated[int, msgspec.Meta(ge=-MAX_FRAME_OFFSET, le=MAX_FRAME_OFFSET)]
# A job names a handful of limits; a typo or a script gone wrong is refused.
MAX_LIMITS = 32


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
    priority: Priority = 50
    renderer: RendererName = "generic"
    # Relative to the sync root, or an absolute path inside it.
    scene: NonEmptyText | None = None
    # Output pattern relative to the sync root, '#' marks padding.
    output: NonEmptyText | None = None
    # argv template; tokens {start} {end} {step} {frames} {outdir} {output} {scene}.
    argv: list[ProcessText] = []
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


# The attempts an agent can hold at once, whatever its --slots and --prefetch were.
HeldRefs = Annotated[list[ChunkRef], msgspec.Meta(max_length=MAX_SLOTS + MAX_PREFETCH)]


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


# --------------------------------------------------------------------------
# Agent -> leader


class AgentMessage(msgspec.Struct, tag_field="type", kw_only=True):
    # Messages that must not be lost carry a sequence number; the agent keeps
    # them in its outbox until the leader acknowledges them with ``Ack``.
    seq: int = 0


class AgentHello(AgentMessage, tag="hello", kw_only=True):
    protocol: int = PROTOCOL_VERSION
    name: str
    slots: SlotCount
    cpu_count: int = 0
    memory_total: int = 0
    tags: Tags = []
    version: Version = ""
    # Chunks this agent is still running (after a reconnect): never more than it can hold.
    running: HeldRefs = []
    # Attempts that ended here but whose ChunkFinished the leader has not yet
    # acknowledged: it follows from the outbox, so they are not lost.
    finished: HeldRefs = []
    # The agent's stable id (from its state folder): which agent holds a node name.
    agent_id: str = ""
    # It reads batches (``encode_batch``): a leader sends it several messages a frame.
    batches: bool = False
    # Its OS ("linux", "windows", "darwin"), for path mapping; "" (an old agent):
    # the leader's own.
    os: str = ""
    gpus: Annotated[list[GpuInfo], msgspec.Meta(max_length=MAX_NODE_GPUS)] = []
    # Keep jobs that ask for no GPU off this node (from the agent's --gpu-only).
    gpu_only: bool = False
    # Chunks of short-chunk jobs it takes ahead of a free slot (the agent's --prefetch).
    prefetch: Annotated[int, msgspec.Meta(ge=0, le=MAX_PREFETCH)] = 0


class Heartbeat(AgentMessage, tag="heartbeat", kw_only=True):
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    # Numbered so that ``LeaseRenewed`` can say which one it answers: the
    # agent's lease runs from the moment it *sent* that heartbeat.
    beat: int = 0


class ChunkStarted(AgentMessage, tag="chunk_started", kw_only=True):
    job_id: str
    chunk: int
    attempt: int
    pid: int
    command: list[str] = []
    # When the renderer started, on the node's clock as ChunkFinished's times are (0: the
    # leader's time of hearing). A chunk queued on a shim may start while its agent is
    # frozen, long before the leader hears of it.
    started: Timestamp = 0.0


class ChunkOutput(AgentMessage, tag="chunk_output", kw_only=True):
    """A batch of raw stdout/stderr lines. The first is the renderer's first sign of life."""

    job_id: str
    chunk: int
    attempt: int
    lines: list[str]


class ChunkProgress(AgentMessage, tag="chunk_progress", kw_only=True):
    job_id: str
    chunk: int
    attempt: int
    frame: int | None = None
    # 0..1 for the chunk as a whole.
    fraction: float = 0.0


class FramesWritten(AgentMessage, tag="frames_written", kw_only=True):
    """Frames whose files now exist: in staging (staged=True) or in the sync root."""

    job_id: str
    chunk: int
    attempt: int
    frames: list[int]
    staged: bool


class ChunkTimedOut(AgentMessage, tag="chunk_timed_out", kw_only=True):
    """A timeout fired with on_timeout=notify: the chunk keeps running."""

    job_id: str
    chunk: int
    attempt: int
    kind: Literal["min_render", "max_render", "max_start"]
    elapsed: float


class ChunkFinished(AgentMessage, tag="chunk_finished", kw_only=True):
    job_id: str
    chunk: int
    attempt: int
    # "done": exit 0 and every expected file present (and copied to the sync root).
    # "failed": non-zero exit, signal, missing outputs or a copy error.
    # "timeout": a timeout fired (kind in timeout_kind); the leader applies on_timeout.
    # "killed": stopped on the leader's request (cancel, kill).
    outcome: Literal["done", "failed", "timeout", "killed"]
    exit_status: str | None = None  # "0", "1", "SIGKILL" ...
    reason: str = ""
    timeout_kind: Literal["min_render", "max_render", "max_start"] | None = None
    started: Timestamp = 0.0
    finished: Timestamp = 0.0
    missing: list[int] = []
    # The chunk rendered but its copy to the sync root failed; the node keeps
    # the staged files for a retry sync.
    kept_staged: bool = False


class AgentLog(AgentMessage, tag="agent_log", kw_only=True):
    """Lines of the agent's own plain-text log, for the console's peer view."""

    lines: list[str]


AgentToLeader = (
    AgentHello
    | Heartbeat
    | ChunkStarted
    | ChunkOutput
    | ChunkProgress
    | FramesWritten
    | ChunkTimedOut
    | ChunkFinished
    | AgentLog
)


# --------------------------------------------------------------------------
# Leader -> agent


class LeaderToAgentMessage(msgspec.Struct, tag_field="type", kw_only=True):
    pass


# The HTTP header of a submit's idempotency key: a retry with it finds the job it made.
IDEMPOTENCY_KEY = "Idempotency-Key"

# The file in the sync root that holds its id (``Welcome.root_id``; ``server.sync_root``).
ROOT_ID_FILE = ".farmtui-root"
# What only the leader writes in the sync root (first path parts, compared
# case-folded for case-insensitive file systems): the job logs, the node logs
# and the root's id. No upload and no job output may go there.
LEADER_PATHS = ("jobs", "nodes", ROOT_ID_FILE)


def leader_owned(relative: PurePath) -> bool:
    """Whether a path relative to the sync root is the root itself or the leader's own."""
    return not relative.parts or relative.parts[0].casefold() in LEADER_PATHS


class Welcome(LeaderToAgentMessage, tag="welcome", kw_only=True):
    protocol: int = PROTOCOL_VERSION
    node: str
    heartbeat_interval: float = 2.0
    # Where the agent may write directly; None when the sync root is not shared
    # with this node and output must be uploaded over HTTP.
    sync_root: str | None = None
    # Contents of <sync_root>/.farmtui-root: an agent that reads the same id there
    # shares the leader's storage; otherwise it uploads with PUT /api/files/{path}.
    root_id: str = ""
    # How long a renewal of the agent's lease lasts, counted from the moment the
    # agent sent the heartbeat (or hello) it answers. Each chunk's supervisor
    # kills its tree when the lease runs out; the leader declares a silent node
    # lost only after node_timeout, which is longer by a margin, so the tree is
    # dead before its chunk may run anywhere else.
    lease: float = 9.0
    # The leader reads batches (``encode_batch``): the agent may send several a frame.
    batches: bool = False
    # Chunks from AgentHello.running the leader no longer wants: kill them.
    stale: list[ChunkRef] = []


class ChunkTimeouts(Record, kw_only=True):
    """Timeouts as the agent enforces them, already resolved for this chunk."""

    min_render: float | None = None
    max_render: float | None = None
    max_start: float | None = None
    on_timeout: OnTimeout = "error"


class AssignChunk(LeaderToAgentMessage, tag="assign", kw_only=True):
    job_id: str
    chunk: int
    attempt: int
    kind: ChunkKind = "render"
    renderer: str
    argv: list[str]
    frames: list[int]
    # Expected output files, relative to the sync root (empty: none expected).
    outputs: list[str] = []
    # Folder for output relative to the sync root ("" when none).
    outdir: str = ""
    staging: bool = True
    env: dict[str, str] = {}
    timeouts: ChunkTimeouts = msgspec.field(default_factory=ChunkTimeouts)
    # Chunk log path relative to the sync root.
    log_path: str = ""
    # Output pattern relative to the sync root ('#' padding), for the {output}
    # token; when empty the agent infers it from outputs[0].
    output: str = ""
    # Scene file for the {scene} token.
    scene: str = ""
    # Not a render: copy the staged output this node kept from that attempt
    # (retry sync) into the sync root under this attempt's fence.
    sync_from: int = 0
    # The node's GPUs this chunk has to itself (CUDA_VISIBLE_DEVICES); None: the
    # node has no GPU this leader knows of, leave the environment alone.
    gpus: list[int] | None = None


class KillChunk(LeaderToAgentMessage, tag="kill", kw_only=True):
    job_id: str
    chunk: int
    attempt: int
    reason: str = ""
    # Only if its renderer has not started (a chunk held ahead of a slot): one that
    # runs goes on. The chunk's job was paused, its node disabled, its settings changed.
    waiting_only: bool = False


class UpdateTimeouts(LeaderToAgentMessage, tag="update_timeouts", kw_only=True):
    """The auto timeout (or an operator) changed a running chunk's limits."""

    job_id: str
    chunk: int
    attempt: int
    timeouts: ChunkTimeouts


class DiscardStaged(LeaderToAgentMessage, tag="discard_staged", kw_only=True):
    """Nobody will copy the staged output kept from this attempt: delete it."""

    job_id: str
    chunk: int
    attempt: int


class LeaseRenewed(LeaderToAgentMessage, tag="lease_renewed", kw_only=True):
    """The leader heard heartbeat ``beat``: the lease runs from when it was sent."""

    beat: int


class Ack(LeaderToAgentMessage, tag="ack", kw_only=True):
    """Everything up to and including ``seq`` is committed on the leader."""

    seq: int


class Refused(LeaderToAgentMessage, tag="refused", kw_only=True):
    error: str
    # True when it may pass (the leader's disk is full, the node name is still
    # held by another agent): the agent tries again later instead of stopping.
    retry: bool = False


LeaderToAgent = (
    Welcome
    | AssignChunk
    | KillChunk
    | UpdateTimeouts
    | DiscardStaged
    | LeaseRenewed
    | Ack
    | Refused
)


# --------------------------------------------------------------------------
# Console -> leader


class ConsoleMessage(msgspec.Struct, tag_field="type", kw_only=True):
    # Echoed in the Reply so the console can match answers to requests.
    request_id: int = 0


class ConsoleHello(ConsoleMessage, tag="hello", kw_only=True):
    protocol: int = PROTOCOL_VERSION
    include_archived: bool = False


class WatchJob(ConsoleMessage, tag="watch_job", kw_only=True):
    """Stream this job's chunks and frame states (None: stop)."""

    job_id: str | None


class RunJobAction(ConsoleMessage, tag="job_action", kw_only=True):
    action: JobAction
    job_ids: list[str]


class RunChunkAction(ConsoleMessage, tag="chunk_action", kw_only=True):
    action: ChunkAction
    job_id: str
    chunks: list[int]


class SetPriority(ConsoleMessage, tag="set_priority", kw_only=True):
    job_id: str
    priority: int


class MoveJob(ConsoleMessage, tag="move_job", kw_only=True):
    job_id: str
    where: MoveWhere | None = None
    # Drag and drop: land directly before this job (same priority group only).
    before: str | None = None
    # ... or at the end of the group when before is None and where is None.


class PatchJob(ConsoleMessage, tag="patch_job", kw_only=True):
    job_id: str
    patch: JobPatch


class SetNodeEnabled(ConsoleMessage, tag="set_node_enabled", kw_only=True):
    node: str
    enabled: bool


class FetchTaskOutput(ConsoleMessage, tag="fetch_task_output", kw_only=True):
    """Send the chunk attempt's output, then follow it (follow=False: one-off)."""

    job_id: str
    chunk: int
    attempt: int | None = None  # None: the latest
    follow: bool = True


class FetchNodeLog(ConsoleMessage, tag="fetch_node_log", kw_only=True):
    node: str
    tail: int = 500


class ShowArchived(ConsoleMessage, tag="show_archived", kw_only=True):
    enabled: bool


class BlockNode(ConsoleMessage, tag="block_node", kw_only=True):
    """Keep a node off one job until unblocked (blocked=False lets it back)."""

    job_id: str
    node: str
    blocked: bool = True


class FetchFailures(ConsoleMessage, tag="fetch_failures", kw_only=True):
    """The newest failed attempts across the farm (answered with ``Failures``)."""

    limit: HistoryLimit = 200


class FetchEvents(ConsoleMessage, tag="fetch_events", kw_only=True):
    """A job's event log (``job_id``), or the farm's latest events (None): ``EventsFetched``."""

    job_id: str | None = None
    limit: HistoryLimit = 500


ConsoleToLeader = (
    ConsoleHello
    | WatchJob
    | RunJobAction
    | RunChunkAction
    | SetPriority
    | MoveJob
    | PatchJob
    | SetNodeEnabled
    | FetchTaskOutput
    | FetchNodeLog
    | ShowArchived
    | FetchFailures
    | FetchEvents
    | BlockNode
)


# A console's messages are short (an id, a setting or two): a longer frame is refused
# unread, since decoding megabytes of it would hold the leader's loop.
MAX_CONSOLE_MESSAGE_BYTES = 64 * 1024


# --------------------------------------------------------------------------
# Leader -> console


class LeaderToConsoleMessage(msgspec.Struct, tag_field="type", kw_only=True):
    pass


class Snapshot(LeaderToConsoleMessage, tag="snapshot", kw_only=True):
    """First message after hello: everything, so the console starts consistent."""

    protocol: int = PROTOCOL_VERSION
    user: str
    role: Role
    jobs: list[JobView]
    nodes: list[NodeView]


class JobsChanged(LeaderToConsoleMessage, tag="jobs_changed", kw_only=True):
    """Jobs whose view changed (state, stats, priority, position ...)."""

    jobs: list[JobView]


class JobsRemoved(LeaderToConsoleMessage, tag="jobs_removed", kw_only=True):
    job_ids: list[str]


class NodesChanged(LeaderToConsoleMessage, tag="nodes_changed", kw_only=True):
    nodes: list[NodeView]


class JobWatched(LeaderToConsoleMessage, tag="job_watched", kw_only=True):
    detail: JobDetail


class ChunksChanged(LeaderToConsoleMessage, tag="chunks_changed", kw_only=True):
    job_id: str
    chunks: list[ChunkView]


class FramesChanged(LeaderToConsoleMessage, tag="frames_changed", kw_only=True):
    job_id: str
    frames: list[int]
    state: FrameState


class TaskOutput(LeaderToConsoleMessage, tag="task_output", kw_only=True):
    job_id: str
    chunk: int
    attempt: int
    lines: list[str]
    # False: these lines replace what is shown; True: append.
    append: bool = False


class NodeLog(LeaderToConsoleMessage, tag="node_log", kw_only=True):
    node: str
    lines: list[str]


class Event(LeaderToConsoleMessage, tag="event", kw_only=True):
    event: EventView


class Failures(LeaderToConsoleMessage, tag="failures", kw_only=True):
    """Newest first."""

    failures: list[FailureView]


class EventsFetched(LeaderToConsoleMessage, tag="events", kw_only=True):
    """Oldest first; ``job_id`` None for the farm's events."""

    job_id: str | None = None
    events: list[EventView]


class Reply(LeaderToConsoleMessage, tag="reply", kw_only=True):
    request_id: int
    ok: bool
    error: str | None = None


LeaderToConsole = (
    Snapshot
    | JobsChanged
    | JobsRemoved
    | NodesChanged
    | JobWatched
    | ChunksChanged
    | FramesChanged
    | TaskOutput
    | NodeLog
    | Event
    | Failures
    | EventsFetched
    | Reply
)


agent_to_leader = msgspec.json.Decoder(AgentToLeader)
leader_to_agent = msgspec.json.Decoder(LeaderToAgent)
agent_to_leader_batch = msgspec.json.Decoder(list[AgentToLeader])
leader_to_agent_batch = msgspec.json.Decoder(list[LeaderToAgent])
console_to_leader = msgspec.json.Decoder(ConsoleToLeader)
leader_to_console = msgspec.json.Decoder(LeaderToConsole)
encoder = msgspec.json.Encoder()


def encode(message: msgspec.Struct) -> bytes:
    return encoder.encode(message)


class ProtocolError(ValueError):
    """A message that is malformed, of an unknown type or too big."""


T = TypeVar("T")


# Messages ready at the same moment travel as one JSON array, a batch: one
# frame, one system call and one parse instead of one each (at thousands of
# chunks a second, most of a link's cost was per frame). Only between peers
# that said they read batches (``AgentHello.batches``, ``Welcome.batches``);
# a batch stays within MAX_BATCH_BYTES, far below the frame limit.
MAX_BATCH_BYTES = 256 * 1024
MAX_BATCH_MESSAGES = 1000
# The longest frame a batch makes: its messages and commas within MAX_BATCH_BYTES,
# and its brackets. A longer one is refused unread: decoding 3.8 MB of heartbeats
# only to count them took the leader's loop tens of milliseconds a frame.
MAX_BATCH_FRAME_BYTES = MAX_BATCH_BYTES + 2


def encode_batch(messages: Sequence[bytes]) -> bytes:
    """Encoded messages as one frame: the message itself when there is one."""
    if len(messages) == 1:
        return messages[0]
    return b"[" + b",".join(messages) + b"]"


def decode_batch(
    one: msgspec.json.Decoder[T], many: msgspec.json.Decoder[list[T]], data: bytes | str
) -> list[T]:
    """The messages of a frame (a batch or one message); ProtocolError for the whole frame."""
    head = data[:1]
    if head in (b"[", "["):
        # A str's length in characters is at most its length in UTF-8 bytes.
        if len(data) > MAX_BATCH_FRAME_BYTES:
            raise ProtocolError(f"a batch of {len(data)} bytes is over {MAX_BATCH_FRAME_BYTES}")
        messages = decode_checked(many, data)
        if len(messages) > MAX_BATCH_MESSAGES:
            raise ProtocolError(f"a batch of {len(messages)} messages is over {MAX_BATCH_MESSAGES}")
        return messages
    return [decode_checked(one, data)]


# Larger messages are looked over (``over_long_list``) before they are decoded.
LOOK_OVER_BYTES = 64 * 1024


def over_long_list(data: bytes | str, kind: type[msgspec.Struct]) -> str | None:
    """msgspec's own refusal of a top-level list of ``kind`` longer than its limit, or None.

    msgspec checks a list's ``max_length`` only once it has decoded every item, and
    checks each item's pattern as it goes: a megabyte of one-letter tags (250,000 of
    them, against 64 allowed) held the leader's loop 80 ms before it was refused. A
    struct of those lists alone, their items undecoded (``msgspec.Raw``), every
    other field skipped, counts them first in a sixth of that; it sees every copy of
    a field sent twice, as the typed decode does.
    """
    try:
        _counting(kind).decode(data)
    except msgspec.ValidationError as exc:
        problem = str(exc)
        return problem if problem.startswith("Expected `array` of length <=") else None
    except (msgspec.DecodeError, RecursionError):
        pass  # the typed decode says what is wrong with it
    return None


def _counting(kind: type[msgspec.Struct]) -> msgspec.json.Decoder[msgspec.Struct]:
    """A decoder of ``kind``'s top-level lists that have a ``max_length``, items unread."""
    decoder = _COUNTING.get(kind)
    if decoder is None:
        info = msgspec.inspect.type_info(kind)
        assert isinstance(info, msgspec.inspect.StructType)
        fields: list[tuple[str, object, object]] = []
        for field in info.fields:
            kinds = (
                field.type.types
                if isinstance(field.type, msgspec.inspect.UnionType)
                else (field.type,)
            )
            for each in kinds:
                if isinstance(each, msgspec.inspect.ListType) and each.max_length is not None:
                    meta = msgspec.Meta(max_length=each.max_length)
                    unread = Annotated[list[msgspec.Raw], meta] | None
                    default = msgspec.field(default=None, name=field.encode_name)
                    fields.append((field.name, unread, default))
        counted = msgspec.defstruct(f"{kind.__name__}Lists", fields, kw_only=True)
        decoder = _COUNTING[kind] = msgspec.json.Decoder(counted)
    return decoder


_COUNTING: dict[type[msgspec.Struct], msgspec.json.Decoder[msgspec.Struct]] = {}


def decode_checked(decoder: msgspec.json.Decoder[T], data: bytes | str) -> T:
    """Decode one message, turning every failure into a one-line ProtocolError."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes is over the {MAX_MESSAGE_BYTES} limit")
    try:
        return decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    except RecursionError:
        # msgspec walks what it skips (an unknown field's value) on the C stack too.
        raise ProtocolError("malformed message: nested too deeply") from None
