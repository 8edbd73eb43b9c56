"""GPUs and limit units: what an attempt holds besides its slot.

``Node.running`` is the one record of which attempts hold a slot on a node,
kept until the attempt is over however it ended: done, failed, killed and
confirmed dead, or its node lost after its lease ran out. An attempt holds
its GPUs and its units of each limit (a licence) for exactly as long, so
nothing here releases anything by itself: ``recount`` reads a node's holdings
back from ``running`` whenever the scheduler recounts the node's free slots,
and the dispatch pass ``hold``s what it hands out as it assigns.

Limits are farm-wide counters (``farm limit set nuke 20``), optionally capped
per node (``--per-node 1``: one Houdini per machine). A limit nobody defined
has no units: a job that names it waits, and says why, rather than running
past a licence count the farm does not know.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple

import msgspec

from farmtui.protocol import LimitName, LimitSpec
from server.model import Node

# (job id, chunk index, attempt): an attempt, as ``Node.running`` names it.
AttemptKey = tuple[str, int, int]


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    units: int
    # At most this many units held on one node (0: no such cap).
    per_node: int = 0


class _StoredLimit(LimitSpec, kw_only=True):
    name: LimitName


# The store's settings row that holds the farm's limits.
LIMITS_SETTING = "limits"


def encode_limits(limits: Iterable[Limit]) -> str:
    rows = [_StoredLimit(name=x.name, units=x.units, per_node=x.per_node) for x in limits]
    return msgspec.json.encode(rows).decode()


def decode_limits(text: str | None) -> list[Limit]:
    if not text:
        return []
    rows = msgspec.json.decode(text, type=list[_StoredLimit])
    return [Limit(row.name, row.units, row.per_node) for row in rows]


class Holding(NamedTuple):
    """What one attempt holds besides its slot (a tuple: the collector need not track it)."""

    gpus: tuple[int, ...] = ()
    limits: tuple[str, ...] = ()


class Resources:
    """The farm's limits, and the GPUs and units the attempts on each node hold."""

    def __init__(self) -> None:
        self.limits: dict[str, Limit] = {}
        # Units of each limit held farm-wide, and on each node.
        self.in_use: Counter[str] = Counter()
        self._units: dict[str, Counter[str]] = {}
        self._gpus: dict[str, set[int]] = {}
        # Every attempt that holds something, and which of them are on each node.
        self._holdings: dict[AttemptKey, Holding] = {}
        self._on_node: dict[str, set[AttemptKey]] = {}

    # --- holding and letting go -------------------------------------------------
    def hold(self, node: str, key: AttemptKey, holding: Holding) -> None:
        """The dispatch pass gave ``key`` these GPUs and units on ``node``."""
        if not holding.gpus and not holding.limits:
            return
        self._holdings[key] = holding
        keys = self._on_node.get(node)
        if keys is None:  # a node's sets are made once and kept (no churn per chunk)
            keys = self._on_node[node] = set()
            self._gpus[node] = set()
            self._units[node] = Counter()
        keys.add(key)
        if holding.gpus:
            self._gpus[node].update(holding.gpus)
        if holding.limits:
            units = self._units[node]
            in_use = self.in_use
            for name in holding.limits:
                units[name] += 1
                in_use[name] += 1

    def recount(self, node: Node) -> None:
        """Let go of what the node's attempts no longer in ``node.running`` held.

        O(the attempts holding something there): called whenever the node's free
        slots are counted again.
        """
        keys = self._on_node.get(node.name)
        if not keys:
            return
        running = node.running
        gone = [key for key in keys if key not in running]
        if not gone:
            return
        gpus = self._gpus[node.name]
        units = self._units[node.name]
        in_use = self.in_use
        for key in gone:
            keys.discard(key)
            holding = self._holdings.pop(key)
            if holding.gpus:
                gpus.difference_update(holding.gpus)  # no two attempts share a GPU
            for name in holding.limits:
                units[name] -= 1
                in_use[name] -= 1

    def forget_node(self, name: str) -> None:
        """The node is gone from the farm: whatever its attempts held is free."""
        for key in self._on_node.pop(name, set()):
            del self._holdings[key]
        self._forget_counts(name)

    def _forget_counts(self, name: str) -> None:
        units = self._units.pop(name, None)
        if units:
            self.in_use.subtract(units)
            self.in_use = +self.in_use  # drop the names at zero
        self._gpus.pop(name, None)

    def clear(self) -> None:
        """Before a reload: the holdings are read again from the attempts."""
        self.in_use = Counter()
        self._units.clear()
        self._gpus.clear()
        self._holdings.clear()
        self._on_node.clear()

    # --- what is free -------------------------------------------------------------
    def exhausted(self, names: Iterable[str]) -> str | None:
        """The first of ``names`` with no unit free farm-wide (or not defined), else None."""
        for name in names:
            limit = self.limits.get(name)
            if limit is None or self.in_use[name] >= limit.units:
                return name
        return None

    def node_allows(self, node: str, names: Iterable[str]) -> bool:
        """Whether ``node`` is under the per-node cap of every limit in ``names``."""
        units = self._units.get(node)
        for name in names:
            limit = self.limits.get(name)
            if limit is not None and limit.per_node and units and units[name] >= limit.per_node:
                return False
        return True

    def has_gpus(self, node: Node, count: int, memory: int = 0) -> bool:
        """Whether ``free_gpus`` would find them: a count when memory does not matter."""
        if memory:
            return self.free_gpus(node, count, memory) is not None
        return len(node.gpus) - len(self._gpus.get(node.name, ())) >= count

    def free_gpus(self, node: Node, count: int, memory: int = 0) -> tuple[int, ...] | None:
        """``count`` free GPUs of the node with ``memory`` MiB or more (lowest first), or None."""
        if count <= 0:
            return ()  # asked at every assignment, and most jobs want no GPU
        busy = self._gpus.get(node.name, ())
        found = [
            gpu.index
            for gpu in node.gpus
            if gpu.index not in busy and (not memory or gpu.memory >= memory)
        ]
        return tuple(sorted(found)[:count]) if len(found) >= count else None

    def busy_gpus(self, name: str) -> list[int]:
        return sorted(self._gpus.get(name, ()))

    def units_on(self, node: str, name: str) -> int:
        units = self._units.get(node)
        return units[name] if units else 0


def fits_gpus(node: Node, count: int, memory: int) -> bool:
    """Whether the node has ``count`` GPUs of ``memory`` MiB at all (busy or not)."""
    return sum(1 for gpu in node.gpus if not memory or gpu.memory >= memory) >= count
