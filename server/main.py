"""Run the leader: ``run_leader`` for ``farm leader``, ``python -m server.main`` for tests.

One uvicorn server on one port for REST and WebSockets, with the websockets
library as its WebSocket layer. uvicorn turns SIGTERM/SIGINT into a graceful
shutdown: it stops accepting, closes the links (agents reconnect to the next
leader and keep their unacknowledged reports) and runs the app's shutdown,
which flushes the logs and closes the store.

A leader on PostgreSQL that steps down (``Leader.step_down``: its lease is
lost) stops serving the same way and ``run_leader`` serves a fresh app on
the same socket: a new leader, a standby, with nothing of the deposed one's
memory. That was chosen over exiting for a service manager to restart: the
port never closes, so clients keep a leader that answers (and names the
active one), and it works the same under systemd, in a terminal and in tests.
While the database does not answer, a stand-in answers on the port as a
standby that knows no active leader (``server.store_wait``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import errno
import logging
import logging.config
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from farmtui.logqueue import logging_off_the_loop
from farmtui.protocol import MAX_FRAME_READ_BYTES
from server.app import create_app
from server.config import LeaderSettings
from server.disk_room import give_back_if_full
from server.errors import FarmMoved, LeaderError, StoreError
from server.handshakes import LeaderServer
from server.http_head import BoundedHttpToolsProtocol
from server.store import open_store
from server.store_url import parse_store_url
from server.store_wait import StoreUnreachable, next_retry, wait_for_store
from server.sync_root import check_store_before_start

log = logging.getLogger("farmtui.leader")


def uvicorn_config(
    settings: LeaderSettings, *, log_config: bool = True, stand_in: StoreUnreachable | None = None
) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(settings, stand_in),
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        # uvloop and httptools (dependencies): the leader's time goes mostly to
        # sockets, callbacks and HTTP parsing, which they do in C. Side by side
        # (bench/README.md, scale.py): 12-15% more chunks a second, twice the reads a
        # second of 200 readers. httptools with a bound on a request's head
        # (server.http_head); without uvloop, asyncio's own loop.
        loop="auto",
        http=BoundedHttpToolsProtocol,
        # Past this the WebSocket layer closes the link (1009) as soon as a frame's header
        # says so, without reading it: thirty links sending frames of 3.8 MB, refused
        # once read, still held the loop 100-200 ms at a time in reading them.
        ws_max_size=MAX_FRAME_READ_BYTES,
        # No permessage-deflate: a few compressed bytes could inflate into a frame
        # of a thousand messages (an agent's flood stalled the loop for 40 s), and
        # compressing small messages cost more CPU than a farm's network saves.
        ws_per_message_deflate=False,
        ws_ping_interval=20.0,
        ws_ping_timeout=20.0,
        ssl_certfile=str(settings.tls_cert) if settings.tls_cert else None,
        ssl_keyfile=str(settings.tls_key) if settings.tls_key else None,
        lifespan="on",
        timeout_graceful_shutdown=5,
        access_log=False,
        log_level="info",
        log_config=logging_config() if log_config else None,
    )


# The loggers with handlers of their own in ``logging_config``.
LOGGERS = ("farmtui", "uvicorn", "uvicorn.error", "uvicorn.access")


def logging_config() -> dict[str, Any]:
    """uvicorn's logging set-up plus the leader's own loggers, with times."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["farmtui"] = {
        "()": "logging.Formatter",
        "fmt": "%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    }
    config["handlers"]["farmtui"] = {
        "formatter": "farmtui",
        "class": "logging.StreamHandler",
        "stream": "ext://sys.stderr",
    }
    config["loggers"]["farmtui"] = {"handlers": ["farmtui"], "level": "INFO", "propagate": False}
    # uvicorn logs request lines: a token passed as ?token= must not land in the log.
    config.setdefault("filters", {})["redact"] = {"()": "server.redaction.RedactTokens"}
    for handler in config["handlers"].values():
        handler["filters"] = [*handler.get("filters", []), "redact"]
    return config


