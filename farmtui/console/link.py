"""The console's end of ``/ws/console``: one object that owns the WebSocket.

``LeaderLink.run`` is meant to run as a Textual worker. It connects, says
hello, and turns every frame from the leader into a decoded message in a
pending list; it posts a single ``LinkBatch`` to the screen whenever that list
goes from empty to non-empty. At 1,000 frame events a second the screen
therefore handles one batch per repaint, not one message per event (the idea
of toolong's ``can_replace``, which ``LinkBatch`` also implements). When the
leader goes away the link says so with ``LinkStatus`` and reconnects with
exponential backoff; the leader's first message on the new connection is a
fresh ``Snapshot``, so the console resyncs completely.

Several leaders (``--leader URL1,URL2``: leaders on one PostgreSQL, one
active): a link that is refused (a standby answers 503) or closed moves on
to the next URL at once; the backoff counts whole rounds that found no
active leader.

An https leader's certificate is checked against the system's CAs, or against
one CA file (``farm console --ca FILE``) through an explicit ``ssl.SSLContext``
(``trust``), as the ``farm`` commands' client does.
"""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import msgspec
from textual.message import Message
from textual.message_pump import MessagePump
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.http11 import Response

from farmtui.console import heap
from farmtui.console.settings import CONNECT_TIMEOUT
from farmtui.http_connection import ssl_context, untrusted_certificate
from farmtui.protocol import (
    MAX_MESSAGE_BYTES,
    ROLE_HEADER,
    ConsoleHello,
    ConsoleMessage,
    LeaderToConsole,
    ProtocolError,
    encode,
    leader_to_console,
)

LinkState = Literal["connecting", "connected", "lost"]

# Seconds between pings on an open link (a leader silent for the connect timeout is left).
KEEPALIVE_EVERY = 2.0

# The leader is trusted and its snapshot of a big farm is big (10,000 jobs with
# their specs is about 9 MB), so the console accepts more than the protocol's
# MAX_MESSAGE_BYTES, which guards the leader against its clients.
MAX_LEADER_MESSAGE_BYTES = max(64 * 1024 * 1024, MAX_MESSAGE_BYTES)


def refusal_text(response: Response) -> str:
    """Why the leader refused the link, in one line: its own words when it is a standby."""
    status = response.status_code
    if status in (401, 403):
        return f"HTTP {status} — token refused"
    if response.headers.get(ROLE_HEADER) == "standby":
        try:
            said = msgspec.json.decode(response.body)
        except msgspec.DecodeError:
            said = None
        if isinstance(said, dict) and isinstance(said.get("error"), str):
            return " ".join(said["error"].split())[:300]
    return f"HTTP {status}"


def decode_leader_message(data: bytes | str) -> LeaderToConsole:
    """Decode one leader message (ProtocolError when malformed or beyond the console's limit)."""
    if len(data) > MAX_LEADER_MESSAGE_BYTES:
        raise ProtocolError(f"message of {len(data)} bytes is over the console's limit")
    try:
        with heap.decoding(len(data)):
            message: LeaderToConsole = leader_to_console.decode(data)
        return message
    except msgspec.DecodeError as exc:
        raise ProtocolError(f"malformed message: {exc}") from None


def trust(ca: str | None) -> ssl.SSLContext | None:
    """The context that checks an https leader against the CA file ``ca``; None: the system's.

    The same context the ``farm`` commands' client builds from ``--ca`` (one
    home, ``farmtui.client``); an unreadable file or one without a PEM
    certificate is a ``farmtui.errors.ConfigError`` naming the file.
    """
    return None if ca is None else ssl_context(ca)


def console_url(leader: str) -> str:
    """``http://host:7878`` -> ``ws://host:7878/ws/console`` (https -> wss)."""
    parts = urlsplit(leader if "://" in leader else f"http://{leader}")
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme, "ws")
    path = parts.path.rstrip("/")
    if not path.endswith("/ws/console"):
        path += "/ws/console"
    return urlunsplit((scheme, parts.netloc, path, "", ""))


class LinkStatus(Message):
    """The link's state changed (connecting, connected, lost)."""

    def __init__(
        self, state: LinkState, attempt: int = 0, error: str = "", refused: bool = False
    ) -> None:
        super().__init__()
        self.state = state
        self.attempt = attempt
        self.error = error
        # The leader answered and said no (a token, a certificate): not a lost link.
        self.refused = refused


class LinkBatch(Message):
    """Leader messages are waiting in ``LeaderLink.drain()``."""

    def can_replace(self, message: Message) -> bool:
        # Two queued batches are one: the handler drains everything pending.
        return isinstance(message, LinkBatch)


class LinkProblem(Message):
    """A message from the leader could not be decoded (it is skipped)."""

    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


@dataclass
class Backoff:
    """Reconnect delays: base * 2**(attempt-1), capped, with a little jitter."""

    base: float = 0.5
    cap: float = 10.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        raw: float = min(self.cap, self.base * 2.0 ** max(attempt - 1, 0))
        return raw * (1.0 + random.uniform(-self.jitter, self.jitter))


