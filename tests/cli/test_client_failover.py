"""A client given several leaders (``URL1,URL2``) during a failover, over real sockets.

The leaders here are small HTTP servers playing a standby that becomes active,
and a port that accepts connections and never answers (a frozen leader).
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
from collections.abc import Iterator

import pytest

from farmtui.client import FarmClient
from farmtui.protocol import STANDBY_REFUSAL


class _Promoted(http.server.BaseHTTPRequestHandler):
    """A standby that refuses two requests, then has taken over."""

    refusals = 2

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        active = type(self).refusals <= 0
        if self.path == "/healthz":
            role = "active" if active else "standby"
            self._answer(200, {"ok": True, "role": role, "active": None})
        elif active:
            self._answer(200, [])
        else:
            type(self).refusals -= 1
            self._answer(503, {"error": f"{STANDBY_REFUSAL}; the active leader is not known"})

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def promoted() -> Iterator[str]:
    _Promoted.refusals = 2
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Promoted)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _connections(listener: socket.socket) -> int:
    """How many connections wait on a port nobody serves (each one a client's try)."""
    listener.setblocking(False)
    count = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return count
        conn.close()
        count += 1


def test_a_frozen_leader_listed_first_is_left_alone_while_the_other_takes_over(
    promoted: str,
) -> None:
    with socket.socket() as frozen:
        frozen.bind(("127.0.0.1", 0))
        frozen.listen(16)
        urls = f"http://127.0.0.1:{frozen.getsockname()[1]},{promoted}"
        with FarmClient(urls, "token", timeout=15.0) as farm:
            assert farm.jobs() == []
            assert farm.leader == promoted
        # Asked which leader is active (twice: at the start, and after the refusals),
        # never sent the request itself, which would have waited out the 15 s timeout.
        assert _connections(frozen) == 2
