"""The dispatch index and the free-slot table, kept up to date after every event.

The dispatch index holds the jobs that may dispatch, sorted by dispatch key;
the free-slot table the nodes with room. ``_noting`` wraps every event method:
after the event, only what its ``Changes`` names is re-filed (O(log jobs) a
job), so a dispatch pass without a free slot, or with nothing new since the
last, costs nothing.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, insort
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

from server import dispatch_order
from server.estimates import SlotCensus
from server.frame_states import tally_of
from server.job_progress import gates
from server.model import Changes, Node
from server.prefetch import holds_deep, takes_ahead
from server.scheduler.state import SchedulerState


def _shape(node: Node) -> tuple[object, ...]:
    """What a waiting job's reason and the slot census read of a node."""
    return (
        node.online,
        node.enabled,
        node.slots,
        tuple(node.tags),
        tuple((gpu.index, gpu.memory) for gpu in node.gpus),
        node.gpu_only,
    )


_P = ParamSpec("_P")
_R = TypeVar("_R")
# Whichever part of the scheduler an event method is in (they all derive from DispatchIndex).
_S = TypeVar("_S", bound="DispatchIndex")


def _place(
    index: list[tuple[int, float, str]],
    placed: dict[str, tuple[int, float, str]],
    job_id: str,
    key: tuple[int, float, str] | None,
) -> None:
    """Move ``job_id`` to ``key`` in a sorted dispatch index (None: out of it): O(log jobs)."""
    old = placed.get(job_id)
    if old == key:
        return
    if old is not None:
        del index[bisect_left(index, old)]
        del placed[job_id]
    if key is not None:
        insort(index, key)
        placed[job_id] = key


def _noting(
    method: Callable[Concatenate[_S, _P], _R],
) -> Callable[Concatenate[_S, _P], _R]:
    """After an event, bring the dispatch index and the free slots up to date with its Changes.

    Every change to a job, chunk or node is named in ``Changes`` (the store
    relies on it too), so this touches only what the event touched.
    """

    def noted(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        result = method(self, *args, **kwargs)
        if self._notes_deferred:
            return result  # the group's Changes are noted at once (``note_deferred``)
        changes = result[0] if isinstance(result, tuple) else result
        if isinstance(changes, Changes):
            self._note(changes)
        return result

    noted.__name__ = method.__name__
    noted.__qualname__ = method.__qualname__
    noted.__doc__ = method.__doc__
    return noted


class DispatchIndex(SchedulerState):
    """The dispatch index and the free slots, re-filed after each event (``_noting``)."""

    def _rebuild_indexes(self) -> None:
        """The dispatch index and the free slots from scratch (start-up, reload)."""
        self._index = []
        self._indexed = {}
        self._free = {}
        self._spare = {}
        self._deep = set()
        self._ahead = []
        self._aheaded = {}
        self._shapes = {}
        self._census = SlotCensus(self.nodes)
        self.frame_waits.clear()
        self.resources.clear()
        for node in self.nodes.values():
            for key in node.running:
                self.resources.hold(node.name, key, self._holding_of(key))
        for name in self.nodes:
            self._renode(name)
        for job_id in self.jobs:
            self._reindex(job_id)
        self._dirty = True
        self._wakeup = math.inf

    def defer_notes(self) -> None:
        """From now until ``note_deferred``, events leave the index and the free slots as
        they are: the group commit's run of agents' reports about chunks, whose events
        never read them (each of the ~60 chunks of a group re-filed its job and its node,
        and the group's dispatch pass then the same ones again).

        Only for events that read neither (nothing between them may look at the
        index: a dispatch pass, a view, a tick's taking back).
        """
        self._notes_deferred = True

    def note_deferred(self, changes: Changes) -> None:
        """Bring the index up to date with ``changes``, which name at least what every
        event since ``defer_notes`` changed (re-noting what was noted is harmless)."""
        self._notes_deferred = False
        self._note(changes)

    def _note(self, changes: Changes, *, dirty: bool = True) -> None:
        """Update the index and free slots for what ``changes`` names (see ``_noting``)."""
        for job_id in changes.jobs | changes.removed:
            self._reindex(job_id)
        for job_id, index in self.frame_waits.released(changes, self.jobs):
            job = self.jobs.get(job_id)
            if job is not None:
                heapq.heappush(tally_of(job).ready, index)
                self._dirty = True
        more_room = False
        reshaped = False
        for name in changes.nodes | changes.readings:
            more_room |= self._renode(name)
            reshaped |= self._census_forgotten
        if reshaped:
            # What a waiting job's reason says may depend on that node ("no node
            # has tag gpu", "every node it may use is offline").
            changes.jobs.update(self._indexed)
        if dirty and (
            more_room or changes.jobs or changes.chunks or changes.removed or changes.nodes
        ):
            self._dirty = True

    def _reindex(self, job_id: str) -> None:
        """Put the job where it belongs in the dispatch index (or take it out): O(log jobs)."""
        job = self.jobs.get(job_id)
        key: tuple[int, float, str] | None = None
        if (
            job is not None
            and not job.archived
            and job.state in ("queued", "rendering")
            and gates(job).pending  # kept until the job's counters change
        ):
            key = dispatch_order.dispatch_key(job)
        _place(self._index, self._indexed, job_id, key)
        short = job is not None and takes_ahead(job, self._short_kinds)
        ahead = key if key is not None and short else None
        _place(self._ahead, self._aheaded, job_id, ahead)

    def _renode(self, name: str) -> bool:
        """Recount the node's free slots; True when it has more than before."""
        node = self.nodes.get(name)
        free = spare = 0
        if node is not None and node.online and node.enabled and name not in self.stopping:
            free = max(0, node.slots - len(node.running))
            spare = min(node.prefetch, max(0, node.slots + node.prefetch - len(node.running)))
            if spare and self._all_slots_long(node):
                spare = 0  # what waited here would wait as long as those renders
        shape = None if node is None else _shape(node)
        self._census_forgotten = self._shapes.get(name) != shape
        if self._census_forgotten:
            self._census.forget()
            self._reasons = None
            if shape is None:
                self._shapes.pop(name, None)
            else:
                self._shapes[name] = shape
        if node is None:
            self.resources.forget_node(name)
        else:
            self.resources.recount(node)
        before = self._free.get(name, 0) + self._spare.get(name, 0)
        if free:
            self._free[name] = free
        else:
            self._free.pop(name, None)
        if spare:
            self._spare[name] = spare
        else:
            self._spare.pop(name, None)
        if spare and node is not None and holds_deep(node):
            self._deep.add(name)
        else:
            self._deep.discard(name)
        return free + spare > before

    def dispatch_index(self) -> list[tuple[int, float, str]]:
        """(priority, queue key, job id) of the jobs that may dispatch, in dispatch order."""
        return list(self._index)
