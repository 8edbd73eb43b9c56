"""The agent's side of ``agent/zygote.py``: shims forked from a warm process, not exec'd.

:class:`Zygote` starts the zygote on first use, hands it each chunk's three
pipes, and gives back a :class:`ForkedProcess`, which ``agent/shim_client.py``
reads and writes exactly like the ``asyncio.subprocess.Process`` of a shim it
started itself. When the zygote cannot serve a chunk (not Linux, not started,
died, the marker does not fit, fork failed) ``spawn`` returns None and the
caller starts the shim the old way; so the zygote only ever makes a start
cheaper, never decides whether a chunk runs.

The agent alone holds each control pipe's write end (every descriptor here
is close-on-exec, and the zygote closes its copies once it has forked), so a
dead agent is end of file to every shim, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from agent import shim as shim_program
from agent import zygote as zygote_program
from agent.pipe_ends import PipeReader, PipeWriter
from farmtui.config import TOKEN_VARIABLE

log = logging.getLogger("farmtui.agent.zygote")

ZYGOTE_PATH = Path(zygote_program.__file__)
# After the zygote failed to start or died, chunks start the old way for this long.
RETRY_AFTER = 5.0
# How long a shim may take to say anything once its zygote died before answering.
ORPHAN_WAIT = 10.0
# A zygote that has not answered a fork request by then is given up on (frozen, starved).
FORK_TIMEOUT = 10.0
# Shims kept waiting for a chunk at most (an agent has this many slots busy at most, mostly),
# and for how long: a job's next chunk comes within milliseconds; after this its job is
# likely over, and an idle shim is a process on the node for nothing.
MAX_IDLE = 64
IDLE_FOR = 5.0
# A stream's buffer limit, as asyncio's subprocess pipes have it.
STREAM_LIMIT = 2**16


class _Reply(msgspec.Struct, tag_field="event", kw_only=True):
    """One line of the zygote's stdout."""


class Ready(_Reply, tag="ready"):
    pid: int
    room: int


class Spawned(_Reply, tag="spawned"):
    id: int
    pid: int


class Refused(_Reply, tag="refused"):
    id: int


class Exited(_Reply, tag="exited"):
    pid: int
    returncode: int


_reply_decoder = msgspec.json.Decoder(Ready | Spawned | Refused | Exited)


class ForkedProcess:
    """A shim forked by the zygote, as the agent holds it (the shape of an asyncio Process).

    ``returncode`` is the shim's own exit status once the zygote reaped it;
    it stays None for good when the zygote died first (then :meth:`wait`
    returns None).
    """

    def __init__(
        self,
        stdin: PipeWriter,
        stdout: asyncio.StreamReader,
        stderr: asyncio.StreamReader,
        readers: list[PipeReader],
    ) -> None:
        """``readers``: of the output pipe, then of the status pipe."""
        self.pid = 0
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._readers = readers
        self._ended: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        # The agent's end of the shim's socket for further chunks, and where an idle
        # shim goes back to (set by the Zygote when the shim can take another chunk).
        self.more: socket.socket | None = None
        self.share: str | None = None  # only chunks with the same key share a shim
        self._idle: Callable[[ForkedProcess, socket.socket], None] | None = None
        # The next chunk, queued on this shim's socket before this one ended (``follow``).
        self.successor: ForkedProcess | None = None

    @property
    def returncode(self) -> int | None:
        return self._ended.result() if self._ended.done() else None

    async def wait(self) -> int | None:
        return await asyncio.shield(self._ended)

    async def reaped(self, within: float) -> int | None:
        """The exit status once known, None after ``within`` seconds or when it never will be."""
        if self._ended.done():  # mostly, by the time it is asked: no timer, no turn of the loop
            return self._ended.result()
        with contextlib.suppress(TimeoutError):
            return await asyncio.wait_for(asyncio.shield(self._ended), within)
        return None

    def finished_chunk(self) -> None:
        """The shim said its tree is gone and closed this chunk's pipes: it waits for another.

        For this chunk the shim has ended (exit status 0); the shim itself goes
        back to its zygote's idle shims.
        """
        ended = self._ended.done()  # its zygote died, or the shim exited: not reusable
        self._end(0)
        more, self.more = self.more, None
        if more is None:
            return
        if ended or self._idle is None:
            more.close()  # end of file: the shim exits
            return
        self._idle(self, more)

    def _end(self, returncode: int | None) -> None:
        """The zygote reaped the shim: nobody reads its control pipe any more."""
        self._unknown(returncode)
        self.stdin.close()

    def _unknown(self, returncode: int | None = None) -> None:
        """Its exit status is known, or will never be (the zygote died: the shim runs on)."""
        if not self._ended.done():
            self._ended.set_result(returncode)

    def taken_back(self) -> None:
        """A chunk queued on a shim, taken back: its shim skips it (see ``Zygote.follow``).

        Its pipes close; if the shim was already ours, it goes back to the idle ones.
        """
        more, self.more = self.more, None
        idle = self._idle
        self._discard()
        if more is not None:
            if idle is None:
                more.close()
            else:
                idle(self, more)

    def close_output(self) -> None:
        """The agent reads no more of the renderer's output: let go of the pipe (paused on
        a full buffer, it would never see its end: break round 32b)."""
        self._readers[0].close()

    def _discard(self) -> None:
        """Never started: close every pipe end the agent holds."""
        self._end(None)
        for transport in self._readers:
            transport.close()


