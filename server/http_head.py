"""uvicorn's httptools protocol, with a bound on a request's head (request line and headers).

uvicorn parses HTTP with httptools when it is installed (a dependency: it
reads requests several times faster than h11), but sets it no limit on a
request's head, where h11 refuses one over 16 KiB. An unauthenticated client
sending one endless header then held a core and hundreds of MB (httptools
and uvicorn grow a header value and the URL by concatenation: quadratic),
and every other request waited. So, past these bounds a connection is
closed: a head past ``MAX_HEAD`` (answered 431), more than ``MAX_PIPELINED``
requests sent ahead of their answers (answered 400), and more than
``MAX_UNWANTED`` bytes of a request sent after it was answered (trailers, a
refused upload's body). A connection that sends nothing within
``FIRST_BYTES_WITHIN`` of being made is closed: uvicorn times a connection
out only once it has answered a request, so silent ones were held for ever.
"""

from __future__ import annotations

import asyncio
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from server.doorway import doorway

log = logging.getLogger("farmtui.leader.http")

# Far above any head a farm client sends (a token, a few headers, a path with a job id).
MAX_HEAD = 64 * 1024
# Requests one connection may send ahead of their answers (HTTP/1.1 pipelining).
MAX_PIPELINED = 64
# Bytes of a request read after it was answered (a refused upload's body, trailers).
MAX_UNWANTED = 1024 * 1024
# A new connection's first bytes (after TLS, its first request) come within this.
FIRST_BYTES_WITHIN = 10.0
# Refusals logged in a leader's life: one a connection would let an attack fill the log.
MAX_REFUSALS_LOGGED = 100
_refusals_logged = 0


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` within the bounds above, its first read let in by the
    loop's ``server.doorway``."""

    # Whether a request's head is being read, and how many bytes it has had so far.
    # Counted a whole read at a time: the bytes of a read that begins a head after
    # the end of another request count from the next read on, so a head is refused
    # by MAX_HEAD plus one read (uvloop reads at most 256 KiB).
    _in_head = True
    _head_bytes = 0
    # Bytes of a request read after its answer was sent (the rest of a body nobody
    # wants, its trailers): read only to reach the next request, so bounded too.
    _unwanted_bytes = 0

    # Until the doorway lets the connection in: what it sent meanwhile (one read, as
    # reading stops at once), and whether it waits in line.
    _let_in = False
    _waits = False
    _held = b""
    _silent: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._silent = self.loop.call_later(FIRST_BYTES_WITHIN, transport.close)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._silent is not None:
            self._silent.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._silent is not None:
            self._silent.cancel()
            self._silent = None
        if not self._let_in:
            if not self._waits and doorway(self.loop).enter(self):
                self._let_in = True
            else:
                self._waits = True
                self._held += data
                self.transport.pause_reading()
                return
        if self._in_head:
            self._head_bytes += len(data)
        elif self.cycle is not None and self.cycle.response_complete:
            self._unwanted_bytes += len(data)
            if self._unwanted_bytes > MAX_UNWANTED:
                self.transport.close()  # answered already: nothing more to say
                return
        super().data_received(data)  # a parser callback's error: uvicorn answers 400, closes
        if self._in_head and self._head_bytes > MAX_HEAD:
            self._refuse(f"request head over {MAX_HEAD // 1024} KiB")

    def come_in(self) -> None:
        self._let_in, self._waits = True, False
        held, self._held = self._held, b""
        self.transport.resume_reading()
        self.data_received(held)

    def gone(self) -> bool:
        return bool(self.transport.is_closing())

    def close(self) -> None:
        self.transport.close()

    def on_headers_complete(self) -> None:
        self._in_head = False
        waiting = self.cycle is not None and not self.cycle.response_complete
        if waiting and len(self.pipeline) >= MAX_PIPELINED:
            # Each one queued holds its request's scope and cycle: 52 MB of tiny
            # requests whose answers were never read held 3.4 GB.
            raise TooManyPipelined(f"more than {MAX_PIPELINED} requests ahead of their answers")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes, self._unwanted_bytes = True, 0, 0
        super().on_message_complete()

    def _refuse(self, why: str) -> None:
        if self.transport.is_closing():
            return
        global _refusals_logged
        if _refusals_logged < MAX_REFUSALS_LOGGED:  # an attack must not flood the log too
            _refusals_logged += 1
            client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            last = _refusals_logged == MAX_REFUSALS_LOGGED
            log.warning(
                "refused a connection from %s: %s%s",
                client,
                why,
                " (no more such refusals will be logged)" if last else "",
            )
        body = why.encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


class TooManyPipelined(Exception):
    """Raised in a parser callback: httptools stops, uvicorn answers 400 and closes."""
