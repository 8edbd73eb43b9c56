"""One attempt of one chunk on this node, from its assignment to its ChunkFinished.

One :class:`ChunkRun` per ``AssignChunk``: expand the argv template, start
the renderer under its own supervisor process (``agent/shim.py``: own
session, child subreaper, the chunk's marker, the node's lease), stream its
output (batched), parse progress with the renderer's adapter, report frames
as their files appear, enforce the chunk's timeouts, and at the end let
:func:`agent.chunk_outcome.decide` say what it means. A chunk is done only
when the renderer exited 0 and every expected file exists and is non-empty;
its files are then copied, renamed or uploaded into place (fenced by the
attempt) before ``ChunkFinished(done)``.

That end (frames found, the verdict, the delivery, the report, the
attempt's folders) is :class:`agent.chunk_delivery.ChunkDelivery`, a mixin
of ChunkRun's.

Timeouts read the supervisor's injectable monotonic ``clock`` so tests need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import re
import shutil
import signal
import time
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import msgspec

from agent.adapters import Adapter, adapter_for
from agent.chunk_delivery import ChunkDelivery
from agent.chunk_outcome import Outcome, Stop, TimeoutKind, Verdict, timeout_reason
from agent.errors import ChunkSetupError, DeliveryPostponed
from agent.gpus import visible_devices
from agent.journal import JournalEntry
from agent.lines import LineSplitter
from agent.no_follow import make_folder
from agent.process_tree import MARKER_VARIABLE, exit_status, is_stopped, kill_tree
from agent.shim import GONE_GRACE, claim
from agent.shim_client import REFUSED, Shim, ShimResult, StartTimeout
from agent.staging import (
    ChunkFiles,
    Delivery,
    RenameIntoPlace,
    check_relative,
    infer_pattern,
    partial_folder,
    plan_files,
)
from agent.zygote_client import ForkedProcess
from farmtui.protocol import (
    AssignChunk,
    ChunkOutput,
    ChunkProgress,
    ChunkRef,
    ChunkStarted,
    ChunkTimedOut,
    ChunkTimeouts,
    RunningRef,
)
from farmtui.renderers import (
    INPUT_LIST,
    RendererError,
    expand,
    frame_tokens,
    input_list,
    outdir_tokens,
    printf_sequence,
    tokens_used,
)

if TYPE_CHECKING:
    from agent.supervisor import Supervisor

# The supervisor's logger: a chunk's lines in the agent log read as before.
log = logging.getLogger("farmtui.agent.supervisor")

ChunkKey = tuple[str, int, int]
# In a renderer's environment when the node sees the sync root: where it is.
SYNC_ROOT_VARIABLE = "FARMTUI_SYNC_ROOT"

# Output is sent in batches: every FLUSH_SECONDS or FLUSH_LINES lines, whichever first.
FLUSH_SECONDS = 0.1
FLUSH_LINES = 200
# Why a chunk is stopped when the node's lease runs out.
LEASE_LAPSED = "the lease ran out: lost contact with the leader"
# Why a stopping agent stops its renders (``Supervisor.kill_all``). A render that
# ended by itself meanwhile is concluded and delivered, not thrown away.
AGENT_STOPPED = "the agent stopped"
# How often a render that ended by itself looks whether the lease is back (``_lease_again``).
LEASE_LOOK_EVERY = 0.25
# Beyond the grace it was given, seconds a shim has to answer a kill before this process
# kills the tree itself (``_kill_for_the_shim``): well within the leader's margin after a
# lapsed lease (0.4 x node_timeout, 0.6 s at the least).
SHIM_ANSWER_MARGIN = 0.2
# More seconds, once, for a shim that is not stopped but has not answered a kill (other
# than a lapsed lease's) by then: slow, not stuck (``_later_for_a_working_shim``).
SHIM_SLOW_LIMIT = 5.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Journal(msgspec.Struct):
    assign: AssignChunk
    started: float  # wall clock


_journal_decoder = msgspec.json.Decoder(_Journal)


class ChunkRun(ChunkDelivery):
    """One attempt of one chunk on this node, from spawn to ChunkFinished.

    The I/O shell around :func:`agent.chunk_outcome.decide`: start the
    renderer under its shim, stream its output, scan for frames, enforce
    timeouts, pass on lease renewals and stop requests, then deliver what
    the verdict says and report it.
    """

    def __init__(self, supervisor: Supervisor, assign: AssignChunk) -> None:
        self.sup = supervisor
        self.assign = assign
        self.key: ChunkKey = (assign.job_id, assign.chunk, assign.attempt)
        self.marker = f"{assign.job_id}:{assign.chunk}:{assign.attempt}:{supervisor.marker_id}"
        self.timeouts: ChunkTimeouts = assign.timeouts
        self.adapter: Adapter = adapter_for(assign.renderer, assign.frames)
        self.pid: int | None = None
        self.shim: Shim | None = None
        self.spawned_at: float | None = None
        self.first_output_at: float | None = None
        self.notified: set[TimeoutKind] = set()
        # Why the chunk must stop (the first reason wins).
        self.stop: Stop | None = None
        # Set once this attempt may no longer write the sync root: told to stop
        # by the leader, or the lease ran out.
        self.revoked: str | None = None
        # This process killed its tree for a shim that did not answer (``_kill_for_the_shim``),
        # and that shim was given more time once already (``_later_for_a_working_shim``).
        self.swept = False
        self.shim_waited = False
        # Its render ended by itself, and its end waits for the lease (``_lease_again``).
        self.awaiting_lease = False
        # Its renderer ended by itself (not stopped): what is left is to judge and
        # deliver it, which a stopping agent lets it finish (``Supervisor.kill_all``).
        self.render_ended = False
        self.wake = asyncio.Event()
        self.files: ChunkFiles | None = None
        # The renderer's working folder: this attempt's own, on this node.
        self.workdir: Path | None = None
        self.delivery: Delivery | None = None
        self.reported: set[int] = set()
        self._lines: list[str] = []
        self._last_flush = time.monotonic()
        self._last_scan = 0.0
        self._progress: ChunkProgress | None = None
        self._frame: int | None = None
        self._done_count = 0
        self.task: asyncio.Task[None] | None = None
        # A chunk whose copy failed keeps its staged files, for a later retry sync.
        self.keep_staged = False
        # Its ChunkFinished is sent (into the outbox): it no longer runs here.
        self.ended = False
        # The agent goes at once (``Supervisor.give_up_copies``): its copy in flight stops
        # where it is, on its thread too (``Fence.going_on``), its output kept here.
        self.given_up = False
        # Found in the journal by a restarted agent: (renderer's exit status, started,
        # ended), both wall clock; the render is over, only its conclusion is left.
        self.recovered: tuple[int, float, float] | None = None
        # Its journal entry (``agent.journal``), once written.
        self.entry: JournalEntry | None = None
        # Its shim may still write the entry's exit status (it froze, or died without
        # saying its renderer had exited): the entry is removed, never reused.
        self.shim_uncertain = False
        # Why this node's staging may have made the render fail (a full disk): said
        # with a failure, which the renderer itself reports only as its exit status.
        self.disk_trouble: str | None = None
        # It holds one of the supervisor's slots (from its renderer's start to its exit).
        self.slotted = False
        # Waiting for a slot: its place in the queue, and what it starts with.
        self.turn: asyncio.Future[None] | None = None
        # (the command as its shim runs it, its folder, environment and exit file)
        self._start_args: tuple[list[str], Path, dict[str, str], Path | None] | None = None
        # Queued on the shim of a chunk of its job still rendering (``queue_behind``), to
        # start the moment that one's tree is gone: its shim, the token that takes it
        # back, the chunk ahead; and, for a chunk rendering, the one queued on its shim.
        self.queued: Shim | None = None
        self.queued_at = math.inf  # wall clock: its shim cannot have started it before
        self.token: int | None = None
        self.following: ChunkRun | None = None
        self.successor: ChunkRun | None = None
        # The shim took the queued chunk's token: it starts (or started) it, whatever we say.
        self.committed = False
        # Its shim would not take a chunk queued on it: none is tried again.
        self.takes_next = True

    @property
    def ref(self) -> ChunkRef:
        return ChunkRef(
            job_id=self.assign.job_id, chunk=self.assign.chunk, attempt=self.assign.attempt
        )

    @property
    def running_ref(self) -> RunningRef:
        """As a hello lists it: with how long its renderer has run, once it has begun."""
        began = self.spawned_at
        return RunningRef(
            job_id=self.assign.job_id,
            chunk=self.assign.chunk,
            attempt=self.assign.attempt,
            rendered_for=None if began is None else max(0.0, self.sup.clock() - began),
        )

    def request_stop(self, outcome: Outcome, reason: str, kind: TimeoutKind | None = None) -> None:
        # The leader's word (the chunk moved while the node was lost) replaces a lapsed
        # lease's: kept behind it, it was cleared when the lease came back, and a render
        # that ended waiting for its lease was delivered after all (break round 29d).
        lapsed = self.stop is not None and self.stop.reason == LEASE_LAPSED
        if self.stop is None or (lapsed and reason != LEASE_LAPSED):
            self.stop = Stop(outcome, reason, kind)
        if outcome == "killed" and (self.revoked is None or self.revoked == LEASE_LAPSED):
            self.revoked = reason
        if not self.unqueue():
            assert self.queued is not None  # its shim has it: stop it there, started or not
            self.queued.kill(self.sup.kill_grace, self.stop.reason)
        self.wake.set()

    # ------------------------------------------------------------------ queued on a shim

    def can_take_next(self, job_id: str) -> bool:
        """Whether a chunk of ``job_id`` may queue on this one's shim (``queue_behind``)."""
        shim = self.shim
        return (
            self.assign.job_id == job_id
            and self.slotted
            and self.takes_next
            and self.successor is None
            and self.stop is None
            and not self.ended
            and shim is not None
            and shim.pid is not None
            and isinstance(shim.process, ForkedProcess)
            and shim.process.more is not None
            and shim.process.successor is None
        )

    async def queue_behind(self, ahead: ChunkRun) -> None:
        """Hand this waiting chunk to the shim rendering ``ahead`` (a chunk of the same job).

        That shim starts it as soon as ``ahead``'s tree is gone, checking its
        lease and this agent first as for any chunk, without waiting for the
        agent to hear of the end and answer: the two process hops and the
        agent's turn off each short chunk's path. ``ahead``'s slot passes to it.
        """
        assert ahead.shim is not None
        assert self.sup.zygote is not None
        assert self._start_args is not None
        launch, cwd, env, exit_file = self._start_args
        ahead.successor, self.following = self, ahead
        followed: tuple[Shim, int] | None = None
        handed = self.sup.wall()
        try:
            followed = await Shim.follow(
                ahead.shim,
                launch,
                cwd=cwd,
                env=env,
                grace=self.sup.kill_grace,
                lease_until=self.sup.lease_until,
                exit_file=exit_file,
                zygote=self.sup.zygote,
            )
        finally:
            if followed is None:  # that shim takes no more, or we were cancelled
                ahead.takes_next = False
                self._unlink()
        if followed is None:
            return
        self.queued, self.token = followed
        self.queued_at = handed
        log.debug("chunk %s queued behind %s", self.marker, ahead.marker)
        if self.stop is not None and not self.unqueue():  # told to stop meanwhile
            self.queued.kill(self.sup.kill_grace, self.stop.reason)

    def unqueue(self) -> bool:
        """Take the chunk back from the shim it is queued on; whether it is (or never was).

        False: that shim took its token first, so it starts (or started) it.
        """
        if self.queued is None:
            return True
        if self.committed:
            return False
        token, self.token = self.token, None
        if token is None or not claim(token):
            self.committed = True
            return False
        queued, self.queued = self.queued, None
        self._unlink()
        queued.abandon()
        return True

    def _unlink(self) -> None:
        if self.following is not None and self.following.successor is self:
            self.following.successor = None
        self.following = None

    async def _start_queued(self, cwd: Path) -> Shim | None:
        """The queued chunk's shim once it started it (or said why not); None: start it anew.

        Its turn has come: the chunk ahead's tree is gone. That shim takes it
        when it said it would take another (``passes_on``); otherwise, or when
        it went without a word, the agent takes the token back and, having it,
        knows it never started.
        """
        queued, ahead = self.queued, self.following
        assert queued is not None
        passed_on = ahead is not None and ahead.shim is not None and ahead.shim.passes_on
        if not passed_on and self.unqueue():
            return None
        try:
            await queued.until_started(cwd)
            if queued.silent and self.unqueue():
                return None
        finally:
            self.queued = None
            self._unlink()
            if self.token is not None:  # never ours to read now: the shim took it
                os.close(self.token)
                self.token = None
        return queued

    def refusal(self) -> str | None:
        """None while this attempt may write the sync root; else why not (see ``Fence``)."""
        if self.revoked is not None:
            return self.revoked
        if time.monotonic() > self.sup.lease_until:
            return "the node's lease ran out"
        return None

    def renew_lease(self, until: float) -> None:
        if self.shim is not None:
            self.shim.renew(until)
        elif self.queued is not None:
            self.queued.renew(until)

    # ------------------------------------------------------------------ set-up

    def _chunk_folder(self, attempt: int | None = None) -> Path:
        job = self.assign.job_id
        if not _SAFE_NAME.fullmatch(job):
            raise ChunkSetupError(f"job id {job!r} is not a safe folder name; refused")
        number = self.assign.attempt if attempt is None else attempt
        return self.sup.staging_root / job / f"{self.assign.chunk}.{number}"

    def _pattern(self) -> str:
        a = self.assign
        if a.output:
            return a.output
        if a.outputs and a.frames:
            return infer_pattern(a.outputs[0], a.frames[0]) or ""
        return ""

    def _files_in(
        self, write_root: Path, *, staged: bool, inside_outdir: bool = False
    ) -> ChunkFiles:
        a = self.assign
        return plan_files(
            write_root=write_root,
            staged=staged,
            outdir=a.outdir,
            outputs=a.outputs,
            frames=a.frames,
            pattern=self._pattern(),
            inside_outdir=inside_outdir,
        )

    def _plan(self) -> ChunkFiles:
        """Where this attempt writes; never straight into place when it has outputs."""
        a = self.assign
        sync_root = self.sup.storage.sync_root
        if a.staging or sync_root is None:
            self.delivery = self.sup.storage.delivery
            return self._files_in(self._chunk_folder(), staged=True)
        if not a.outputs:
            # Nothing to deliver or check: it writes where the job says.
            return self._files_in(sync_root, staged=False)
        self.delivery = RenameIntoPlace(sync_root)
        partial = partial_folder(sync_root, a.outdir, a.job_id, a.chunk, a.attempt)
        return self._files_in(partial, staged=True, inside_outdir=True)

    def _scene(self) -> str:
        """The job's scene as the renderer must see it: a relative one is in the sync root.

        Renderers no longer start in the sync root (see ``_prepare``), so a
        relative scene is made absolute here rather than left to the cwd.
        """
        scene = self.assign.scene
        root = self.sup.storage.sync_root
        if not scene or root is None or PurePosixPath(scene).is_absolute():
            return scene
        return str(root.joinpath(*check_relative(scene, "scene").parts))

    def _prepare(self) -> tuple[list[str], Path]:
        """Expanded argv and working folder; ChunkSetupError when the chunk cannot start.

        The working folder is this attempt's own folder on the node, never the
        sync root: what a renderer writes to ``.`` stays out of other jobs'
        way, and is removed with the attempt. Paths the command is given
        (``{outdir}``, ``{output}``, the scene) are absolute.
        """
        a = self.assign
        pattern = self._pattern()
        folder = self._chunk_folder()
        self.files = self._plan()
        outdir = self.files.outdir
        tokens = frame_tokens(a.frames) if a.frames else {}
        tokens.update(outdir_tokens(str(outdir)))
        if pattern:
            tokens["output"] = str(outdir / PurePosixPath(pattern).name)
        scene = self._scene()
        if scene:
            tokens["scene"] = scene
        listed: str | None = None
        try:
            if "input_list" in tokens_used(a.argv):
                listed = input_list(scene, a.frames)
                tokens["input_list"] = str(folder / INPUT_LIST)
            argv = expand(a.argv, tokens)
        except RendererError as exc:
            raise ChunkSetupError(str(exc)) from None
        if not argv:
            raise ChunkSetupError("the job has no command (empty argv)")
        if scene != a.scene:
            # Command builders put the scene in the argv as given (blender -b shot.blend), or
            # an image sequence's as ffmpeg reads it (frame_####.png as frame_%04d.png).
            given = {a.scene: scene, printf_sequence(a.scene): printf_sequence(scene)}
            argv = [given.get(arg, arg) for arg in argv]
        self.sup.spares.make(folder)  # first: the outdir may be inside it
        self._make_outdir(outdir)
        if listed is not None:
            # In a folder of its own: never taken for a file the renderer wrote.
            (folder / INPUT_LIST).parent.mkdir(mode=0o755)
            (folder / INPUT_LIST).write_text(listed, encoding="utf-8", errors="surrogateescape")
        self.workdir = folder
        return argv, folder

    def _make_outdir(self, outdir: Path) -> None:
        """Make the folder the renderer writes in: in staging, in its attempt's folder,
        which only the agent may write yet; in the sync root (staging off), a step at a
        time without following a symlink, and with a render user, given to it."""
        root = self.sup.storage.sync_root
        if outdir.is_relative_to(self.sup.staging_root) or root is None:
            outdir.mkdir(parents=True, exist_ok=True)
            return
        user = self.sup.render_user
        # Staged into its own folder in the output folder (it has outputs): the render
        # user's to write in. Else it writes where the job says, as the folders let it.
        theirs = user is not None and self.files is not None and self.files.staged
        make_folder(
            root,
            outdir.relative_to(root).parts,
            owner=(user.uid, user.gid) if theirs and user is not None else None,
        )

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        a = self.assign
        if self.recovered is not None:
            try:
                await self._conclude_recovered(*self.recovered)
            finally:
                if self.ended:  # else (the agent stops, its copy waits) the next start's
                    self._clean_staging()
                    self._drop_journal()
            return
        started = self.sup.wall()
        if a.sync_from:
            try:
                await self._copy_kept_output(started)
            finally:
                self._clean_staging()
            return
        try:
            argv, cwd = self._prepare()
            env = self._environment()
            launch = self._as_render_user(argv, env)
        except (ChunkSetupError, OSError) as exc:
            log.error("chunk %s cannot start: %s", self.marker, exc)
            self._finish(Verdict("failed", str(exc)), started=started)
            self._clean_staging()
            return
        exit_file = self._remember(started)
        try:
            await self._render(argv, launch, cwd, env, exit_file)
        finally:
            self.sup.release_slot(self)

    def _environment(self) -> dict[str, str]:
        a = self.assign
        env = dict(self.sup.environ)
        env.update(a.env)
        env[MARKER_VARIABLE] = self.marker
        if a.gpus is not None:
            env.update(visible_devices(a.gpus))
        if self.sup.storage.sync_root is not None:
            env[SYNC_ROOT_VARIABLE] = str(self.sup.storage.sync_root)
        return env

    def _as_render_user(self, argv: list[str], env: dict[str, str]) -> list[str]:
        """What the shim runs: ``argv``, or ``argv`` as the render user, the folders it
        writes in given to it (``agent.render_user``)."""
        user = self.sup.render_user
        if user is None:
            return argv
        # setpriv would say so only in its exit status (127), after the chunk started.
        if shutil.which(argv[0], path=env.get("PATH")) is None:
            raise ChunkSetupError(f"cannot start {argv[0]!r}: no such program")
        assert self.workdir is not None
        assert self.files is not None
        user.hand_over(self.workdir, self.files.outdir)
        # Its job's folder (the agent's) is for it to pass through, whatever the umask.
        os.chmod(self.workdir.parent, 0o711)
        user.environment(env)
        return user.command(argv)

    async def _render(
        self,
        argv: list[str],
        launch: list[str],
        cwd: Path,
        env: dict[str, str],
        exit_file: Path | None,
    ) -> None:
        """Wait for a slot, start the renderer under its shim (``launch``: ``argv`` as
        the shim runs it), supervise it, conclude."""
        a = self.assign
        self._start_args = (launch, cwd, env, exit_file)
        if not await self.sup.take_slot(self):
            # Told to stop while it waited: it never started (its journal entry goes too).
            now = self.sup.wall()
            self.sup.reporter.send(ChunkStarted(**self._ids(), pid=0, command=argv, started=now))
            assert self.stop is not None
            self._finish(Verdict(self.stop.outcome, self.stop.reason), now)
            self._clean_staging()
            self._drop_journal()
            return
        started = self.sup.wall()  # its render time starts now, not when it was handed over
        self.spawned_at = self.sup.clock()
        try:
            async with self.sup.spawning():
                shim = await self._start_queued(cwd) if self.queued is not None else None
                if shim is not None and self.queued_at <= shim.started_at < started:
                    # Its shim started it before this loop heard (the agent was frozen
                    # or busy): its render time and timeouts run from that start.
                    self.spawned_at -= started - shim.started_at
                    started = shim.started_at
                if shim is None:
                    shim = await Shim.start(
                        launch,
                        cwd=cwd,
                        env=env,
                        grace=self.sup.kill_grace,
                        lease_until=self.sup.lease_until,
                        exit_file=exit_file,
                        zygote=self.sup.zygote,
                        share=a.job_id,
                    )
                if shim.is_child:  # a forked shim is its zygote's child, not ours
                    self.sup.tracked.add(shim.shim_pid)
        except StartTimeout as exc:
            # Frozen or starved: whatever it may have started meanwhile carries the marker.
            self.shim_uncertain = True
            log.error("chunk %s: %s; giving it up", self.marker, exc)
            await kill_tree(self.marker, grace=self.sup.kill_grace, keep=self.sup.tracked)
            self.sup.reporter.send(
                ChunkStarted(**self._ids(), pid=0, command=argv, started=started)
            )
            # Not the job's fault: no retry used, and it may run elsewhere.
            self._finish(Verdict("killed", f"not started: {exc}"), started)
            self._clean_staging()
            self._drop_journal()
            return
        except OSError as exc:  # the shim itself could not start (no python?)
            self.sup.reporter.send(
                ChunkStarted(**self._ids(), pid=0, command=argv, started=started)
            )
            self._finish(Verdict("failed", f"cannot start the chunk supervisor: {exc}"), started)
            self._clean_staging()
            self._drop_journal()
            return
        self.shim = shim
        try:
            if shim.pid is None:
                result = await shim.wait()
                self.sup.reporter.send(
                    ChunkStarted(**self._ids(), pid=0, command=argv, started=started)
                )
                if result.cause == "shim_died":
                    # Killed between taking the chunk and saying so: what it may have
                    # started carries the marker. Not the job's fault: no retry used.
                    self.shim_uncertain = True
                    await kill_tree(self.marker, grace=self.sup.kill_grace, keep=self.sup.tracked)
                    self._finish(Verdict("killed", f"not started: {result.error}"), started)
                    return
                if result.error.startswith(REFUSED):
                    # Its supervisor would not start it (delayed past the lease it was
                    # given, or changed by another process): the farm's doing, no retry used.
                    self._finish(Verdict("killed", result.error), started=started)
                    return
                # The shim's own words name what could not start, and why.
                why = result.error or f"cannot start {argv[0]!r}"
                self._finish(Verdict("failed", why), started=started)
                return
            self.pid = shim.pid
            # An orphan reaped earlier under this pid was another process: never this one's end.
            self.sup.forget_orphan(shim.pid)
            log.info("chunk %s started pid %d: %s", self.marker, shim.pid, " ".join(argv))
            self.sup.reporter.send(
                ChunkStarted(**self._ids(), pid=shim.pid, command=argv, started=started)
            )
            self.sup.may_follow(self.assign.job_id)
            await self._supervise(shim, started)
        finally:
            await self._forget(shim)
            # A render over but not concluded (the agent stops while its copy waits, or
            # goes at once): its output and journal entry stay for the next start, which
            # concludes it. Its output removed, that start found the frames missing and
            # failed a finished render (break round 29d).
            if self.ended or not self.render_ended:
                self._clean_staging()
            if self.ended:  # its ChunkFinished is in the outbox: nothing left to recover
                self._drop_journal()

    # ------------------------------------------------------------------ the journal

    def _remember(self, started: float) -> Path | None:
        """Journal this attempt before it starts; the path its shim writes the exit status to."""
        record = msgspec.json.encode(_Journal(assign=self.assign, started=started))
        try:
            self.entry = self.sup.journal.write(record)
        except OSError as exc:  # a full disk: the render runs, unjournalled
            log.warning("chunk %s: cannot journal the attempt: %s", self.marker, exc)
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                self.disk_trouble = f"the node's staging disk is full ({exc.strerror})"
            return None
        return self.entry.exit

    def _drop_journal(self) -> None:
        if self.entry is not None:
            self.sup.journal.drop(self.entry, reuse=not self.shim_uncertain)
            self.entry = None

    async def _conclude_recovered(self, returncode: int, started: float, ended: float) -> None:
        """The render ended while the agent was down: check, deliver and report it now."""
        log.info(
            "chunk %s ended (exit status %s) while the agent was down; concluding it",
            self.marker,
            exit_status(returncode),
        )
        try:
            self.files = self._plan()
            self.workdir = self._chunk_folder()  # removed with the attempt, as after a render
        except (ChunkSetupError, OSError) as exc:
            self._finish(Verdict("failed", f"cannot find its output: {exc}"), started)
            return
        if isinstance(self.delivery, RenameIntoPlace):
            self._count_moved(self.delivery.root, started)
        self.spawned_at = self.sup.clock() - max(0.0, ended - started)
        self._scan_files(force=True)
        await self._conclude(returncode, started)

    def _count_moved(self, root: Path, started: float) -> None:
        """Frames the dead agent had already renamed into place count as this attempt's.

        A file at its final path, written since the attempt started, can only be
        its own (one attempt of a chunk at a time): renaming it onto itself is
        then its delivery.
        """
        assert self.files is not None
        for frame, (relative, source) in list(self.files.expected.items()):
            if self.files.present(source):
                continue
            final = root.joinpath(*check_relative(relative, "output file").parts)
            with contextlib.suppress(OSError):
                if self.files.present(final) and final.stat().st_mtime >= started:
                    self.files.expected[frame] = (relative, final)

    async def _forget(self, shim: Shim) -> None:
        """Stop shielding the shim's pid from the orphan reaper once asyncio has reaped it."""
        await shim.reaped(within=5.0)
        self.sup.tracked.discard(shim.shim_pid)

    async def _supervise(self, shim: Shim, started: float) -> None:
        reader = asyncio.create_task(self._read(shim.output))
        ended = shim.ended  # (not a task of ``wait``: one task less a chunk)
        waker = asyncio.create_task(self.wake.wait())
        shim.renew(self.sup.lease_until)  # a renewal may have come while it started
        killing = False
        # When its shim must have killed the tree and said so (monotonic), or None.
        answer_by: float | None = None
        try:
            while not ended.done():
                either: set[asyncio.Future[Any]] = {ended, waker}
                await asyncio.wait(either, timeout=self.sup.tick, return_when="FIRST_COMPLETED")
                if waker.done():
                    self.wake.clear()
                    waker = asyncio.create_task(self.wake.wait())
                if not killing:
                    self._check_running_timeouts()
                if self.stop is not None and not killing:
                    killing = True
                    shim.kill(self.sup.kill_grace, self.stop.reason)
                    answer_by = time.monotonic() + self._shim_answers_within()
                if answer_by is not None and time.monotonic() > answer_by and not ended.done():
                    answer_by = self._later_for_a_working_shim(shim)
                    if answer_by is None:
                        await self._kill_for_the_shim(shim)
                self._housekeeping()
            result = await shim.wait()  # its status is all read: what it said
            # Not when this process killed the tree: its shim saw the renderer go before
            # its own signal, and said "exit" of our SIGTERM (break round 33d).
            ended_itself = result.cause == "exit" and not self.swept
            if ended_itself and (not killing or self._ended_before_the_agent_stop(result)):
                self.render_ended = True
            if self.sup.render_user is None:
                self.sup.release_slot(self)  # the tree is gone: a waiting chunk starts now
            # else once its folders are taken back (``_conclude``): the next renderer, of
            # another job maybe, runs as the same user.
            if result.cause == "shim_died":
                self.shim_uncertain = True
                # The second line: the shim is gone without saying the tree is dead.
                log.error("chunk %s: its supervisor died; sweeping for the marker", self.marker)
                if result.returncode is None and self.pid:
                    # Looked at before the sweep: only a renderer that ended on its own.
                    result = replace(result, returncode=self.sup.orphan_exit(self.pid))
                await kill_tree(self.marker, grace=self.sup.kill_grace, keep=self.sup.tracked)
            elif result.cause in ("lease", "agent_gone"):
                self.request_stop("killed", LEASE_LAPSED)
            if result.killed:
                log.info("chunk %s: %d process(es) killed", self.marker, result.killed)
            done, _ = await asyncio.wait({reader}, timeout=5.0)
            if not done:
                log.warning("chunk %s: output still open 5 s after exit", self.marker)
        finally:
            waker.cancel()
            if not reader.done():
                reader.cancel()
                shim.close_output()
            if not ended.done():  # cancelled (agent stopping): the shim kills the tree
                shim.kill(self.sup.kill_grace, AGENT_STOPPED)
        self._flush_output()
        self._scan_files(force=True)
        if ended_itself and self._lapsed():
            await self._lease_again()
        await self._conclude(result.returncode, started)

    def _shim_answers_within(self) -> float:
        """Seconds its shim has to kill the tree and say so: its grace, and a margin."""
        assert self.stop is not None
        grace = GONE_GRACE if self.stop.reason == LEASE_LAPSED else self.sup.kill_grace
        return grace + SHIM_ANSWER_MARGIN

    def _later_for_a_working_shim(self, shim: Shim) -> float | None:
        """When to look again at a shim that has not answered its kill yet, or None: kill
        for it now.

        A lapsed lease does not wait: the leader may move the chunk soon. Otherwise a shim
        that is not stopped is at work, only slow (a loaded machine, a big tree): it gets
        SHIM_SLOW_LIMIT more, once. Break round 33d: on two cores kept busy, 7 of 12
        cancels were swept for shims that were merely late, two error lines each.
        """
        assert self.stop is not None
        if self.stop.reason == LEASE_LAPSED or self.shim_waited or is_stopped(shim.shim_pid):
            return None
        self.shim_waited = True
        return time.monotonic() + SHIM_SLOW_LIMIT

    async def _kill_for_the_shim(self, shim: Shim) -> None:
        """The shim did not answer a kill: stopped (SIGSTOP, a debugger) or frozen, it
        cannot kill the tree, so this process does. Break round 33a: a stopped shim left
        its renderer running past the lease, and the chunk started on another node."""
        log.error(
            "chunk %s: its supervisor (pid %d) did not answer; killing its processes",
            self.marker,
            shim.shim_pid,
        )
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(shim.shim_pid, signal.SIGCONT)  # a stopped one then does its part too
        # The shim carries the marker as well: a supervisor that cannot kill goes with
        # its tree, and its end (``shim_died``) is the chunk's.
        self.swept = True
        report = await kill_tree(self.marker, grace=0.0, keep=self.sup.tracked)
        self.shim_uncertain = True
        if report.signalled:
            log.info("chunk %s: %d process(es) killed", self.marker, report.signalled)

    def _release_slot(self) -> None:
        self.sup.release_slot(self)

    def _ended_before_the_agent_stop(self, result: ShimResult) -> bool:
        """The stopping agent's kill came as its renderer ended by itself (its shim found
        nothing left to kill): the render is whole, so it is judged and delivered as
        ever, not reported killed and rendered again elsewhere. Only the agent's own
        stop: the leader's (a cancel, a chunk that moved) stands whatever the renderer did.
        """
        stop = self.stop
        if stop is None or stop.reason != AGENT_STOPPED or result.killed:
            return False
        log.info("chunk %s: its render ended by itself as the agent stopped", self.marker)
        self.stop = None
        self.revoked = None
        return True

    def _lapsed(self) -> bool:
        """Whether the lease ran out for this attempt: told so, or not yet (the watchdog's
        look comes later than the render's end, read after a freeze of the agent)."""
        if self.stop is not None:
            return self.stop.reason == LEASE_LAPSED
        return time.monotonic() > self.sup.lease_until

    async def _lease_again(self) -> None:
        """The render ended by itself, and the lease ran out before its end was judged
        (the watchdog told it to stop, or will): its end waits until the lease is
        renewed, then is judged and delivered as ever.

        A leader slow to answer (a flood of other links) let the lease lapse between a
        render's end and the agent's reading of it: the attempt was reported killed,
        its output thrown away, and the frame rendered a second time. Until the lease is
        back this attempt writes nothing to the sync root (``refusal``), and the node's
        hello lists it as running; the leader's stop (``Welcome.stale``: the chunk moved
        while the node was lost) still ends it killed.
        """
        log.warning(
            "chunk %s: its render ended before the lease ran out; waiting for the lease",
            self.marker,
        )
        self.stop = None
        self.revoked = None
        self.awaiting_lease = True
        try:
            while self.stop is None and time.monotonic() > self.sup.lease_until:
                if self.sup.stopping:  # a lease that may never come: the next start's
                    log.warning("chunk %s: the agent stops; its output stays here", self.marker)
                    raise DeliveryPostponed(self.marker)
                self.wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), LEASE_LOOK_EVERY)
        finally:
            self.awaiting_lease = False

    async def _read(self, stream: asyncio.StreamReader) -> None:
        splitter = LineSplitter()
        while block := await stream.read(64 * 1024):
            for line in splitter.feed(block):
                self._line(line)
        for line in splitter.close():
            self._line(line)

    def _line(self, text: str) -> None:
        if self.first_output_at is None:
            self.first_output_at = self.sup.clock()
        self._lines.append(text)
        if len(self._lines) >= FLUSH_LINES:
            self._flush_output()
        event = self.adapter.parse(text)
        if event is None:
            return
        if event.saved is not None:
            self._scan_files(force=True)
        if event.frame is not None:
            self._frame = event.frame
        if event.done_count is not None:
            self._done_count = max(self._done_count, event.done_count)
        total = max(len(self.assign.frames), 1)
        done = max(self._done_count, len(self.reported))
        fraction = done + (event.frame_fraction or 0.0) if done < total else total
        self._progress = ChunkProgress(
            **self._ids(), frame=self._frame, fraction=min(fraction / total, 1.0)
        )

    def _housekeeping(self) -> None:
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self._flush_output()
        self._scan_files()

    def _flush_output(self) -> None:
        self._last_flush = time.monotonic()
        if self._lines:
            lines, self._lines = self._lines, []
            self.sup.reporter.send(ChunkOutput(**self._ids(), lines=lines))
        if self._progress is not None:
            progress, self._progress = self._progress, None
            self.sup.reporter.send(progress)

    # ------------------------------------------------------------------ timeouts

    def _elapsed(self) -> float:
        return self.sup.clock() - (self.spawned_at or 0.0)

    def _fire(self, kind: TimeoutKind, limit: float) -> None:
        elapsed = self._elapsed()
        if self.timeouts.on_timeout == "notify":
            self._notify(kind)
            return
        self.request_stop("timeout", timeout_reason(kind, elapsed, limit), kind)

    def _notify(self, kind: TimeoutKind) -> None:
        if kind in self.notified:
            return
        self.notified.add(kind)
        elapsed = self._elapsed()
        log.warning("chunk %s: %s timeout (notify) after %.1f s", self.marker, kind, elapsed)
        self.sup.reporter.send(ChunkTimedOut(**self._ids(), kind=kind, elapsed=elapsed))

    def _check_running_timeouts(self) -> None:
        t = self.timeouts
        elapsed = self._elapsed()
        if t.max_start is not None and self.first_output_at is None and elapsed > t.max_start:
            self._fire("max_start", t.max_start)
        if t.max_render is not None and elapsed > t.max_render:
            self._fire("max_render", t.max_render)
