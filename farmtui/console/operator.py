"""The operator's requests to the leader: sent once, named, and asked about first when costly.

Every request that changes the farm goes through ``Operator``: it sends it on
the link under a label ("Pause shot_010"), asks first with the cost when
``confirmations.py`` says so, and turns the leader's ``Reply`` into a line in
the monitor log (and a toast when refused). Widgets never send anything; the
screen calls these methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from textual.screen import Screen

from farmtui.console.actions import CHUNK_ACTION_BY_NAME, JOB_ACTION_BY_NAME
from farmtui.console.confirmations import (
    Confirmation,
    block_confirmation,
    chunk_action_confirmation,
    job_action_confirmation,
)
from farmtui.console.link import LeaderLink
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.state import ConsoleState
from farmtui.protocol import (
    BlockNode,
    ChunkAction,
    ChunkView,
    ConsoleMessage,
    JobAction,
    JobPatch,
    JobView,
    MoveJob,
    MoveWhere,
    PatchJob,
    Reply,
    RunChunkAction,
    RunJobAction,
    SetNodeEnabled,
    SetPriority,
)

LogLevel = Literal["info", "warn", "error"]

# A request unanswered this long shows in the status line (a frozen or slow leader).
SLOW_REPLY = 1.0


@dataclass(frozen=True)
class Waiting:
    """Requests the leader has not answered for a while: how many, and the oldest's age."""

    count: int
    oldest: float


def job_names(names: Sequence[str]) -> str:
    """``shot_010`` for one job, ``3 jobs`` for more."""
    return names[0] if len(names) == 1 else f"{len(names)} jobs"


