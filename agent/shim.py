"""One chunk's supervisor: owns the renderer's process tree and kills it when the agent goes.

The agent runs it (see ``agent/shim_client.py``) as::

    python -I -S shim.py --grace SECONDS --lease-until DEADLINE [--exit-file PATH] \
        -- RENDERER ARGV...

in a session of its own, with the renderer's working folder and environment
(``FARMTUI_CHUNK=<marker>`` included); or, far cheaper, it is forked from the
agent's warm zygote (``agent/zygote.py``), which hands :func:`serve` the same
three pipes, folder, environment and options. The shim becomes a child subreaper,
so every orphaned descendant of the renderer comes back to it, and spawns the
renderer in a process group of its own, stdin from /dev/null, stdout and
stderr both on the shim's stdout.

Control, on stdin, one command a line (malformed lines are ignored)::

    lease DEADLINE                 the agent is alive until DEADLINE (time.monotonic())
    kill GRACE [REASON WORDS...]   SIGTERM the tree; SIGKILL what lives GRACE s later

End of stdin (the agent died) or a lapsed lease kills the tree with a grace
of at most 0.2 s; so do SIGTERM, SIGINT and SIGHUP sent to the shim, with the
full ``--grace``. Status, on stderr, one JSON object a line::

    {"event": "started", "pid": N, "at": T}            T: its start, wall clock
    {"event": "spawn_failed", "error": "..."}          then exit
    {"event": "exited", "returncode": RC}              the renderer itself, -N = signal N
    {"event": "stuck", "alive": N}                     every 5 s while SIGKILL does not work
    {"event": "done", "returncode": RC, "cause": "exit"|"kill"|"lease"|"agent_gone",
     "killed": K, "complete": true}                    nothing of the tree is left; exit 0
                                                       (a zygote's child may add "next": true:
                                                       it closes the pipes and waits for
                                                       another chunk, see agent/zygote.py)

Stdlib only, and as few imports as will do: every chunk pays for its start-up.
"""

from __future__ import annotations

import select
import sys
import time

# Start-up is most of the shim's cost, so it imports the C modules under os and
# signal: ``os`` pulls in _collections_abc and posixpath (2 ms here), ``signal``
# enum (10 ms). Spelled so that mypy checks the code against os and signal.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import os
    import signal
    from collections.abc import Callable

    ENVIRON = os.environb
else:
    import _signal as signal
    import posix as os

    ENVIRON = os.environ  # posix.environ: the environment as bytes

MARKER_VARIABLE = b"FARMTUI_CHUNK"
PR_SET_CHILD_SUBREAPER = 36
PR_SET_DUMPABLE = 4
# The grace when nobody is left to wait for a slow shutdown (agent gone, lease lapsed).
# Short: nobody will use the output, and the leader moves the chunk soon after
# the lease ends (its margin, 0.4 x node_timeout, must cover this kill).
GONE_GRACE = 0.2
# While killing: look for new processes (and retry SIGKILL) this often.
SWEEP_EVERY = 0.05
STUCK_EVERY = 5.0
GONE = (b"Z", b"X", b"x")  # states of processes that only wait to be reaped
STOPPED = (b"T", b"t")  # states of processes that act on SIGTERM only once continued
# The byte a queued chunk's token pipe holds (``claim``).
TOKEN = b"t"
# Signals the shim handles; each is one byte on the wake-up pipe.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The renderer starts with default dispositions (Python ignores SIGPIPE and SIGXFSZ,
# the agent's own parent may have ignored others). glibc's posix_spawn still leaves
# its two internal signals, 32 and 33, ignored.
DEFAULT_SIGNALS = tuple(sorted(signal.valid_signals() - {signal.SIGKILL, signal.SIGSTOP}))


# A zygote's shim that has its next chunk in hand starts it before it says the
# last one ended (``hold_closing``): that chunk's status pipe, and its last line.
_closing: tuple[int, bytes] | None = None
_subreaper = False  # this process is one (``become_subreaper``)


