"""The shim launcher: a warm Python process that forks one chunk's shim in a millisecond.

Why: starting ``python shim.py`` for every chunk costs 20-60 ms of interpreter
start-up, which bounds an agent's slots to a few dozen short chunks a second.
A fork of this already-started process costs ~1 ms, and the child runs the
very same shim code (``agent/shim.py``'s :func:`serve`), so every chunk still
gets a supervisor of its own: its own session, a child subreaper, its marker,
its lease, the same status lines. This process only launches; it is never in
the supervision path. The agent creates each chunk's three pipes (control,
output, status) and hands them over with the request; the zygote closes its
copies as soon as it has forked, so the agent alone holds the control pipe's
write end. Hence:

- the agent dies → every shim sees end of file on its control pipe, exactly
  as a shim the agent started itself, and kills its tree;
- the agent freezes → every shim's lease lapses on its own clock;
- this zygote dies (killed, crashed) → the shims it forked run on untouched:
  each still obeys the agent's pipes (kill, lease, end of file); they are
  reparented to the agent (a child subreaper), whose orphan reaper collects
  them. What is lost is only the shims' own exit statuses, which the agent
  uses for an error message when a shim dies without confirming its tree dead.

A shim takes chunk after chunk of one job (the agent asks for that with a
fourth descriptor, and gives a shim only chunks of the job it served): once
its chunk's tree is gone it says so (``"next": true`` on its ``done`` line),
wears no marker, closes that chunk's pipes and waits on that socket for the
next chunk's three pipes, which the agent sends straight to it: no fork, no
set-up, no exit per chunk (2.2x the short chunks a second through an agent).
The agent may send the next chunk while this one still renders (it waits in
the socket), so that it starts the moment the tree is gone, without a round
trip through the agent; such a chunk carries a fourth descriptor, its token
(``shim.claim``): the shim starts it only if it reads the token first, and
the agent reads it to take the chunk back, so the two never both win. A
shim that finds the next chunk waiting starts it before it says the last one
is done (``shim.hold_closing``): that saying wakes the agent, whose work on
it would otherwise take the CPU from the renderer starting.
What one chunk could leave to the next is ruled out by when the shim says
``done``: only once no process of the tree is left (a subreaper waits for
every orphan and reaps them all, so no pid of it can come back); and every
chunk reads its own folder, environment, lease, exit file and marker from
its own request. The shim keeps only its code, its signal handlers and its
socket (never inherited by a renderer). What a renderer could change in its
shim and pass on (limits, niceness, CPU affinity, OOM score), or a stop
signal it sent it, ends the shim's reuse: it exits after that chunk; a shim
compares against what this process had as it started, and this process
checks itself before each fork (a renderer can reach it too: its shim's
parent), forking none and exiting once changed. It also
exits when its socket ends (the agent died, or let it go: idle too long),
when told to stop while it waits, and after ``MAX_CHUNKS``.

The chunk's marker: a sweep recognises a chunk's processes by
``FARMTUI_CHUNK=<marker>`` in ``/proc/PID/environ``, which is the memory the
process' environment was exec'd with, not what it sets later. The zygote is
exec'd with a reserved first variable (``FARMTUI_CHUNK=....``, ``ROOM`` bytes);
each forked shim overwrites its own copy of those bytes with its chunk's
marker (the zygote's own never changes), so the shim carries the marker like
an exec'd shim. A marker that does not fit is started the old way.

Run by the agent (``agent/zygote_client.py``) as ``python -I -S zygote.py``, in
a session of its own, with its environment's first variable the reserved one:

- stdin: an AF_UNIX SOCK_SEQPACKET socket; each request is one message, the
  request id in ASCII, carrying three descriptors (SCM_RIGHTS): the shim's
  stdin (control), stdout (renderer output) and stderr (status), and
  optionally a fourth: the shim's socket for further chunks (each a message
  carrying three such pipes, and a token when sent ahead of its turn). End of
  file: the agent is gone, the zygote exits.
- the shim's first control line is its chunk, written by the agent before the
  request: one JSON object with ``argv``, ``env``, ``unset``, ``cwd``,
  ``grace``, ``lease_until`` and ``exit_file``. The renderer's environment is
  the zygote's own (the reserved variable apart) without the names in
  ``unset``, with the variables in ``env`` set.
- stdout, one JSON object a line::

    {"event": "ready", "pid": N, "room": BYTES}          once, at start
    {"event": "spawned", "id": ID, "pid": N}             a shim was forked
    {"event": "exited", "pid": N, "returncode": RC}      a shim ended (reaped here)
    {"event": "refused", "id": ID}                       no shim (fork failed): start it another way

  A shim's ``exited`` always follows its ``spawned``, and its pid is free for
  reuse only after this process reaped it, so a pid names one shim between
  the two lines.
- a chunk whose working folder cannot be entered says so on its status pipe,
  ``{"event": "setup_failed", "errno": N, "error": "..."}``, and exits.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import importlib.util
import json
import os
import resource
import select
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

MARKER_VARIABLE = b"FARMTUI_CHUNK"
# Bytes reserved for the marker in every forked shim's /proc/PID/environ.
ROOM = 1024
# The reserved variable the zygote is exec'd with (first in its environment).
RESERVED = MARKER_VARIABLE + b"=" + b"." * (ROOM - len(MARKER_VARIABLE) - 2) + b"\0"
# What fills the rest of the room after a marker, so the environment still parses.
FILLER = b"FARMTUI_ROOM="
MAX_REQUEST = 64
# A forked shim's socket for further chunks, and how many chunks one shim serves
# before it exits and a fresh fork takes its place (nothing accumulates for ever).
NEXT_FD = 3
MAX_CHUNKS = 1000
# Seconds the shims have to end once the agent is gone and they are woken (``wake``): they
# kill their trees with a grace of 0.2 s.
WAKE_WAIT = 1.0
LIMITS = tuple(getattr(resource, name) for name in dir(resource) if name.startswith("RLIMIT_"))


class Origin(NamedTuple):
    """What this process had as the agent started it, that every shim forked from it goes by."""

    room: tuple[int, int]  # the marker's room in the environment (``environ_room``)
    environ: dict[bytes, bytes]  # what each chunk's environment is told against
    attributes: tuple[object, ...]  # what every renderer must inherit (``attributes``)


def _load_shim() -> ModuleType:
    """``agent/shim.py``: imported when ``agent`` is importable, else loaded from beside us."""
    try:
        from agent import shim

        return shim
    except ImportError:  # run as a script with -I -S: the shim is next to this file
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shim.py")
        spec = importlib.util.spec_from_file_location("farmtui_shim", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def reply(line: dict[str, Any]) -> None:
    data = (json.dumps(line) + "\n").encode()
    while data:
        data = data[os.write(1, data) :]


def environ_room() -> tuple[int, int]:
    """``(address, bytes)`` of the reserved variable in this process' environment; (0, 0)."""
    try:
        with open("/proc/self/stat", "rb") as file:
            stat = file.read()
        fields = stat[stat.rfind(b")") + 2 :].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    except (OSError, ValueError, IndexError):
        return 0, 0
    if end - start < ROOM or ctypes.string_at(start, ROOM) != RESERVED:
        return 0, 0
    return start, ROOM


