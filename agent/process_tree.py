"""Renderer process trees: mark them, find them, kill them whole, reap what comes back.

Every renderer starts in its own session with ``FARMTUI_CHUNK=<marker>`` in
its environment, which its children inherit. :func:`kill_tree` signals the
session's process group, then sweeps the process table for the marker until
nothing carrying it is left, so helpers that double-forked and called
``setsid`` (After Effects' AfterFX) die too. The agent is a child subreaper
(:func:`become_subreaper`), so such orphans are reparented to it rather than
to init; :func:`reap_orphans` collects their exit statuses without ever
touching the renderers that asyncio waits for.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass

import psutil

MARKER_VARIABLE = "FARMTUI_CHUNK"

log = logging.getLogger("farmtui.agent.process_tree")

_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_DUMPABLE = 4


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux only)."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1, "PR_SET_CHILD_SUBREAPER")


def not_dumpable() -> bool:
    """Other processes of our user may not read our memory, environment or descriptors.

    Renderers run as the agent's user: a job's command read the agent's token from
    ``/proc/<agent>/environ`` (``FARM_TOKEN``, exported where the agent was started)
    and could have read its memory or taken its socket (Linux; the shims do the same,
    ``agent.shim.not_dumpable``). Its token file it can still read: see the README's
    Security section.
    """
    return _prctl(_PR_SET_DUMPABLE, 0, "PR_SET_DUMPABLE")


def _prctl(option: int, value: int, name: str) -> bool:
    """``prctl(option, value)``; False (and a warning) where it fails or is not Linux's."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(option, value, 0, 0, 0) != 0:
        log.warning("prctl(%s) failed: %s", name, os.strerror(ctypes.get_errno()))
        return False
    return True


def exit_status(returncode: int) -> str:
    """``0`` -> ``"0"``; ``-9`` -> ``"SIGKILL"`` (a negative code is the signal that ended it)."""
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return str(returncode)


def _has_marker_linux(pid: int, needle: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            data = file.read()
    except OSError:  # gone, or another user's process
        return False
    return data.startswith(needle) or b"\0" + needle in data


def _has_marker_psutil(pid: int, marker: str) -> bool:
    try:
        return psutil.Process(pid).environ().get(MARKER_VARIABLE) == marker
    except (psutil.Error, OSError):
        return False


def find_marked(marker: str) -> list[int]:
    """Pids of live processes whose environment carries ``FARMTUI_CHUNK=marker``."""
    me = os.getpid()
    if sys.platform.startswith("linux"):
        needle = f"{MARKER_VARIABLE}={marker}\0".encode()
        return [pid for pid in psutil.pids() if pid != me and _has_marker_linux(pid, needle)]
    return [pid for pid in psutil.pids() if pid != me and _has_marker_psutil(pid, marker)]


def find_marked_with_suffix(suffix: str) -> dict[int, str]:
    """Live processes whose marker ends with ``suffix`` (an agent id), with their markers."""
    found: dict[int, str] = {}
    me = os.getpid()
    for pid in psutil.pids():
        if pid == me:
            continue
        try:
            value = psutil.Process(pid).environ().get(MARKER_VARIABLE)
        except (psutil.Error, OSError):
            continue
        if value and value.endswith(suffix) and not _is_gone(pid):
            found[pid] = value
    return found


def _is_gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.Error:
        return True


def is_stopped(pid: int) -> bool:
    """Whether ``pid`` is stopped: by a signal (SIGSTOP, SIGTSTP) or a tracer (a debugger)."""
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
    except psutil.Error:
        return False


def _our_zombies(keep: Collection[int]) -> Iterator[int]:
    try:
        children = psutil.Process().children(recursive=False)
    except psutil.Error:
        return
    for child in children:
        if child.pid in keep:
            continue
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                yield child.pid
        except psutil.Error:
            continue


def has_zombie_children() -> bool:
    """Whether some child of ours has exited and waits to be reaped (reaps nothing)."""
    try:
        found = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return found is not None


def reap_orphans(keep: Collection[int]) -> dict[int, int]:
    """Collect zombie children that are not in ``keep`` (the pids asyncio waits for):
    pid -> exit code (negative: the signal that ended it).

    Only specific pids are waited for, never ``waitpid(-1)``, so the exit
    status of a renderer is left for asyncio's child watcher.
    """
    reaped = {}
    for pid in _our_zombies(keep):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done:
            reaped[pid] = os.waitstatus_to_exitcode(status)
    return reaped


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


@dataclass(slots=True)
class KillReport:
    """What one :func:`kill_tree` did, for the agent log and the benchmarks."""

    signalled: int = 0
    killed_hard: int = 0
    seconds: float = 0.0
    complete: bool = True


async def kill_tree(
    marker: str,
    pgid: int | None = None,
    *,
    grace: float = 0.5,
    keep: Collection[int] = (),
    give_up_after: float = 10.0,
    poll: float = 0.002,
) -> KillReport:
    """Kill every process of a chunk: its process group, then everything with its marker.

    SIGTERM first; whatever is still alive ``grace`` seconds after its
    SIGTERM gets SIGKILL. Returns when no live process carries the marker
    (zombies count as gone), or after ``give_up_after`` seconds with ``complete=False``.
    ``keep`` are pids asyncio waits for: they are never reaped here.
    """
    started = time.monotonic()
    report = KillReport()
    if pgid is not None and pgid > 1:
        try:
            os.killpg(pgid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            pgid = None
    termed: dict[int, float] = {}
    group_killed = False
    while True:
        now = time.monotonic()
        alive = [pid for pid in find_marked(marker) if not _is_gone(pid)]
        if not alive:
            break
        if now - started > give_up_after:
            report.complete = False
            log.error(
                "kill_tree %s: %d process(es) survived %.1f s", marker, len(alive), give_up_after
            )
            break
        for pid in alive:
            first = termed.get(pid)
            if first is None:
                termed[pid] = now
                _signal(pid, signal.SIGTERM)
            elif now - first >= grace:
                report.killed_hard += 1
                _signal(pid, signal.SIGKILL)
        if pgid is not None and not group_killed and now - started >= grace:
            group_killed = True
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        reap_orphans(keep)
        await asyncio.sleep(poll)
    # Listing our children is a scan of the whole process table: skip it when
    # nothing was killed and no child is waiting to be reaped.
    if termed or has_zombie_children():
        reap_orphans(keep)
    report.signalled = len(termed)
    report.seconds = time.monotonic() - started
    return report
