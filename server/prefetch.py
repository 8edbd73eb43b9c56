"""Which jobs a node may take chunks of ahead of a free slot (its ``prefetch``).

An agent started with ``--prefetch N`` holds up to N chunks beyond its
slots, each waiting (its folder made, its journal entry written) for a slot
to free. A slot then starts its next renderer as soon as the last one exits,
instead of after the report's round trip through the leader: for chunks of a
fraction of a second that round trip was most of their time.

Only chunks that are short are taken ahead: a chunk waiting behind a
half-hour render would hold up its job while another node sits idle. So a
job qualifies once its render chunks have taken less than ``PREFETCH_BELOW``
seconds on average and the last one done did too (a job whose frames turn
heavy stops at once, not when its average catches up), and not when its
chunks hold something scarce while they wait (GPUs, units of a limit).

Before a chunk of its own is done, a job qualifies when its kind of work
(``work_kind``: the same owner, renderer, scene, output, command,
environment and chunk size) is short: the last job of that kind whose chunks
were judged had short ones (``ShortKinds``). Without that, a queue of many
small jobs (a thousand jobs of a hundred quick chunks) never took anything
ahead: each job's chunks were all given out before the first of them ended,
so no job with chunks still waiting was ever known short. Such a job whose
first chunk takes ``PREFETCH_BELOW`` seconds or more (its end says so, or
the clock) makes its kind long and takes back what of it waits. A kind is
looked up when the dispatch pass comes to the job, never by going over the
queue when a kind turns.

The clock: a render of a job that takes chunks ahead that has run
``PREFETCH_BELOW`` seconds and not ended makes the job long at once (its
first, or one after brief ones: frames that turn heavy), until a render
time says otherwise, and takes back what of it waits (``Scheduler.tick``).
Without it a chunk waited ahead behind a long render for as long as that
ran, while a node sat idle.

What waits ahead is taken back (the agent stops a chunk only if its renderer
has not started; it comes back with no retry used) when nothing new of its
job may start there (paused, held, the node disabled or blocked for it, its
chunks turned long), and for a job that comes before it in dispatch order and
waits for a slot on that node.
"""

from __future__ import annotations

import math
from collections.abc import Hashable
from typing import Generic, TypeVar

from server.frame_states import PENDING, tally_of
from server.model import Changes, Job, Kill, Node

PREFETCH_BELOW = 5.0  # seconds: a render chunk's mean time, for its job's chunks to wait
# A node holds one chunk of a job ahead of each slot; more only while one chunk is so
# brief that it does not cover its report's round trip: about this much of the job's
# work a slot (``depth``), up to the node's ``--prefetch``.
AHEAD_SECONDS = 1.0

# Taking back what waits for a job that comes first (``Scheduler.tick``): the jobs
# at the head of the dispatch order looked at, how many of them take back, how
# often one job may (seconds), and the attempts asked back remembered (so each is
# asked once) before the list is pruned.
FIRST_LOOKED_AT = 64
FIRST_TAKING_BACK = 4
TAKE_BACK_EVERY = 10.0
ASKED_BACK_KEPT = 4096
# The chunks of such a job that wait for nothing but a slot: not those waiting out
# a retry's backoff (one already due starts on a free slot like any other).
STARTABLE = PENDING - {"waiting-retry"}


K = TypeVar("K", bound=Hashable)


class Spaced(Generic[K]):
    """When each key (a job, a job on a node) last took chunks back, so that it does at
    most once every ``TAKE_BACK_EVERY`` seconds: a rule a pass does not see cannot make
    chunks bounce. What is older than that goes once more than ``ASKED_BACK_KEPT`` are kept."""

    def __init__(self) -> None:
        self._at: dict[K, float] = {}

    def recent(self, key: K, now: float) -> bool:
        """Whether ``key`` took back within the last ``TAKE_BACK_EVERY`` seconds."""
        return now - self._at.get(key, -math.inf) < TAKE_BACK_EVERY

    def took(self, key: K, now: float) -> None:
        if len(self._at) > ASKED_BACK_KEPT:
            self._at = {k: t for k, t in self._at.items() if now - t < TAKE_BACK_EVERY}
        self._at[key] = now


# A node gives back what it holds of a job beyond the job's depth now (its chunks took
# longer: ``ChunkReports._hold_fewer``) only when that is at least this much of the job's
# work a slot (seconds), and at most once in TAKE_BACK_EVERY a job and node. The times of
# brief chunks wobble by a factor of two (a Python start-up, a busy machine): given back at
# once, they came back with the next pass, up to six times a chunk (break round 32a).
HOLD_FEWER_WORTH = 2.0

# Kinds of work remembered as short (``ShortKinds``): the least recent goes beyond this.
KINDS_KEPT = 1024
# The jobs of the dispatch order one pass looks at for room ahead of a slot, at most.
AHEAD_LOOKED_AT = 64

Kind = tuple[str, str, str | None, str | None, int, tuple[str, ...], tuple[tuple[str, str], ...]]


def work_kind(job: Job) -> Kind:
    """What makes two jobs the same work on other frames: whose, which renderer, scene,
    output, command and environment, and how many frames a chunk. Worked out once."""
    tally = tally_of(job)
    if tally.kind is None:
        spec = job.spec
        tally.kind = (
            job.owner,
            spec.renderer,
            spec.scene,
            spec.output,
            spec.chunk,
            tuple(spec.argv),
            tuple(sorted(spec.env.items())),
        )
    return tally.kind  # type: ignore[return-value]


