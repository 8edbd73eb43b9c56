"""A farm on paper, explored by Hypothesis: exactly once, never on two nodes.

The scheduler is driven the way the leader drives it, with a model of what
really happens on each node beside it: the attempts its agent really runs,
the reports waiting in its outbox, the kills it has received, its link and
its lease. Random interleavings of dispatch, finishing, lost and duplicated
messages, disconnects, crashes, silent nodes, leader stalls and restarts and
operator actions are checked after every step against the invariants:

1. At most one live attempt per chunk across every agent's real running set.
2. No agent runs more attempts than its slots; the scheduler never fills an
   online node past its slots and the chunks it may hold ahead of them (n2 holds
   one ahead: ``server.prefetch``; it starts when a slot frees, never after the
   lease ran out).
3. In the scheduler's records, a chunk gets at most one "done" attempt per
   epoch (an epoch ends when an operator takes a done chunk out of done).
4. Every attempt in a scheduler ``node.running`` is the chunk's current attempt
   on that node, its fenced stopping attempt there, or of a job/chunk that no
   longer exists; every current or fenced attempt holds its slot; an assigned
   chunk is never fenced.
5. A "done" report is credited at most once per epoch.
6. Every attempt an agent really runs is known to the scheduler: it holds a
   slot on that node and is its chunk's current or fenced attempt there.
7. The incremental bookkeeping (each job's counters and waiting-chunk queue,
   the dispatch index) equals a recomputation from scratch.

And when the scheduler declares a node lost, its agent runs nothing any more:
the model's leases (0.6 x node_timeout, renewed by hello and answered
heartbeats) have run out first, which is what lets the scheduler free the
node's slots and lift its fences.

Like ``Leader.run``, every event is followed by a dispatch. Dropping the fence
in ``Scheduler.dispatch`` (``if chunk.stopping_node is not None: continue``)
breaks invariants 1 and 4 within a few steps; the tests at the end replay the
key scenarios deterministically.

Deeper runs: ``FARMTUI_MODEL_EXAMPLES=2000 pytest tests/scheduler/test_model.py``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from farmtui.protocol import (
    AgentHello,
    AssignChunk,
    ChunkFinished,
    ChunkRef,
    JobSpec,
    RunningRef,
    Timeouts,
)
from server.model import Changes, Chunk
from server.scheduler import Scheduler, SchedulerConfig, SchedulerError
from tests.scheduler.counters import check_counters

Key = tuple[str, int, int]  # (job id, chunk index, attempt)
ChunkKey = tuple[str, int]  # (job id, chunk index)

NODES = {"n1": 1, "n2": 2, "n3": 1}
PREFETCH = {"n2": 1, "n3": 4}  # n3 holds more ahead than its slots: ``prefetch.depth``
CONFIG = SchedulerConfig(
    node_timeout=15.0, retry_delay=1.0, retry_cap=4.0, block_after=2, block_for=20.0
)
LEASE = CONFIG.agent_lease

JOB_ACTIONS = [
    "retry-failed",
    "requeue",
    "cancel",
    "delete",
    "complete",
    "hold",
    "unhold",
    "pause",
    "resume",
    "retry-sync",
    "archive",
    "unarchive",
]
CHUNK_ACTIONS = ["retry", "set-done", "exclude", "hold", "set-failed"]
SHAPES = ["plain", "scout", "pre-post", "one-at-a-time", "after"]
ON_TIMEOUT = ["error", "requeue", "complete", "fail", "notify"]

# An index into whatever list a rule picks from (taken modulo its length): shrinks to 0.
PICK = st.integers(min_value=0, max_value=1 << 16)
NODE = st.sampled_from(sorted(NODES))
SILENT = st.frozensets(NODE, max_size=1)


def _key(ref: ChunkRef | ChunkFinished | AssignChunk) -> Key:
    return (ref.job_id, ref.chunk, ref.attempt)


@dataclass
class Agent:
    """What really happens on one node, whatever the leader believes."""

    name: str
    slots: int
    # The link to the leader is up: messages either way arrive.
    link: bool = False
    # Attempts whose process tree really runs here -> when it started.
    running: dict[Key, float] = field(default_factory=dict)
    # Chunks it holds ahead of its slots (``prefetch``), waiting for one to free, in order.
    prefetch: int = 0
    queued: list[Key] = field(default_factory=list)
    # Reports not yet acknowledged by the leader (listed in the hello's ``finished``).
    outbox: list[ChunkFinished] = field(default_factory=list)
    # Every report sent at least once (for replays).
    sent: list[ChunkFinished] = field(default_factory=list)
    # Kills received (from ``Changes.kills`` or a hello's stale list), not yet acted upon.
    kills: list[Key] = field(default_factory=list)
    # The supervisors kill every tree once this passes.
    lease_until: float = float("-inf")


class FarmModel(RuleBasedStateMachine):
    """A scheduler and the agents it talks to, with a clock the rules move."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0
        self.agents = {
            name: Agent(name, slots, prefetch=PREFETCH.get(name, 0))
            for name, slots in NODES.items()
        }
        self.jobs_made = 0
        # Per chunk: "done" attempt numbers in the records when its epoch began,
        # and the attempts whose "done" report was credited in this epoch.
        self.baseline: dict[ChunkKey, set[int]] = {}
        self.credits: dict[ChunkKey, list[int]] = {}
        self._start(Scheduler(CONFIG))

    def _start(self, scheduler: Scheduler) -> None:
        """Adopt a scheduler, watching the nodes it declares lost."""
        self.sched = scheduler
        declare = scheduler.node_lost

        def node_lost(name: str, now: float) -> Changes:
            agent = self.agents[name]
            # lease < node_timeout: the agent's supervisors have killed every tree by now,
            # which is what lets the scheduler free the node's slots and lift its fences.
            holds = [*sorted(agent.running), *agent.queued]
            assert not holds, (
                f"lease: node {name} declared lost at {now} while its lease (until "
                f"{agent.lease_until}) still covers {holds}"
            )
            return declare(name, now)

        scheduler.node_lost = node_lost  # type: ignore[method-assign]

    # --- helpers -----------------------------------------------------------------
    def _chunk(self, job_id: str, index: int) -> Chunk | None:
        job = self.sched.jobs.get(job_id)
        if job is None or not 0 <= index < len(job.chunks):
            return None
        return job.chunks[index]

    def _route(self, changes: Changes) -> None:
        """Send what the leader sends: only agents whose link is up receive anything."""
        for assignment in changes.assignments:
            agent = self.agents[assignment.node]
            if not agent.link:
                continue  # lost with the link
            key = _key(assignment.message)
            assert key not in [*agent.running, *agent.queued], f"{key} assigned twice"
            agent.queued.append(key)
            self._start_queued(agent)
        for kill in changes.kills:
            target = self.agents[kill.node]
            if target.link:
                key = (kill.job_id, kill.chunk, kill.attempt)
                if kill.waiting_only:
                    # Taken back only if it still waits for a slot, as it is received;
                    # its report waits in the outbox like any other.
                    if key in target.queued:
                        self._end(target, key, "killed", reason=kill.reason)
                    continue
                target.kills.append(key)

    def _run(self, step: Callable[[], Changes], *, dispatch: bool = True) -> Changes:
        """What ``Leader.run`` does: apply one event, dispatch, then send what they produced."""
        changes = step()
        if dispatch:
            changes.merge(self.sched.dispatch(self.now))
        self._route(changes)
        return changes

    def _start_queued(self, agent: Agent) -> None:
        """Chunks waiting for a slot start, in order, as slots free."""
        while agent.queued and len(agent.running) < agent.slots:
            key = agent.queued.pop(0)
            agent.running[key] = self.now
            if self.now > agent.lease_until:
                # The lease watchdog kills it at once (a shim refuses to start it).
                self._end(agent, key, "killed", reason="the lease ran out")

    def _end(
        self, agent: Agent, key: Key, outcome: str, *, reason: str = "", kept: bool = False
    ) -> ChunkFinished:
        """The attempt's tree is gone (or it never left the queue); its report goes to the
        outbox, and a chunk waiting for the slot starts."""
        if key in agent.queued:
            agent.queued.remove(key)
            started = 0.0
        else:
            started = agent.running.pop(key)
        report = ChunkFinished(
            job_id=key[0],
            chunk=key[1],
            attempt=key[2],
            outcome=outcome,  # type: ignore[arg-type]
            exit_status="0" if outcome == "done" else "1",
            reason=reason or ("" if outcome == "done" else "it broke"),
            timeout_kind="max_render" if outcome == "timeout" else None,
            started=started,
            finished=self.now,
            kept_staged=kept and outcome == "failed",
        )
        agent.outbox.append(report)
        self._start_queued(agent)
        return report

    def _deliver(self, agent: Agent, report: ChunkFinished, *, ack: bool = True) -> None:
        """The leader reads ``report`` from the agent's link (and acknowledges it if ``ack``)."""
        assert agent.link
        chunk = self._chunk(report.job_id, report.chunk)
        live = (
            chunk is not None
            and chunk.state == "assigned"
            and chunk.node == agent.name
            and chunk.attempt == report.attempt
        )
        self._run(lambda: self.sched.chunk_finished(agent.name, report, self.now))
        agent.sent.append(report)
        if ack and report in agent.outbox:
            agent.outbox.remove(report)
        if live:
            assert chunk is not None
            if chunk.state == "done":
                self.credits.setdefault((report.job_id, report.chunk), []).append(report.attempt)
            if report.outcome == "done":
                assert chunk.state == "done", f"the current attempt's {report} was not credited"

    def _lease_runs_out(self, agent: Agent) -> None:
        for key in [*sorted(agent.running), *agent.queued]:
            if key in agent.running or key in agent.queued:
                self._end(agent, key, "killed", reason="the lease ran out")

    def _heartbeat(self, agent: Agent) -> None:
        self._run(lambda: self.sched.node_heartbeat(agent.name, 1.0, 1.0, self.now))
        agent.lease_until = self.now + LEASE

    def _new_epoch(self, key: ChunkKey, chunk: Chunk) -> None:
        self.baseline[key] = {a.number for a in chunk.attempts if a.outcome == "done"}
        self.credits[key] = []

    def _operator(self, job_ids: list[str], call: Callable[[], Changes]) -> None:
        """Run an operator action; a done chunk it takes out of done starts a new epoch."""
        jobs = [self.sched.jobs[job_id] for job_id in job_ids]
        done = [(job.id, c.index) for job in jobs for c in job.chunks if c.state == "done"]
        try:
            self._run(call)
        except SchedulerError:
            return  # refused in one line, nothing changed (a hold of chunks that ended)
        for key in done:
            chunk = self._chunk(*key)
            if chunk is not None and chunk.state != "done":
                self._new_epoch(key, chunk)
        for job_id in job_ids:
            if job_id not in self.sched.jobs:
                for key in [k for k in self.credits if k[0] == job_id]:
                    del self.credits[key]
                for key in [k for k in self.baseline if k[0] == job_id]:
                    del self.baseline[key]

    def _connect(self, agent: Agent) -> None:
        """The agent says hello from what it really runs and what its outbox holds."""
        finished = list(dict.fromkeys(_key(r) for r in agent.outbox))
        # Like the real agent, it lists the chunks waiting for a slot as its own.
        holds = [*sorted(agent.running), *agent.queued]
        hello = AgentHello(
            name=agent.name,
            slots=agent.slots,
            prefetch=agent.prefetch,
            running=[RunningRef(job_id=j, chunk=c, attempt=a) for j, c, a in holds],
            finished=[ChunkRef(job_id=j, chunk=c, attempt=a) for j, c, a in finished],
        )
        listed = set(holds)
        agent.link = True
        agent.lease_until = self.now + LEASE
        stale: list[ChunkRef] = []

        def connect() -> Changes:
            changes, refs = self.sched.node_connected(hello, self.now)
            stale.extend(refs)
            return changes

        # The welcome (with the stale list) goes out before the assignments dispatch makes.
        self._run(connect)
        assert {_key(r) for r in stale} <= listed, f"stale refs it never listed: {stale}"
        agent.kills[:0] = [_key(r) for r in stale]

    # --- set-up ------------------------------------------------------------------
    def _submit(self, frames: int, size: int, retries: int, shape: str, on_timeout: str) -> None:
        self.jobs_made += 1
        job_id = f"j{self.jobs_made}"
        extra: dict[str, object] = {}
        if shape == "scout":
            extra["scout"] = "1"
        elif shape == "pre-post":
            extra.update(pre_job=["pre"], post_job=["post"])
        elif shape == "one-at-a-time":
            extra["max_running"] = 1
        elif shape == "after" and f"j{self.jobs_made - 1}" in self.sched.jobs:
            extra["after"] = [f"j{self.jobs_made - 1}"]
        spec = JobSpec(
            frames=f"1-{frames}",
            chunk=size,
            retries=retries,
            argv=["render", "{start}", "{end}"],
            timeouts=Timeouts(on_timeout=on_timeout),  # type: ignore[arg-type]
            **extra,  # type: ignore[arg-type]
        )
        self._run(lambda: self.sched.submit(job_id, spec, "alice", self.now))

    @initialize(
        frames=st.integers(1, 4),
        size=st.integers(1, 3),
        retries=st.integers(0, 2),
        shape=st.sampled_from(SHAPES),
        on_timeout=st.sampled_from(ON_TIMEOUT),
    )
    def farm_starts(
        self, frames: int, size: int, retries: int, shape: str, on_timeout: str
    ) -> None:
        """n1 (1 slot) and n2 (2 slots) connect, n3 (1 slot) is off; a first job is
        submitted and dispatched."""
        self._connect(self.agents["n1"])
        self._connect(self.agents["n2"])
        self._submit(frames, size, retries, shape, on_timeout)

    # --- jobs and dispatch -----------------------------------------------------------
    @rule(
        frames=st.integers(1, 4),
        size=st.integers(1, 3),
        retries=st.integers(0, 2),
        shape=st.sampled_from(SHAPES),
        on_timeout=st.sampled_from(ON_TIMEOUT),
    )
    def submit(self, frames: int, size: int, retries: int, shape: str, on_timeout: str) -> None:
        """Submit frames 1-``frames`` in chunks of ``size`` with ``retries``; ``shape`` adds
        scout frames, pre/post-job scripts, max_running=1 or a dependency on the previous
        job; ``on_timeout`` is what a "timeout" report does."""
        self._submit(frames, size, retries, shape, on_timeout)

    @rule()
    def short_chunks(self) -> None:
        """A job of eight one-frame chunks whose first chunk to run ends done at once: its
        chunks are short, so a node with room ahead of its slots (n2) is handed one more."""
        self._submit(8, 1, 0, "plain", "error")
        job_id = f"j{self.jobs_made}"
        for agent, key in self._running():
            if key[0] == job_id and agent.link:
                self._deliver(agent, self._end(agent, key, "done"))
                return

    @rule()
    def dispatch(self) -> None:
        """The leader dispatches on its own (a retry's backoff ended). Every other event is
        followed by a dispatch too, as ``Leader.run`` does; agents whose link is up start
        their assignments, the others never hear of them."""
        self._run(Changes)

    # --- agents ----------------------------------------------------------------------
    def _running(self) -> list[tuple[Agent, Key]]:
        return [(a, k) for _, a in sorted(self.agents.items()) for k in sorted(a.running)]

    @precondition(lambda self: any(a.running for a in self.agents.values()))
    @rule(
        pick=PICK,
        outcome=st.sampled_from(["done", "failed", "killed", "timeout"]),
        send=st.booleans(),
        kept=st.booleans(),
    )
    def agent_finishes(self, pick: int, outcome: str, send: bool, kept: bool) -> None:
        """An attempt ends on its own (``kept``: a failed copy keeps its staged output).

        Its report is sent now if ``send`` and the link is up, else it waits in the outbox.
        """
        running = self._running()
        agent, key = running[pick % len(running)]
        report = self._end(agent, key, outcome, kept=kept)
        if send and agent.link:
            self._deliver(agent, report)

    @precondition(lambda self: any(a.link and a.outbox for a in self.agents.values()))
    @rule(pick=PICK, ack=st.booleans())
    def deliver_outbox(self, pick: int, ack: bool) -> None:
        """An outbox report reaches the leader; without ``ack`` the acknowledgement is lost,
        so it stays in the outbox and is sent (and listed in a hello) again."""
        waiting = [(a, r) for _, a in sorted(self.agents.items()) if a.link for r in a.outbox]
        agent, report = waiting[pick % len(waiting)]
        self._deliver(agent, report, ack=ack)

    @precondition(lambda self: any(a.link and a.sent for a in self.agents.values()))
    @rule(pick=PICK)
    def replay_report(self, pick: int) -> None:
        """A report already delivered arrives again (duplicate, usually about a stale attempt)."""
        sent = [(a, r) for _, a in sorted(self.agents.items()) if a.link for r in a.sent]
        agent, report = sent[pick % len(sent)]
        self._deliver(agent, report, ack=False)

    @precondition(lambda self: any(a.kills for a in self.agents.values()))
    @rule(pick=PICK, send=st.booleans())
    def agent_kills(self, pick: int, send: bool) -> None:
        """An agent acts on a kill it received: the tree dies and a "killed" report follows
        (sent now if ``send`` and the link is up). A kill for an attempt no longer running
        here is ignored."""
        kills = [(a, k) for _, a in sorted(self.agents.items()) for k in a.kills]
        agent, key = kills[pick % len(kills)]
        agent.kills.remove(key)
        if key not in agent.running and key not in agent.queued:
            return
        report = self._end(agent, key, "killed", reason="killed on request")
        if send and agent.link:
            self._deliver(agent, report)

    @precondition(lambda self: any(a.link for a in self.agents.values()))
    @rule(pick=PICK, noticed=st.booleans())
    def disconnect(self, pick: int, noticed: bool) -> None:
        """A link drops, with kills in flight on it. The agent runs on under its lease.
        ``noticed``: the leader sees the socket close (else it keeps dispatching into it)."""
        up = [a for _, a in sorted(self.agents.items()) if a.link]
        agent = up[pick % len(up)]
        agent.link = False
        agent.kills.clear()
        if noticed:
            self._run(lambda: self.sched.node_disconnected(agent.name, self.now))

    @precondition(lambda self: any(not a.link for a in self.agents.values()))
    @rule(pick=PICK)
    def reconnect(self, pick: int) -> None:
        """An agent whose link is down says hello: ``running`` is what it really runs,
        ``finished`` its outbox. The stale attempts the leader returns join its kills."""
        down = [a for _, a in sorted(self.agents.items()) if not a.link]
        self._connect(down[pick % len(down)])

    @rule(node=NODE, noticed=st.booleans(), keeps_state=st.booleans())
    def crash(self, node: str, noticed: bool, keeps_state: bool) -> None:
        """A node's agent dies and restarts: its trees die with it (the shims see their agent
        gone) without a report, the kills it had are forgotten and its link is down.
        ``keeps_state``: only the agent process restarted and its persisted outbox survives;
        otherwise the machine lost its state folder too. ``noticed``: the leader sees the
        socket close."""
        agent = self.agents[node]
        agent.running.clear()
        agent.queued.clear()
        agent.kills.clear()
        if not keeps_state:
            agent.outbox.clear()
            agent.sent.clear()
        agent.link = False
        agent.lease_until = float("-inf")
        if noticed:
            self._run(lambda: self.sched.node_disconnected(node, self.now))

    @rule(node=NODE, enabled=st.booleans())
    def enable_node(self, node: str, enabled: bool) -> None:
        """An operator disables or enables a node (disabled: nothing new starts there)."""
        if node in self.sched.nodes:
            self._run(lambda: self.sched.set_node_enabled(node, enabled, "bob", self.now))

    # --- time ------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([1.0, 3.0, 5.0, 8.0, 10.0, 16.0]), silent=SILENT)
    def time_passes(self, seconds: float, silent: frozenset[str]) -> None:
        """The clock moves. Connected agents not ``silent`` heartbeat all along (each answer
        renews their lease); the others' leases run out after LEASE and kill their trees.
        Then the leader ticks: nodes silent for node_timeout are lost."""
        self.now += seconds
        for name, agent in sorted(self.agents.items()):
            if agent.link and name not in silent:
                self._heartbeat(agent)
            elif self.now > agent.lease_until:
                self._lease_runs_out(agent)
        self._run(lambda: self.sched.tick(self.now))

    @rule(seconds=st.sampled_from([1.0, 4.0, 8.0, 14.0]), silent=SILENT)
    def leader_stalls(self, seconds: float, silent: frozenset[str]) -> None:
        """The leader's loop is blocked for ``seconds``: nobody's lease is renewed meanwhile
        (so some run out and kill their trees), then it ticks with ``stalled=seconds`` and
        reads the heartbeats waiting in the sockets of the agents not ``silent``."""
        self.now += seconds
        for _, agent in sorted(self.agents.items()):
            if self.now > agent.lease_until:
                self._lease_runs_out(agent)
        self._run(lambda: self.sched.tick(self.now, stalled=seconds))
        for name, agent in sorted(self.agents.items()):
            if agent.link and name not in silent:
                self._heartbeat(agent)

    @rule()
    def leader_restarts(self) -> None:
        """The leader restarts from a store holding everything it committed: every link
        drops (kills in flight are lost) and a new scheduler loads the records."""
        jobs = copy.deepcopy(list(self.sched.jobs.values()))
        nodes = copy.deepcopy(list(self.sched.nodes.values()))
        for agent in self.agents.values():
            agent.link = False
            agent.kills.clear()
        scheduler = Scheduler(CONFIG)
        self._start(scheduler)
        self._run(lambda: scheduler.load(jobs, nodes, self.now), dispatch=False)

    # --- operators -------------------------------------------------------------------
    @precondition(lambda self: bool(self.sched.jobs))
    @rule(pick=PICK, action=st.sampled_from(JOB_ACTIONS))
    def job_action(self, pick: int, action: str) -> None:
        """An operator acts on one job; running chunks it stops are killed, their slots
        held until confirmed."""
        ids = sorted(self.sched.jobs)
        job_id = ids[pick % len(ids)]
        self._operator(
            [job_id],
            lambda: self.sched.job_action([job_id], action, "bob", self.now),  # type: ignore[arg-type]
        )

    @precondition(lambda self: bool(self.sched.jobs))
    @rule(
        pick=PICK,
        chunks=st.lists(PICK, min_size=1, max_size=2),
        action=st.sampled_from(CHUNK_ACTIONS),
    )
    def chunk_action(self, pick: int, chunks: list[int], action: str) -> None:
        """An operator acts on one or two chunks of a job (retry, set-done, exclude ...)."""
        ids = sorted(self.sched.jobs)
        job = self.sched.jobs[ids[pick % len(ids)]]
        indices = [c % len(job.chunks) for c in chunks]
        self._operator(
            [job.id],
            lambda: self.sched.chunk_action(job.id, indices, action, "bob", self.now),  # type: ignore[arg-type]
        )

    # --- invariants ------------------------------------------------------------------
    @invariant()
    def inv7_counters_match_a_recount(self) -> None:
        check_counters(self.sched)

    @invariant()
    def inv1_at_most_one_live_attempt_per_chunk(self) -> None:
        live: dict[ChunkKey, list[tuple[str, int]]] = {}
        for name, agent in sorted(self.agents.items()):
            for job_id, index, attempt in agent.running:
                live.setdefault((job_id, index), []).append((name, attempt))
        for key, where in live.items():
            assert len(where) <= 1, f"invariant 1: chunk {key} runs {len(where)} times: {where}"

    @invariant()
    def inv2_no_node_over_its_slots(self) -> None:
        for name, agent in self.agents.items():
            assert len(agent.running) <= agent.slots, (
                f"invariant 2: {name} really runs {sorted(agent.running)} on {agent.slots} slots"
            )
        for name, node in self.sched.nodes.items():
            if node.online:
                assert len(node.running) <= node.slots + node.prefetch, (
                    f"invariant 2: scheduler fills {name} with {sorted(node.running)} "
                    f"on {node.slots} slots and {node.prefetch} ahead"
                )

    @invariant()
    def inv3_one_done_record_per_epoch(self) -> None:
        for job in self.sched.jobs.values():
            for chunk in job.chunks:
                done = {a.number for a in chunk.attempts if a.outcome == "done"}
                new = done - self.baseline.get((job.id, chunk.index), set())
                assert len(new) <= 1, (
                    f"invariant 3: chunk {(job.id, chunk.index)} has done attempts "
                    f"{sorted(new)} with no operator rerun in between"
                )

    @invariant()
    def inv4_every_held_slot_is_accounted_for(self) -> None:
        nodes = self.sched.nodes
        for name, node in nodes.items():
            for job_id, index, attempt in node.running:
                chunk = self._chunk(job_id, index)
                if chunk is None:
                    continue  # a deleted job's attempt, held until confirmed dead
                current = (
                    chunk.state == "assigned" and chunk.node == name and chunk.attempt == attempt
                )
                fenced = chunk.stopping_node == name and chunk.stopping_attempt == attempt
                assert current or fenced, (
                    f"invariant 4: {name} holds a slot for {(job_id, index, attempt)}, which is "
                    f"neither current (state {chunk.state} on {chunk.node} attempt "
                    f"{chunk.attempt}) nor fenced ({chunk.stopping_node} "
                    f"attempt {chunk.stopping_attempt})"
                )
        for job in self.sched.jobs.values():
            for chunk in job.chunks:
                if chunk.state == "assigned":
                    assert chunk.node is not None
                    assert (job.id, chunk.index, chunk.attempt) in nodes[chunk.node].running, (
                        f"invariant 4: assigned chunk {(job.id, chunk.index)} holds no slot"
                    )
                    assert chunk.stopping_node is None, (
                        f"invariant 4: chunk {(job.id, chunk.index)} attempt {chunk.attempt} "
                        f"assigned while attempt {chunk.stopping_attempt} on "
                        f"{chunk.stopping_node} is fenced"
                    )
                if chunk.stopping_node is not None:
                    key = (job.id, chunk.index, chunk.stopping_attempt)
                    assert key in nodes[chunk.stopping_node].running, (
                        f"invariant 4: fence {key} on {chunk.stopping_node} holds no slot"
                    )

    @invariant()
    def inv5_done_credited_once_per_epoch(self) -> None:
        for key, attempts in self.credits.items():
            assert len(attempts) <= 1, (
                f"invariant 5: chunk {key} credited done for attempts {attempts} "
                "with no operator rerun in between"
            )

    @invariant()
    def inv6_every_real_process_is_known(self) -> None:
        for name, agent in sorted(self.agents.items()):
            node = self.sched.nodes.get(name)
            for key in [*sorted(agent.running), *agent.queued]:
                assert node is not None, f"invariant 6: {name} runs {key}, node unknown"
                assert key in node.running, (
                    f"invariant 6: {name} really runs {key} but the scheduler freed its slot"
                )
                chunk = self._chunk(key[0], key[1])
                if chunk is None:
                    continue
                current = chunk.state == "assigned" and chunk.node == name
                current = current and chunk.attempt == key[2]
                fenced = chunk.stopping_node == name and chunk.stopping_attempt == key[2]
                assert current or fenced, (
                    f"invariant 6: {name} really runs {key}; the scheduler neither counts it "
                    f"current nor fences the chunk"
                )


