"""The job and node logs written by a process of their own, beside the leader.

Why: the log writer's thread shared the leader's interpreter lock with the
event loop. Each of its system calls (a chunk log's ``stat``s, ``open``,
``write``, ``close``) let go of the lock, and getting it back meant waiting
for the busy loop to let go in turn, up to a switch interval (5 ms). With 300
agents (``bench/scale.py`` (c2)) the thread got 6-12% of a core while chunks
ended at 6,000-8,000 a second: its queue grew all run long, a ``farm logs``
waited seconds behind it, and a run of 300,000 chunks dropped 380,000 log
writes. Given a shorter switch interval the thread kept up better and the
loop did less. In a process of its own, the writer has its own lock and the
machine's other core (and uses it: a file a chunk attempt cost 25-500 us of
kernel time on this machine's ext4, dearer for minutes after many files were
deleted, see ``bench/disk_settle.py``); the loop only queues plain values as before.

How: ``LogProcess`` has the interface of ``LogWriter`` (``operation``,
``write``, ``call_op``, ``wait``, ``close``). The leader and the child both
build their logs with ``attach_logs``, so each registers the same operations
in the same order; the parent checks their names at start. A thread of the
parent takes what the loop queued, many items at a time, and writes them to
the child's stdin as one msgpack frame; the child runs them in order and
answers the reads on its stdout, where a second thread of the parent reads
the answers. Order is as before: a read runs after every write asked before it.

A child that dies (killed, out of memory) is started again at the next write;
what it had not written is lost, and said so in the leader's log, and the
reads it had not answered fail with ``OSError``. A child that outlives its
leader writes what it was sent and exits at the end of its input; the kernel
continues it first if it was stopped (``_BOOT``). A child
that stops answering (a hung filer) fills its pipe; the parent's queue then
grows to the same bounds as the thread's (``MAX_QUEUED``,
``MAX_QUEUED_LINE_BYTES``) and drops beyond them, counted and said at once;
reads fail after ``joblogs.READ_WAIT``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import itertools
import logging
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from server import logwriter
from server.logwriter import (
    FLUSH_EVERY,
    Backlog,
    LogSink,
    PlainValue,
    run_flushers,
)

if TYPE_CHECKING:
    from server.joblogs import JobLogs
    from server.nodelogs import NodeLogs

log = logging.getLogger("farmtui.leader.logprocess")

# Items sent to the child in one frame at most.
BATCH = 4096
# Seconds the sender waits after a first item for others to send with it.
GATHER = 0.005
# A frame's length, before it.
_LENGTH = struct.Struct(">I")
# The operation number of the child's own: flush, then answer (``wait``).
_SYNC = -1
# Seconds between two lines about dropped writes.
REPORT_EVERY = 10.0
# Seconds between two starts of a child that keeps dying.
RESTART_EVERY = 1.0
_STOP = object()
# The child's first statements, before any import of its own: have the kernel send it
# SIGCONT when the leader dies (``PR_SET_PDEATHSIG``, 1 in linux/prctl.h), then run
# ``main``. Why: a child that was stopped (SIGSTOP, a debugger) when its leader was
# killed never read the end of its input, and stayed stopped for good. SIGCONT rather
# than SIGKILL: a child that runs goes on to write what it was sent, then exits at the
# end of its input, as it does anyway. First, so that the time it is not yet asked for
# is the interpreter's start, not the imports' (0.2-0.5 s on a loaded machine).
_BOOT = """\
import sys
if sys.platform.startswith("linux"):
    import _signal, ctypes
    ctypes.CDLL(None).prctl(1, _signal.SIGCONT, 0, 0, 0)
