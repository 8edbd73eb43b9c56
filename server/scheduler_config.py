"""The scheduler's settings and its one refusal type.

They live apart from the ``server.scheduler`` package so the small rule modules (retries,
timeouts, actions) can use them without importing the state machine itself;
``server.scheduler`` re-exports both, which is where callers import them from.
"""

from __future__ import annotations

import msgspec

from server.path_mapping import PathRule

LEASE_FRACTION = 0.6


class SchedulerError(ValueError):
    """A request the farm refuses (unknown job, move across groups ...): one-line message."""


class SchedulerConfig(msgspec.Struct, kw_only=True):
    """The farm's rules that a leader setting can change (``leader.toml`` extends it)."""

    retries: int = 3
    retry_delay: float = 5.0
    retry_cap: float = 300.0
    # A node that fails one job this many times is blocked for it for block_for seconds.
    block_after: int = 3
    block_for: float = 600.0
    # Farm-wide auto timeout (Deadline's "enforce for all jobs").
    auto_timeout_all: bool = False
    auto_min_chunks: int | None = 3
    auto_min_percent: float | None = None
    auto_multiplier: float = 2.0
    # Seconds without a heartbeat after which a node is lost.
    node_timeout: float = 15.0
    # ``[[path_map]]``: job paths as nodes of another OS see them (server.path_mapping).
    path_map: list[PathRule] = msgspec.field(default_factory=list)
    # Within a priority group, share the slots between the jobs' owners (the one
    # running fewest chunks goes next) rather than strict queue order.
    fair_share: bool = False

    @property
    def agent_lease(self) -> float:
        """How long one renewal of an agent's lease lasts (``LEASE_FRACTION`` of node_timeout).

        A chunk's supervisor kills its tree when the lease runs out; the leader
        moves the chunk only after ``node_timeout`` of silence. The rest of
        node_timeout (6 s by default) is the margin for that kill (SIGTERM, at
        most 0.2 s of grace, SIGKILL) and for timers that drift.
        """
        return LEASE_FRACTION * self.node_timeout
