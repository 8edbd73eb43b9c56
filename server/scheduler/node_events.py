"""Nodes coming, going and being told apart: hellos, heartbeats, silence, enable and block.

A hello settles every attempt that holds a slot on the node against what its
agent says it still runs; a lost node's chunks requeue with no retry used.
"""

from __future__ import annotations

from farmtui.protocol import OPERATOR_BLOCK, AgentHello, ChunkRef, agent_tag
from farmtui.renderers import FIRST_TOKENS
from server import outcomes
from server.frame_states import tally_of
from server.model import Changes, Discard, Job, Node
from server.prefetch import PREFETCH_BELOW, take_back, takes_ahead, withdraw_waiting
from server.retries import is_blocked
from server.scheduler.dispatch_index import _noting
from server.scheduler.render_clock import RenderClock
from server.scheduler_config import SchedulerError
from server.transitions import refresh_job, settle_stopped


class NodeHeld(SchedulerError):
    """A hello for a node name another agent still holds: try again later."""


class NodeEvents(RenderClock):
    """Nodes: hellos, heartbeats, links closed, nodes lost, enabled and blocked."""

    @_noting
    def node_connected(self, hello: AgentHello, now: float) -> tuple[Changes, list[ChunkRef]]:
        """A node (re)registered. Returns the attempts it runs that it must kill.

        Every attempt that holds a slot here is settled against what the agent
        says it still runs and what it finished without an acknowledgement yet:

        - running, and still the chunk's current attempt here: it goes on;
        - running, but not wanted any more (told to stop, or unknown): it keeps
          its slot and is killed again (a kill sent while the link was down is lost);
        - finished but not acknowledged: it keeps its slot; the report follows
          from the agent's outbox and is credited then, never rendered again;
        - neither: the agent no longer has it (restarted without its state).
          A current attempt is preempted (no retry used); a stopping one is over.
        """
        changes = Changes()
        self.stopping.discard(hello.name)
        node = self.nodes.get(hello.name)
        if node is None:
            node = Node(name=hello.name, slots=hello.slots)
            self.nodes[hello.name] = node
        if node.agent_id != hello.agent_id and (node.online or node.running):
            # Another agent holds the name: its link is open, or trees it ran may
            # still be alive (it died a moment ago). Only the agent that ran them
            # can say they are gone, else the node must be lost first.
            raise NodeHeld(
                f"node name {node.name} is held by another agent ({agent_tag(node.agent_id)}; "
                f"this one is {agent_tag(hello.agent_id)}) until it is lost "
                f"({self.config.node_timeout:g} s of silence); "
                "is another machine using the same name?"
            )
        node.agent_id = hello.agent_id
        node.slots = hello.slots
        node.tags = list(hello.tags)
        node.cpu_count = hello.cpu_count
        node.memory_total = hello.memory_total
        node.version = hello.version
        node.os = hello.os
        node.gpus = list(hello.gpus)
        node.gpu_only = hello.gpu_only
        node.tokens = tuple(sorted(FIRST_TOKENS.union(hello.tokens)))
        # Ahead of slots it has: a node of none (a hand-made hello) would sit on them.
        node.prefetch = hello.prefetch if hello.slots > 0 else 0
        node.online = True
        node.last_seen = now
        node.seen_before_start = 0.0
        node.unheard = 0.0  # stored with the hello, before its Welcome grants a lease
        node.lease_timeout = self.config.node_timeout  # and under which timeout
        changes.nodes.add(node.name)
        stale: list[ChunkRef] = []
        running = {(ref.job_id, ref.chunk, ref.attempt) for ref in hello.running}
        reported = running | {(ref.job_id, ref.chunk, ref.attempt) for ref in hello.finished}
        kept = {(ref.job_id, ref.chunk, ref.attempt) for ref in hello.kept}
        for ref in hello.running:
            key = (ref.job_id, ref.chunk, ref.attempt)
            if not self._is_current(node.name, key):
                # Unwanted: it holds a slot (and its GPUs and licences, as its record
                # says) until the agent confirms it is dead.
                if key not in node.running:
                    node.running.add(key)
                    self.resources.hold(node.name, key, self._holding_of(key))
                stale.append(ChunkRef(job_id=ref.job_id, chunk=ref.chunk, attempt=ref.attempt))
        for key in sorted(node.running - reported):
            job_id, index, attempt = key
            chunk = self._chunk(job_id, index)
            if chunk is not None and self._is_current(node.name, key):
                job = self.jobs[job_id]
                outcomes.preempt(
                    job, chunk, self.nodes, changes, now, "lost", "node came back without it"
                )
                copied = chunk.attempts[-1].copy_of
                if copied and (job_id, index, copied) in kept:
                    # A copy of kept output it never received (its AssignChunk lost
                    # with the link): the output it was to copy is still kept there
                    # and waits for it again.
                    chunk.staged_on, chunk.staged_attempt = node.name, copied
                # (A copy that began took the output into its own folder, still kept: its
                # agent died, and ``_adopt_kept`` has the next copy take it from there.)
                refresh_job(job, changes, now)
            else:
                settle_stopped(node, key, chunk, changes)
        self._adopt_kept(node, hello.kept, reported, changes, now)
        self._discard_unwanted(node.name, hello.kept, reported, changes)
        self._clock_on_hello(node, hello, changes, now)
        changes.event(now, "info", f"node {node.name} connected ({node.slots} slots)", None, None)
        return changes, stale

    def _clock_on_hello(self, node: Node, hello: AgentHello, changes: Changes, now: float) -> None:
        """Its renders on the clock, from how long each has run (``RenderClock``); and what
        waits there for a slot that may not start there now is asked back again. A take-back
        lost with the link was never asked again: a chunk waited out a render of a minute
        (break round 36a), started on a node disabled or of a job paused meanwhile (36b)."""
        for ref in hello.running:
            key = (ref.job_id, ref.chunk, ref.attempt)
            self._asked_back.discard(key)  # (asked for a job before it: the tick asks again)
            if not self._is_current(node.name, key):
                continue
            if ref.rendered_for is not None:
                self._time_render(key, ref.rendered_for, now, changes)
            elif why := self._no_longer_waits(self.jobs[ref.job_id], node, now):
                take_back(node.name, key, f"not started: {why}", changes)
        if node.prefetch:
            self._give_back_waiting(node, changes)

    def _no_longer_waits(self, job: Job, node: Node, now: float) -> str | None:
        """Why a chunk of ``job`` waiting for a slot on ``node`` may not start there now, as
        the rules that take such chunks back have it (``server.prefetch``); None: it may."""
        if job.state not in ("queued", "rendering"):
            return f"the job is {job.state}"
        if not node.enabled:
            return f"node {node.name} is disabled"
        if not self._fits(job, set(job.spec.tags), node.name, now):
            return f"node {node.name} may not render this job now"
        if tally_of(job).times and not takes_ahead(job):
            # (None of its own done: its kind decided, which a leader started again has
            # not learnt yet; what of it runs long is judged by the clock.)
            return f"its chunks take {PREFETCH_BELOW:g} s or more"
        limit = job.spec.max_running
        if limit and len(tally_of(job).running) > limit:
            return f"more than {limit} of its chunks would run at once"
        return None

    def _adopt_kept(
        self,
        holder: Node,
        kept: list[ChunkRef],
        reported: set[tuple[str, int, int]],
        changes: Changes,
        now: float,
    ) -> None:
        """A retry sync's copy this node was making when it was lost, back with the output
        before its chunk started anywhere else: copied from there, not rendered again.

        A node lost (past ``node_timeout``) in the middle of a retry sync's copy came
        back with the output, still kept, while its chunk waited for a slot; the leader
        had it deleted and rendered the chunk again, on that same node (break round
        30b). Only that: the chunk's last attempt was this node's copy of output it
        kept, ended by the node's loss, and nothing touched the chunk since (an operator's
        requeue or retry queues it afresh: "preempted" no more). Not any attempt a hello
        names: a node's word alone would let it claim another node's output, or a chunk
        never rendered, and hold it past the job's tags (break round 30c).
        """
        if not holder.enabled:
            return  # disabled: it copies nothing either (``holder_awaited``)
        node = holder.name
        for ref in kept:
            key = (ref.job_id, ref.chunk, ref.attempt)
            chunk = self._chunk(ref.job_id, ref.chunk)
            if (
                key in reported
                or chunk is None
                or chunk.state != "preempted"
                or not chunk.attempts
                or chunk.staged_on is not None
                or chunk.stopping_node is not None
            ):
                continue
            last = chunk.attempts[-1]
            if (
                last.number != ref.attempt
                or chunk.attempt != ref.attempt
                or last.node != node
                or not last.copy_of
                or last.outcome != "lost"
            ):
                continue
            chunk.staged_on, chunk.staged_attempt = node, ref.attempt
            changes.chunks.add((ref.job_id, ref.chunk))
            refresh_job(self.jobs[ref.job_id], changes, now)
            changes.event(
                now,
                "info",
                f"chunk {ref.chunk}: node {node} is back with the output of attempt "
                f"{ref.attempt}; copied from there, not rendered again",
                ref.job_id,
                None,
            )

    def kept_staged(self, name: str, kept: list[ChunkRef]) -> Changes:
        """More of the node's kept output than its hello listed (``KeptStaged``): what no
        chunk waits for is deleted, as for the hello's own list. None of it is in the
        hello's running or finished lists (the agent leaves those out)."""
        changes = Changes()
        node = self.nodes.get(name)
        if node is not None and node.online:
            self._discard_unwanted(name, kept, set(), changes)
        return changes

    def _discard_unwanted(
        self,
        node: str,
        kept: list[ChunkRef],
        reported: set[tuple[str, int, int]],
        changes: Changes,
    ) -> None:
        """Have the node delete the staged output it keeps that no chunk waits for.

        A DiscardStaged sent while the node was away (its output waited for it
        until ``node_timeout``, then the chunk was rendered elsewhere; the job was
        deleted) is lost with the link, and the output stayed on the node's disk,
        likely the one that filled up. Kept: what the chunk waits for here, what
        the node's own reports still to come will settle, and what an attempt of
        the chunk running here may be copying.
        """
        for ref in kept:
            key = (ref.job_id, ref.chunk, ref.attempt)
            if key in reported:
                continue  # its ChunkFinished (kept_staged) follows from the outbox
            chunk = self._chunk(ref.job_id, ref.chunk)
            if chunk is not None and (
                (chunk.staged_on == node and chunk.staged_attempt == ref.attempt)
                or (chunk.state == "assigned" and chunk.node == node)
            ):
                continue
            changes.discards.append(
                Discard(node=node, job_id=ref.job_id, chunk=ref.chunk, attempt=ref.attempt)
            )

    def _is_current(self, node: str, key: tuple[str, int, int]) -> bool:
        """Whether ``key`` is its chunk's current attempt, assigned to ``node``."""
        return self._live(node, *key) is not None

    @_noting
    def node_heartbeat(
        self, name: str, cpu: float, memory: float, now: float, *, stopping: bool = False
    ) -> Changes:
        """Live readings of an online node. A lost one is not brought back by its
        heartbeat (its link stayed open while it was frozen): only a hello, which
        settles what its agent still runs against the chunks that moved.

        ``stopping``: its agent is going; nothing more is dispatched to it (what it
        runs, it reports killed before it goes, and those chunks move at once).
        """
        changes = Changes()
        node = self.nodes.get(name)
        if node is None or not node.online:
            return changes
        node.cpu_percent = cpu
        node.memory_percent = memory
        node.last_seen = now
        if stopping:
            self.stopping.add(name)
        # Live readings only: a heartbeat commits nothing.
        changes.readings.add(name)
        return changes

    def node_heard(self, name: str, now: float) -> None:
        """A frame of an online node's agent arrived: it is alive, whatever the frame says
        and however long it waits to be read. Like a heartbeat, it brings no lost node
        back and commits nothing."""
        node = self.nodes.get(name)
        if node is not None and node.online and now > node.last_seen:
            node.last_seen = now

    @_noting
    def node_disconnected(self, name: str, now: float) -> Changes:
        """Its link closed: dispatch nothing more to it.

        Its chunks keep their lease: the agent may reconnect and report them
        running. ``tick`` declares the node lost after ``node_timeout`` of
        silence, and only then are its chunks requeued.
        """
        changes = Changes()
        node = self.nodes.get(name)
        if node is None or not node.online:
            return changes
        node.online = False
        changes.readings.add(name)  # online is the link's business: nothing to commit
        self.unsaved_contacts.add(name)  # but when it was last heard, with the next one
        changes.event(now, "warn", f"node {name} disconnected", None, None)
        return changes

    def contacts(self, now: float) -> Changes:
        """The rows of every node heard since this leader started, for its stop: a
        restarted leader shows when each was last heard (``Node.seen_before_start``)."""
        changes = Changes()
        changes.nodes = {name for name, node in self.nodes.items() if node.online}
        changes.nodes |= self.unsaved_contacts
        return changes

    @_noting
    def node_lost(self, name: str, now: float) -> Changes:
        """Heartbeats stopped for ``node_timeout``: its chunks become preempted and requeue.

        By now the node's lease has expired, so its supervisors have killed
        every tree it ran: each slot is free and each chunk may run elsewhere.
        No retry is used: the farm lost them, the job did nothing wrong.
        """
        changes = Changes()
        node = self.nodes.get(name)
        if node is None:
            return changes
        node.online = False
        changes.nodes.add(name)
        lost = 0
        for key in sorted(node.running):
            job_id, index, _attempt = key
            chunk = self._chunk(job_id, index)
            if chunk is not None and self._is_current(name, key):
                job = self.jobs[job_id]
                outcomes.preempt(
                    job, chunk, self.nodes, changes, now, "lost", f"node {name} lost", lost=True
                )
                refresh_job(job, changes, now)
                lost += 1
            else:
                settle_stopped(node, key, chunk, changes)
        node.running = set()
        changes.event(now, "warn", f"node {name} lost ({lost} chunks requeued)", None, None)
        return changes

    @_noting
    def set_node_enabled(self, name: str, enabled: bool, actor: str, now: float) -> Changes:
        """Disabled nodes get no new chunks; what runs there finishes."""
        node = self.nodes.get(name)
        if node is None:
            raise SchedulerError(f"unknown node {name}")
        changes = Changes()
        if node.enabled != enabled:
            node.enabled = enabled
            changes.nodes.add(name)
            word = "enabled" if enabled else "disabled"
            changes.event(now, "info", f"node {name} {word}", None, actor)
            if not enabled:
                why = f"not started: node {name} was disabled by {actor}"
                for job_id in sorted({job_id for job_id, _, _ in node.running}):
                    job = self.jobs.get(job_id)
                    if job is not None:
                        withdraw_waiting(job, self.nodes, changes, why, only=name)
        return changes

    @_noting
    def block_node(self, job_id: str, name: str, blocked: bool, actor: str, now: float) -> Changes:
        """An operator keeps a node off one job (until unblocked), or lets it back.

        What runs there now finishes; letting a node back also forgets the
        errors that counted towards an automatic block.
        """
        job = self._job(job_id)
        if name not in self.nodes:
            raise SchedulerError(f"unknown node {name}")
        changes = Changes()
        was = is_blocked(job, name, now)
        if blocked:
            job.blocked[name] = now + OPERATOR_BLOCK
            withdraw_waiting(job, self.nodes, changes, f"not started: {actor} blocked {name}", name)
        else:
            job.blocked.pop(name, None)
            job.node_errors.pop(name, None)
        changes.jobs.add(job_id)
        if was != blocked:
            word = "blocked for this job" if blocked else "may render this job again"
            changes.event(now, "info", f"node {name} {word}", job_id, actor)
        return changes
