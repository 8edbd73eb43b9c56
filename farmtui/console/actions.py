"""Every operator action in one table: its wire name, label, default key and binding id.

The bindings, the action strip, the context menus and the command palette are
all generated from these tuples, so an action cannot exist in one place and be
missing from another. Which of them ask first, and what they cost, is
``confirmations.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from farmtui.protocol import ChunkAction, JobAction, MoveWhere


@dataclass(frozen=True)
class JobActionSpec:
    """A job action as the console offers it."""

    action: JobAction
    label: str
    key: str
    description: str

    @property
    def binding_id(self) -> str:
        return f"jobs.{self.action}"


@dataclass(frozen=True)
class ChunkActionSpec:
    """A chunk action on the watched job's chunk table."""

    action: ChunkAction
    label: str
    key: str
    description: str

    @property
    def binding_id(self) -> str:
        return f"chunks.{self.action}"


JOB_ACTIONS: tuple[JobActionSpec, ...] = (
    JobActionSpec("pause", "Pause", "p", "Pause: running chunks finish, nothing new starts"),
    JobActionSpec("resume", "Resume", "r", "Resume dispatch"),
    JobActionSpec("retry-failed", "Retry failed", "f", "Re-queue failed chunks"),
    JobActionSpec("requeue", "Requeue", "q", "Re-queue the whole job, done frames too"),
    JobActionSpec("archive", "Archive", "a", "Hide from the active list (records kept)"),
    JobActionSpec("cancel", "Cancel", "c", "Cancel: kill every in-flight chunk on every node, now"),
    JobActionSpec("delete", "Delete", "delete", "Delete the job, its records and its logs"),
    JobActionSpec("hold", "Hold", "h", "Hold: dispatch nothing until un-held"),
    JobActionSpec("unhold", "Un-hold", "u", "Un-hold (also releases scout holds)"),
    JobActionSpec("complete", "Complete", "x", "Mark the job done by hand"),
    JobActionSpec("review", "Reviewed", "v", "Label the job as reviewed"),
    JobActionSpec("retry-sync", "Retry sync", "y", "Copy staged output again, retry failed"),
)

JOB_ACTION_BY_NAME: dict[str, JobActionSpec] = {spec.action: spec for spec in JOB_ACTIONS}
# Context-menu-only extras: undo the flags.
EXTRA_JOB_ACTIONS: tuple[JobActionSpec, ...] = (
    JobActionSpec("unarchive", "Unarchive", "", "Bring an archived job back"),
    JobActionSpec("unreview", "Not reviewed", "", "Remove the reviewed label"),
)
for _spec in EXTRA_JOB_ACTIONS:
    JOB_ACTION_BY_NAME[_spec.action] = _spec

# Chunk actions are keys of the chunk action mode (``k``, then one of these), so
# ``r`` or ``h`` mean one thing everywhere: resume and hold the job.
CHUNK_ACTIONS: tuple[ChunkActionSpec, ...] = (
    ChunkActionSpec("retry", "Retry", "r", "Retry the chunk"),
    ChunkActionSpec("hold", "Hold", "h", "Hold the chunk"),
    ChunkActionSpec("set-failed", "Set failed", "F", "Mark the chunk failed"),
    ChunkActionSpec("set-done", "Set done", "d", "Mark the chunk done"),
    ChunkActionSpec("exclude", "Exclude", "e", "Exclude: never rendered, kept for audit"),
)
CHUNK_ACTION_BY_NAME: dict[str, ChunkActionSpec] = {spec.action: spec for spec in CHUNK_ACTIONS}


# -- typed commands ----------------------------------------------------------------
# What a menu item or a palette entry asks for, as a value the screen matches on
# (``match`` + ``assert_never``), instead of strings like ``"move:up"``.


@dataclass(frozen=True)
class RunJobs:
    """Apply a job action to some jobs."""

    action: JobAction


@dataclass(frozen=True)
class MoveJobs:
    """Move a job within its priority group."""

    where: MoveWhere


@dataclass(frozen=True)
class OpenDetail:
    """Show the job in the detail view."""


@dataclass(frozen=True)
class RunChunks:
    """Apply a chunk action to some chunks of the watched job."""

    action: ChunkAction


@dataclass(frozen=True)
class OpenOutput:
    """Show a chunk's output in Task Output."""


JobCommand = RunJobs | MoveJobs | OpenDetail
ChunkCommand = RunChunks | OpenOutput
MOVES: tuple[MoveWhere, ...] = ("up", "down", "top", "bottom")