FarmModel.TestCase.settings = settings(
    max_examples=int(os.environ.get("FARMTUI_MODEL_EXAMPLES", "60")),
    stateful_step_count=40,
    deadline=None,
    # Keep the shared working tree clean: no .hypothesis/ example database.
    database=None,
)
TestFarmModel = FarmModel.TestCase


# --- the machine's key scenarios, replayed deterministically --------------------------
def _check(farm: FarmModel) -> None:
    """Check every invariant, as Hypothesis does after each step."""
    for name in sorted(dir(FarmModel)):
        if name.startswith("inv") and name[3].isdigit():
            getattr(farm, name)()


def _started() -> FarmModel:
    """One chunk (j1, 0), attempt 1 on n2 (the node with the most free slots)."""
    farm = FarmModel()
    farm.farm_starts(frames=1, size=1, retries=0, shape="plain", on_timeout="error")
    _check(farm)
    assert set(farm.agents["n2"].running) == {("j1", 0, 1)}
    return farm


def _retried(farm: FarmModel) -> None:
    """An operator retries the running chunk: killed, fenced, not dispatched again."""
    farm.chunk_action(pick=0, chunks=[0], action="retry")
    _check(farm)
    assert farm.agents["n2"].kills == [("j1", 0, 1)]
    assert farm.sched.jobs["j1"].chunks[0].state == "queued"