def run_leader(
    data: Path,
    root: Path,
    host: str = "127.0.0.1",
    port: int = 7878,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    store: str | None = None,
    advertise: str | None = None,
) -> None:
    """Serve the leader until SIGTERM/SIGINT. Raises LeaderError on bad settings.

    ``store``: sqlite:PATH or postgresql://... (default: leader.toml's, else <data>/farm.db).
    ``advertise``: the URL others reach this leader at (default http(s)://host:port).
    """
    if (tls_cert is None) != (tls_key is None):
        raise LeaderError("TLS needs both a certificate and a key")
    if store is not None:
        parse_store_url(store)  # a mistyped URL is one line, before anything starts
    # Listen before touching the data folder: a bad or busy port is one line and
    # leaves no tokens or database behind.
    if advertise is not None:
        advertise = check_advertise(advertise)
    with listen(host, port) as sock:
        settings = LeaderSettings.from_data(
            data, root, host, port, tls_cert, tls_key, store, advertise
        )
        if parse_store_url(settings.store_url)[0] == "postgresql":
            # An unreachable database or a wrong password: one line here, not a traceback
            # from the app's start-up. (SQLite's folder is made by the leader itself.)
            open_store(settings.store_url).close()
        kind, where = parse_store_url(settings.store_url)
        if kind == "sqlite":
            # Opening the database below makes SQLite's -shm and -wal files: on a disk
            # filled to its last byte, only if the ballast gives its room back first.
            reserve = int(settings.config.disk_reserve_mb * 1024**2)
            give_back_if_full(Path(where).parent, reserve)
        # A farm moved away, a root that is another farm's: one line, and nothing created.
        check_store_before_start(settings.root, settings.store_url, settings.data)
        # Logging is configured once, before its handlers move off the loop: a uvicorn
        # Config made with a log_config would put direct handlers back (a stderr
        # nobody reads would then block the loop).
        logging.config.dictConfig(logging_config())
        with _signals_end_quietly() as stop, logging_off_the_loop(LOGGERS):
            served = False  # a server of this leader has started (a later one may not)
            failed: list[BaseException] = []  # why the last start failed
            pause = 0.0  # before the stand-in first tries the store
            while True:
                stepped_down = threading.Event()
                serving: list[uvicorn.Server] = []
                failed.clear()
                server = LeaderServer(
                    uvicorn_config(
                        dataclasses.replace(
                            settings,
                            own_process=True,
                            on_step_down=_stop_serving(stepped_down, serving),
                            on_start_failed=failed.append,
                        ),
                        log_config=False,
                    )
                )
                serving.append(server)
                stop.serve(server, sock)
                # A signal while it stepped down (its server shutting down) is one to stop.
                if stop.asked.is_set():
                    break
                if server.started:
                    served, pause = True, 0.0
                    if not stepped_down.is_set():
                        break
                elif not served or not _store_went_away(failed):
                    break  # it cannot start, and would not next time: said below
                else:
                    # Its store answered the stand-in and failed the leader a moment
                    # later (a database that comes and goes): stand in again, trying
                    # the store less and less often while that goes on.
                    log.error("the leader could not start again (%s); standing in", failed[0])
                    pause = next_retry(pause)
                # A database that went away may be why it stepped down: the new
                # standby starts once it answers, and a stand-in answers till then.
                if not _stand_in_until_store_answers(sock, settings, stop, pause):
                    break  # asked to stop meanwhile
                log.warning("serving again as a standby on %s:%d", host, port)
            if stop.signum is not None:
                log.info("leader shut down on signal %d", stop.signum)
    if not server.started and not stop.asked.is_set():
        why = failed[0] if failed else None
        if isinstance(why, LeaderError):  # the store, the sync root: said in one line
            raise LeaderError(str(why))
        again = " again" if served else ""
        raise LeaderError(f"the leader could not start{again} on {host}:{port} (see its log)")


def _stand_in_until_store_answers(
    sock: socket.socket, settings: LeaderSettings, stop: StopSignals, pause: float = 0.0
) -> bool:
    """Serve ``StoreUnreachable`` on ``sock`` until the store opens: True. False: the
    leader was asked to stop (SIGTERM, SIGINT) first.

    The stand-in answers from the start, the store being tried on a thread: a
    database that does not answer at all holds a try for its connect timeout, and
    the port went unanswered meanwhile. (After the usual step-down, deposed with
    the database there, the stand-in serves for a moment.) ``pause``: seconds
    before its first try.
    """
    if stop.asked.is_set():
        return False
    server = LeaderServer(uvicorn_config(settings, log_config=False, stand_in=StoreUnreachable()))
    done, answered = threading.Event(), threading.Event()

    def look() -> None:
        if wait_for_store(settings.store_url, done, first=pause):
            answered.set()
            server.should_exit = True

    looking = threading.Thread(target=look, name="store-wait", daemon=True)
    looking.start()
    try:
        stop.serve(server, sock)
    finally:
        done.set()
        # A try in progress holds the thread for the database's connect timeout (as
        # long as systemd's stop timeout with ?connect_timeout=30): a leader asked to
        # stop does not wait for it. The thread is a daemon; the try's result is unused.
        if not stop.asked.is_set():
            looking.join()
    if not answered.is_set() and not stop.asked.is_set():
        # Not a signal, not the store: the stand-in could not serve. Wait as before it
        # (clients in the socket's backlog) rather than end the leader.
        log.error("the stand-in stopped; waiting for the store with the port unanswered")
        wait_for_store(settings.store_url, stop.asked)
    return not stop.asked.is_set()


def _store_went_away(failed: list[BaseException]) -> bool:
    """Whether a start failed on its store, which may answer again (not on a sync root
    that is another farm's, a farm moved away, or a bug: those would fail every time)."""
    return (
        bool(failed) and isinstance(failed[0], StoreError) and not isinstance(failed[0], FarmMoved)
    )


def _stop_serving(flag: threading.Event, serving: list[uvicorn.Server]) -> Callable[[], None]:
    """``LeaderSettings.on_step_down``: stop serving (as on SIGTERM) and say why."""

    def stop() -> None:
        flag.set()
        for server in serving:
            server.should_exit = True

    return stop