@dataclass(slots=True)
class _Waiting:
    """An idle shim, as its zygote's client keeps it."""

    share: str
    more: socket.socket  # the agent's end of its socket for further chunks
    expiry: asyncio.TimerHandle

    def close(self) -> None:
        """Let it go: end of file on its socket, and it exits."""
        self.expiry.cancel()
        self.more.close()


class Zygote:
    """One zygote per agent, started on first use; ``spawn`` forks a chunk's shim from it."""

    def __init__(self) -> None:
        self.pid: int | None = None
        self._socket: socket.socket | None = None
        self._room = 0
        self._starting: asyncio.Task[bool] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[ForkedProcess, asyncio.Future[bool]]] = {}
        self._live: dict[int, ForkedProcess] = {}
        # Shims whose chunk is over and that wait for another: pid -> the agent's end of
        # their socket. A chunk given to one skips the fork and the shim's set-up.
        self._idle: dict[int, _Waiting] = {}
        # Idle shims told to exit, until the zygote reports their end.
        self._leaving: dict[int, asyncio.Future[None]] = {}
        self._retry_at = -math.inf
        # The environment every zygote of this agent is started with (the marker's room
        # apart), and so every shim forked from one: a chunk's request says only how its
        # own differs from it. All of it in each request was 2 KB of JSON to write here
        # and to read and encode in the shim, on the way from one renderer to the next.
        # Never the agent's token: as root, a renderer reads its shim's environment in
        # /proc (break round 32a); a renderer is never given it either (``Supervisor``).
        left_out = (zygote_program.MARKER_VARIABLE, os.fsencode(TOKEN_VARIABLE))
        self._environ = {k: v for k, v in os.environb.items() if k not in left_out}
        self._base = {os.fsdecode(k): os.fsdecode(v) for k, v in self._environ.items()}

    @property
    def running(self) -> bool:
        return self._socket is not None

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str],
        grace: float,
        lease_until: float,
        exit_file: Path | None,
        share: str | None = None,
    ) -> ForkedProcess | None:
        """Fork a shim for ``argv``; None when the caller must start it the old way.

        ``share``: the shim may serve, once this chunk's tree is gone, later
        chunks given the same key (the agent: the job's id), and an idle one
        of that key serves this one. Only within a job: a renderer that
        tampers with its shim could otherwise reach another job's chunks.
        OSError when a shim was forked but its zygote died before naming it:
        what it started has been killed, and a second start could render twice.
        """
        marker = os.fsencode(env.get("FARMTUI_CHUNK", ""))
        if zygote_program.marker_bytes(marker, zygote_program.ROOM) is None:
            return None  # too long to mark a forked shim with
        if not await self._ready() or zygote_program.marker_bytes(marker, self._room) is None:
            return None
        assert self._socket is not None
        request = self._request(argv, cwd, env, grace, lease_until, exit_file)
        while share is not None and (pid := self._idle_for(share)) is not None:
            if (process := await self._reuse(pid, request)) is not None:
                process.share = share
                return process
        process, theirs = await self._pipes()
        more: socket.socket | None = None
        if share is not None:
            more, theirs_more = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            more.setblocking(False)
            process.more, process.share = more, share
            theirs.append(theirs_more.detach())
        process.stdin.write(request + b"\n")
        request_id = next(self._ids)
        answered: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = (process, answered)
        try:
            socket.send_fds(self._socket, [str(request_id).encode()], theirs)
        except OSError as exc:  # the zygote is gone or wedged: start the old way
            log.warning("the shim zygote took no request (%s); starting shims the old way", exc)
            self._pending.pop(request_id, None)
            if more is not None:
                more.close()
            process._discard()
            self._lose()
            return None
        finally:
            for fd in theirs:
                os.close(fd)
        try:
            forked = await asyncio.wait_for(asyncio.shield(answered), FORK_TIMEOUT)
        except TimeoutError:
            # Frozen or starved. Its control pipe closed, a shim it forks later starts nothing.
            log.warning(
                "the shim zygote %s did not answer in %g s; starting shims the old way",
                self.pid,
                FORK_TIMEOUT,
            )
            self._pending.pop(request_id, None)
            if more is not None:
                more.close()
            process._discard()
            self._lose()
            self._forget_all()  # its successor's requests and shims will be new ones
            self._retry_at = time.monotonic() + RETRY_AFTER
            return None
        if forked:
            process._idle = self._rest
            return process
        if process.pid == 0 and not await self._nothing_started(process):
            raise OSError("the shim zygote died while starting the chunk (its start is killed)")
        if more is not None:
            more.close()
        process._discard()
        return None

    async def follow(
        self,
        ahead: ForkedProcess,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str],
        grace: float,
        lease_until: float,
        exit_file: Path | None,
    ) -> tuple[ForkedProcess, int] | None:
        """Queue a chunk on the shim running ``ahead``'s chunk, to start the moment it ends.

        Its renderer then starts without a round trip through the agent. The
        chunk comes with a token (``agent.shim.claim``): the shim starts it only
        if it takes the token first, the agent takes it to take the chunk back.
        Returns the chunk's process and the agent's end of the token; None when
        that shim takes no more chunks (its chunk ended meanwhile, or it is not
        one that takes another).
        """
        marker = os.fsencode(env.get("FARMTUI_CHUNK", ""))
        if self._socket is None or zygote_program.marker_bytes(marker, self._room) is None:
            return None
        if ahead.more is None or ahead.successor is not None:
            return None
        request = self._request(argv, cwd, env, grace, lease_until, exit_file)
        process, theirs = await self._pipes()
        token, token_write = os.pipe()
        os.write(token_write, shim_program.TOKEN)
        os.close(token_write)  # read once, then end of file: one winner
        more = ahead.more  # after the await: its chunk may have ended meanwhile
        try:
            if more is None or ahead.successor is not None or ahead._ended.done():
                raise OSError("its shim takes no more chunks")
            process.stdin.write(request + b"\n")
            socket.send_fds(more, [b"next"], [*theirs, token])
        except OSError:
            os.close(token)
            process._discard()
            return None
        finally:
            for fd in theirs:
                os.close(fd)
        ahead.successor = process
        process.pid, process.share = ahead.pid, ahead.share
        return process, token

    def _request(
        self,
        argv: Sequence[str],
        cwd: str | Path,
        env: Mapping[str, str],
        grace: float,
        lease_until: float,
        exit_file: Path | None,
    ) -> bytes:
        """The chunk's first control line; its environment as it differs from the zygote's."""
        base = self._base
        return json.dumps(
            {
                "argv": list(argv),
                "env": {k: v for k, v in env.items() if base.get(k) != v},
                "unset": [k for k in base if k not in env],
                "cwd": str(cwd),
                "grace": grace,
                "lease_until": lease_until,
                "exit_file": "" if exit_file is None else str(exit_file),
            }
        ).encode()

    def _idle_for(self, share: str) -> int | None:
        """An idle shim of this key (the most recently idle: its pages are warmest)."""
        for pid in reversed(self._idle):
            if self._idle[pid].share == share:
                return pid
        return None

    async def _reuse(self, pid: int, request: bytes) -> ForkedProcess | None:
        """Give the chunk to an idle shim; None when that shim is gone (try another)."""
        process, theirs = await self._pipes()
        # Taken only now, after the await: meanwhile it may have exited, expired or been let go.
        waiting = self._idle.pop(pid, None)
        if waiting is None:
            for fd in theirs:
                os.close(fd)
            process._discard()
            return None
        waiting.expiry.cancel()
        more = waiting.more
        process.stdin.write(request + b"\n")
        try:
            socket.send_fds(more, [b"next"], theirs)
        except OSError:  # it exited meanwhile (killed, or its chunk limit)
            more.close()
            process._discard()
            return None
        finally:
            for fd in theirs:
                os.close(fd)
        process.pid, process.more, process._idle = pid, more, self._rest
        self._live[pid] = process
        return process

    async def _dismiss_idle(self, within: float = 2.0) -> None:
        """Idle shims exit while their zygote is there to reap them and say so.

        After the zygote they would be orphans, left to the agent's reaper.
        """
        if not self._idle:
            return
        loop = asyncio.get_running_loop()
        leaving = {pid: loop.create_future() for pid in self._idle}
        self._leaving.update(leaving)
        for waiting in self._idle.values():
            waiting.close()  # end of file: the shim exits
        self._idle.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*leaving.values()), within)
        for pid, left in leaving.items():
            self._leaving.pop(pid, None)
            if not left.done():
                # Stopped (SIGSTOP), it never reads the end: a process left for good.
                # Not reported reaped, so the pid is still that shim's.
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def _rest(self, process: ForkedProcess, more: socket.socket) -> None:
        """A shim finished its chunk and waits for another: keep it, unless we cannot use it.

        With a chunk queued on it (``follow``) it is that chunk's shim now.
        """
        if self._live.get(process.pid) is process:
            del self._live[process.pid]
        successor, process.successor = process.successor, None
        if successor is not None and not successor._ended.done():
            successor.more, successor._idle = more, self._rest
            self._live[process.pid] = successor
            return
        # (A chunk queued on it and taken back: the shim skips it, then waits like any idle one.)
        if self._socket is None or process.share is None:
            more.close()  # the shim sees end of file and exits (its zygote reaps it)
            return
        if len(self._idle) >= MAX_IDLE:
            self._idle.pop(next(iter(self._idle))).close()
        expiry = asyncio.get_running_loop().call_later(IDLE_FOR, self._expire, process.pid, more)
        self._idle[process.pid] = _Waiting(process.share, more, expiry)

    def _expire(self, pid: int, more: socket.socket) -> None:
        """A shim nobody gave a chunk for ``IDLE_FOR`` goes (its job is over, or slow)."""
        waiting = self._idle.get(pid)
        if waiting is not None and waiting.more is more:
            del self._idle[pid]
            waiting.close()

    async def start(self) -> bool:
        """Start the zygote now rather than with the first chunk; whether it runs."""
        return await self._ready()

    async def aclose(self) -> None:
        """Stop the zygote and its idle shims (the busy ones run on); wait for them to go."""
        if self._starting is not None and not self._starting.done():
            with contextlib.suppress(Exception):
                await self._starting
        await self._dismiss_idle()
        self._lose()
        if self._reader is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._reader), 5.0)

    # ---------------------------------------------------------------- internals

    async def _ready(self) -> bool:
        if self._socket is not None:
            return True
        if time.monotonic() < self._retry_at or not sys.platform.startswith("linux"):
            return False
        if self._starting is None or self._starting.done():
            self._starting = asyncio.create_task(self._start())
        return await asyncio.shield(self._starting)

    async def _start(self) -> bool:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        replies_read, replies_write = os.pipe()
        name = zygote_program.MARKER_VARIABLE
        reserved = zygote_program.RESERVED[len(name) + 1 : -1]
        env = {name: reserved, **self._environ}
        try:
            pid = os.posix_spawn(  # noqa: ASYNC221  # once per agent, and it does not wait
                sys.executable,
                [sys.executable, "-I", "-S", str(ZYGOTE_PATH)],
                env,
                file_actions=[
                    (os.POSIX_SPAWN_DUP2, theirs.fileno(), 0),
                    (os.POSIX_SPAWN_DUP2, replies_write, 1),
                    (os.POSIX_SPAWN_DUP2, replies_write, 2),
                ],
                setsid=True,
                setsigmask=(),
                setsigdef=(signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
            )
        except OSError as exc:
            log.warning("cannot start the shim zygote (%s); starting shims the old way", exc)
            ours.close()
            os.close(replies_read)
            self._retry_at = time.monotonic() + RETRY_AFTER
            return False
        finally:
            theirs.close()
            os.close(replies_write)
        ours.setblocking(False)
        replies, _ = await _read_pipe(replies_read)
        ready: asyncio.Future[Ready | None] = loop.create_future()
        self._reader = asyncio.create_task(self._read(pid, replies, ready), name="shim zygote")
        hello = await ready
        if hello is None:
            log.warning("the shim zygote did not start; starting shims the old way")
            ours.close()
            self._retry_at = time.monotonic() + RETRY_AFTER
            return False
        if hello.room == 0:
            log.warning("the shim zygote cannot mark its shims; starting shims the old way")
        self.pid, self._room, self._socket = pid, hello.room, ours
        log.debug("shim zygote %d ready", pid)
        return True

    async def _pipes(self) -> tuple[ForkedProcess, list[int]]:
        """A process with the agent's ends of three new pipes; the shim's ends, to send.

        (A coroutine all the same: its callers' ``await`` is where another task may run.)
        """
        control_read, control_write = os.pipe()
        output_read, output_write = os.pipe()
        status_read, status_write = os.pipe()
        output = asyncio.StreamReader(limit=STREAM_LIMIT)
        status = asyncio.StreamReader(limit=STREAM_LIMIT)
        readers = [PipeReader(output_read, output), PipeReader(status_read, status)]
        process = ForkedProcess(PipeWriter(control_write), output, status, readers)
        return process, [control_read, output_write, status_write]

    async def _nothing_started(self, process: ForkedProcess) -> bool:
        """The zygote died before naming a shim: was one forked? (Whatever it started dies.)

        The agent closes the control pipe, so a forked shim kills what it
        started; its status pipe then ends. Nothing said on it: nothing forked.
        """
        process.stdin.close()
        said = b""
        with contextlib.suppress(TimeoutError):
            said = await asyncio.wait_for(process.stderr.read(), ORPHAN_WAIT)
        return not said

    async def _read(
        self, pid: int, replies: asyncio.StreamReader, ready: asyncio.Future[Ready | None]
    ) -> None:
        try:
            while line := await replies.readline():
                try:
                    reply = _reply_decoder.decode(line)
                except msgspec.DecodeError:  # a traceback from a broken zygote
                    log.warning("shim zygote %d: %s", pid, line.decode(errors="replace").rstrip())
                    continue
                match reply:
                    case Ready():
                        if not ready.done():
                            ready.set_result(reply)
                    case Spawned(id=request_id, pid=shim_pid):
                        process, answered = self._pending.pop(request_id, (None, None))
                        if process is not None and answered is not None:
                            process.pid = shim_pid
                            self._live[shim_pid] = process
                            answered.set_result(True)
                    case Refused(id=request_id):
                        process, answered = self._pending.pop(request_id, (None, None))
                        if answered is not None:
                            answered.set_result(False)
                    case Exited(pid=shim_pid, returncode=returncode):
                        # Its pid may name a new shim only after this line.
                        if (process := self._live.pop(shim_pid, None)) is not None:
                            process._end(returncode)
                        if (idle := self._idle.pop(shim_pid, None)) is not None:
                            idle.close()
                        if (leaving := self._leaving.pop(shim_pid, None)) is not None:
                            leaving.set_result(None)
        finally:
            if not ready.done():
                ready.set_result(None)
            if self._socket is not None and self.pid == pid:
                log.warning("the shim zygote %d ended; its shims run on", pid)
                self._lose()
                self._retry_at = time.monotonic() + RETRY_AFTER
            # A zygote given up on (frozen) may end after its successor started: what is
            # pending and live now is the successor's, not to be touched.
            if self.pid == pid:
                self._forget_all()
            await _reap(pid)

    def _forget_all(self) -> None:
        """The zygote is gone: nothing it was asked or forked will be reported any more."""
        for _, answered in self._pending.values():
            if not answered.done():
                answered.set_result(False)
        for leaving in self._leaving.values():
            if not leaving.done():
                leaving.set_result(None)
        self._pending.clear()
        for process in self._live.values():
            # Still supervised through its pipes, which stay open; its exit status
            # goes to the agent's orphan reaper now.
            process._unknown()
        self._live.clear()

    def _lose(self) -> None:
        if self._socket is not None:
            self._socket.close()  # end of file: the zygote exits
            self._socket = None
        # Idle shims see end of file too and exit: without their zygote nobody would
        # report their end, so none is reused.
        for waiting in self._idle.values():
            waiting.close()
        self._idle.clear()


async def _read_pipe(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    """A stream reading the pipe ``fd`` (its transport closes it at end of file)."""
    stream = asyncio.StreamReader(limit=STREAM_LIMIT)
    pipe = open(fd, "rb", buffering=0)  # noqa: SIM115, ASYNC230  # wraps the descriptor
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(stream), pipe
    )
    return stream, transport


async def _reap(pid: int) -> None:
    """Collect the zygote's exit status if it is ours to collect (the orphan reaper may be first).

    Its replies ended, so it is exiting: poll briefly rather than keep a watcher.
    """
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222  # WNOHANG: never waits
        except ChildProcessError:
            return
        if done:
            return
        await asyncio.sleep(0.002)
