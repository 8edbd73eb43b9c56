"""TLS connections are accepted by the leader itself, and their handshakes begun a few a turn.

A TLS handshake costs the leader about 0.6 ms of CPU (the signature of its
RSA-2048 key), spent when the client's first message, its ClientHello, is read.
Served the usual way (uvicorn's ``loop.create_server(ssl=...)``), every
connection accepted in a turn of the event loop began its handshake in the
next: a storm of 1,500 TLS connections held the loop 740 ms, and ``server.doorway``,
which lets connections' first reads in a few a turn, only sees a connection
once its handshake is done.

So with TLS the leader accepts connections itself (``HandshakeDoor``). An
accepted connection is not read until its first bytes arrive; one that stays
silent for ``SILENT_FOR`` seconds is closed. Then it waits at a door of its own
(a ``Doorway`` letting ``PER_TURN`` in a turn, in the order they spoke), and
only then is its handshake begun (``loop.connect_accepted_socket``), by the
loop's own TLS, with uvicorn's protocol on top as before.

A flood faster than the leader can answer must not pile up in that line: a
break round's 15,000 clients that each sent a ClientHello and left held
10,800 descriptors and 7 s of handshakes for nobody. So a client that hung up
while it waited is dropped unanswered, and while ``MAX_WAITING`` wait the
leader accepts nothing more: new connections wait in the kernel's queue
(``backlog``), which sheds a flood as it did before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import select
import socket
import ssl
from collections.abc import Callable
from types import FrameType

import uvicorn

from server.doorway import Doorway

log = logging.getLogger("farmtui.leader.http")

# Handshakes begun a turn: 8 x 0.6 ms, a few milliseconds of a turn. A storm is
# then answered at about 1,000 a second here (bench/tls_storm.py).
PER_TURN = 8
# Connections accepted a turn: accepting is cheap (a system call, a reader).
ACCEPTS_PER_TURN = 64
# A connection that sends nothing for this long is closed unread.
SILENT_FOR = 10.0
# From its first bytes to a finished handshake (asyncio's default is 60 s).
HANDSHAKE_WITHIN = 10.0
# Connections that spoke and wait for their handshake, at most (a quarter of a
# second of handshakes): past it, accepting stops until half of them are through.
MAX_WAITING = 256
# Out of file descriptors: accepting stops this long (as asyncio's own servers do).
ACCEPT_RETRY_AFTER = 1.0
# Running out of descriptors is logged at most this often: a storm must not fill the log.
PAUSE_LOGGED_EVERY = 10.0
# How often a full line is looked at again, to accept once it has room.
LINE_CHECK_EVERY = 0.02
# accept() failures that say the process or the system is out of something.
OUT_OF_RESOURCES = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


class HandshakeDoor:
    """Accepts TLS connections on one listening socket (see the module's docstring).

    Stands in for the ``asyncio.Server`` uvicorn would have made: uvicorn calls
    ``close`` and then ``wait_closed`` when it shuts down.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        listening: socket.socket,
        context: ssl.SSLContext,
        protocol: Callable[[], asyncio.Protocol],
        backlog: int = 2048,
        per_turn: int = PER_TURN,
    ) -> None:
        self.loop = loop
        self.listening = listening
        self.context = context
        self.protocol = protocol
        self.backlog = backlog
        self.door = Doorway(loop, per_turn)
        # Accepted and silent so far: each with the timer that closes it.
        self.silent: dict[socket.socket, asyncio.TimerHandle] = {}
        self.handshakes: set[asyncio.Task[None]] = set()
        self.closed = False
        self.accepting = False
        # When running out of descriptors was last logged (the loop's clock).
        self._pause_logged_at: float | None = None

    def start(self) -> None:
        self.listening.setblocking(False)
        self.listening.listen(self.backlog)  # as create_server does: listening already or not
        self.start_accepting()

    def start_accepting(self) -> None:
        if not self.accepting and not self.closed:
            self.accepting = True
            self.loop.add_reader(self.listening.fileno(), self._accept)

    def stop_accepting(self) -> None:
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.listening.fileno())

    def _accept(self) -> None:
        for _ in range(ACCEPTS_PER_TURN):
            try:
                connection, _ = self.listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause_accepting(exc)
                    return
                continue  # that one connection's trouble (it was reset before accept)
            connection.setblocking(False)
            with contextlib.suppress(OSError):  # Nagle would hold small replies 40 ms
                connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.silent[connection] = self.loop.call_later(SILENT_FOR, self._drop, connection)
            self.loop.add_reader(connection.fileno(), self._spoke, connection)

    def _pause_accepting(self, exc: OSError) -> None:
        now = self.loop.time()
        if self._pause_logged_at is None or now - self._pause_logged_at >= PAUSE_LOGGED_EVERY:
            self._pause_logged_at = now
            log.error("accepting connections paused %g s: %s", ACCEPT_RETRY_AFTER, exc.strerror)
        self.stop_accepting()
        self.loop.call_later(ACCEPT_RETRY_AFTER, self._check_line)

    def _check_line(self) -> None:
        """Accepting stopped (a full line, or out of descriptors): start again once at
        most half of ``MAX_WAITING`` wait."""
        if self.closed:
            return
        if len(self.door.line) <= MAX_WAITING // 2:
            self.start_accepting()
        else:
            self.loop.call_later(LINE_CHECK_EVERY, self._check_line)

    def _stop_listening_for(self, connection: socket.socket) -> None:
        self.loop.remove_reader(connection.fileno())
        self.silent.pop(connection).cancel()

    def _drop(self, connection: socket.socket) -> None:
        """Silent for ``SILENT_FOR``: closed unread."""
        self._stop_listening_for(connection)
        connection.close()

    def _spoke(self, connection: socket.socket) -> None:
        self._stop_listening_for(connection)
        waiting = _Spoken(self, connection)
        if self.door.enter(waiting):
            if not waiting.gone():  # (the line's own turns look before letting one in)
                waiting.come_in()
        elif len(self.door.line) >= MAX_WAITING and self.accepting:
            self.stop_accepting()
            self.loop.call_later(LINE_CHECK_EVERY, self._check_line)

    def begin_handshake(self, connection: socket.socket) -> None:
        task = self.loop.create_task(self._handshake(connection))
        self.handshakes.add(task)
        task.add_done_callback(self.handshakes.discard)

    async def _handshake(self, connection: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(
                self.protocol,
                connection,
                ssl=self.context,
                ssl_handshake_timeout=HANDSHAKE_WITHIN,
            )
        except (OSError, ssl.SSLError, TimeoutError, EOFError) as exc:
            # Not TLS, a client that went away, a certificate it refused: the loop
            # closed the connection; nothing to answer, and no log line an attack
            # could repeat.
            log.debug("a TLS handshake failed: %s", exc)

    def close(self) -> None:
        """Stop accepting and drop those not yet in (as ``asyncio.Server.close``)."""
        if self.closed:
            return
        with contextlib.suppress(ValueError, OSError):  # closed already
            self.stop_accepting()
        self.closed = True
        self.listening.close()
        for connection in list(self.silent):
            self._drop(connection)
        while self.door.line:
            self.door.line.popleft().close()
        for task in self.handshakes:
            task.cancel()

    async def wait_closed(self) -> None:
        await asyncio.gather(*self.handshakes, return_exceptions=True)


class _Spoken:
    """A connection whose first bytes came: it waits at the door for its handshake."""

    def __init__(self, door: HandshakeDoor, connection: socket.socket) -> None:
        self.door = door
        self.connection = connection

    def come_in(self) -> None:
        if self.door.closed:
            self.connection.close()
        else:
            self.door.begin_handshake(self.connection)

    def gone(self) -> bool:
        """Closed, or its client hung up while it waited: then closed here, unanswered."""
        if self.connection.fileno() == -1:
            return True
        look = select.poll()
        look.register(self.connection, select.POLLRDHUP)
        if not look.poll(0):  # (POLLHUP and POLLERR are always reported)
            return False
        self.connection.close()
        return True

    def close(self) -> None:
        self.connection.close()


class LeaderServer(uvicorn.Server):
    """uvicorn's server; with TLS, its connections come in through ``HandshakeDoor``."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        # The signals it caught (``server.main.StopSignals``): uvicorn passes them on
        # when its server ends, but not when the app's start-up failed (SystemExit).
        self.caught: list[int] = []

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.caught.append(sig)
        super().handle_exit(sig, frame)
        # Never forced: on a second Ctrl-C uvicorn skipped the app's shutdown, which then
        # ran anyway as its task was cancelled and left a CancelledError traceback in the
        # log. The shutdown is bounded (a few seconds for connections, then the leader's
        # stop): let it finish.
        self.force_exit = False

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        context = self.config.ssl
        if context is None or not sockets:
            await super().startup(sockets)
            return
        # uvicorn's start-up (the app's lifespan) with no server of its own ...
        await super().startup(sockets=[])
        config, loop = self.config, asyncio.get_running_loop()
        # As uvicorn's own start-up makes its protocols.
        protocol = functools.partial(
            config.http_protocol_class,  # type: ignore[call-arg]
            config=config,
            server_state=self.server_state,
            app_state=self.lifespan.state,
        )
        # ... and one door a socket in the place of the servers it shuts down.
        doors = [HandshakeDoor(loop, sock, context, protocol, config.backlog) for sock in sockets]
        for door in doors:
            door.start()
        self.servers.extend(doors)  # type: ignore[arg-type]