class LeaderLink:
    """Owns the WebSocket to the leader; see the module docstring."""

    def __init__(
        self,
        target: MessagePump,
        leader: str,
        token: str,
        *,
        hello: Callable[[], ConsoleHello] = ConsoleHello,
        backoff: Backoff | None = None,
        open_timeout: float = CONNECT_TIMEOUT,
        ssl_context: ssl.SSLContext | None = None,
        ca: str | None = None,
    ) -> None:
        """``ssl_context``: what a wss:// leader's certificate is checked with (``trust``),
        made from the CA file ``ca`` if one was given (named when a certificate is refused)."""
        self.target = target
        # Every leader's WebSocket URL; ``url`` is the one in use (or being tried).
        self.urls = [console_url(url) for url in leader.split(",") if url.strip()]
        self.url = self.urls[0]
        self.token = token
        self.hello = hello
        self.backoff = backoff or Backoff()
        self.open_timeout = open_timeout
        self.ssl_context = ssl_context
        self.ca = ca
        self.refused = False
        self.state: LinkState = "connecting"
        self._served = False  # the link in this try reached an active leader
        self.attempt = 0
        self.error = ""
        # Wall-clock time the data on screen stopped being live (None while live).
        self.stale_since: float | None = time.time()
        self._pending: list[LeaderToConsole] = []
        self._batch_posted = False
        self._outbox: asyncio.Queue[ConsoleMessage] | None = None
        # When the leader last said anything (a message or a pong): what is on
        # screen is stale since then once the link is lost.
        self._heard: float | None = None
        self._silent = False  # the keepalive gave up on the leader
        self._next_request = 0

    # -- used by the screen ----------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._outbox is not None

    def send(self, message: ConsoleMessage) -> int | None:
        """Queue ``message`` with a fresh request id; None when there is no connection."""
        if self._outbox is None:
            return None
        self._next_request += 1
        message.request_id = self._next_request
        self._outbox.put_nowait(message)
        return message.request_id

    def drain(self) -> list[LeaderToConsole]:
        """Everything received since the last drain, oldest first."""
        pending, self._pending = self._pending, []
        self._batch_posted = False
        return pending

    def mark_live(self) -> None:
        """The screen holds a fresh snapshot: nothing shown is stale any more."""
        self.stale_since = None

    # -- the worker ----------------------------------------------------------

    async def run(self) -> None:
        """Connect, read, reconnect with backoff; forever (until the worker is cancelled)."""
        tried = 0  # URLs tried in this round without reaching an active leader
        while True:
            # wss:// takes a context or True (the system's CAs); ws:// takes None.
            secure = self.url.startswith("wss://")
            tls: ssl.SSLContext | bool | None = (self.ssl_context or True) if secure else None
            self._set_state("connecting")
            self._served = False
            error = "connection closed by the leader"
            self.refused = False
            try:
                async with connect(
                    self.url,
                    additional_headers={"Authorization": f"Bearer {self.token}"},
                    max_size=MAX_LEADER_MESSAGE_BYTES,
                    open_timeout=self.open_timeout,
                    # Our own keepalive (``_keep_alive``): it knows when the leader last answered.
                    ping_interval=None,
                    ssl=tls,
                ) as ws:
                    await self._serve(ws)
            except InvalidStatus as exc:
                error = refusal_text(exc.response)
                self.refused = exc.response.status_code in (401, 403)
            except ssl.SSLCertVerificationError as exc:
                error = untrusted_certificate(exc, self.ca or True)
                self.refused = True
            except ConnectionRefusedError:
                error = "connection refused"
            except TimeoutError:
                error = "timed out"
            except (OSError, WebSocketException) as exc:
                error = str(exc) or type(exc).__name__
            if self._silent:
                self._silent = False
                error = (
                    f"the leader stopped answering (nothing for {self.open_timeout:g} s: "
                    "frozen, overloaded or cut off)"
                )
            self._outbox = None
            if self.stale_since is None:
                # Stale since the leader was last heard, not since we gave up on it.
                self.stale_since = self._heard or time.time()
            self.attempt += 1
            self.error = error
            self._set_state("lost")
            if len(self.urls) > 1:
                tried = 0 if self._served else tried + 1
                self.url = self.urls[(self.urls.index(self.url) + 1) % len(self.urls)]
                if tried < len(self.urls):
                    continue  # the next leader, at once
                tried = 0
            await asyncio.sleep(self.backoff.delay(self.attempt))

    async def _serve(self, ws: ClientConnection) -> None:
        outbox: asyncio.Queue[ConsoleMessage] = asyncio.Queue()
        await ws.send(encode(self.hello()))
        self._outbox = outbox
        self.attempt = 0
        self._served = True
        self._silent = False
        self._heard = time.time()
        self._set_state("connected")
        sender = asyncio.create_task(self._send_loop(ws, outbox))
        keeper = asyncio.create_task(self._keep_alive(ws))
        try:
            async for raw in ws:
                self._heard = time.time()
                try:
                    message = decode_leader_message(raw)
                except ProtocolError as exc:
                    self.target.post_message(LinkProblem(str(exc)))
                    continue
                self._pending.append(message)
                if not self._batch_posted:
                    self._batch_posted = True
                    self.target.post_message(LinkBatch())
        finally:
            self._outbox = None
            sender.cancel()
            keeper.cancel()

    async def _keep_alive(self, ws: ClientConnection) -> None:
        """Ping every ``KEEPALIVE_EVERY`` s; a leader silent for ``open_timeout`` s is left.

        A frozen leader keeps the connection open and says nothing, so the
        screen would go on saying "live". The link is cut at once (no closing
        handshake with a leader that cannot answer it) and the banner says why.
        """
        while True:
            await asyncio.sleep(KEEPALIVE_EVERY)
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, self.open_timeout)
            except TimeoutError:
                self._silent = True
                ws.transport.abort()
                return
            except WebSocketException:
                return
            self._heard = time.time()

    @staticmethod
    async def _send_loop(ws: ClientConnection, outbox: asyncio.Queue[ConsoleMessage]) -> None:
        while True:
            message = await outbox.get()
            await ws.send(encode(message).decode())

    def _set_state(self, state: LinkState) -> None:
        self.state = state
        self.target.post_message(LinkStatus(state, self.attempt, self.error, self.refused))