def test_a_retried_chunk_starts_again_only_once_its_kill_is_confirmed() -> None:
    farm = _started()
    _retried(farm)
    farm.agent_kills(pick=0, send=True)
    _check(farm)
    assert set(farm.agents["n2"].running) == {("j1", 0, 2)}


def test_a_kill_lost_with_the_link_is_sent_again_after_the_hello() -> None:
    farm = _started()
    _retried(farm)
    farm.disconnect(pick=1, noticed=False)  # n2: the kill is lost with the link
    _check(farm)
    farm.reconnect(pick=0)  # n2 says it still runs attempt 1
    _check(farm)
    assert farm.agents["n2"].kills == [("j1", 0, 1)]
    assert not farm.agents["n1"].running
    farm.agent_kills(pick=0, send=True)
    _check(farm)
    assert set(farm.agents["n2"].running) == {("j1", 0, 2)}


def test_a_fence_on_a_lost_node_is_lifted_once_its_lease_has_killed_the_tree() -> None:
    farm = _started()
    _retried(farm)
    farm.time_passes(seconds=8.0, silent=frozenset({"n2"}))
    _check(farm)
    assert not farm.agents["n1"].running, "n2's lease still runs: the chunk waits"
    farm.time_passes(seconds=8.0, silent=frozenset({"n2"}))
    _check(farm)
    assert not farm.agents["n2"].running
    assert set(farm.agents["n1"].running) == {("j1", 0, 2)}
