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


class _Leader(http.server.BaseHTTPRequestHandler):
    """A leader whose role the test sets; frozen, it holds every request unanswered."""

    role = "standby"
    slow_health = 0.0
    frozen = threading.Event()
    thawed = threading.Event()

    def do_GET(self) -> None:  # noqa: N802 - the standard library's name
        if type(self).frozen.is_set():
            type(self).thawed.wait(30)
            return
        if self.path == "/healthz":
            type(self).thawed.wait(type(self).slow_health)  # a standby slow to answer
            _Promoted._answer(self, 200, {"ok": True, "role": type(self).role, "active": None})  # type: ignore[arg-type]
        elif type(self).role == "active":
            _Promoted._answer(self, 200, [])  # type: ignore[arg-type]
        else:
            _Promoted._answer(self, 503, {"error": f"{STANDBY_REFUSAL}; ask the other"})  # type: ignore[arg-type]

    def log_message(self, format: str, *args: object) -> None:
        pass


def _serve(handler: type[http.server.BaseHTTPRequestHandler]) -> http.server.ThreadingHTTPServer:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_a_client_whose_active_leader_freezes_moves_to_the_one_that_took_over() -> None:
    """A long-lived client (a script, ``farm logs --follow``): its leader froze after the
    first request; the standby it heard from slowly at first is where it goes next."""
    first = type(
        "First",
        (_Leader,),
        {"role": "active", "frozen": threading.Event(), "thawed": threading.Event()},
    )
    second = type(
        "Second",
        (_Leader,),
        {
            "role": "standby",
            "slow_health": 0.3,
            "frozen": threading.Event(),
            "thawed": threading.Event(),
        },
    )
    servers = [_serve(first), _serve(second)]
    urls = [f"http://127.0.0.1:{server.server_address[1]}" for server in servers]
    try:
        with FarmClient(",".join(urls), "token", timeout=1.0) as farm:
            assert farm.jobs() == []
            assert farm.leader == urls[0]
            first.frozen.set()
            second.role = "active"
            assert farm.jobs() == []
            assert farm.leader == urls[1]
    finally:
        first.thawed.set()
        for server in servers:
            server.shutdown()
            server.server_close()
