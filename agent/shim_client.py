"""The agent's side of ``agent/shim.py``: start a renderer under its shim, renew, kill, wait.

Each chunk's renderer runs under a shim that owns its process tree: the shim
kills the tree when asked, when the agent stops renewing its lease (frozen),
or when the agent dies (its end of the shim's stdin closes), and reports
``done`` only once nothing of the tree is left. :meth:`Shim.wait` returns that
confirmation, or ``shim_died`` when the shim ended without giving it (then
the tree may still be alive: sweep for the chunk's marker).
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import logging
import math
import os
import py_compile
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgspec

from agent.process_tree import exit_status
from agent.zygote_client import ForkedProcess, Zygote

log = logging.getLogger("farmtui.agent.shim")

SHIM_PATH = Path(__file__).with_name("shim.py")
# A shim that has not started its renderer (or said why not) by then is given up on:
# frozen, or starved. Far above any start seen (40-60 ms on a machine at load 16).
START_TIMEOUT = 10.0
# How a shim's spawn_failed starts when it chose not to start the renderer (see shim.py).
REFUSED = "not started: "


class StartTimeout(OSError):
    """The shim said nothing in ``START_TIMEOUT``; its control pipe is closed, so it never will."""


DoneCause = Literal["exit", "kill", "lease", "agent_gone"]
Cause = Literal["exit", "kill", "lease", "agent_gone", "spawn_failed", "shim_died"]


@dataclass(frozen=True, slots=True)
class ShimResult:
    """How a chunk's process tree ended.

    ``returncode`` is the renderer's (negative: the signal that ended it),
    None when it never started or its end is unknown; ``killed`` counts the
    processes the shim had to signal.
    """

    returncode: int | None
    cause: Cause
    killed: int
    error: str = ""


# ------------------------------------------------------------------ status lines


class _Status(msgspec.Struct, tag_field="event", kw_only=True):
    """One line of the shim's stderr."""


class Started(_Status, tag="started"):
    pid: int
    at: float = 0.0  # wall clock, as the renderer was started (0: not said)


class SpawnFailed(_Status, tag="spawn_failed"):
    error: str = ""


class Exited(_Status, tag="exited"):
    returncode: int


class Stuck(_Status, tag="stuck"):
    alive: int = 0


class Done(_Status, tag="done"):
    returncode: int | None
    cause: DoneCause
    killed: int = 0
    complete: bool = False
    # A forked shim that closes this chunk's pipes and waits for another.
    next: bool = False


class SetupFailed(_Status, tag="setup_failed"):
    """A forked shim could not enter the chunk's working folder (an exec'd one never starts)."""

    errno: int = 0
    error: str = ""


ShimStatus = Started | SpawnFailed | Exited | Stuck | Done | SetupFailed
_status_decoder = msgspec.json.Decoder(ShimStatus)


# ------------------------------------------------------------------ the command


def shim_command() -> list[str]:
    """The argv that runs the shim, up to its options."""
    return [sys.executable, "-I", "-S", str(_runnable_shim())]


@functools.cache
def _runnable_shim() -> Path:
    """The shim's compiled form, kept fresh beside the source; the source if it cannot be.

    Python compiles a script on every run but runs a ``.pyc`` as it is: the
    compiled shim starts about 6 ms sooner, a quarter of its cost.
    """
    if sys.dont_write_bytecode:
        return SHIM_PATH
    compiled = Path(importlib.util.cache_from_source(str(SHIM_PATH)))
    if _is_fresh(compiled):
        return compiled
    try:
        py_compile.compile(
            str(SHIM_PATH),
            cfile=str(compiled),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP,
        )
    except (OSError, py_compile.PyCompileError) as exc:
        log.info("running the shim from its source: cannot compile it: %s", exc)
        return SHIM_PATH
    return compiled


