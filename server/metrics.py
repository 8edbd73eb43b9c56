"""``GET /metrics``: the farm in the Prometheus text format, built when scraped.

Gauges (jobs, chunks and frames by state, nodes, slots) are read at scrape
time from what the scheduler keeps up to date anyway: each job's ``Tally``
(chunks and frames per state, its running chunks) and each node's record. A
scrape therefore costs O(jobs + nodes), never O(chunks), and runs on the
event loop in one go without touching the store or the disk.

Counters that must move on events (chunks dispatched, chunks done, farm
events by level) are kept by ``ChangeCounters``, which the leader hands every
committed ``Changes`` (``Leader.publish``): a few integer adds per commit.
Rates are Prometheus's business (``rate(farmtui_chunks_completed_total[5m])``).

Who may scrape: any token that may read the farm (viewer, user, admin), or
the ``metrics_token`` of ``leader.toml``, so that Prometheus needs no user's
token.
"""

from __future__ import annotations

import math
import secrets
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, get_args

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from farmtui.protocol import ChunkState, FrameState, JobState, NodeState
from server.frame_states import PENDING, tally_of
from server.model import Changes, Job, Stage, Tally
from server.watchdog import LAG_BUCKETS

if TYPE_CHECKING:
    from server.leader import Leader

__all__ = ["CONTENT_TYPE", "ChangeCounters", "exposition", "is_metrics_token"]

# The text format prometheus_client writes (version 0.0.4).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

JOB_STATES: tuple[str, ...] = get_args(JobState)
CHUNK_STATES: tuple[str, ...] = get_args(ChunkState)
FRAME_STATES: tuple[str, ...] = get_args(FrameState)
NODE_STATES: tuple[str, ...] = get_args(NodeState)
LEVELS = ("info", "warn", "error")


# Each stage's key of its done chunks in a job's counters (``Tally.chunks``).
_DONE_KEYS: tuple[tuple[Stage, str], ...] = tuple(
    (where, "done") for where in ("pre", "scout", "render", "post")
)


def _done_chunks(tally: Tally) -> int:
    """Four lookups, not a walk of the counters: once a job a commit touches."""
    chunks = tally.chunks
    return sum(chunks.get(key, 0) for key in _DONE_KEYS)


class ChangeCounters:
    """Counters of what committed changes did, for ``/metrics``.

    ``completed`` counts chunks that became done. A job's tally says how many
    of its chunks are done now; the counter adds how many more than at the
    previous commit that touched the job (a requeue lowers the tally and
    adds nothing), so it costs a dict lookup per job a commit touches.
    """

    def __init__(self) -> None:
        self.dispatched = 0
        self.completed = 0
        self.events: Counter[str] = Counter()
        # job id -> its done chunks at the last commit that touched it; None
        # until the leader has loaded its store (``start``).
        self._done: dict[str, int] | None = None

    def start(self, jobs: Mapping[str, Job]) -> None:
        """After the store is loaded: what is done already was not done by this leader."""
        self._done = {job_id: _done_chunks(tally_of(job)) for job_id, job in jobs.items()}

    def observe(self, changes: Changes, jobs: Mapping[str, Job]) -> None:
        """Count one committed change (after the commit)."""
        self.dispatched += len(changes.assignments)
        self.events.update(event.level for event in changes.events)
        if self._done is None:
            return  # the load itself
        for job_id in changes.removed:
            self._done.pop(job_id, None)
        # A chunk's state changes only in ``frame_states.tracking``, which names its job
        # in ``jobs``: the jobs of ``chunks`` alone have no chunk done or undone.
        for job_id in changes.jobs:
            job = jobs.get(job_id)
            if job is None:
                continue
            done = _done_chunks(tally_of(job))
            before = self._done.get(job_id, 0)
            if done > before:
                self.completed += done - before
            self._done[job_id] = done


