"""Errors of the agent daemon.

::

    AgentError
    ├── LeaderRefused     the leader said no (wrong token, Refused): stop, do not retry
    ├── LeaderBusy        the leader said "not now" (disk full, name held): try again later
    ├── LeaderAway        no leader took an upload (down, restarting, a standby): it waits
    ├── UploadCut         a leader closed an upload midway (died, or refused it unread)
    ├── DeliveryPostponed the agent stops while a delivery waits: the next start does it
    ├── ChunkSetupError   a chunk cannot start (bad token, path escaping its root ...)
    │   ├── PathEscapeError
    │   └── OutputRefused
    └── FenceError        an attempt that is no longer current tried to write the sync root
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent raises on purpose."""


class LeaderRefused(AgentError):
    """The leader refused this agent (HTTP 401/403 or a Refused message)."""


class LeaderBusy(AgentError):
    """The leader refused for now (its disk is full, another agent holds the name)."""


class LeaderAway(AgentError):
    """An upload no leader took: none answered (down, restarting) or a standby did. Not
    the job's fault, and the output is on the node: it goes once a leader answers."""


class UploadCut(AgentError):
    """A leader closed the connection while an upload's body went: it died, or it refused
    the file before reading it (too large, not allowed, not current) and the agent never
    read why. Tried again a few times (``UPLOAD_CUTS``), then a failed copy."""


class DeliveryPostponed(AgentError):
    """The agent stops while a finished render's delivery waits for a leader: its output
    and journal entry stay on the node, and the agent's next start delivers it."""


class ChunkSetupError(AgentError):
    """A chunk that cannot be started; the message becomes ChunkFinished.reason."""


class PathEscapeError(ChunkSetupError):
    """An output path from a job that would land outside the sync root or staging folder."""


class DestinationBlocked(AgentError):
    """Something in the sync root stands where an output's folder goes (a file, a
    symlink): the copy fails, but the staged output is fine and is kept; once that is
    moved out of the way, a retry sync copies it without a render."""


class OutputRefused(ChunkSetupError):
    """A rendered file the agent will not deliver: not a regular file (a symlink, a
    FIFO), or not its render user's (``agent.render_user``)."""


class FenceError(AgentError):
    """A delivery refused because its attempt may no longer write (stopped, lease run out)."""


class CopyGivenUp(AgentError):
    """A copy stopped midway because the agent goes at once: its attempt may still write,
    its output waits on the node for the next start (``Fence.going_on``)."""