from server.log_process import main
sys.exit(main(sys.argv[1:]))
"""

# An item as queued and sent: operation, weight of its lines, call id (0: no answer), args.
Item = tuple[Any, ...]


def attach_logs(root: Path, writer: LogSink) -> tuple[JobLogs, NodeLogs]:
    """The job and node logs of ``root`` on ``writer``: the one place both the leader
    and the child build them, so that they register the same operations in order."""
    from server.joblogs import JobLogs
    from server.nodelogs import NodeLogs

    return JobLogs(root, writer), NodeLogs(root, writer)


def _name(function: Callable[..., Any]) -> str:
    return getattr(function, "__qualname__", repr(function))


class LogProcess:
    """``LogWriter``'s interface, the work done by a child process (see above)."""

    def __init__(self, root: Path, name: str = "farmtui-logs") -> None:
        self.root = root
        self.name = name
        self._operations: list[str] = []
        self._backlog = Backlog()
        self._queue = self._backlog.queue
        self._dropped_reported = 0
        self._drops_reported_at = -REPORT_EVERY
        self._lost_writes = 0  # never sent: the child could not be reached
        self._calls: dict[int, concurrent.futures.Future[Any]] = {}
        # The calls sent to each child, not yet answered: they fail when it ends.
        self._sent: dict[int, set[int]] = {}
        self._calls_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._child: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self.restarts = 0
        self._encoder = msgspec.msgpack.Encoder()
        self._sender = threading.Thread(target=self._send_all, name=name, daemon=True)
        self._sender_started = False

    # --- as LogWriter -------------------------------------------------------------------
    def operation(self, function: Callable[..., Any]) -> int:
        """Register what ``write(number, ...)`` does (in the child); its number."""
        self._operations.append(_name(function))
        return len(self._operations) - 1

    def on_idle(self, flusher: Callable[[], None]) -> None:
        """The child flushes whenever it catches up (its own ``on_idle``)."""

    def write(self, operation: int, *args: PlainValue, weight: int = 0) -> None:
        """Queue ``operation(*args)`` for the child; never blocks, never raises."""
        if self._backlog.put((operation, weight, 0, *args), weight):
            self._start()
        else:
            self._report_drops()  # here too: the sender may be stuck behind the child

    @property
    def dropped(self) -> int:
        """Writes dropped so far: beyond the bounds, or lost with a child."""
        return self._backlog.dropped + self._lost_writes

    def call_op(self, operation: int, *args: PlainValue) -> concurrent.futures.Future[Any]:
        """Run ``operation(*args)`` in the child after everything queued before; its result."""
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        if self._backlog.closed:
            future.set_exception(RuntimeError("the log writer is closed"))
            return future
        call = next(self._ids)
        with self._calls_lock:
            self._calls[call] = future
        self._start()
        self._queue.put((operation, 0, call, *args))  # never dropped: someone waits for it
        return future

    def wait(self, timeout: float | None = None) -> None:
        """Block until everything queued so far is written and flushed (not on the loop)."""
        if not self._backlog.closed:
            self.call_op(_SYNC).result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Send what is queued, let the child finish it, and stop; ``CLOSE_WAIT`` at most."""
        if self._backlog.closed:
            return
        timeout = logwriter.CLOSE_WAIT if timeout is None else timeout
        deadline = time.monotonic() + timeout
        self._backlog.closed = True
        if not self._sender_started:
            return
        self._queue.put(_STOP)
        self._sender.join(timeout)
        child = self._child
        finished = not self._sender.is_alive()
        if child is not None:
            try:
                child.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                finished = False
                child.kill()  # a filer that stopped answering: the leader stops all the same
                child.wait()
        if not finished:
            log.error("the log writer did not finish within %g s; some lines may be lost", timeout)

    @property
    def pid(self) -> int | None:
        """The child's process id (None before the first write)."""
        return None if self._child is None else self._child.pid

    @property
    def unanswered(self) -> int:
        """Reads sent to the child that it has not answered yet."""
        with self._calls_lock:
            return sum(len(calls) for calls in self._sent.values())

    def started(self) -> int:
        """Start the child now if it is not running (tests, benchmarks); its process id."""
        self.wait(logwriter.CLOSE_WAIT)
        assert self._child is not None
        return self._child.pid

    # --- the parent's side -------------------------------------------------------------
    def _start(self) -> None:
        if self._sender_started:
            return
        with self._calls_lock:  # the loop writes, while a test or the stop may wait
            if not self._sender_started:
                self._sender_started = True
                self._sender.start()

    def _send_all(self) -> None:
        stopping = False
        while not stopping:
            batch: list[Item] = []
            item = self._queue.get()
            if item is not _STOP and self._queue.qsize() < BATCH:
                # Let a few more come: a frame an item woke the child for every line
                # (a chunk's header, its footer, its events), which cost more than the line.
                time.sleep(GATHER)
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)  # type: ignore[arg-type]
                if len(batch) >= BATCH:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                try:
                    self._send(batch)
                except Exception:  # a bug: this batch is lost, not the writer
                    log.exception("the job logs could not be sent to their writer")
                    self._lost(batch, "the log writer could not be reached")
            self._report_drops(now=stopping)
        child = self._child
        if child is not None and child.stdin is not None:
            with contextlib.suppress(OSError):
                child.stdin.close()  # the child finishes what it has, then exits

    def _send(self, batch: list[Item]) -> None:
        weight = sum(item[1] for item in batch)
        try:
            payload = self._encode(batch)
            for attempt in range(2):
                child = self._running_child()
                if child is None:
                    self._lost(batch, "the log writer process could not be started")
                    return
                calls = {item[2] for item in batch if item[2]}
                if calls:
                    with self._calls_lock:
                        self._sent.setdefault(child.pid, set()).update(calls)
                try:
                    assert child.stdin is not None
                    child.stdin.write(_LENGTH.pack(len(payload)) + payload)
                    child.stdin.flush()
                    return
                except (BrokenPipeError, OSError, ValueError):
                    if attempt:
                        self._lost(batch, "the log writer process stopped")
        finally:
            self._backlog.done(weight)

    def _encode(self, batch: list[Item]) -> bytes:
        try:
            return self._encoder.encode(batch)
        except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
            # One item that cannot be sent (a string that is not UTF-8) loses only itself.
            kept = []
            for item in batch:
                try:
                    self._encoder.encode(item)
                except (msgspec.EncodeError, TypeError, ValueError, OverflowError):
                    if not item[2]:
                        self._lost_writes += 1
                    self._answer(item[2], OSError(errno.EINVAL, "cannot be sent to the writer"))
                else:
                    kept.append(item)
            return self._encoder.encode(kept)

    def _lost(self, batch: list[Item], why: str) -> None:
        self._lost_writes += sum(1 for item in batch if not item[2])
        for item in batch:
            self._answer(item[2], OSError(errno.EIO, why))

    def _answer(self, call: int, error: BaseException) -> None:
        if not call:
            return
        with self._calls_lock:
            future = self._calls.pop(call, None)
        if future is not None and not future.done():
            future.set_exception(error)

    def _running_child(self) -> subprocess.Popen[bytes] | None:
        child = self._child
        if child is not None and child.poll() is None:
            return child
        if self._backlog.closed and child is not None:
            return None  # stopping: not started again
        if child is not None:
            log.error(
                "the log writer process stopped (exit status %s); starting it again",
                child.returncode,
            )
            self.restarts += 1
            wait = self._started_at + RESTART_EVERY - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # on the sender's thread: a child that keeps dying
        try:
            child = self._child = self._spawn()
        except OSError as exc:
            log.error("cannot start the log writer process: %s", exc)
            self._child = None
            return None
        self._started_at = time.monotonic()
        threading.Thread(
            target=self._read_answers, args=(child,), name=f"{self.name}-answers", daemon=True
        ).start()
        return child

    def _spawn(self) -> subprocess.Popen[bytes]:
        # Where ``server`` was imported from comes first, for a child of a checkout.
        here = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
        child = subprocess.Popen(
            # -P: not the working directory first on the path. The leader's may be the
            # sync root, where a renderer could leave a ``server/`` of its own.
            [sys.executable, "-P", "-c", _BOOT, str(self.root), *self._operations],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            close_fds=True,
            # Not in the leader's process group: a Ctrl-C there reaches the leader,
            # which then closes the child's stdin once everything queued is sent.
            start_new_session=True,
        )
        return child

    def _read_answers(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdout is not None
        decoder = msgspec.msgpack.Decoder()
        stream = child.stdout
        try:
            while True:
                head = stream.read(_LENGTH.size)
                if len(head) < _LENGTH.size:
                    break
                (size,) = _LENGTH.unpack(head)
                body = stream.read(size)
                if len(body) < size:
                    break
                call, kind, *value = decoder.decode(body)
                if kind == "log":  # the child's own log record, logged here as ours
                    name, level, text = value
                    logging.getLogger(name).log(level, "%s", text)
                    continue
                with self._calls_lock:
                    future = self._calls.pop(call, None)
                    self._sent.get(child.pid, set()).discard(call)
                if future is None or future.done():
                    continue
                if kind == "ok":
                    future.set_result(value[0])
                elif kind == "oserror":
                    future.set_exception(OSError(value[0], value[1]))
                elif kind == "valueerror":
                    future.set_exception(ValueError(value[0]))
                else:
                    future.set_exception(RuntimeError(value[0]))
        except (OSError, ValueError, msgspec.DecodeError) as exc:
            log.error("the log writer's answers could not be read: %s", exc)
        finally:
            stream.close()  # the only end left open here (its stdin is the sender's)
            child.wait()
            # What it was sent and did not answer never will be: those reads fail, not hang.
            with self._calls_lock:
                unanswered = self._sent.pop(child.pid, set())
                futures = [self._calls.pop(call, None) for call in unanswered]
            for future in futures:
                if future is not None and not future.done():
                    future.set_exception(OSError(errno.EIO, "the log writer process stopped"))

    def _report_drops(self, *, now: bool = False) -> None:
        """One line for the drops since the last, at most every ``REPORT_EVERY`` s."""
        dropped = self.dropped
        if dropped == self._dropped_reported:
            return
        moment = time.monotonic()
        if not now and moment - self._drops_reported_at < REPORT_EVERY:
            return
        self._dropped_reported, self._drops_reported_at = dropped, moment
        log.error("the sync root is not keeping up: %d log writes dropped so far", dropped)


# --- the child's side --------------------------------------------------------------------
class Inline:
    """A ``LogSink`` that runs each operation at once, on the caller's thread: the
    child's, which ``serve`` feeds in the parent's order."""

    def __init__(self) -> None:
        self.operations: list[Callable[..., Any]] = []
        self.flushers: list[Callable[[], None]] = []
        self.dropped = 0

    def operation(self, function: Callable[..., Any]) -> int:
        self.operations.append(function)
        return len(self.operations) - 1

    def on_idle(self, flusher: Callable[[], None]) -> None:
        self.flushers.append(flusher)

    def write(self, operation: int, *args: PlainValue, weight: int = 0) -> None:
        try:
            self.operations[operation](*args)
        except Exception:
            log.exception("log work failed")

    def call_op(self, operation: int, *args: PlainValue) -> concurrent.futures.Future[Any]:
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        try:
            future.set_result(self.operations[operation](*args))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def wait(self, timeout: float | None = None) -> None:
        self.flush()

    def close(self, timeout: float | None = None) -> None:
        self.flush()

    def flush(self) -> None:
        run_flushers(self.flushers)


def _answer_of(call: int, function: Callable[..., Any], args: list[Any]) -> list[Any]:
    try:
        return [call, "ok", function(*args)]
    except OSError as exc:
        return [call, "oserror", exc.errno or errno.EIO, exc.strerror or str(exc)]
    except ValueError as exc:
        return [call, "valueerror", str(exc)]
    except Exception as exc:
        log.exception("log work failed")
        return [call, "error", f"{type(exc).__name__}: {exc}"]


class _Forwarded(logging.Handler):
    """The child's log records, kept to be sent to the leader, which logs them as its own:
    one log, through its handlers (the redaction of tokens among them)."""

    def __init__(self) -> None:
        super().__init__()
        self.kept: list[list[Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.kept.append([0, "log", record.name, record.levelno, text])

    def take(self) -> list[list[Any]]:
        kept, self.kept = self.kept, []
        return kept


def serve(root: Path, names: list[str], source: int, answers: int) -> int:
    """Run the operations the parent sends on ``source`` until it closes; answer on
    ``answers``. The exit status: 0, or 2 when the operations differ from the parent's."""
    forwarded = _Forwarded()
    logging.getLogger().addHandler(forwarded)
    logging.getLogger().setLevel(logging.INFO)
    encoder = msgspec.msgpack.Encoder()
    answering = True

    def send(replies: list[list[Any]]) -> None:
        nonlocal answering
        # The records first: a read answered is then never ahead of what its work logged.
        replies = forwarded.take() + replies
        if not replies or not answering:
            return
        encoded = [encoder.encode(reply) for reply in replies]
        data = memoryview(b"".join(_LENGTH.pack(len(e)) + e for e in encoded))
        try:
            while data:
                data = data[os.write(answers, data) :]
        except OSError:
            # The leader is gone, and nobody reads the answers: what it sent is still
            # written (a continued orphan, ``_BOOT``), then the child exits.
            answering = False

    end = Inline()
    attach_logs(root, end)
    mine = [_name(function) for function in end.operations]
    if mine != names:
        log.error("the log writer's operations differ from the leader's: %s != %s", mine, names)
        send([])
        return 2
    operations = end.operations
    decoder = msgspec.msgpack.Decoder()
    buffer = bytearray()
    done = 0
    while True:
        data = os.read(source, 1 << 20)
        if not data:
            break
        buffer += data
        replies: list[list[Any]] = []
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < _LENGTH.size + size:
                break
            batch = decoder.decode(memoryview(buffer)[_LENGTH.size : _LENGTH.size + size])
            del buffer[: _LENGTH.size + size]
            for operation, _weight, call, *args in batch:
                if operation == _SYNC:
                    end.flush()
                    replies.append([call, "ok", None])
                elif call:
                    replies.append(_answer_of(call, operations[operation], args))
                else:
                    end.write(operation, *args)
                done += 1
                if done % FLUSH_EVERY == 0:
                    end.flush()
        if not select.select([source], [], [], 0)[0]:
            end.flush()  # caught up: what was written is seen by ``tail -f``
        send(replies)
    end.flush()
    send([])
    return 0


def main(argv: list[str]) -> int:
    root, *names = argv
    answers = os.dup(sys.stdout.fileno())
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print goes to the log
    try:
        return serve(Path(root), names, sys.stdin.fileno(), answers)
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