def is_metrics_token(leader: Leader, token: str | None) -> bool:
    """True when ``token`` is the leader's ``metrics_token`` (compared in constant time)."""
    expected = leader.config.metrics_token
    if not expected or not token:
        return False
    return secrets.compare_digest(token.encode(), expected.encode())


def exposition(leader: Leader, loop_lag: float) -> bytes:
    """The farm's metrics as Prometheus text; ``loop_lag`` is measured by the caller."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_FarmCollector(leader, loop_lag))
    return generate_latest(registry)


class _FarmCollector(Collector):
    """Reads the leader once per scrape (a registry made for that scrape)."""

    def __init__(self, leader: Leader, loop_lag: float) -> None:
        self.leader = leader
        self.loop_lag = loop_lag

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs(self.leader.scheduler.jobs.values())
        yield from self._nodes()
        yield from self._leader()

    def _jobs(self, jobs: Iterable[Job]) -> Iterator[Metric]:
        by_state: Counter[str] = Counter()
        chunks: Counter[str] = Counter()
        frames: Counter[str] = Counter()
        archived = running = waiting = 0
        for job in jobs:
            by_state[job.state] += 1
            archived += job.archived
            tally = tally_of(job)
            for (_, state), n in tally.chunks.items():
                chunks[state] += n
            frames.update(tally.frames)
            running += len(tally.running)
            if job.state in ("queued", "rendering"):  # chunks a free slot could take
                waiting += sum(n for (_, state), n in tally.chunks.items() if state in PENDING)
        yield _by_label(
            "farmtui_jobs", "Jobs by state (archived ones included).", "state", JOB_STATES, by_state
        )
        yield GaugeMetricFamily("farmtui_jobs_archived", "Archived jobs.", value=archived)
        yield _by_label(
            "farmtui_chunks",
            "Chunks by state (assigned: on a node now).",
            "state",
            CHUNK_STATES,
            chunks,
        )
        yield GaugeMetricFamily(
            "farmtui_chunks_running", "Chunks assigned to a node (rendering).", value=running
        )
        yield GaugeMetricFamily(
            "farmtui_chunks_queued",
            "Chunks of queued or rendering jobs that wait for a slot "
            "(queued, waiting-retry, preempted).",
            value=waiting,
        )
        yield _by_label("farmtui_frames", "Frames by state.", "state", FRAME_STATES, frames)

    def _nodes(self) -> Iterator[Metric]:
        nodes = self.leader.scheduler.nodes
        states: Counter[str] = Counter()
        slots = GaugeMetricFamily("farmtui_node_slots", "A node's slots.", labels=["node"])
        used = GaugeMetricFamily(
            "farmtui_node_slots_used",
            "A node's slots held by chunks (running, or told to stop and not yet confirmed).",
            labels=["node"],
        )
        cpu = GaugeMetricFamily(
            "farmtui_node_cpu_percent", "A node's CPU use at its last heartbeat.", labels=["node"]
        )
        memory = GaugeMetricFamily(
            "farmtui_node_memory_percent",
            "A node's memory use at its last heartbeat.",
            labels=["node"],
        )
        up = GaugeMetricFamily(
            "farmtui_node_online", "1 when the node's agent is connected.", labels=["node"]
        )
        total_slots = free_slots = 0
        for name in sorted(nodes):
            node = nodes[name]
            state = "disabled" if not node.enabled else ("online" if node.online else "offline")
            states[state] += 1
            slots.add_metric([name], node.slots)
            used.add_metric([name], len(node.running))
            cpu.add_metric([name], node.cpu_percent)
            memory.add_metric([name], node.memory_percent)
            up.add_metric([name], 1 if node.online else 0)
            if state == "online":
                total_slots += node.slots
                free_slots += max(0, node.slots - len(node.running))
        yield _by_label("farmtui_nodes", "Nodes by state.", "state", NODE_STATES, states)
        yield GaugeMetricFamily(
            "farmtui_slots", "Slots of online, enabled nodes.", value=total_slots
        )
        yield GaugeMetricFamily(
            "farmtui_slots_free", "Free slots of online, enabled nodes.", value=free_slots
        )
        yield from (slots, used, cpu, memory, up)

    def _leader(self) -> Iterator[Metric]:
        leader = self.leader
        counters = leader.counters
        yield CounterMetricFamily(
            "farmtui_chunks_dispatched", "Chunk attempts sent to nodes.", value=counters.dispatched
        )
        yield CounterMetricFamily(
            "farmtui_chunks_completed", "Chunks that became done.", value=counters.completed
        )
        events = CounterMetricFamily("farmtui_events", "Farm events by level.", labels=["level"])
        for level in LEVELS:
            events.add_metric([level], counters.events[level])
        yield events
        metrics = leader.metrics
        yield CounterMetricFamily(
            "farmtui_commits",
            "Commits to the store (one transaction each, holding the groups of changes "
            "that waited for it).",
            value=leader.commit_line.commits,
        )
        yield CounterMetricFamily(
            "farmtui_commit_seconds",
            "Time spent committing changes to the store (on the commits' thread).",
            value=leader.commit_line.seconds,
        )
        yield CounterMetricFamily(
            "farmtui_step_seconds",
            "Time spent handling changes on the event loop (scheduler, commit, announce).",
            value=metrics.seconds,
        )
        yield GaugeMetricFamily(
            "farmtui_step_slowest_seconds",
            "The longest change handled on the event loop since the start.",
            value=metrics.slowest,
        )
        watchdog = leader.watchdog
        yield GaugeMetricFamily(
            "farmtui_event_loop_lag_seconds",
            "How long the event loop took to come back to the scrape (its queue, in time).",
            value=self.loop_lag,
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*LAG_BUCKETS, math.inf), watchdog.lag_counts, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else repr(bound), cumulative))
        yield HistogramMetricFamily(
            "farmtui_event_loop_beat_lag_seconds",
            f"How late the watchdog's beat (every {watchdog.interval * 1000:.0f} ms) woke: "
            "every lag of the event loop, not only the stalls logged.",
            buckets=buckets,
            sum_value=watchdog.lag_sum,
        )
        yield GaugeMetricFamily(
            "farmtui_event_loop_longest_beat_lag_seconds",
            "The latest the watchdog's beat woke since the start.",
            value=watchdog.longest_lag,
        )
        yield CounterMetricFamily(
            "farmtui_event_loop_stalls",
            f"Event loop stalls over {watchdog.threshold * 1000:.0f} ms (the watchdog's count).",
            value=watchdog.stalls,
        )
        yield GaugeMetricFamily(
            "farmtui_event_loop_longest_stall_seconds",
            "The longest event loop stall since the start.",
            value=watchdog.longest,
        )
        yield CounterMetricFamily(
            "farmtui_gc_seconds",
            "Time the garbage collector held the leader, every collection.",
            value=watchdog.gc_seconds,
        )
        yield CounterMetricFamily(
            "farmtui_gc_pauses",
            f"Garbage collector pauses over {watchdog.threshold * 1000:.0f} ms.",
            value=watchdog.gc_pauses,
        )
        yield GaugeMetricFamily(
            "farmtui_agents_connected", "Agent links open now.", value=len(leader.agents)
        )
        yield GaugeMetricFamily(
            "farmtui_consoles_connected", "Console links open now.", value=len(leader.consoles)
        )


def _by_label(
    name: str, documentation: str, label: str, values: Iterable[str], counts: Mapping[str, int]
) -> GaugeMetricFamily:
    """One gauge per known value (0 included, so dashboards see every series)."""
    family = GaugeMetricFamily(name, documentation, labels=[label])
    known = list(values)
    for value in [*known, *sorted(set(counts) - set(known))]:
        family.add_metric([value], counts.get(value, 0))
    return family