def check_advertise(url: str) -> str:
    """``--advertise``: an http(s)://host[:port] URL, or LeaderError in one line."""
    shape = f"--advertise {url!r} must look like http://host:port or https://host:port"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number from 0 to 65535
    except ValueError:
        raise LeaderError(shape) from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or any(c.isspace() or not c.isprintable() for c in url)
    ):
        raise LeaderError(shape)
    if parts.username or parts.password or parts.query or parts.fragment:
        raise LeaderError(f"--advertise {url!r} must be scheme://host[:port][/path] alone")
    return url.rstrip("/")


@contextmanager
def listen(host: str, port: int) -> Iterator[socket.socket]:
    """A listening TCP socket on ``host:port``, or LeaderError saying in one line why not."""
    if not 0 <= port <= 65535:
        raise LeaderError(f"port {port} is not between 1 and 65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise LeaderError(f"cannot listen on {host}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        # As uvicorn does: a restarted leader may rebind while old connections linger.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise LeaderError(
                f"port {port} on {host} is in use: is another leader running? (try --port)"
            ) from None
        raise LeaderError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    try:
        yield sock
    finally:
        sock.close()


class StopSignals:
    """SIGINT/SIGTERM seen by ``run_leader`` between and around its servers.

    uvicorn handles the signals only while a server runs (``capture_signals``);
    one that comes just before (or while a stepped-down leader's server shuts
    down, or between two servers) sets ``asked`` and also stops the server
    about to run, which would otherwise serve until the next signal.
    """

    def __init__(self) -> None:
        self.asked = threading.Event()
        self.signum: int | None = None
        self._server: uvicorn.Server | None = None
        self._handling = False

    def ended(self, signum: int, frame: object) -> None:
        # A signal handler runs between two bytecodes of the main thread, and another
        # signal may come while it runs (a storm of SIGTERMs): that one returns at once,
        # for Event.set's lock is not re-entrant (it hung the leader for good). Nothing
        # is logged here for the same reason: ``run_leader`` says which signal it was.
        if self._handling:
            return
        self._handling = True
        try:
            self.signum = signum
            if self._server is not None:
                self._server.should_exit = True
            self.asked.set()
        finally:
            self._handling = False

    def serve(self, server: LeaderServer, sock: socket.socket) -> None:
        """Run ``server`` on a duplicate of ``sock``, unless a signal came first."""
        self._server = server
        try:
            # Checked after ``_server`` is set: a signal before is seen here, one after
            # by the server (uvicorn starts up, sees should_exit, shuts down).
            if self.asked.is_set():
                return
            # A duplicate: uvicorn closes the sockets it served on; ours stays open
            # (and listening, so clients wait in its backlog) for the next round.
            # SystemExit: uvicorn's way out when the app's start-up failed (its store did
            # not open); ``server.started`` says so, and the signals it caught meanwhile
            # it did not pass on.
            with sock.dup() as listening, contextlib.suppress(SystemExit):
                server.run(sockets=[listening])
            # Passed on or not (uvicorn raises them again after a normal end), the
            # signals it caught are ours to act on: one that came while a stepped-down
            # server shut down must not be lost.
            for signum in server.caught:
                self.ended(signum, None)
        finally:
            self._server = None


@contextmanager
def _signals_end_quietly() -> Iterator[StopSignals]:
    """Make SIGINT/SIGTERM end ``run_leader`` with a plain return (``StopSignals``).

    uvicorn shuts down gracefully on those signals and then raises the signal
    again for the previous handler; a handler here that only notes it lets
    ``farm leader`` exit 0 after a clean shutdown instead of dying of the
    signal. Once one came, the leader is on its way out of the process and
    more are ignored: restored, the default handler killed a leader that had
    shut down cleanly with the next of a burst of signals (status -15).
    """
    stop = StopSignals()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.signal(sig, stop.ended) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        if stop.asked.is_set():
            # SIG_IGN, not a function: Python puts the default back for a function's
            # signals as it exits. One caught a moment before, not yet handled, is then
            # reported "ignored due to race condition" with a traceback: not worth one.
            sys.unraisablehook = _quiet_about_ignored_signals(sys.unraisablehook)
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_IGN if stop.asked.is_set() else handler)


def _quiet_about_ignored_signals(
    hook: Callable[[Any], object],
) -> Callable[[Any], object]:
    """``hook``, but silent about a signal dropped once SIGINT/SIGTERM are ignored."""

    def unraisable(info: Any) -> object:
        value = info.exc_value
        if isinstance(value, OSError) and "ignored due to race condition" in str(value):
            return None
        return hook(info)

    return unraisable


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.main", description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--root", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=7878)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--store", help="sqlite:PATH or postgresql://... (default <data>/farm.db)")
    parser.add_argument("--advertise", help="this leader's URL for others (default its own)")
    args = parser.parse_args(argv)
    try:
        run_leader(
            args.data,
            args.root,
            args.host,
            args.port,
            args.tls_cert,
            args.tls_key,
            args.store,
            args.advertise,
        )
    except LeaderError as exc:
        print(f"farm leader: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