def _is_fresh(compiled: Path) -> bool:
    """Whether ``compiled`` matches the shim's source (the import system's timestamp check)."""
    try:
        source = SHIM_PATH.stat()
        with compiled.open("rb") as file:
            header = file.read(16)
    except OSError:
        return False
    expected = (
        importlib.util.MAGIC_NUMBER
        + (0).to_bytes(4, "little")
        + (int(source.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little")
        + (source.st_size & 0xFFFFFFFF).to_bytes(4, "little")
    )
    return header == expected


def _check_grace(grace: float) -> float:
    if not 0 <= grace < math.inf:
        raise ValueError(f"grace must be a finite number of seconds >= 0, not {grace!r}")
    return float(grace)


# ------------------------------------------------------------------ the shim


class Shim:
    """One renderer running under its shim.

    ``output`` carries the renderer's stdout and stderr; read it to its end,
    or a chatty renderer blocks on a full pipe. Keep renewing the lease until
    :meth:`wait` returns: a lapsed lease caps a kill's grace at 0.2 s.
    """

    def __init__(
        self, process: asyncio.subprocess.Process | ForkedProcess, lease_until: float = math.nan
    ) -> None:
        """``lease_until``: the lease its shim was started with (NaN: not known)."""
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        self.process = process
        self.shim_pid = process.pid
        self.output: asyncio.StreamReader = process.stdout
        # The renderer's pid; None when it did not start.
        self.pid: int | None = None
        self.started_at = 0.0  # the renderer's start as the shim said it (wall clock)
        # The renderer's exit status as soon as it exits, before its helpers are gone.
        self.returncode: int | None = None
        self._control = process.stdin
        # The last lease the shim was told: a renewal to the same deadline is not sent
        # (it would wake the shim as its renderer starts, for nothing).
        self._lease = lease_until
        self._result: ShimResult | None = None
        self._last_words = ""
        self._setup_failed: SetupFailed | None = None
        # A forked shim said it takes another chunk once this one's pipes are closed.
        self._waits_for_more = False
        self._started: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._status = asyncio.create_task(
            self._read_status(process.stderr), name=f"shim {process.pid} status"
        )

    @classmethod
    async def start(
        cls,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str],
        grace: float,
        lease_until: float,
        exit_file: Path | None = None,
        zygote: Zygote | None = None,
        share: str | None = None,
    ) -> Shim:
        """Start ``argv`` under a shim; return once it started or failed to.

        ``grace``: seconds between SIGTERM and SIGKILL when the shim kills the
        tree on its own (SIGTERM to the shim, helpers left after a clean exit).
        ``lease_until``: a ``time.monotonic()`` deadline, ``math.inf`` for none.
        ``exit_file``: where the shim writes the renderer's exit status as it exits.
        ``zygote``: fork the shim from it (~1 ms) rather than start a Python (20-60 ms);
        the old way when it cannot. ``share``: a forked shim may serve later chunks of
        the same key, and one waiting with that key serves this one (see ``Zygote.spawn``).
        OSError when the shim itself cannot start (``cwd`` missing ...).
        """
        if not argv:
            raise ValueError("no command to run")
        grace = _check_grace(grace)
        if zygote is not None:
            forked = await zygote.spawn(
                argv,
                cwd=cwd,
                env=env,
                grace=grace,
                lease_until=float(lease_until),
                exit_file=exit_file,
                share=share,
            )
            if forked is not None:
                return await cls._when_started(forked, cwd, lease_until)
        process = await asyncio.create_subprocess_exec(
            *shim_command(),
            "--grace",
            repr(grace),
            "--lease-until",
            repr(float(lease_until)),
            *(["--exit-file", str(exit_file)] if exit_file is not None else []),
            "--",
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            cwd=cwd,
            env=env,
        )
        return await cls._when_started(process, cwd, lease_until)

    @classmethod
    async def _when_started(
        cls,
        process: asyncio.subprocess.Process | ForkedProcess,
        cwd: str | Path,
        lease_until: float,
    ) -> Shim:
        return await cls(process, lease_until).until_started(cwd)

    async def until_started(self, cwd: str | Path) -> Shim:
        """Return once the shim started the renderer, or said why not, or ended silently.

        StartTimeout when it says nothing in ``START_TIMEOUT``; OSError when it
        could not enter ``cwd``.
        """
        try:
            if not self._started.done():
                await asyncio.wait_for(asyncio.shield(self._started), START_TIMEOUT)
        except TimeoutError:
            # Closed first: a frozen shim that wakes up finds no agent and starts nothing.
            self._give_up()
            why = f"its supervisor (pid {self.shim_pid}) did not start it in {START_TIMEOUT:g} s"
            raise StartTimeout(why) from None
        except asyncio.CancelledError:
            self.kill(0.0, "start cancelled")
            raise
        if (failed := self._setup_failed) is not None:
            await self.wait()  # it has nothing to kill: it exits at once
            if failed.errno:
                raise OSError(failed.errno, os.strerror(failed.errno), cwd)  # as subprocess does
            raise OSError(failed.error)
        return self

    @classmethod
    async def follow(
        cls,
        ahead: Shim,
        argv: Sequence[str],
        *,
        cwd: str | Path,
        env: Mapping[str, str],
        grace: float,
        lease_until: float,
        exit_file: Path | None,
        zygote: Zygote,
    ) -> tuple[Shim, int] | None:
        """Queue ``argv`` on ``ahead``'s forked shim, to start once ``ahead``'s tree is gone.

        Returns the queued chunk's shim, reading its status from now on (call
        :meth:`until_started` once its turn came), and the token that takes it
        back (``agent.shim.claim``); None when ``ahead``'s shim takes no more.
        """
        if not argv or not isinstance(ahead.process, ForkedProcess) or ahead._result is not None:
            return None
        followed = await zygote.follow(
            ahead.process,
            argv,
            cwd=cwd,
            env=env,
            grace=_check_grace(grace),
            lease_until=float(lease_until),
            exit_file=exit_file,
        )
        if followed is None:
            return None
        process, token = followed
        return cls(process, lease_until), token

    @property
    def passes_on(self) -> bool:
        """Its tree is gone and it takes the next chunk queued on it (a forked shim)."""
        return self._result is not None and self._waits_for_more

    @property
    def silent(self) -> bool:
        """It ended without a word about its renderer: whether it started one is unknown."""
        return (
            self._started.done()
            and self.pid is None
            and self._result is None
            and self._setup_failed is None
        )

    @property
    def is_child(self) -> bool:
        """Whether the shim is this process' child (exec'd), not its zygote's (forked)."""
        return not isinstance(self.process, ForkedProcess)

    def renew(self, lease_until: float) -> None:
        """Extend the lease to ``lease_until`` (``time.monotonic()``); a no-op once it ended."""
        if lease_until == self._lease:
            return
        self._lease = lease_until
        self._send(f"lease {float(lease_until)!r}")

    def kill(self, grace: float, reason: str = "") -> None:
        """Kill the tree: SIGTERM, then SIGKILL what is alive ``grace`` seconds later."""
        words = " ".join(reason.split())
        self._send(f"kill {_check_grace(grace)!r} {words}".rstrip())

    def close_output(self) -> None:
        """Read no more of the renderer's output (something outside its tree holds the pipe
        open after its end); an exec'd shim's pipe goes with its transport."""
        if isinstance(self.process, ForkedProcess):
            self.process.close_output()

    @property
    def ended(self) -> asyncio.Future[None]:
        """Done once the shim said all it will about this chunk (``wait`` then only looks
        for the exit status of a shim that died without a word)."""
        return self._status

    async def wait(self) -> ShimResult:
        """The end of the tree, as the shim confirmed it (or ``shim_died``)."""
        await asyncio.shield(self._status)
        if self._result is not None:
            return self._result
        error = f"the shim ended ({await self._shim_status()}) before the tree was known dead"
        if self._last_words:
            error = f"{error}; it said: {self._last_words}"
        return ShimResult(returncode=self.returncode, cause="shim_died", killed=0, error=error)

    # ---------------------------------------------------------------- internals

    def _give_up(self) -> None:
        """No more of this shim: its control pipe ends (it starts nothing, kills what it did)."""
        self._control.close()
        if isinstance(self.process, ForkedProcess) and self.process.more is not None:
            self.process.more.close()  # and it takes no further chunk
            self.process.more = None

    def abandon(self) -> None:
        """A queued chunk taken back (its token is ours): close every pipe end we hold."""
        self._control.close()
        if isinstance(self.process, ForkedProcess):
            self.process.taken_back()

    def _send(self, line: str) -> None:
        if self._result is not None or self._control.is_closing():
            return
        try:
            self._control.write(line.encode() + b"\n")
        except (OSError, RuntimeError):  # the shim is gone; wait() says what is known
            return

    async def reaped(self, within: float) -> int | None:
        """The shim's own exit status once asyncio's child watcher has it (None: not yet).

        Not ``process.wait()``: that also waits for the end of the output pipe,
        which what is left of the tree may hold open for ever.
        """
        if isinstance(self.process, ForkedProcess):
            return await self.process.reaped(within)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while self.process.returncode is None and loop.time() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
        return self.process.returncode

    async def _shim_status(self) -> str:
        # Its stderr is closed, so it has exited: give the child watcher a moment.
        code = await self.reaped(within=1.0)
        if code is None:
            return "status unknown"
        return f"killed by {exit_status(code)}" if code < 0 else f"exit status {code}"

    async def _read_status(self, stream: asyncio.StreamReader) -> None:
        try:
            while True:
                try:
                    line = await stream.readline()
                except ValueError:  # longer than the stream's limit: not one of ours
                    log.warning("shim %d: overlong status line ignored", self.shim_pid)
                    continue
                if not line:
                    break
                self._on_status(line)
            # Its tree is gone and it closed the pipes: this chunk's part of it is over.
            if self._waits_for_more and isinstance(self.process, ForkedProcess):
                self.process.finished_chunk()
        finally:
            self._mark_started()

    def _mark_started(self) -> None:
        if not self._started.done():
            self._started.set_result(None)

    def _on_status(self, line: bytes) -> None:
        try:
            status = _status_decoder.decode(line)
        except msgspec.DecodeError:  # a traceback from a broken shim, or a newer event
            text = line.decode(errors="replace").rstrip()
            log.warning("shim %d: %s", self.shim_pid, text)
            self._last_words = text
            return
        match status:
            case Started(pid=pid, at=at):
                self.pid, self.started_at = pid, at
                self._mark_started()
            case SpawnFailed(error=error):
                self._result = ShimResult(None, "spawn_failed", 0, error)
                self._mark_started()
            case Exited(returncode=returncode):
                self.returncode = returncode
            case Stuck(alive=alive):
                log.warning(
                    "shim %d: %d process(es) of pid %s survive SIGKILL",
                    self.shim_pid,
                    alive,
                    self.pid,
                )
            case SetupFailed():
                self._setup_failed = status
                self._mark_started()
            case Done(complete=False):
                log.error("shim %d: done without a complete kill: %s", self.shim_pid, line)
            case Done(returncode=returncode, cause=cause, killed=killed, next=again):
                self._result = ShimResult(returncode, cause, killed)
                self._waits_for_more = again
