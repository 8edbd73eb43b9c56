"""Runs assigned chunks as renderer process trees and reports what happens to them.

One :class:`ChunkRun` per ``AssignChunk``: expand the argv template, start
the renderer in its own session with the chunk's marker in its environment,
stream its output (batched), parse progress with the renderer's adapter,
report frames as their files appear, enforce the chunk's timeouts, and at the
end decide the outcome. A chunk is done only when the renderer exited 0 and
every expected file exists and is non-empty; with staging the files are then
copied (or uploaded) to the sync root before ``ChunkFinished(done)``.

Timeouts read an injectable monotonic ``clock`` so tests need not wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Literal, Protocol, TypedDict

from agent.adapters import Adapter, adapter_for
from agent.errors import ChunkSetupError
from agent.lines import LineSplitter
from agent.process_tree import (
    MARKER_VARIABLE,
    exit_status,
    find_marked_with_suffix,
    kill_tree,
    reap_orphans,
)
from agent.staging import ChunkFiles, Delivery, infer_pattern, plan_files
from farmtui.protocol import (
    AgentToLeader,
    AssignChunk,
    ChunkFinished,
    ChunkOutput,
    ChunkProgress,
    ChunkRef,
    ChunkStarted,
    ChunkTimedOut,
    ChunkTimeouts,
    FramesWritten,
)
from farmtui.renderers import RendererError, expand, frame_tokens

log = logging.getLogger("farmtui.agent.supervisor")

TimeoutKind = Literal["min_render", "max_render", "max_start"]
Outcome = Literal["done", "failed", "timeout", "killed"]
ChunkKey = tuple[str, int, int]

# Output is sent in batches: every FLUSH_SECONDS or FLUSH_LINES lines, whichever first.
FLUSH_SECONDS = 0.1
FLUSH_LINES = 200
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class _Ids(TypedDict):
    job_id: str
    chunk: int
    attempt: int


class Reporter(Protocol):
    """Where the supervisor's messages go (the leader link, or a list in tests)."""

    def send(self, message: AgentToLeader) -> None: ...


@dataclass(slots=True)
class Storage:
    """Where finished output goes, as learnt from the leader's Welcome."""

    # The shared sync root when this node sees it, else None (upload).
    sync_root: Path | None
    delivery: Delivery


def _reason_for_exit(returncode: int) -> str:
    status = exit_status(returncode)
    return f"killed by {status}" if returncode < 0 else f"exited with {status}"


def _frame_words(frames: list[int]) -> str:
    return ", ".join(str(f) for f in frames)