def exec_environ() -> dict[bytes, bytes]:
    """The environment the agent started us with, the reserved variable apart.

    Read from ``/proc/self/environ``, the memory it was exec'd with, rather than
    ``os.environb``: Python's start-up may add to that (``LC_CTYPE`` under a C
    locale), and the agent tells each chunk's environment against what it gave.
    """
    try:
        with open("/proc/self/environ", "rb") as file:
            entries = file.read().split(b"\0")
    except OSError:
        entries = [k + b"=" + v for k, v in os.environb.items()]
    pairs = (entry.partition(b"=") for entry in entries)
    return {k: v for k, equals, v in pairs if equals and k != MARKER_VARIABLE}


def marker_bytes(marker: bytes, room: int) -> bytes | None:
    """What the reserved room holds for ``marker``: the variable, then a filler; None: no fit."""
    entry = MARKER_VARIABLE + b"=" + marker + b"\0" if marker else b""
    left = room - len(entry)
    if left < len(FILLER) + 1:
        return entry + b"\0" * left if left == 0 else None
    return entry + FILLER + b"." * (left - len(FILLER) - 1) + b"\0"


def set_search_path(environ: dict[bytes, bytes]) -> None:
    """Make ``environ``'s PATH the C environment's: posix_spawnp looks the renderer up in it.

    Only PATH: the renderer gets ``environ`` itself, and nothing else in the
    shim reads the C environment (setting all of it cost a tenth of a millisecond).
    """
    path = environ.get(b"PATH")
    if path is None:
        os.unsetenv(b"PATH")  # posix_spawnp's default search path, as execvp's
    else:
        os.putenv(b"PATH", path)


