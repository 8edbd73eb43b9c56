"""The group commits' own thread: the loop applies the next groups while one is written.

Why: the leader applies the changes that arrive together as one group and
commits them in one transaction (``Leader.submit``). Written on the event
loop, that transaction held it for the whole write: SQLite's own work was a
sixth of the loop's time with 300 agents (``bench/scale.py`` (c2)); with
``synchronous = "full"`` it was an fsync; with PostgreSQL a round trip to the
server, up to the lease's length when the server stops answering. Meanwhile
no heartbeat was answered and no ``/healthz``.

How: the leader applies a group in memory and builds its rows on the loop
(``WrittenRows.queued``: a row must say what memory says at that moment),
then puts the group here. One commit is written at a time, on one thread of
its own. Groups put meanwhile wait, their rows merged (``merge_rows``), and
go into the next commit together, so the slower the disk the bigger the
commits and the fewer. Each group is announced (``landed``: its assignments
sent, its reports acknowledged, its waiters answered) only once its commit
returned, and in the order the groups were put: nothing is acknowledged
before it is committed. A commit that fails fails every group behind it too,
since each was applied on top of the one before (``failed``: the leader then
rebuilds memory from the store).

What memory shows meanwhile: the groups applied and not yet committed. A read
(a job list, a console's first view) may see a change a few milliseconds
before its commit; were that commit to fail, the rebuild takes it back, as it
takes back the change itself. Nothing is acknowledged in between.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from server.model import Changes
from server.store_rows import Rows, merge_rows


@dataclass(slots=True, eq=False)
class Group:
    """One group's changes, and what the leader answers once they are committed."""

    changes: Changes
    steps: Sequence[Any] = ()
    # The links its messages are for: the nodes' connections when it was applied. A
    # node that connected again before the group landed settled those messages with
    # its hello (applied after them), so they must not reach its new connection.
    links: Mapping[str, Any] = field(default_factory=dict)
    # Why its commit failed (it, or one ahead of it); None: committed, or not yet.
    error: BaseException | None = None
    # Done once it is settled, landed or failed (``CommitLine.settled``).
    settled: asyncio.Future[None] | None = None


@dataclass(slots=True, eq=False)
class _Flight:
    """The commit being written: its groups, and the thread's answer."""

    groups: list[Group]
    future: concurrent.futures.Future[None] = field(default_factory=concurrent.futures.Future)


class CommitLine:
    """Groups committed in order, one commit at a time, on a thread of their own."""

    def __init__(
        self,
        write: Callable[[Sequence[Rows]], None],
        landed: Callable[[Group], None],
        failed: Callable[[list[Group], BaseException], None],
    ) -> None:
        """``write``: the store's (one transaction, StoreError when it fails);
        ``landed``: a group is committed; ``failed``: these groups are not,
        and the thread is idle (the leader may read the store)."""
        self._write = write
        self._landed = landed
        self._failed = failed
        self._waiting: list[Group] = []
        self._rows: list[Rows] = []  # the waiting groups' rows, merged
        self._flight: _Flight | None = None
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None
        self.commits = 0
        self.seconds = 0.0  # spent writing, on the thread
        self.closed = False  # by ``close``: the store is closed next, nothing more is put

    @property
    def idle(self) -> bool:
        """Nothing put is still to be committed or announced."""
        return self._flight is None and not self._waiting

    @property
    def waiting(self) -> int:
        """Groups put behind the commit in flight."""
        return len(self._waiting)

    def put(self, group: Group, rows: Rows | None) -> None:
        """Commit ``rows`` (None: nothing to write) after every group put before, then
        announce ``group``. Called on the loop; on no loop (start-up, scripts) written
        at once on this thread."""
        self._waiting.append(group)
        if rows is not None:
            merge_rows(self._rows, rows)
        self._next()

    def settled(self) -> asyncio.Future[None]:
        """Done once every group put so far has landed or failed (on the loop).

        Why: a group's events reach the job logs when it lands, and a read may see
        its change before that (see above). A script that saw a job fail and then
        read its events must find why it failed there.
        """
        future = asyncio.get_running_loop().create_future()
        if self.idle:
            future.set_result(None)
        else:
            self.put(Group(Changes(), settled=future), None)
        return future

    def drain(self) -> None:
        """Commit and announce everything put so far before returning, on this thread
        (waiting for the commit in flight): a synchronous change, shutdown."""
        while not self.idle:
            flight = self._flight
            if flight is not None:
                concurrent.futures.wait([flight.future])
                self._flight = None
                self._settle(flight.groups, flight.future.exception())
                continue
            groups, rows = self._take()
            try:
                if rows:
                    self._write_timed(rows)
            except Exception as exc:
                self._settle(groups, exc)
            else:
                self._settle(groups, None)

    def close(self) -> None:
        """Drain, then let the thread go."""
        self.closed = True
        self.drain()
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None

    # --- the line ---------------------------------------------------------------------
    def _next(self) -> None:
        if self._flight is not None or not self._waiting:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.drain()  # no loop to come back to: written here and now
            return
        groups, rows = self._take()
        if not rows:  # nothing to write and nothing ahead: announced in this turn
            self._settle(groups, None)
            return
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, "farmtui-commit")
        flight = _Flight(groups, self._thread.submit(self._write_timed, rows))
        self._flight = flight
        flight.future.add_done_callback(lambda _: loop.call_soon_threadsafe(self._returned, flight))

    def _take(self) -> tuple[list[Group], list[Rows]]:
        groups, rows = self._waiting, self._rows
        self._waiting, self._rows = [], []
        return groups, rows

    def _write_timed(self, rows: list[Rows]) -> None:
        began = time.perf_counter()
        try:
            self._write(rows)
        finally:
            self.seconds += time.perf_counter() - began
        self.commits += 1

    def _returned(self, flight: _Flight) -> None:
        if self._flight is not flight:
            return  # a drain took care of it
        self._flight = None
        self._settle(flight.groups, flight.future.exception())
        self._next()

    def _settle(self, groups: list[Group], error: BaseException | None) -> None:
        if error is None:
            for group in groups:
                self._landed(group)
                _done(group)
            return
        # Applied on top of the failed one: none of them can be committed now.
        failed = groups + self._waiting
        self._waiting, self._rows = [], []
        for group in failed:
            group.error = error
        self._failed(failed, error)
        for group in failed:
            _done(group)


def _done(group: Group) -> None:
    if group.settled is not None and not group.settled.done():  # not cancelled
        group.settled.set_result(None)