def emit(line: str, *, droppable: bool = False) -> None:
    """Write one status line; lost if the agent is gone (its EOF on stdin tells the loop).

    A ``droppable`` line is dropped rather than block on a full pipe (a frozen
    agent reads nothing), so the shim never stops working to tell about it.
    A last chunk's held ``done`` line goes out right after: whatever the next
    chunk comes to (started, refused, failed), the last one's end is told.
    """
    write_status(2, (line + "\n").encode(), droppable=droppable)
    send_closing()


def write_status(fd: int, data: bytes, *, droppable: bool = False) -> None:
    try:
        if droppable:
            os.set_blocking(fd, False)
        try:
            while data:
                data = data[os.write(fd, data) :]
        finally:
            if droppable:
                os.set_blocking(fd, True)
    except OSError:  # BlockingIOError included
        pass


def hold_closing(line: str) -> None:
    """Keep this chunk's ``done`` line, and its status pipe open, until the next line.

    Why: that line and the pipe's end wake the agent, which then takes the CPU
    (its report, the next hand-over) from the next renderer as it starts. The
    agent sees the same order of events either way: it concludes a chunk when
    its status pipe ends, and takes up the next one only after (``release_slot``).
    """
    global _closing
    _closing = (os.dup(2), (line + "\n").encode())  # not inheritable: no renderer has it


def send_closing() -> None:
    """Say the held line and close that status pipe (nothing held: nothing to do)."""
    global _closing
    if _closing is None:
        return
    (fd, data), _closing = _closing, None
    try:
        write_status(fd, data)
    finally:
        os.close(fd)


def quote(text: str) -> str:
    import json  # only on the error path: json costs more start-up than the rest together

    return json.dumps(text[:1000])


def parse_args(args: list[str]) -> tuple[float, float, str, list[str]]:
    """``(grace, lease_until, exit_file, renderer argv)``; ValueError with a one-line message."""
    grace, lease_until, exit_file = 5.0, float("inf"), ""
    at = 0
    while at < len(args) and args[at] != "--":
        if at + 1 >= len(args):
            raise ValueError(f"{args[at]} needs a value")
        flag, value = args[at], args[at + 1]
        if flag == "--grace":
            grace = float(value)
        elif flag == "--lease-until":
            lease_until = float(value)
        elif flag == "--exit-file":
            exit_file = value
        else:
            raise ValueError(f"unknown option {flag}")
        at += 2
    argv = args[at + 1 :]
    if not argv:
        raise ValueError("usage: shim.py --grace S --lease-until T -- renderer argv...")
    if not 0 <= grace < float("inf") or lease_until != lease_until:
        raise ValueError("--grace must be a finite number >= 0 and --lease-until a number")
    return grace, lease_until, exit_file, argv


# An exit status as written ("0", "-15", "255"), padded with spaces: always this wide.
STATUS_WIDTH = 4


def write_exit(path: str, returncode: int) -> None:
    """Leave the renderer's exit status where a restarted agent finds it.

    The status line on stderr dies with an agent that dies now; this file
    lets the next agent credit a render that finished meanwhile instead of
    rendering it again.
    """
    if not path:
        return
    try:
        # In place, never truncated: the agent reuses the file (``agent.journal``).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    except OSError:
        return
    try:
        os.pwrite(fd, str(returncode).encode().ljust(STATUS_WIDTH), 0)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse(why: str) -> None:
    """Say the renderer was not started, and why (the agent knows this prefix), then exit."""
    emit(f'{{"event": "spawn_failed", "error": {quote(f"not started: {why}")}}}')
    os._exit(0)


def not_dumpable() -> None:
    """Other processes of our user may not read our descriptors, memory or /proc files (Linux).

    A renderer runs as the agent's user: without this it could take a shim's
    pipes or socket (``pidfd_getfd``, ``/proc/PID/fd``) and answer for, or
    take, chunks of other jobs. Forked shims inherit it from the zygote; a
    renderer, being exec'd, does not.
    """
    prctl(PR_SET_DUMPABLE, 0)