def read_request(shim: ModuleType) -> tuple[dict[str, Any], bytes]:
    """The chunk's JSON line from the control pipe, and what followed it (control lines)."""
    data = b""
    while b"\n" not in data:
        part = os.read(0, 65536)
        if not part:  # the agent went before it finished writing
            shim.send_closing()
            os._exit(0)
        data += part
    line, _, rest = data.partition(b"\n")
    request: dict[str, Any] = json.loads(line)
    return request, rest


def become_shim(shim: ModuleType, fds: list[int], origin: Origin) -> None:
    """In the forked child: serve the chunk whose pipes are ``fds``, then more if asked.

    A fourth descriptor is the socket further chunks come on: once a chunk's
    tree is gone the child says so (``"next": true``), closes that chunk's
    pipes and waits there for the next one's three, at most ``MAX_CHUNKS``.
    Each renderer must get ``origin.attributes``, the zygote's as it started
    (not this process' own as forked: another process may have changed it
    between the fork and this chunk).
    """
    os.setsid()
    take_pipes(fds[:3])
    more: socket.socket | None = None
    if len(fds) == 4:
        if fds[3] != NEXT_FD:
            os.dup2(fds[3], NEXT_FD, inheritable=False)
        os.set_inheritable(NEXT_FD, False)  # never the renderer's: it could take chunks
        more = socket.socket(fileno=NEXT_FD)
    shim.close_inherited_fds(keep=NEXT_FD if more is not None else 2)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    wake = shim.install_signals()
    served = 0
    token: int | None = None  # a chunk handed over ahead of its turn carries one

    def again() -> bool:
        """Take another chunk only as this process was forked, and not when told to stop."""
        stop = any(s in drain(wake) for s in shim.STOP_SIGNALS)
        return not stop and served < MAX_CHUNKS and unchanged(origin)

    while True:
        served += 1
        # Returns only when the shim takes another chunk (``again`` said so). Changed
        # since ``again`` looked, or since the fork (by another job)? ``serve_chunk``
        # looks again the moment before each renderer starts: the later the look, the
        # less time another process has to slip a change in (looked at as the chunk
        # came, 45 chunks of 600 still got one made at random moments).
        done = serve_chunk(shim, origin, wake, again if more is not None else None, token)
        assert more is not None
        # The next chunk already here: its renderer starts before this one's end is
        # told (``shim.hold_closing``); told at once when there is none to start.
        if done and select.select([NEXT_FD], [], [], 0)[0]:
            shim.hold_closing(done)
        elif done:
            shim.emit(done)
        release_pipes(origin.room)
        pipes = next_chunk(shim, more, wake)
        if pipes is None:
            break
        take_pipes(pipes[:3])
        token = pipes[3] if len(pipes) == 4 else None
    shim.send_closing()
    os._exit(0)


def unchanged(origin: Origin) -> bool:
    """Whether this process still has what its renderers must inherit."""
    return attributes() == origin.attributes


def attributes() -> tuple[object, ...]:
    """What a renderer may change in its shim (``prlimit``, ``renice``, ...) that its children get.

    A shim whose attributes are not those it was forked with takes no more chunks.
    """
    try:  # three system calls where open() makes nine: this is on every chunk's way
        fd = os.open("/proc/self/oom_score_adj", os.O_RDONLY | os.O_CLOEXEC)
        try:
            oom = os.read(fd, 64)
        finally:
            os.close(fd)
    except OSError:
        oom = b""
    limits = tuple(resource.getrlimit(limit) for limit in LIMITS)
    return limits, os.getpriority(os.PRIO_PROCESS, 0), os.sched_getaffinity(0), oom