class Operator:
    """See the module docstring. ``log`` writes a line to the monitor log."""

    def __init__(
        self,
        screen: Screen[None],
        link: LeaderLink,
        state: ConsoleState,
        log: Callable[[LogLevel, str], None],
    ) -> None:
        self.screen = screen
        self.link = link
        self.state = state
        self.log = log
        # request id -> (label, when sent, monotonic)
        self._pending: dict[int, tuple[str, float]] = {}

    # -- sending ---------------------------------------------------------------------

    def send(self, message: ConsoleMessage, label: str) -> int | None:
        """Send to the leader; ``label`` names it in the log and in error pop-ups."""
        request_id = self.link.send(message)
        if request_id is None:
            if label:
                self.screen.notify(
                    f"{label} was not sent: the leader is unreachable", severity="error"
                )
            return None
        self._pending[request_id] = (label, time.monotonic())
        if label:
            self.log("info", f"{label}: sent")
        return request_id

    def replied(self, reply: Reply) -> None:
        """The leader answered a request: log it, and pop up a refusal."""
        label, _ = self._pending.pop(reply.request_id, ("", 0.0))
        if reply.ok:
            if label:
                self.log("info", f"{label}: done")
            return
        error = reply.error or "refused"
        self.log("error", f"{label or 'request'}: {error}")
        self.screen.notify(error, title=label or "The leader refused", severity="error")

    def waiting(self, now: float | None = None) -> Waiting | None:
        """The operator's requests unanswered for ``SLOW_REPLY`` or longer, if any (not
        the console's own: the views it asks for, a peer log's refresh)."""
        now = time.monotonic() if now is None else now
        ages = [
            now - sent
            for label, sent in self._pending.values()
            if label and now - sent >= SLOW_REPLY
        ]
        return Waiting(len(ages), max(ages)) if ages else None

    def link_lost(self) -> None:
        """The link dropped: requests still unanswered may or may not have been carried
        out. Say which, so the operator looks rather than assumes."""
        unanswered = [label for label, _ in self._pending.values() if label]
        self._pending.clear()
        for label in unanswered:
            self.log(
                "warn", f"{label}: no answer before the link dropped; check whether it was done"
            )
        if unanswered:
            what = unanswered[0] if len(unanswered) == 1 else f"{len(unanswered)} requests"
            self.screen.notify(
                f"{what}: no answer before the link dropped; check once it is back",
                severity="warning",
            )

    def send_once_confirmed(
        self, confirmation: Confirmation | None, message: ConsoleMessage, label: str
    ) -> None:
        """Send ``message`` now when it is cheap, else once the operator accepts its cost.

        A viewer is not asked: the leader refuses every change of a viewer's, and its
        answer says so at once (the rule stays the leader's: ``server/rights.py``)."""
        if confirmation is None or (self.state.synced and self.state.role == "viewer"):
            self.send(message, label)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.send(message, label)
            else:
                self.log("info", f"{label}: not confirmed")

        self.screen.app.push_screen(ConfirmScreen(confirmation), answered)

    # -- jobs ------------------------------------------------------------------------

    def job_action(self, action: JobAction, job_ids: Sequence[str]) -> None:
        """Apply ``action`` to the jobs (asking first when it costs work)."""
        jobs = [self.state.jobs[job_id] for job_id in job_ids if job_id in self.state.jobs]
        if not jobs:
            self.screen.notify(
                "Select a job first (space selects, ctrl+a selects all)", severity="warning"
            )
            return
        spec = JOB_ACTION_BY_NAME[action]
        self.send_once_confirmed(
            job_action_confirmation(action, jobs),
            RunJobAction(action=action, job_ids=[job.id for job in jobs]),
            f"{spec.label} {job_names([job.name for job in jobs])}",
        )

    def move(self, job: JobView, where: MoveWhere) -> None:
        self.send(MoveJob(job_id=job.id, where=where), f"Move {job.name} {where}")

    def move_before(self, job: JobView, before: JobView | None) -> None:
        where = f"before {before.name}" if before else "to the end of its group"
        self.send(
            MoveJob(job_id=job.id, before=before.id if before else None),
            f"Move {job.name} {where}",
        )

    def set_priority(self, jobs: Sequence[JobView], priority: int) -> None:
        """One ``SetPriority`` per job whose priority differs."""
        for job in jobs:
            if job.priority != priority:
                self.send(
                    SetPriority(job_id=job.id, priority=priority),
                    f"Priority of {job.name} to {priority}",
                )

    def patch(self, job: JobView, patch: JobPatch) -> None:
        self.send(PatchJob(job_id=job.id, patch=patch), f"Settings of {job.name}")

    # -- chunks ----------------------------------------------------------------------

    def chunk_action(self, action: ChunkAction, chunks: Sequence[int]) -> None:
        """Apply ``action`` to chunks of the watched job (asking first when costly)."""
        watched = self.state.watched
        if watched is None or not chunks:
            return
        views = [watched.chunks[index] for index in chunks if index in watched.chunks]
        self.chunk_action_of(action, watched.job, views)

    def chunk_action_of(
        self, action: ChunkAction, job: JobView, chunks: Sequence[ChunkView]
    ) -> None:
        """Apply ``action`` to chunks of any job (the failures view), by the same rules."""
        if not chunks:
            return
        label = CHUNK_ACTION_BY_NAME[action].label
        indexes = [chunk.index for chunk in chunks]
        self.send_once_confirmed(
            chunk_action_confirmation(action, job, chunks, self.state.clock()),
            RunChunkAction(action=action, job_id=job.id, chunks=indexes),
            f"{label} {chunk_names(indexes)} of {job.name}",
        )

    def block_node(self, job: JobView, node: str, blocked: bool, *, ask: bool = True) -> None:
        """Keep ``node`` off ``job`` (or let it back), once the operator has read what it does."""
        message = BlockNode(job_id=job.id, node=node, blocked=blocked)
        label = f"{'Block' if blocked else 'Unblock'} {node} for {job.name}"
        if not ask:
            self.send(message, label)
            return
        self.send_once_confirmed(block_confirmation(job, node, blocked), message, label)

    # -- nodes -----------------------------------------------------------------------

    def set_node_enabled(self, node: str, enabled: bool) -> None:
        if not self.state.is_admin:
            self.screen.notify("Only admins can enable or disable nodes", severity="warning")
            return
        verb = "Enable" if enabled else "Disable"
        self.send(SetNodeEnabled(node=node, enabled=enabled), f"{verb} node {node}")


def chunk_names(chunks: Sequence[int]) -> str:
    """``chunk 3``, ``chunks 3, 4, 5, 6, 7…``."""
    numbers = ", ".join(map(str, chunks[:5])) + ("…" if len(chunks) > 5 else "")
    return f"chunk{'s' if len(chunks) > 1 else ''} {numbers}"