class ShortKinds:
    """The kinds of work (``work_kind``) whose chunks were short when last seen, and how
    many of their chunks a node may hold ahead of a slot (``ahead_a_slot``)."""

    __slots__ = ("_kinds",)

    def __init__(self) -> None:
        self._kinds: dict[Kind, float] = {}  # in the order learnt: the oldest goes first

    def __contains__(self, kind: object) -> bool:
        return kind in self._kinds

    def __bool__(self) -> bool:
        return bool(self._kinds)

    def per_slot(self, kind: Kind) -> float:
        """Chunks of ``kind`` ahead of a slot, as its last job judged had them (1: not known)."""
        return self._kinds.get(kind, 1.0)

    def learn(self, kind: Kind, short: bool, per_slot: float = 1.0) -> None:
        """A job of ``kind`` was judged short or long: so is the kind, from now on; and a
        short one's chunks as brief as that job's (``per_slot``). O(1)."""
        self._kinds.pop(kind, None)
        if short:
            self._kinds[kind] = per_slot
            if len(self._kinds) > KINDS_KEPT:
                del self._kinds[next(iter(self._kinds))]


def takes_ahead(job: Job, kinds: ShortKinds | None = None) -> bool:
    """Whether a node may hold the job's chunks ahead of a free slot: O(1).

    ``kinds``: the farm's short kinds of work, for a job none of whose chunks
    is done yet.
    """
    spec = job.spec
    if spec.gpus or spec.limits:
        return False
    tally = tally_of(job)
    if tally.long_renders and renders_long(job):
        return False
    if tally.last_time is not None and tally.last_time >= PREFETCH_BELOW:
        return False
    if not tally.times:
        return kinds is not None and bool(kinds) and work_kind(job) in kinds
    return tally.time_sum < PREFETCH_BELOW * len(tally.times)


def renders_long(job: Job) -> bool:
    """Whether a render of ``job`` seen running ``PREFETCH_BELOW`` s still runs: O(1)
    amortized, whatever the job's size. The first still running answers; those that
    ended before it go from ``Tally.long_renders``, each once."""
    long = tally_of(job).long_renders
    while long:
        if still_runs(job, *long[0]):
            return True
        long.popleft()
    return False


def still_runs(job: Job, index: int, attempt: int) -> bool:
    """Whether attempt ``attempt`` of the job's chunk ``index`` has not ended."""
    chunk = job.chunks.look(index) if 0 <= index < len(job.chunks) else None
    return chunk is not None and chunk.state == "assigned" and chunk.attempt == attempt


def ahead_a_slot(job: Job, kinds: ShortKinds | None = None) -> float:
    """How many chunks of ``job`` a node may hold ahead of each of its slots: O(1).

    One; as many as ``AHEAD_SECONDS`` of the job's work when its chunks are
    briefer than that (their mean, or the last one done if it took longer: a
    job whose frames turn heavy goes back to one at once). Before one of its
    chunks is done, as its kind of work's last job judged (``kinds``): a queue
    of many small jobs of brief chunks fills a deep node as one job does,
    where each new job found every such node already full. One chunk ahead
    hides the round trip of a report through the leader for a chunk of a
    second; for chunks of milliseconds (a script a frame) a slot ran dry
    between two of them. More chunks of seconds would only hold a job's last
    frames on one node while others idle.
    """
    took = chunk_time(job)
    if took is None:
        return 1.0 if kinds is None else kinds.per_slot(work_kind(job))
    return math.inf if took <= 0 else max(1.0, AHEAD_SECONDS // took)


def chunk_time(job: Job) -> float | None:
    """What a chunk of ``job`` takes, as what it holds ahead goes by: its chunks' mean
    time, or the last one's if that took longer (None: none done yet). O(1)."""
    tally = tally_of(job)
    if not tally.times:
        return None
    return max(tally.time_sum / len(tally.times), tally.last_time or 0.0)


def depth(node: Node, per_slot: float) -> int:
    """Chunks ``node`` may hold ahead of its slots of a job of ``per_slot`` a slot
    (``ahead_a_slot``): never more than its prefetch."""
    return min(node.prefetch, node.slots * int(min(per_slot, node.prefetch)))


def held_at_most(node: Node, per_slot: float) -> int:
    """Chunks of a job of ``per_slot`` a slot ``node`` may hold in all: one a slot
    rendering, and ``depth`` ahead of them."""
    return node.slots + depth(node, per_slot)


def holds_deep(node: Node) -> bool:
    """Whether ``node`` may hold more than a chunk a slot ahead (``--prefetch`` beyond its
    slots): only there does a job's ``depth`` differ from one job to another."""
    return node.prefetch > node.slots


def withdraw_waiting(
    job: Job, nodes: dict[str, Node], changes: Changes, reason: str, only: str | None = None
) -> None:
    """Take back the job's chunks that wait for a slot on a node (held ahead of it).

    Its agent stops those whose renderer has not started, and they come back
    (no retry used); a chunk already rendering runs on. ``only``: on that node.
    """
    for index in sorted(tally_of(job).running):
        chunk = job.chunks[index]
        node = nodes.get(chunk.node or "")
        if node is None or not node.prefetch or (only is not None and node.name != only):
            continue  # a node that takes nothing ahead starts every chunk it is given
        take_back(node.name, (job.id, index, chunk.attempt), reason, changes)


def take_back(node: str, attempt: tuple[str, int, int], reason: str, changes: Changes) -> None:
    """Ask ``node`` to stop the attempt (job id, chunk, attempt) if it waits for a slot."""
    job_id, chunk, number = attempt
    changes.kills.append(
        Kill(
            node=node,
            job_id=job_id,
            chunk=chunk,
            attempt=number,
            reason=reason,
            waiting_only=True,
        )
    )