class ChunkRun:
    """One attempt of one chunk on this node, from spawn to ChunkFinished."""

    def __init__(self, supervisor: Supervisor, assign: AssignChunk) -> None:
        self.sup = supervisor
        self.assign = assign
        self.key: ChunkKey = (assign.job_id, assign.chunk, assign.attempt)
        self.marker = f"{assign.job_id}:{assign.chunk}:{assign.attempt}:{supervisor.agent_id}"
        self.timeouts: ChunkTimeouts = assign.timeouts
        self.adapter: Adapter = adapter_for(assign.renderer, assign.frames)
        self.pid: int | None = None
        self.spawned_at: float | None = None
        self.first_output_at: float | None = None
        self.notified: set[TimeoutKind] = set()
        # Set when the chunk must stop: (outcome, reason, timeout kind).
        self.stop: tuple[Outcome, str, TimeoutKind | None] | None = None
        self.wake = asyncio.Event()
        self.files: ChunkFiles | None = None
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

    @property
    def ref(self) -> ChunkRef:
        return ChunkRef(
            job_id=self.assign.job_id, chunk=self.assign.chunk, attempt=self.assign.attempt
        )

    def request_stop(self, outcome: Outcome, reason: str, kind: TimeoutKind | None = None) -> None:
        if self.stop is None:
            self.stop = (outcome, reason, kind)
        self.wake.set()

    # ------------------------------------------------------------------ set-up

    def _chunk_folder(self) -> Path:
        job = self.assign.job_id
        if not _SAFE_NAME.match(job):
            raise ChunkSetupError(f"job id {job!r} is not a safe folder name; refused")
        return self.sup.staging_root / job / f"{self.assign.chunk}.{self.assign.attempt}"

    def _pattern(self) -> str:
        a = self.assign
        if a.output:
            return a.output
        if a.outputs and a.frames:
            return infer_pattern(a.outputs[0], a.frames[0]) or ""
        return ""

    def _prepare(self) -> tuple[list[str], Path]:
        """Expanded argv and working folder; ChunkSetupError when the chunk cannot start."""
        a = self.assign
        storage = self.sup.storage
        staged = a.staging or storage.sync_root is None
        pattern = self._pattern()
        folder = self._chunk_folder()
        write_root = folder if staged else storage.sync_root
        assert write_root is not None
        self.files = plan_files(
            write_root=write_root,
            staged=staged,
            outdir=a.outdir,
            outputs=a.outputs,
            frames=a.frames,
            pattern=pattern,
        )
        outdir = self.files.outdir
        tokens = frame_tokens(a.frames) if a.frames else {}
        tokens["outdir"] = str(outdir)
        if pattern:
            tokens["output"] = str(outdir / PurePosixPath(pattern).name)
        if a.scene:
            tokens["scene"] = a.scene
        try:
            argv = expand(a.argv, tokens)
        except RendererError as exc:
            raise ChunkSetupError(str(exc)) from None
        if not argv:
            raise ChunkSetupError("the job has no command (empty argv)")
        outdir.mkdir(parents=True, exist_ok=True)
        folder.mkdir(parents=True, exist_ok=True)
        cwd = storage.sync_root if storage.sync_root is not None else folder
        return argv, cwd

    # ------------------------------------------------------------------ running

    async def run(self) -> None:
        a = self.assign
        started = self.sup.wall()
        try:
            argv, cwd = self._prepare()
        except (ChunkSetupError, OSError) as exc:
            log.error("chunk %s cannot start: %s", self.marker, exc)
            self._finish("failed", str(exc), started=started)
            return
        env = {**os.environ, **a.env, MARKER_VARIABLE: self.marker}
        self.spawned_at = self.sup.clock()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=cwd,
            )
        except OSError as exc:
            self.sup.reporter.send(ChunkStarted(**self._ids(), pid=0, command=argv))
            self._finish(
                "failed", f"cannot start {argv[0]!r}: {exc.strerror or exc}", started=started
            )
            return
        self.pid = proc.pid
        self.sup.tracked.add(proc.pid)
        log.info("chunk %s started pid %d: %s", self.marker, proc.pid, " ".join(argv))
        self.sup.reporter.send(ChunkStarted(**self._ids(), pid=proc.pid, command=argv))
        try:
            await self._supervise(proc, started)
        finally:
            self.sup.tracked.discard(proc.pid)
            self._clean_staging()

    def _clean_staging(self) -> None:
        """Remove this attempt's staging folder once nothing in it is needed."""
        if self.files is None or not self.files.staged or self.keep_staged:
            return
        folder = self.files.write_root
        shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            folder.parent.rmdir()  # the job's folder, when this was its last attempt here

    async def _supervise(self, proc: asyncio.subprocess.Process, started: float) -> None:
        assert proc.stdout is not None
        reader = asyncio.create_task(self._read(proc.stdout))
        waiter = asyncio.create_task(proc.wait())
        waker = asyncio.create_task(self.wake.wait())
        last_reap = time.monotonic()
        try:
            while not waiter.done() and self.stop is None:
                await asyncio.wait(
                    {waiter, waker}, timeout=self.sup.tick, return_when="FIRST_COMPLETED"
                )
                if waker.done():
                    self.wake.clear()
                    waker = asyncio.create_task(self.wake.wait())
                self._check_running_timeouts()
                self._housekeeping()
                if time.monotonic() - last_reap > 0.5:
                    last_reap = time.monotonic()
                    reap_orphans(self.sup.tracked)
            # Stopped or exited: nothing of the tree may outlive the chunk.
            report = await kill_tree(
                self.marker,
                proc.pid if self.stop is not None else None,
                grace=self.sup.kill_grace,
                keep=self.sup.tracked,
            )
            if report.signalled:
                log.info(
                    "chunk %s: killed %d process(es) in %.3f s",
                    self.marker,
                    report.signalled,
                    report.seconds,
                )
            returncode = await waiter
            done, _ = await asyncio.wait({reader}, timeout=5.0)
            if not done:
                log.warning("chunk %s: output still open 5 s after exit", self.marker)
        finally:
            waker.cancel()
            if not reader.done():
                reader.cancel()
        self._flush_output()
        self._scan_files(force=True)
        await self._conclude(returncode, started)

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

    def _scan_files(self, force: bool = False) -> None:
        """Report frames whose files have appeared (staged=True while in staging)."""
        now = time.monotonic()
        if self.files is None or (not force and now - self._last_scan < self.sup.scan_interval):
            return
        self._last_scan = now
        new = [f for f in self.files.frames_present() if f not in self.reported]
        if new:
            self.reported.update(new)
            self.sup.reporter.send(
                FramesWritten(**self._ids(), frames=new, staged=self.files.staged)
            )

    # ------------------------------------------------------------------ timeouts

    def _elapsed(self) -> float:
        return self.sup.clock() - (self.spawned_at or 0.0)

    def _fire(self, kind: TimeoutKind, limit: float) -> None:
        elapsed = self._elapsed()
        if self.timeouts.on_timeout == "notify":
            if kind not in self.notified:
                self.notified.add(kind)
                log.warning(
                    "chunk %s: %s timeout (notify) after %.1f s", self.marker, kind, elapsed
                )
                self.sup.reporter.send(ChunkTimedOut(**self._ids(), kind=kind, elapsed=elapsed))
            return
        self.request_stop(
            "timeout", f"{kind} timeout after {elapsed:.1f} s (limit {limit:g} s)", kind
        )

    def _check_running_timeouts(self) -> None:
        t = self.timeouts
        elapsed = self._elapsed()
        if t.max_start is not None and self.first_output_at is None and elapsed > t.max_start:
            self._fire("max_start", t.max_start)
        if t.max_render is not None and elapsed > t.max_render:
            self._fire("max_render", t.max_render)

    # ------------------------------------------------------------------ the end

    async def _conclude(self, returncode: int, started: float) -> None:
        assert self.files is not None
        status = exit_status(returncode)
        if self.stop is not None:
            outcome, reason, kind = self.stop
            if outcome == "timeout" and self.timeouts.on_timeout == "complete":
                # The leader treats this as success: keep what was written.
                error = await self._deliver(self.files.frames_present())
                if error:
                    reason = f"{reason}; {error}"
            self._finish(outcome, reason, started=started, status=status, kind=kind)
            return
        t = self.timeouts
        if t.min_render is not None and self._elapsed() < t.min_render:
            self._fire("min_render", t.min_render)
            if self.stop is not None:
                _, reason, kind = self.stop
                self._finish(
                    "timeout",
                    f"{reason}, {_reason_for_exit(returncode)}",
                    started=started,
                    status=status,
                    kind=kind,
                )
                return
        if returncode != 0:
            self._finish("failed", _reason_for_exit(returncode), started=started, status=status)
            return
        missing, others = self.files.missing()
        if missing or others:
            what = []
            if missing:
                what.append(f"frame(s) {_frame_words(missing)}")
            if others:
                what.append(", ".join(others))
            self._finish(
                "failed",
                f"exited 0 but did not write {'; '.join(what)}",
                started=started,
                status=status,
                missing=missing,
            )
            return
        error = await self._deliver(list(self.files.expected))
        if error:
            self._finish("failed", error, started=started, status=status)
        else:
            self._finish("done", "", started=started, status=status)

    async def _deliver(self, frames: list[int]) -> str:
        """Copy or upload staged files of ``frames`` (and frame-less outputs); '' or an error."""
        assert self.files is not None
        files = self.files
        if not files.staged:
            return ""
        wanted = [files.expected[f] for f in frames if f in files.expected]
        wanted += [(rel, p) for rel, p in files.extra if files.present(p)]
        try:
            for relative, source in wanted:
                await self.sup.storage.delivery.deliver(relative, source)
        except Exception as exc:  # any failure fails the chunk; the files stay staged
            log.error("chunk %s: delivery failed: %s", self.marker, exc)
            self.keep_staged = True
            return f"copy to the sync root failed: {exc}"
        delivered = [f for f in frames if f in files.expected]
        if delivered:
            self.sup.reporter.send(FramesWritten(**self._ids(), frames=delivered, staged=False))
        return ""

    def _finish(
        self,
        outcome: Outcome,
        reason: str,
        *,
        started: float,
        status: str | None = None,
        kind: TimeoutKind | None = None,
        missing: list[int] | None = None,
    ) -> None:
        level = logging.INFO if outcome == "done" else logging.WARNING
        log.log(level, "chunk %s %s%s", self.marker, outcome, f": {reason}" if reason else "")
        self.sup.reporter.send(
            ChunkFinished(
                **self._ids(),
                outcome=outcome,
                exit_status=status,
                reason=reason,
                timeout_kind=kind,
                started=started,
                finished=self.sup.wall(),
                missing=missing or [],
            )
        )

    def _ids(self) -> _Ids:
        return {
            "job_id": self.assign.job_id,
            "chunk": self.assign.chunk,
            "attempt": self.assign.attempt,
        }


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
    ) -> None:
        self.reporter = reporter
        self.agent_id = agent_id
        self.staging_root = staging_root
        self.storage = storage
        self.clock = clock
        self.wall = wall
        self.tick = tick
        self.scan_interval = scan_interval
        self.kill_grace = kill_grace
        self.runs: dict[ChunkKey, ChunkRun] = {}
        # Renderer pids asyncio waits for: never reaped by reap_orphans.
        self.tracked: set[int] = set()

    def running(self) -> list[ChunkRef]:
        return [run.ref for run in self.runs.values()]

    def assign(self, message: AssignChunk) -> ChunkRun:
        """Start a chunk; a repeated assignment of a running attempt is ignored."""
        key = (message.job_id, message.chunk, message.attempt)
        if key in self.runs:
            return self.runs[key]
        run = ChunkRun(self, message)
        self.runs[key] = run
        run.task = asyncio.create_task(self._run(run), name=f"chunk {run.marker}")
        return run

    async def _run(self, run: ChunkRun) -> None:
        try:
            await run.run()
        except Exception:
            log.exception("chunk %s crashed in the agent", run.marker)
            run._finish(
                "failed",
                "agent error while running the chunk (see the agent log)",
                started=self.wall(),
            )
        finally:
            self.runs.pop(run.key, None)

    def kill(self, key: ChunkKey, reason: str) -> bool:
        """Ask a running chunk to stop with outcome ``killed``; False if it is not running."""
        run = self.runs.get(key)
        if run is None:
            return False
        run.request_stop("killed", reason or "killed on the leader's request")
        return True

    def update_timeouts(self, key: ChunkKey, timeouts: ChunkTimeouts) -> bool:
        run = self.runs.get(key)
        if run is None:
            return False
        run.timeouts = timeouts
        run.wake.set()
        return True

    async def kill_all(self, reason: str) -> None:
        """Stop every chunk and wait until each has reported its end."""
        runs = list(self.runs.values())
        for run in runs:
            run.request_stop("killed", reason)
        await self.wait_idle()

    async def wait_idle(self) -> None:
        tasks = [run.task for run in self.runs.values() if run.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def kill_leftovers(self) -> int:
        """Kill renderer trees a previous run of this agent left behind (agent restart)."""
        markers = set(find_marked_with_suffix(f":{self.agent_id}").values())
        for marker in markers:
            log.warning("killing leftover chunk %s from a previous agent run", marker)
            await kill_tree(marker, grace=self.kill_grace, keep=self.tracked)
        return len(markers)