def become_subreaper() -> None:
    """Orphaned descendants come back to the shim rather than to init (Linux).

    Once a process: a forked shim stays one from chunk to chunk (a fork's child
    is not one, so every shim still becomes one itself).
    """
    global _subreaper
    if not _subreaper:
        prctl(PR_SET_CHILD_SUBREAPER, 1)
        _subreaper = True


def prctl(option: int, value: int) -> None:
    """``prctl(option, value)`` on Linux; nothing elsewhere."""
    if not sys.platform.startswith("linux"):
        return
    args = (option, value, 0, 0, 0)
    try:
        import _ctypes  # ctypes' C core: ``import ctypes`` costs 4 ms more

        libc = _ctypes.dlopen(None)  # type: ignore[arg-type]  # None: the program itself
        _ctypes.call_function(_ctypes.dlsym(libc, "prctl"), args)
    except (ImportError, AttributeError):
        import ctypes

        ctypes.CDLL(None).prctl(*args)


def on_signal(signum: int, frame: object) -> None:
    """Does nothing: the signal's byte on the wake-up pipe is what the loop reads."""


def send(pid: int, sig: int) -> bool:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def read_all(path: str) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        parts = []
        while part := os.read(fd, 65536):
            parts.append(part)
        return b"".join(parts)
    except OSError:
        return b""
    finally:
        os.close(fd)


