"""The agent's link: agent -> leader and leader -> agent, one union and decoder each."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from farmtui.protocol.conventions import PROTOCOL_VERSION
from farmtui.protocol.limits import (
    MAX_NODE_GPUS,
    MAX_PREFETCH,
    SlotCount,
    Tags,
    Timestamp,
    TokenNames,
    Version,
)
from farmtui.protocol.records import ChunkRef, GpuInfo, HeldRefs, KeptRefs, Record, RunningRefs
from farmtui.protocol.vocabulary import ChunkKind, OnTimeout

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
    running: RunningRefs = []
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
    # Staged output it keeps from attempts whose copy to the sync root failed: the
    # leader has it discard those no chunk waits for (a DiscardStaged sent while the
    # node was away is lost).
    kept: KeptRefs = []
    # The argv tokens it expands; none (an agent from before this field): only the
    # first ones (``farmtui.renderers.FIRST_TOKENS``). A chunk whose command uses
    # another would fail here on every attempt ("unknown token").
    tokens: TokenNames = []


class Heartbeat(AgentMessage, tag="heartbeat", kw_only=True):
    cpu_percent: float = 0.0
    memory_percent: float = 0.0
    # Numbered so that ``LeaseRenewed`` can say which one it answers: the
    # agent's lease runs from the moment it *sent* that heartbeat.
    beat: int = 0
    # The agent is stopping (SIGTERM, Ctrl-C): dispatch nothing more to it. It then
    # kills what it runs and reports each chunk before it goes, so they move at once.
    stopping: bool = False


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


class KeptStaged(AgentMessage, tag="kept_staged", kw_only=True):
    """More of the staged output the node keeps than its hello could list
    (``AgentHello.kept``), a page a message after the Welcome, to a leader that
    reads them (``Welcome.kept_pages``): none of it is in the hello's lists."""

    kept: KeptRefs


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
    | KeptStaged
)


# --------------------------------------------------------------------------
# Leader -> agent


class LeaderToAgentMessage(msgspec.Struct, tag_field="type", kw_only=True):
    pass


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
    # The leader reads ``KeptStaged``: the agent lists there what its hello could not.
    kept_pages: bool = False


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


agent_to_leader = msgspec.json.Decoder(AgentToLeader)
leader_to_agent = msgspec.json.Decoder(LeaderToAgent)
agent_to_leader_batch = msgspec.json.Decoder(list[AgentToLeader])
leader_to_agent_batch = msgspec.json.Decoder(list[LeaderToAgent])
