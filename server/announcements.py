"""What a committed change tells the farm: agents first, then logs, consoles, webhooks.

``Announcing`` is the leader's side of it (a base of ``server.leader.Leader``):
``publish`` runs once a group is committed (``server.group_commit``), never
before, so nobody hears of a change the store may still refuse. A message for
a node is sent on the connection the change was decided for, or not at all.
The links' own shapes (``AgentConnection``, ``ConsoleConnection``) and the
live output of chunks that consoles follow are here too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

import msgspec

from farmtui.protocol import DiscardStaged, EventView, KillChunk, LeaderToAgentMessage
from server.failures import FailureLog
from server.history import History
from server.joblogs import JobLogs, chunk_log_path
from server.metrics import ChangeCounters
from server.model import Changes
from server.scheduler import Scheduler
from server.webhooks import WebhookBody, Webhooks

log = logging.getLogger("farmtui.leader")

# Close code for links of a leader that stepped down (the peer tries the next leader).
CLOSE_STEPPED_DOWN = 1012  # service restart
# Close code for links whose token was revoked (policy violation: the peer gives up).
CLOSE_REVOKED = 1008

OutputKey = tuple[str, int, int]


class AgentConnection(Protocol):
    """What the leader needs from an agent link."""

    name: str
    token_hash: str

    def send(self, message: LeaderToAgentMessage) -> None: ...

    def close(self, code: int, reason: str) -> None: ...


class ConsoleConnection(Protocol):
    """What the leader needs from a console link."""

    token_hash: str

    def changed(self, changes: Changes) -> None: ...

    def task_output(self, key: OutputKey, lines: list[str]) -> None: ...

    def farm_reloaded(self) -> None:
        """Send the whole farm again (a Snapshot): what it was told may have been undone."""
        ...

    def close(self, code: int, reason: str) -> None: ...


def _log_level(event: EventView) -> int:
    """How loud a farm event is in the leader's own log.

    What people did and what went wrong are there; a job's routine
    progress (chunk 7 done in 3.2 s, job running -> done) only at DEBUG: it
    is in the job's events.log, and at farm scale it would be most of the
    log.
    """
    if event.level != "info":
        return logging.WARNING
    return logging.DEBUG if event.job_id and not event.actor else logging.INFO


class Announcing:
    """Announce committed changes; follow chunks' live output for consoles."""

    # The leader's, set in its ``__init__``.
    scheduler: Scheduler
    agents: dict[str, AgentConnection]
    consoles: set[ConsoleConnection]
    followers: dict[OutputKey, set[ConsoleConnection]]
    joblogs: JobLogs
    webhooks: Webhooks
    failures: FailureLog
    history: History
    counters: ChangeCounters
    # Bumped by every commit that changes what a job view shows (``Leader.job_list_json``).
    _views_version: int

    if TYPE_CHECKING:  # Leader's, used here

        def now(self) -> float: ...

    def publish(
        self, changes: Changes, links: Mapping[str, AgentConnection | None] | None = None
    ) -> None:
        """Announce committed changes: agents first, then logs, consoles and webhooks.

        ``links``: the nodes' connections when the changes were applied (``commit``);
        a message for a node connected again since is not sent (``send_to_node``).
        """
        for assignment in changes.assignments:
            message = assignment.message
            if not message.log_path:
                message = msgspec.structs.replace(
                    message, log_path=chunk_log_path(message.job_id, message.chunk, message.attempt)
                )
            self.send_to_node(assignment.node, message, links)
        for kill in changes.kills:
            self.send_to_node(
                kill.node,
                KillChunk(
                    job_id=kill.job_id,
                    chunk=kill.chunk,
                    attempt=kill.attempt,
                    reason=kill.reason,
                    waiting_only=kill.waiting_only,
                ),
                links,
            )
        for node, update in changes.timeout_updates:
            self.send_to_node(node, update, links)
        for discard in changes.discards:
            self.send_to_node(
                discard.node,
                DiscardStaged(job_id=discard.job_id, chunk=discard.chunk, attempt=discard.attempt),
                links,
            )
        if changes.events:
            self.joblogs.events(changes.events)
            for event in changes.events:
                level = _log_level(event)
                if log.isEnabledFor(level):  # routine progress is DEBUG: not formatted
                    log.log(
                        level,
                        "%s%s%s",
                        f"[{event.job_id}] " if event.job_id else "",
                        event.text,
                        f" (by {event.actor})" if event.actor else "",
                    )
        if changes.jobs or changes.removed or changes.nodes:
            self._views_version += 1
        now = self.now()
        for ended in changes.ended:
            self.joblogs.attempt_ended(ended, now)
        for note in changes.notifications:
            self.joblogs.event(
                EventView(
                    time=now,
                    level="info",
                    text=f"notification {note.kind}: {note.text}",
                    job_id=note.job_id,
                    actor="leader",
                )
            )
            job = self.scheduler.jobs.get(note.job_id)
            view = self.scheduler.job_view(note.job_id) if job is not None else None
            self.webhooks.notify(
                WebhookBody(job_id=note.job_id, kind=note.kind, text=note.text, job=view),
                job.spec.webhook if job is not None else None,
            )
        for job_id in changes.removed:
            self.joblogs.forget_job(job_id)
            for key in [k for k in self.followers if k[0] == job_id]:
                del self.followers[key]
        self.failures.observe(changes)
        self.history.observe(changes)
        self.counters.observe(changes, self.scheduler.jobs)
        for console in list(self.consoles):
            console.changed(changes)

    def send_to_node(
        self,
        node: str,
        message: LeaderToAgentMessage,
        links: Mapping[str, AgentConnection | None] | None = None,
    ) -> None:
        link = self.agents.get(node)
        if links is not None and node in links and links[node] is not link:
            # Decided for the node's connection before it connected again: its hello,
            # applied since, kept what it still runs and took back the rest. Sent to the
            # new connection, an assignment it had taken back ran beside its next attempt.
            log.info(
                "node %s connected again since; %s for its previous connection not sent",
                node,
                type(message).__name__,
            )
            return
        if link is None:
            # The scheduler requeues it when the node reconnects without it or is lost.
            log.warning("node %s is not connected; %s not sent", node, type(message).__name__)
            return
        link.send(message)

    def revoked(self, token_hash: str) -> int:
        """Close the agent and console links opened with a token just revoked; how many.

        Requests are checked one by one, so a revoked token's next one is refused;
        a link was checked once, when it opened, and would have gone on.
        """
        links: list[AgentConnection | ConsoleConnection] = [
            *(a for a in self.agents.values() if a.token_hash == token_hash),
            *(c for c in self.consoles if c.token_hash == token_hash),
        ]
        for link in links:
            link.close(CLOSE_REVOKED, "its token was revoked")
        return len(links)

    # --- live output ----------------------------------------------------------------
    def output(self, key: OutputKey, lines: list[str]) -> None:
        self.joblogs.chunk_output(*key, lines)
        for console in self.followers.get(key, ()):
            console.task_output(key, lines)

    def follow(self, key: OutputKey, console: ConsoleConnection) -> None:
        self.followers.setdefault(key, set()).add(console)

    def unfollow(self, console: ConsoleConnection) -> None:
        for key in [k for k, consoles in self.followers.items() if console in consoles]:
            self.followers[key].discard(console)
            if not self.followers[key]:
                del self.followers[key]
