"""Runs assigned chunks as renderer process trees and reports what happens to them.

Each ``AssignChunk`` is one :class:`agent.chunk_run.ChunkRun` (see there):
the renderer started under its own supervisor process (``agent/shim.py``),
watched, and its output checked, delivered and reported.

The shim, not this process, owns the tree: when the agent dies (its pipe
closes) or stops renewing the lease (frozen, cut off), the shim kills it.
Shims are forked from a warm zygote (``agent/zygote.py``) when it can, else
exec'd. So the agent's children are the zygote and exec'd shims, and the
orphans it reaps as a subreaper (the trees of shims that died, the shims of
a zygote that died) never include an exec'd shim's exit status.

With ``slots``, at most that many renderers run at once: a chunk the leader
hands over ahead of a free slot (the agent's ``--prefetch``, see
``server.prefetch``) makes its folder and journal entry, then waits, and starts
the moment a renderer exits, before that chunk's report has gone to the leader
and back. A chunk killed while it waits ends without starting; one whose
turn comes after the lease ran out is refused by its shim.

Timeouts read an injectable monotonic ``clock`` so tests need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec

from agent.chunk_delivery import is_kept
from agent.chunk_outcome import Verdict
from agent.chunk_run import (
    _SAFE_NAME,
    LEASE_LAPSED,
    ChunkKey,
    ChunkRun,
    _journal_decoder,
)
from agent.chunk_run import (
    SYNC_ROOT_VARIABLE as SYNC_ROOT_VARIABLE,  # re-exported: importers of agent.supervisor
)
from agent.copy_records import CopyRecords
from agent.discards import Discards
from agent.errors import DeliveryPostponed
from agent.journal import Journal
from agent.process_tree import find_marked_with_suffix, has_zombie_children, kill_tree, reap_orphans
from agent.render_user import RenderUser
from agent.spare_folders import SpareFolders
from agent.staging import Delivery, remove_partial_folder
from agent.zygote_client import Zygote
from farmtui.config import TOKEN_VARIABLE
from farmtui.protocol import AgentToLeader, AssignChunk, ChunkRef, ChunkTimeouts, RunningRef

log = logging.getLogger("farmtui.agent.supervisor")

# Under the staging root: each running attempt's assignment (``<job>.<chunk>.<attempt>.json``,
# from its start until its ChunkFinished is in the outbox) and its renderer's exit status
# (``.exit``, written by its shim). An agent that died in between finds there a render
# that ended meanwhile, and reports it rather than have it rendered again.
JOURNAL = ".attempts"
# In an agent's staging folder while it runs (``agent.main.lock_staging``).
STAGING_LOCK = ".agent.lock"
# Seconds a job's emptied staging folder waits for the job's next chunk here before it
# goes: made and removed with each chunk, it was two of an attempt's costliest calls.
JOB_FOLDER_KEPT = 30.0
# Exit codes of reaped orphans kept for the chunks whose shims died (``orphan_exit``).
ORPHAN_EXITS_KEPT = 256


class Reporter(Protocol):
    """Where the supervisor's messages go (the leader link, or a list in tests)."""

    def send(self, message: AgentToLeader) -> None: ...


@dataclass(slots=True)
class Storage:
    """Where finished output goes, as learnt from the leader's Welcome."""

    # The shared sync root when this node sees it, else None (upload).
    sync_root: Path | None
    delivery: Delivery