def drain(fd: int) -> bytes:
    """What is waiting on the (non-blocking) wake-up pipe: the signals received meanwhile."""
    got = b""
    with contextlib.suppress(BlockingIOError):
        while part := os.read(fd, 512):
            got += part
    return got


def take_pipes(fds: list[int]) -> None:
    """A chunk's control, output and status pipes become 0, 1 and 2."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
    for fd in fds:
        if fd > 2:
            os.close(fd)


def release_pipes(room: tuple[int, int]) -> None:
    """Wear no chunk's marker, then close the chunk's pipes (the agent sees their end).

    In this order: once the agent sees the end, nothing may carry the marker.
    Back in ``/``, as when forked: a next chunk's folder never resolves against this one's.
    """
    os.chdir("/")
    address, size = room
    blank = marker_bytes(b"", size)
    if address and blank is not None:
        ctypes.memmove(address, blank, size)
    null = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(null, target)
    os.close(null)


def next_chunk(shim: ModuleType, more: socket.socket, wake: int) -> list[int] | None:
    """The next chunk's three pipes (and its token, if any; see ``claim``); None: the
    agent is gone or dropped us, or we must stop."""
    while True:
        ready, _, _ = select.select([NEXT_FD, wake], [], [])
        if wake in ready and any(s in drain(wake) for s in shim.STOP_SIGNALS):
            return None
        if NEXT_FD in ready:
            try:
                data, fds, _, _ = socket.recv_fds(more, MAX_REQUEST, 4)
            except OSError:
                return None
            for fd in fds:
                os.set_inheritable(fd, False)  # received without close-on-exec
            if len(fds) in (3, 4) and data:
                return fds
            for fd in fds:
                os.close(fd)
            return None


def serve_chunk(
    shim: ModuleType,
    origin: Origin,
    wake: int,
    again: Callable[[], bool] | None,
    token: int | None = None,
) -> str:
    """Read the chunk from the control pipe, take its folder, environment and marker; serve.

    Returns only when the tree is gone and the shim takes another chunk
    (``again`` said so; otherwise the process exits): its ``done`` line, for
    the caller to say. A chunk queued ahead of its turn
    that the agent took back (it read the token first) is skipped: nothing of
    it starts, "" (nothing to say), and the next one is served.
    """
    request, control = read_request(shim)
    if token is not None and not shim.claim(token):
        shim.send_closing()  # nothing starts, so nothing is in the last one's way
        return ""
    try:
        os.chdir(request["cwd"])
    except OSError as exc:
        error = {"event": "setup_failed", "errno": exc.errno or 0, "error": str(exc)}
        shim.emit(json.dumps(error))
        os._exit(0)
    environ = dict(origin.environ)
    for name in request["unset"]:
        environ.pop(os.fsencode(name), None)
    environ.update((os.fsencode(k), os.fsencode(v)) for k, v in request["env"].items())
    set_search_path(environ)
    address, size = origin.room
    marked = marker_bytes(environ.get(MARKER_VARIABLE, b""), size)
    if address and marked is not None:
        ctypes.memmove(address, marked, size)
    argv = [os.fsdecode(arg) for arg in request["argv"]]
    grace, lease_until = float(request["grace"]), float(request["lease_until"])
    done: str = shim.serve(
        grace,
        lease_until,
        request["exit_file"],
        argv,
        wake,
        environ,
        control,
        again,
        functools.partial(unchanged, origin),
    )
    return done


def fork_shim(shim: ModuleType, fds: list[int], origin: Origin) -> int | None:
    """The forked shim's pid; None when fork failed (the request's pipes are closed)."""
    try:
        pid = os.fork()
    except OSError:
        pid = None
    if pid == 0:
        try:
            become_shim(shim, fds, origin)
        except BaseException:
            import traceback  # to the status pipe: the agent logs it as the shim's last words

            traceback.print_exc()
        finally:
            shim.send_closing()
            os._exit(70)  # never back into the zygote's loop
    for fd in fds:
        os.close(fd)
    return pid


def reap(children: set[int]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        reply({"event": "exited", "pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


def wake(shim: ModuleType, children: set[int]) -> None:
    """The agent is gone: every shim still here must kill its tree, and does once it sees
    that; one stopped cannot (break round 33a: its renderer rendered on while the chunk ran
    on another node). So each is sent SIGCONT; one still here ``WAKE_WAIT`` seconds later
    (a debugger holds it: SIGCONT does not end a ptrace stop, break round 33d) is killed,
    with every process that wears its chunk's marker."""
    for pid in children:
        shim.send(pid, signal.SIGCONT)
    deadline = time.monotonic() + WAKE_WAIT
    while children and time.monotonic() < deadline:
        _reap_quietly(children)
        time.sleep(0.02)
    if children:
        _kill_with_their_trees(shim, children)