class Shim:
    """The loop: wait for children, control lines, signals and deadlines; kill; report."""

    def __init__(
        self,
        grace: float,
        lease_until: float,
        wake_fd: int,
        exit_file: str = "",
        environ: dict[bytes, bytes] | None = None,
        *,
        again: Callable[[], bool] | None = None,
    ) -> None:
        self.me = os.getpid()
        self.again = again
        # Whether it takes another chunk (asked once the tree is gone): never after
        # a stop signal, which is meant for the process, not for one chunk.
        self.more = False
        self.done = ""
        self.signalled = False
        self.exit_file = exit_file
        self.grace = grace
        self.lease_until = lease_until
        self.wake_fd = wake_fd
        self.control_open = True
        # A reader of the renderer's own output pipe, so that the agent's death
        # never breaks it: a renderer that died of EPIPE would end "exited with 1"
        # and be counted a failure, when it was the agent that went. Read only
        # once the agent is gone (it reads the pipe while it lives).
        self.output = -1
        self.pending = b""
        self.renderer = 0
        self.returncode: int | None = None
        marker = (ENVIRON if environ is None else environ).get(MARKER_VARIABLE)
        self.needle = MARKER_VARIABLE + b"=" + marker + b"\0" if marker else b""
        # Killing: why, with what grace, and when each process got its SIGTERM.
        self.cause = ""
        self.kill_grace = grace
        self.kill_started = 0.0
        self.termed: dict[int, float] = {}
        self.group_signalled = False
        # The renderer had exited (unreaped) before the first signal of a kill: it ended
        # on its own, and the kill was for what it left behind, or for nothing.
        self.ended_first = False
        self.group_termed: float | None = None
        self.group_killed = False
        self.next_sweep = 0.0
        self.outsiders = 0
        self.last_stuck = 0.0

    # ---------------------------------------------------------------- the loop

    def run(self) -> None:
        while True:
            children = self.reap()
            now = time.monotonic()
            if not self.cause:
                if self.returncode is not None:
                    if not children:  # the common case: no /proc scan at all
                        break
                    self.request_kill("exit", self.grace, now)
                elif now >= self.lease_until:
                    self.request_kill("lease", min(self.grace, GONE_GRACE), now)
            elif now >= self.lease_until:
                self.request_kill("lease", min(self.grace, GONE_GRACE), now)
            if self.cause:
                if now >= self.next_sweep or (not children and self.outsiders):
                    alive = self.sweep(now)
                    stuck = alive and now - self.kill_started >= self.kill_grace + STUCK_EVERY
                    if stuck and now - self.last_stuck >= STUCK_EVERY:
                        self.last_stuck = now
                        emit(f'{{"event": "stuck", "alive": {alive}}}', droppable=True)
                if not children and not self.outsiders:
                    break
            self.wait(self.timeout(now))
        returncode = "null" if self.returncode is None else self.returncode
        self.more = self.again is not None and not self.signalled and self.again()
        again = ', "next": true' if self.more else ""
        self.done = (
            f'{{"event": "done", "returncode": {returncode}, "cause": "{self.ending()}", '
            f'"killed": {len(self.termed)}, "complete": true{again}}}'
        )
        if not self.more:  # one that takes more leaves it to its zygote (``serve``)
            emit(self.done)

    def reap(self) -> bool:
        """Collect exited children; whether any child is left."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if pid == 0:
                return True
            if pid == self.renderer:
                self.returncode = os.waitstatus_to_exitcode(status)
                if not self.group_signalled or self.ended_first:  # it ended on its own
                    write_exit(self.exit_file, self.returncode)
                emit(f'{{"event": "exited", "returncode": {self.returncode}}}')

    def timeout(self, now: float) -> float | None:
        if not self.cause:
            left = self.lease_until - now
            return None if left == float("inf") else max(left, 0.0)
        # Sweep early when a SIGKILL falls due before the next regular sweep.
        for first in self.termed.values():
            if now < first + self.kill_grace < self.next_sweep:
                self.next_sweep = first + self.kill_grace
        return max(self.next_sweep - now, 0.0)

    def wait(self, timeout: float | None) -> None:
        if self.control_open:
            watched = [self.wake_fd, 0]
        else:
            watched = [self.wake_fd] if self.output < 0 else [self.wake_fd, self.output]
        ready, _, _ = select.select(watched, [], [], timeout)
        if self.output in ready:
            self.discard_output()
        if self.wake_fd in ready:
            try:
                signals = os.read(self.wake_fd, 512)
            except BlockingIOError:
                signals = b""
            if any(s in signals for s in STOP_SIGNALS):
                self.signalled = True
                self.request_kill("kill", self.grace, time.monotonic())
        if 0 in ready:
            self.read_control()

    def refusal(self) -> str:
        """Why the renderer must not start after all ('' when it may); asked just before.

        A shim frozen (or starved) between its request and now may find its
        agent gone or its lease over: the chunk may be running elsewhere by then.
        """
        ready, _, _ = select.select([0], [], [], 0)
        if ready:
            self.read_control()
        if not self.control_open:
            return "the agent is gone"
        if self.cause:
            return "told to stop before it started"
        if time.monotonic() >= self.lease_until:
            return "the node's lease ran out"
        return ""

    def hold_output(self) -> None:
        """Become a reader of the output pipe (fd 1, still the tree's) before letting go of it."""
        try:
            self.output = os.open("/proc/self/fd/1", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:  # no /proc: the renderer may then die of EPIPE with the agent
            self.output = -1

    def discard_output(self) -> None:
        """The agent is gone: drain what the tree writes, so it never blocks while stopped."""
        try:
            while os.read(self.output, 65536):
                pass
        except BlockingIOError:
            return
        except OSError:
            pass
        self.release_output()  # end of file: the tree closed it

    def release_output(self) -> None:
        if self.output >= 0:
            os.close(self.output)
            self.output = -1

    # ---------------------------------------------------------------- control

    def read_control(self) -> None:
        try:
            data = os.read(0, 65536)
        except OSError:
            data = b""
        if not data:  # the agent is gone: the kernel closed its end
            self.control_open = False
            if self.output >= 0:
                self.discard_output()
            self.request_kill("agent_gone", min(self.grace, GONE_GRACE), time.monotonic())
            return
        self.feed(data)

    def feed(self, data: bytes) -> None:
        """Act on the complete control lines in ``data``; keep a partial last line."""
        *lines, self.pending = (self.pending + data).split(b"\n")
        if len(self.pending) > 4096:
            self.pending = b""
        for line in lines:
            self.command(line.split())

    def command(self, words: list[bytes]) -> None:
        try:
            verb, value = words[0], float(words[1])
        except (IndexError, ValueError):
            return
        if verb == b"lease" and len(words) == 2 and value == value:
            self.lease_until = value
        elif verb == b"kill" and 0 <= value < float("inf"):
            self.request_kill("kill", value, time.monotonic())

    # ---------------------------------------------------------------- killing

    def ending(self) -> str:
        """Why the tree ended, as the ``done`` line says: ``exit`` when the renderer ended
        on its own, even with a kill already decided (its leftovers were killed)."""
        return "exit" if self.ended_first or not self.cause else self.cause

    def request_kill(self, cause: str, grace: float, now: float) -> None:
        """Start killing the tree (at the next sweep, right away), or shorten the grace."""
        if self.cause:
            self.kill_grace = min(self.kill_grace, grace)
            return
        self.cause, self.kill_grace, self.kill_started = cause, grace, now
        self.next_sweep = now

    def scan(self) -> dict[int, tuple[int, int, bytes]]:
        """Every process: pid -> (ppid, process group, state letter)."""
        found = {}
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                fd = os.open(f"/proc/{name}/stat", os.O_RDONLY)
            except OSError:
                continue
            try:
                stat = os.read(fd, 1024)
            except OSError:
                continue
            finally:
                os.close(fd)
            state, ppid, pgrp = stat[stat.rfind(b")") + 2 :].split(None, 3)[:3]
            found[int(name)] = (int(ppid), int(pgrp), state)
        return found

    def sweep(self, now: float) -> int:
        """Signal the tree's live processes as they fall due; how many are alive.

        The first sweep of a kill SIGTERMs the renderer's process group in one
        go and every other process of the tree one by one; later sweeps catch
        newcomers and SIGKILL whatever outlived its grace. Processes that carry
        the chunk's marker without descending from the shim are read last.
        """
        self.next_sweep = now + SWEEP_EVERY
        processes = self.scan()
        children: dict[int, list[int]] = {}
        for pid, (ppid, _, _) in processes.items():
            children.setdefault(ppid, []).append(pid)
        tree: set[int] = set()
        stack = [self.me]
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in tree:
                    tree.add(child)
                    stack.append(child)
        alive = [pid for pid in tree if processes[pid][2] not in GONE]
        if not self.group_signalled:
            self.group_signalled = True
            # A lease that lapsed, or an agent that died, as the renderer was exiting: if
            # it is a zombie here, before any signal, it ended on its own. It is then
            # credited (cause "exit", its exit file written), not killed and rendered
            # again. (Not in the scan: as if alive, the safe side.)
            state = processes.get(self.renderer, (0, 0, b"R"))[2]
            self.ended_first = self.returncode is None and state in GONE
            # The group id is ours while the renderer is unreaped (alive or a zombie).
            if self.returncode is None and send(-self.renderer, signal.SIGTERM):
                self.group_termed = now
                for pid in alive:
                    _, pgrp, state = processes[pid]
                    if pgrp == self.renderer:
                        self.termed[pid] = now
                        if state in STOPPED:  # it would not act on its SIGTERM
                            send(pid, signal.SIGCONT)
        self.signal_due(alive, processes, now)
        outsiders = []
        if self.needle:
            for pid, (_, _, state) in processes.items():
                if pid not in tree and pid != self.me and state not in GONE and self.marked(pid):
                    outsiders.append(pid)
            self.signal_due(outsiders, processes, now)
        self.outsiders = len(outsiders)
        termed = self.group_termed
        if termed is not None and self.returncode is None and not self.group_killed:
            self.group_killed = now - termed >= self.kill_grace
            if self.group_killed:
                send(-self.renderer, signal.SIGKILL)
        return len(alive) + len(outsiders)

    def signal_due(
        self, pids: list[int], processes: dict[int, tuple[int, int, bytes]], now: float
    ) -> None:
        """SIGTERM newcomers; SIGKILL those whose grace is over."""
        for pid in pids:
            first = self.termed.get(pid)
            if first is None:
                self.termed[pid] = now
                send(pid, signal.SIGTERM)
                if processes[pid][2] in STOPPED:
                    send(pid, signal.SIGCONT)
            elif now - first >= self.kill_grace:
                send(pid, signal.SIGKILL)  # again on every sweep: D state may hold it a while

    def marked(self, pid: int) -> bool:
        return wears(pid, self.needle)


def wears(pid: int, needle: bytes) -> bool:
    """Whether process ``pid``'s environment holds ``needle`` (``FARMTUI_CHUNK=<marker>\\0``)."""
    environ = read_all(f"/proc/{pid}/environ")
    return environ.startswith(needle) or b"\0" + needle in environ


def claim(token: int) -> bool:
    """Take a queued chunk's token: True once, for whoever reads it first (shim or agent).

    A pipe holding one byte, its write end closed: reading it is atomic, so the
    agent taking a chunk back and the shim starting it can never both win.
    """
    try:
        return os.read(token, 1) == TOKEN
    except OSError:
        return False
    finally:
        os.close(token)


def spawn(argv: list[str], environ: dict[bytes, bytes] | None = None) -> int:
    return os.posix_spawnp(
        argv[0],
        argv,
        ENVIRON if environ is None else environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, 1, 2),  # output on one pipe; the status pipe stays ours
        ],
        setpgroup=0,
        setsigmask=(),
        setsigdef=DEFAULT_SIGNALS,
    )