class Supervisor:
    """All chunks running on this node."""

    def __init__(
        self,
        reporter: Reporter,
        *,
        agent_id: str,
        staging_root: Path,
        storage: Storage,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        tick: float = 0.05,
        scan_interval: float = 0.1,
        kill_grace: float = 0.5,
        zygote: bool = True,
        slots: int | None = None,
        render_user: RenderUser | None = None,
    ) -> None:
        """``slots``: how many renderers may run at once (None: every chunk starts at once).
        ``render_user``: the user renderers run as (None: the agent's own)."""
        self.reporter = reporter
        self.agent_id = agent_id
        # What marks this agent's renderer trees (environment, log lines): derived from
        # the agent's id, never the id itself, which proves to the leader who holds the
        # node name and so must not show in a log or a renderer's environment.
        self.marker_id = hashlib.sha256(b"farmtui-marker:" + agent_id.encode()).hexdigest()[:12]
        # Absolute: renderers are given paths in it and run in another folder.
        self.staging_root = staging_root.absolute()
        self.journal = Journal(self.staging_root / JOURNAL)
        # Copies into the sync root whose temporary files may exist (``agent.copy_records``).
        self.copy_records = CopyRecords(self.staging_root)
        self.render_user = render_user
        # What every renderer's environment starts from, read once: a copy of
        # ``os.environ`` (each value decoded anew) for each chunk was a few % of a short
        # chunk's cost. Never the agent's token: a renderer that prints its environment (a
        # common way to debug a job) wrote it into a chunk log every viewer can read.
        self.environ = {k: v for k, v in os.environ.items() if k != TOKEN_VARIABLE}
        # Attempts that rendered with staging off when the agent died (``recover``).
        self._cut_short: list[AssignChunk] = []
        # A spare folder would be one the render user may write in while it waits.
        self.spares = SpareFolders(self.staging_root, reuse=render_user is None)
        # Job folders in staging that an attempt left, maybe empty: when (``clock``).
        self._emptied: dict[Path, float] = {}
        # Kept output the leader no longer wants, deleted off the loop.
        self.discards = Discards(self.job_folder_emptied)
        # The agent is stopping: a chunk assigned now is refused (``assign``).
        self.stopping = False
        self.storage = storage
        self.clock = clock
        self.wall = wall
        self.tick = tick
        self.scan_interval = scan_interval
        self.kill_grace = kill_grace
        self.runs: dict[ChunkKey, ChunkRun] = {}
        self.slots = slots
        # Renderers holding a slot, the chunks holding one (in the order they took it),
        # and the chunks waiting for one, by their turn (first come, first served). Each
        # looked up directly: a scan of every chunk here at each start and end made a
        # chunk's cost grow with the chunks held ahead (``--prefetch``).
        self.rendering = 0
        self._slotted: dict[ChunkRun, None] = {}
        self._waiting: dict[asyncio.Future[None], ChunkRun] = {}
        # Shim pids asyncio waits for: never reaped by reap_orphans.
        self.tracked: set[int] = set()
        # Orphans reaped lately: pid -> exit code (``orphan_exit``).
        self._orphan_exits: dict[int, int] = {}
        # Shims being started: asyncio may not know their pids yet, so no reaping.
        self._spawning = 0
        # The node's lease on the monotonic clock (the link renews it); every
        # shim kills its tree when it passes. Without a link: no lease to lose.
        self.lease_until = math.inf
        # Forks each chunk's shim from a warm process (~1 ms, not a Python start-up).
        self.zygote: Zygote | None = Zygote() if zygote else None

    async def take_slot(self, run: ChunkRun) -> bool:
        """Wait for a free slot for ``run``'s renderer; False if it was told to stop first."""
        if run.stop is not None:
            return False  # stopped while it was being set up: it never starts
        if self.slots is None or (self.rendering < self.slots and not self._waiting):
            self.rendering += 1
            self._take(run)
            return True
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[turn] = run
        run.turn = turn
        log.info(
            "chunk %s waits for a slot (%d of %d rendering)", run.marker, self.rendering, self.slots
        )
        try:
            # Queued on a shim that took it, it waits for that shim's chunk even if stopped.
            while not turn.done() and (run.stop is None or run.committed):
                if run.queued is None and run.stop is None and (ahead := self._ahead_of(run)):
                    await run.queue_behind(ahead)
                    # Those behind it in line waited for it to queue first (``_ahead_of``):
                    # another shim of its job may take the next of them now.
                    self.may_follow(run.assign.job_id)
                    continue
                run.wake.clear()  # a timeout update wakes it too: look again, wait again
                waker = asyncio.ensure_future(run.wake.wait())
                either: set[asyncio.Future[Any]] = {turn, waker}
                try:
                    await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waker.cancel()
        finally:
            if turn.done() and not turn.cancelled():
                self._take(run)  # handed over by a renderer that exited (passed on if unused)
            else:
                turn.cancel()  # stopped, or the agent stops: never its turn
                self._waiting.pop(turn, None)
                run.unqueue()  # (cancelled while queued: that shim must not start it either)
                if (first := self._first_unqueued()) is not None:
                    first.wake.set()  # it may queue on a shim now that this one is gone
        return run.slotted and (run.stop is None or run.committed)

    def _take(self, run: ChunkRun) -> None:
        run.slotted = True
        self._slotted[run] = None

    def _first_unqueued(self) -> ChunkRun | None:
        """The first chunk in line for a slot not queued on a shim: the only one that may
        queue on one (``_ahead_of``). Those before it are each queued on a rendering
        chunk's shim, one a shim: a look costs at most the node's slots."""
        for run in self._waiting.values():
            if run.queued is None:
                return run
        return None

    def _ahead_of(self, run: ChunkRun) -> ChunkRun | None:
        """A chunk of ``run``'s job rendering whose shim may take ``run`` next; None: none,
        or a chunk that came first waits for any slot (it keeps its place)."""
        if self.zygote is None or run.assign.sync_from or self._first_unqueued() is not run:
            return None
        job = run.assign.job_id
        return next((other for other in self._slotted if other.can_take_next(job)), None)

    def may_follow(self, job: str) -> None:
        """A renderer of ``job`` started, or a chunk of it queued on a shim: the first chunk
        waiting for a slot looks again for a shim to queue on, if it is of that job."""
        first = self._first_unqueued()
        if first is not None and first.assign.job_id == job:
            first.wake.set()

    def release_slot(self, run: ChunkRun) -> None:
        """``run``'s renderer is gone: its slot goes to the chunk queued on its shim, else
        to the first chunk still waiting."""
        if not run.slotted:
            return
        run.slotted = False
        self._slotted.pop(run, None)
        successor, run.successor = run.successor, None
        turn = successor.turn if successor is not None else None
        if turn is None or turn.done() or self._waiting.pop(turn, None) is None:
            if not self._waiting:
                self.rendering -= 1
                return
            # First come, first served; but one queued on another shim waits for it, unless
            # all that wait are (then the first starts here, taken back from that shim).
            first = self._first_unqueued()
            turn = first.turn if first is not None else next(iter(self._waiting))
            assert turn is not None
            del self._waiting[turn]
        turn.set_result(None)

    @contextlib.asynccontextmanager
    async def spawning(self) -> AsyncIterator[None]:
        """While a shim starts, orphan reaping waits (it could take the new child's status)."""
        self._spawning += 1
        try:
            yield
        finally:
            self._spawning -= 1

    def reap_orphans(self) -> list[int]:
        """Collect exited orphans (trees of shims that died) without touching a shim.

        Only with no shim starting, and never a pid asyncio waits for, so a
        shim's exit status always reaches its waiter. Their exit codes are
        kept a while, for ``orphan_exit``.
        """
        if self._spawning or not has_zombie_children():
            return []
        reaped = reap_orphans(self.tracked)
        self._orphan_exits.update(reaped)
        while len(self._orphan_exits) > ORPHAN_EXITS_KEPT:
            del self._orphan_exits[next(iter(self._orphan_exits))]
        return list(reaped)

    def orphan_exit(self, pid: int) -> int | None:
        """How ``pid``, a renderer whose shim died before reaping it, ended; None: unknown.

        A shim that dies leaves its renderer to the agent (a child subreaper):
        one that had already exited is a zombie of ours by the time the shim's
        own death is known, and its exit status is the renderer's own.
        """
        self.reap_orphans()
        return self._orphan_exits.pop(pid, None)

    def forget_orphan(self, pid: int) -> None:
        """A renderer started as ``pid``: an orphan reaped before under it was another."""
        self._orphan_exits.pop(pid, None)

    async def reap_forever(self, every: float = 1.0) -> None:
        while True:
            await asyncio.sleep(every)
            self.reap_orphans()
            self.remove_job_folders(JOB_FOLDER_KEPT)

    def job_folder_emptied(self, folder: Path) -> None:
        """An attempt left the job's folder in staging: it goes once unused (see below)."""
        self._emptied[folder] = self.clock()

    def remove_job_folders(self, unused_for: float = 0.0) -> None:
        """Remove the job folders no attempt has left for ``unused_for`` seconds, if empty.

        On the event loop, like every attempt's set-up: no chunk can be making
        its folder in one while it goes.
        """
        now = self.clock()
        busy = {key[0] for key in self.runs}
        for folder, when in list(self._emptied.items()):
            if now - when < unused_for or folder.name in busy:
                continue
            del self._emptied[folder]
            with contextlib.suppress(OSError):
                folder.rmdir()  # not when kept output (or what else) is in it

    def renew_lease(self, until: float) -> None:
        """The link renewed the node's lease: pass the new deadline to every shim."""
        self.lease_until = until
        for run in self.runs.values():
            run.renew_lease(until)
            if run.awaiting_lease:
                run.wake.set()

    def discard_staged(self, job_id: str, chunk: int, attempt: int) -> None:
        """Delete the staged output kept from an attempt nobody will copy any more."""
        if not _SAFE_NAME.fullmatch(job_id):
            return
        log.info("discarding the staged output of %s chunk %d attempt %d", job_id, chunk, attempt)
        self.discards.add(self.staging_root / job_id / f"{chunk}.{attempt}")

    def _ours(self) -> list[Path]:
        """What staging holds, but another agent's staging folder inside it: that one
        holds its lock, and its files are not ours to clean up or list (they went at
        this agent's start)."""
        try:
            entries = list(self.staging_root.iterdir())
        except OSError:
            return []
        return [entry for entry in entries if not (entry / STAGING_LOCK).exists()]

    def kept_outputs(self) -> list[ChunkRef]:
        """The attempts whose staged output is kept here (a failed copy), for the hello
        and the ``KeptStaged`` pages after it."""
        kept: list[ChunkRef] = []
        jobs = [job for job in self._ours() if _SAFE_NAME.fullmatch(job.name)]
        for job in jobs:
            with contextlib.suppress(OSError):
                for attempt in job.iterdir():
                    chunk, _, number = attempt.name.partition(".")
                    if _number(chunk) and _number(number) and is_kept(attempt):
                        kept.append(
                            ChunkRef(job_id=job.name, chunk=int(chunk), attempt=int(number))
                        )
        return kept

    def clean_abandoned_staging(self) -> int:
        """At start: remove attempt folders a previous run left, except kept output.

        Kept output (a failed copy) waits for a retry sync or a discard.
        """
        removed = 0
        for job in self._ours():
            if not job.is_dir():
                continue
            for attempt in list(job.iterdir()):
                chunk, _, number = attempt.name.partition(".")
                recovered = (job.name, _int(chunk), _int(number)) in self.runs
                if (
                    attempt.is_dir()
                    and not recovered
                    and not is_kept(attempt)
                    and not _holds_a_staging(attempt)
                ):
                    shutil.rmtree(attempt, ignore_errors=True)
                    removed += 1
            with contextlib.suppress(OSError):
                job.rmdir()
        return removed

    def recover(self, reported: Collection[ChunkKey] = ()) -> int:
        """At start: attempts whose render ended while the agent was down, to conclude.

        Each is one of ``running`` from now on (the hello tells the leader, which
        keeps it on this node) and is concluded by ``resume`` once the leader has
        said where output goes. A journalled attempt without an exit status was
        cut short by the agent's death: forgotten (the leader runs it again), as is
        one whose ChunkFinished is already ``reported`` (in the outbox).
        """
        for found in self.journal.found():
            entry = found.entry
            if not found.status:  # cut short by the agent's death: the leader reruns it
                with contextlib.suppress(ValueError, msgspec.DecodeError):
                    cut = _journal_decoder.decode(found.record).assign
                    if not cut.staging and cut.outputs:  # maybe a folder in its output folder
                        self._cut_short.append(cut)
                # Removed, not reused: its shim, if it outlived the sweep, may still write.
                self.journal.drop(entry, reuse=False)
                continue
            try:
                record = _journal_decoder.decode(found.record)
                returncode = _exit_status(found.status)
            except (ValueError, msgspec.DecodeError) as exc:
                log.warning("ignoring the unreadable journal entry %s: %s", entry.record.name, exc)
                self.journal.drop(entry, reuse=False)
                continue
            run = ChunkRun(self, record.assign)
            if run.key in reported:
                self.journal.drop(entry)
                continue
            run.recovered = (returncode, record.started, found.ended)
            run.entry = entry
            self.runs[run.key] = run
        return len(self.runs)

    def resume(self) -> None:
        """Conclude the recovered attempts (after the Welcome: delivery needs the storage)."""
        root = self.storage.sync_root
        if root is not None and self._cut_short:
            # Staging off, cut short by the agent's death: the folder each had in its
            # output folder (its frames half written) goes, on a thread (a filer's).
            uid = self.render_user.uid if self.render_user is not None else None
            asyncio.get_running_loop().run_in_executor(
                None, _remove_partial_folders, root, self._cut_short, uid
            )
        self._cut_short = []
        for run in self.runs.values():
            if run.recovered is not None and run.task is None:
                run.task = asyncio.create_task(self._run(run), name=f"chunk {run.marker}")

    def running(self) -> list[RunningRef]:
        """Attempts still running here; those that reported their end are the outbox's."""
        return [run.running_ref for run in self.runs.values() if not run.ended]

    def assign(self, message: AssignChunk) -> ChunkRun:
        """Start a chunk; a repeated assignment of a running attempt is ignored."""
        key = (message.job_id, message.chunk, message.attempt)
        if key in self.runs:
            return self.runs[key]
        run = ChunkRun(self, message)
        self.runs[key] = run
        if self.stopping:
            # Sent before the leader read that this agent is going: reported killed
            # at once (no retry used), it moves to another node.
            run.request_stop("killed", "not started: the agent is stopping")
        run.task = asyncio.create_task(self._run(run), name=f"chunk {run.marker}")
        return run

    async def _run(self, run: ChunkRun) -> None:
        try:
            await run.run()
        except DeliveryPostponed:
            pass  # the agent stops: nothing reported, the next start delivers and reports it
        except Exception:
            log.exception("chunk %s crashed in the agent", run.marker)
            if run.shim is not None:
                run.shim.kill(self.kill_grace, "agent error")
                await run.shim.wait()
            run._finish(
                Verdict("failed", "agent error while running the chunk (see the agent log)"),
                started=self.wall(),
            )
            run._drop_journal()
        finally:
            self.runs.pop(run.key, None)

    def kill(self, key: ChunkKey, reason: str) -> bool:
        """Ask a running chunk to stop with outcome ``killed``; False if it is not running."""
        run = self.runs.get(key)
        if run is None or run.ended:
            return False
        run.request_stop("killed", reason or "killed on the leader's request")
        return True

    def lease_ran_out(self) -> tuple[int, int]:
        """Stop every render still running: the node's lease ran out. Of those not
        stopping already: how many renders are killed (or never start), and how many
        finished renders' ends (their copies) now wait for the lease to come back.

        Not those whose end waits for the lease already (``ChunkRun._lease_again``):
        nothing of theirs runs.
        """
        killed = waiting = 0
        for run in list(self.runs.values()):
            if not run.ended and not run.awaiting_lease:
                if run.stop is None:
                    if run.render_ended:
                        waiting += 1
                    else:
                        killed += 1
                run.request_stop("killed", LEASE_LAPSED)  # revoked, whatever else stops it
        return killed, waiting

    def withdraw(self, key: ChunkKey, reason: str) -> bool:
        """Stop a chunk only if its renderer has not started (it waits for a slot):
        it ends ``killed`` and the leader requeues it; False, and nothing done, if
        it runs (or is not here)."""
        run = self.runs.get(key)
        # ``slotted`` alone is not "started": it goes with the slot as soon as the tree is
        # gone, while the render's output is still checked and copied (``spawned_at`` is
        # set once it took its slot, and stays).
        if run is None or run.ended or run.slotted or run.spawned_at is not None:
            return False
        if run.recovered is not None or run.assign.sync_from:
            return False  # no render to wait for: its end is known, or it only copies
        if not run.unqueue():
            return False  # the shim it was queued on has started it
        run.request_stop("killed", reason)
        return True

    def update_timeouts(self, key: ChunkKey, timeouts: ChunkTimeouts) -> bool:
        run = self.runs.get(key)
        if run is None:
            return False
        run.timeouts = timeouts
        run.wake.set()
        return True

    async def kill_all(self, reason: str) -> None:
        """Stop every render and wait until each chunk has reported its end; stop the shim
        zygote.

        A chunk whose renderer ended by itself, or that only copies a render's output
        (a retry sync, a render that ended while the agent was down) is not stopped: it
        is judged, delivered and reported as ever. Stopped, its whole render was thrown
        away and rendered again on another node (break round 28b).
        """
        self.stopping = True
        runs = list(self.runs.values())
        delivering = 0
        for run in runs:
            if run.render_ended or run.recovered is not None or run.assign.sync_from:
                run.wake.set()  # a copy waiting for a leader leaves it to the next start
                delivering += not run.ended
                continue
            run.request_stop("killed", reason)
        if delivering:
            log.info(
                "stopping once %d finished render(s) are delivered (a second signal leaves"
                " them here for the next start)",
                delivering,
            )
        await self.wait_idle()
        await self.discards.wait()
        self.remove_job_folders()
        self.spares.clear()
        if self.zygote is not None:
            await self.zygote.aclose()  # a later chunk starts another

    def give_up_copies(self) -> None:
        """The agent goes at once (a second signal): renders that are over but not yet
        delivered stop where they are; their output and journal entry stay on the node,
        and the agent's next start delivers and reports them. A copy on its thread stops
        at its next block (``Fence.going_on``), leaving no file at its final name."""
        given_up = 0
        for run in self.runs.values():
            over = run.render_ended or run.recovered is not None or run.assign.sync_from
            if over and not run.ended and run.task is not None:
                run.given_up = True
                run.task.cancel()
                given_up += 1
        if given_up:
            log.warning(
                "going at once: %d chunk(s) not delivered yet stay here, for the next start",
                given_up,
            )

    async def wait_idle(self) -> None:
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def kill_leftovers(self) -> int:
        """Kill renderer trees a previous run of this agent left behind (agent restart)."""
        markers = set(find_marked_with_suffix(f":{self.marker_id}").values())
        for marker in markers:
            log.warning("killing leftover chunk %s from a previous agent run", marker)
            await kill_tree(marker, grace=self.kill_grace, keep=self.tracked)
        return len(markers)


def _int(text: str) -> int:
    return int(text) if _number(text) else -1


def _exit_status(text: str) -> int:
    """An exit status as a shim writes it (``0``, ``3``, ``-15``); ValueError for anything else."""
    if _EXIT_STATUS.fullmatch(text) is None:
        raise ValueError(f"not an exit status: {text[:20]!r}")
    return int(text)


_EXIT_STATUS = re.compile(r"-?[0-9]{1,3}")


def _number(text: str) -> bool:
    """Digits 0-9 only (``str.isdigit`` takes ``²`` too, which ``int`` refuses)."""
    return text.isascii() and text.isdigit()


def _holds_a_staging(folder: Path) -> bool:
    """Whether another agent's staging folder is somewhere in ``folder`` (its lock): at
    start-up only, before the folder is removed, so the walk's cost does not matter."""
    return any(STAGING_LOCK in files for _, _, files in os.walk(folder))


def _remove_partial_folders(
    root: Path, cut_short: list[AssignChunk], render_uid: int | None
) -> None:
    for assign in cut_short:
        remove_partial_folder(root, assign, render_uid)
