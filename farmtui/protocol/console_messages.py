"""The console's link: console -> leader and leader -> console, one union and decoder each."""

from __future__ import annotations

import msgspec

from farmtui.protocol.conventions import PROTOCOL_VERSION
from farmtui.protocol.limits import HistoryLimit
from farmtui.protocol.records import (
    ChunkView,
    EventView,
    FailureView,
    JobDetail,
    JobPatch,
    JobView,
    NodeView,
)
from farmtui.protocol.vocabulary import ChunkAction, FrameState, JobAction, MoveWhere, Role

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
    # The retries, first retry delay and longest delay a job without its own gets (the
    # leader's ``retries``, ``retry_delay``, ``retry_cap``); None from a leader too old to say.
    default_retries: int | None = None
    default_retry_delay: float | None = None
    default_retry_cap: float | None = None


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


console_to_leader = msgspec.json.Decoder(ConsoleToLeader)
leader_to_console = msgspec.json.Decoder(LeaderToConsole)
