"""The words records and messages use: states, kinds, roles, OS names and actions."""

from __future__ import annotations

from typing import Literal

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
# The levels from the least to the most severe: "warn and above" is LEVELS[1:].
LEVELS: tuple[Level, ...] = ("info", "warn", "error")

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