def close_inherited_fds(keep: int = 2) -> None:
    """The renderer inherits the shim's three pipes and nothing else its parent left open.

    Descriptors up to ``keep`` stay (a zygote's child keeps its socket, 3, not inheritable).
    """
    try:
        highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        highest = 1023
    os.closerange(keep + 1, highest + 1)


def install_signals() -> int:
    """Signals and SIGCHLD wake the loop through a pipe; its read end."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    for sig in (signal.SIGCHLD, *STOP_SIGNALS):
        signal.signal(sig, on_signal)
    return wake_read


def serve(
    grace: float,
    lease_until: float,
    exit_file: str,
    argv: list[str],
    wake_fd: int,
    environ: dict[bytes, bytes] | None = None,
    control: bytes = b"",
    again: Callable[[], bool] | None = None,
    unchanged: Callable[[], bool] | None = None,
) -> str:
    """Start the renderer and supervise its tree to the end; exits the process.

    ``environ``: the renderer's environment (the shim's own when None);
    ``control``: control input already read (a zygote's child reads its
    request first). Stdin, stdout and stderr are the agent's three pipes.
    ``again``: asked once the tree is gone; True: return instead of exiting,
    with the ``done`` line (saying ``"next": true``) unsaid, for the caller to
    say (a zygote's child that takes another chunk). ``unchanged``: asked the
    moment before the renderer starts; False: this process was changed in what
    the renderer would inherit, and it does not start (a zygote's child).
    """
    become_subreaper()
    shim = Shim(grace, lease_until, wake_fd, exit_file, environ, again=again)
    shim.feed(control)
    if why := shim.refusal():
        refuse(why)
    if unchanged is not None and not unchanged():
        refuse("its supervisor was changed by another process")
    # Said with the start: a queued chunk may start while its agent is frozen, and its
    # render time (and timeouts) run from here, not from when the agent hears of it.
    began = time.time()
    try:
        shim.renderer = spawn(argv, environ)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        error = quote(f"cannot start {argv[0]!r}: {reason}")
        emit(f'{{"event": "spawn_failed", "error": {error}}}')
        os._exit(0)
    emit(f'{{"event": "started", "pid": {shim.renderer}, "at": {began!r}}}')
    shim.hold_output()
    # Only the tree writes to the output pipe now: its end of file means the tree closed it.
    null = os.open("/dev/null", os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)
    try:
        shim.run()
    except BaseException:
        send(-shim.renderer, signal.SIGKILL)  # a broken shim must not leave the renderer running
        raise
    finally:
        shim.release_output()
    if not shim.more:
        os._exit(0)
    return shim.done


def main() -> None:
    not_dumpable()
    close_inherited_fds()
    wake_read = install_signals()
    try:
        grace, lease_until, exit_file, argv = parse_args(sys.argv[1:])
    except ValueError as exc:
        emit(f'{{"event": "spawn_failed", "error": {quote(str(exc))}}}')
        os._exit(2)
    serve(grace, lease_until, exit_file, argv, wake_read)


if __name__ == "__main__":
    main()
