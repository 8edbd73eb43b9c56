"""uvicorn's httptools protocol, with a bound on a request's head (request line and headers).

uvicorn parses HTTP with httptools when it is installed (a dependency: it
reads requests several times faster than h11), but sets it no limit on a
request's head, where h11 refuses one over 16 KiB. An unauthenticated client
sending one endless header then held a core and hundreds of MB (httptools
and uvicorn grow a header value and the URL by concatenation: quadratic),
and every other request waited. A head past ``MAX_HEAD`` is answered 431
and its connection closed.
"""

from __future__ import annotations

import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("farmtui.leader.http")

# Far above any head a farm client sends (a token, a few headers, a path with a job id).
MAX_HEAD = 64 * 1024

_REFUSAL = b"request head over 64 KiB"


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """``HttpToolsProtocol`` that counts the bytes of each request's head."""

    # Whether a request's head is being read, and how many bytes it has had so far.
    # Counted a whole read at a time: the bytes of a read that begins a head after
    # the end of another request count from the next read on, so a head is refused
    # by MAX_HEAD plus one read (uvloop reads at most 256 KiB).
    _in_head = True
    _head_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > MAX_HEAD:
            self._refuse_head()

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0
        super().on_message_complete()

    def _refuse_head(self) -> None:
        if self.transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.warning("refused a request from %s: its head passed %d bytes", client, MAX_HEAD)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(_REFUSAL), _REFUSAL)
        )
        self.transport.close()