def _reap_quietly(children: set[int]) -> None:
    """``reap`` with nobody to tell: the agent is gone."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            children.clear()
            return
        if pid == 0:
            return
        children.discard(pid)


def _kill_with_their_trees(shim: ModuleType, shims: set[int]) -> None:
    """SIGKILL each of ``shims`` and every process wearing its chunk's marker."""
    needles = [needle for pid in shims if (needle := _marker_needle(shim, pid))]
    if needles:
        me = os.getpid()
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != me:
                pid = int(name)
                if any(shim.wears(pid, needle) for needle in needles):
                    shim.send(pid, signal.SIGKILL)
    for pid in shims:
        shim.send(pid, signal.SIGKILL)


def _marker_needle(shim: ModuleType, pid: int) -> bytes:
    """``FARMTUI_CHUNK=<marker>\\0`` as the shim ``pid`` wears it; b"" for none."""
    for entry in shim.read_all(f"/proc/{pid}/environ").split(b"\0"):
        if entry.startswith(MARKER_VARIABLE + b"="):
            marker = entry[len(MARKER_VARIABLE) + 1 :]
            return entry + b"\0" if marker.strip(b".") else b""
    return b""


def on_signal(signum: int, frame: object) -> None:
    """Does nothing: the byte on the wake-up pipe is what the loop reads."""


def main() -> None:
    shim = _load_shim()
    shim.not_dumpable()  # and so every shim forked from here
    shim.close_inherited_fds()
    os.chdir("/")
    origin = Origin(environ_room(), exec_environ(), attributes())
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    signal.signal(signal.SIGCHLD, on_signal)
    requests = socket.socket(fileno=0)
    # Every fork copies the pages it touches: no collector walking the heap in the
    # children (nothing here makes cycles), and what exists now is never scanned.
    gc.disable()
    gc.freeze()
    reply({"event": "ready", "pid": os.getpid(), "room": origin.room[1]})
    children: set[int] = set()
    while True:
        ready, _, _ = select.select([0, wake_read], [], [])
        if wake_read in ready:
            with contextlib.suppress(BlockingIOError):
                os.read(wake_read, 512)
            try:
                reap(children)
            except OSError:  # telling the agent failed: it is gone (its idle shims went first)
                wake(shim, children)
                break
        if 0 in ready:
            try:
                data, fds, _, _ = socket.recv_fds(requests, MAX_REQUEST, 4)
            except OSError:  # reset: gone as well
                data, fds = b"", []
            if not data:  # the agent is gone; the shims need us for nothing more
                wake(shim, children)
                break
            valid = len(fds) in (3, 4) and data.isdigit()
            # Changed by a renderer (a shim's parent is within its reach): every shim
            # forked from now on would be born with it. Fork none, and go: the agent
            # starts this chunk's shim itself, and the next zygote afresh.
            changed = valid and not unchanged(origin)
            if valid and not changed:
                pid = fork_shim(shim, fds, origin)  # it closes them
            else:
                pid = None
                for fd in fds:
                    os.close(fd)
            if pid is None:
                reply({"event": "refused", "id": int(data) if data.isdigit() else -1})
            else:
                children.add(pid)
                reply({"event": "spawned", "id": int(data), "pid": pid})
            if changed:  # the agent logs this line as the zygote's words
                print("changed by another process (limits, niceness, CPUs, OOM)", flush=True)
                break
    with contextlib.suppress(OSError):  # the agent may be gone
        reap(children)
    os._exit(0)


if __name__ == "__main__" and sys.platform.startswith("linux"):
    main()
