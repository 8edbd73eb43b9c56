"""The client's own HTTP on the standard library: quick to start, one kept connection, TLS.

Every ``farm`` command imports ``farmtui.client``; httpx cost most of a short
command's run, so the client must not bring it back. The connection tests run
a small leader on loopback that closes or drops connections when told to.
"""

from __future__ import annotations

import contextlib
import socket
import socketserver
import ssl
import subprocess
import sys
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest

from farmtui import errors
from farmtui.client import FarmClient
from tests.helpers.tls import self_signed_certificate

ROOT = Path(__file__).resolve().parents[2]
WHOAMI = b'{"name": "tester", "role": "admin"}'
NOTHING_DONE = b'{"jobs": [], "removed": []}'


def test_importing_the_client_does_not_import_httpx() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import farmtui.client, sys; print('httpx' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.stdout.strip() == "False"


# --- a leader on loopback -------------------------------------------------------------


@dataclass
class Seen:
    method: str
    path: str
    authorization: str
    body: bytes


class Answer(BaseHTTPRequestHandler):
    """Answers ``whoami`` and anything else with an empty action result, as the plan says."""

    protocol_version = "HTTP/1.1"
    server: LoopbackLeader

    def setup(self) -> None:
        super().setup()
        self.server.connections += 1

    def do_GET(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.requests.append(
            Seen(self.command, self.path, self.headers.get("Authorization", ""), body)
        )
        plan = self.server.plan.pop(0) if self.server.plan else "answer"
        if plan == "drop":
            self.close_connection = True
            return
        if plan == "drip":  # a header now and then, never the end of the answer
            self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            with contextlib.suppress(OSError):
                while not self.server.stopping.wait(0.05):
                    self.wfile.write(b"X-Drip: 1\r\n")
            self.close_connection = True
            return
        payload = WHOAMI if self.path.endswith("/whoami") else NOTHING_DONE
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
        # Closing without a "Connection: close" header is what an idle timeout looks like.
        self.close_connection = plan == "close"

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``requests``."""


class LoopbackLeader(socketserver.ThreadingTCPServer):
    """An HTTP/1.1 server on loopback; ``plan`` says what happens to each request in turn.

    "answer" answers and keeps the connection, "close" answers and then closes it,
    "drop" closes it without an answer, "drip" sends a header now and then until
    ``stopping``; requests after the plan are answered.
    """

    daemon_threads = True

    def __init__(self, plan: list[str], tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), Answer)
        if tls is not None:
            # The handshake happens in the connection's thread, not in accept().
            self.socket = tls.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.plan = plan
        self.requests: list[Seen] = []
        self.connections = 0
        self.closed = threading.Semaphore(0)
        self.stopping = threading.Event()
        scheme = "https" if tls else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server_address[1]}"
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        self.closed.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that refuses the certificate breaks off the handshake: not news here."""

    def __enter__(self) -> LoopbackLeader:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        self._thread.join()


def test_one_connection_carries_every_request() -> None:
    with LoopbackLeader([]) as leader, FarmClient(leader.url, "secret") as farm:
        for _ in range(3):
            assert farm.whoami().name == "tester"
    assert leader.connections == 1
    assert [seen.authorization for seen in leader.requests] == ["Bearer secret"] * 3


def test_the_path_prefix_quoted_ids_and_query_reach_the_leader() -> None:
    with LoopbackLeader([]) as leader, FarmClient(leader.url + "/farm/", "t") as farm:
        farm.logs("a b/c", 3, attempt=2)
        farm.action("pause", ["j1"])
    assert [(seen.method, seen.path, seen.body) for seen in leader.requests] == [
        ("GET", "/farm/api/jobs/a%20b%2Fc/logs?chunk=3&attempt=2", b""),
        ("POST", "/farm/api/jobs/actions", b'{"action":"pause","ids":["j1"]}'),
    ]


def test_a_connection_the_leader_closed_while_idle_is_opened_again() -> None:
    with LoopbackLeader(["close"]) as leader, FarmClient(leader.url, "t") as farm:
        farm.whoami()
        assert leader.closed.acquire(timeout=10)
        farm.action("pause", ["j1"])
    assert leader.connections == 2
    assert [seen.method for seen in leader.requests] == ["GET", "POST"]


def test_a_post_the_leader_dropped_is_an_error_and_is_not_sent_again() -> None:
    with LoopbackLeader(["answer", "drop"]) as leader, FarmClient(leader.url, "t") as farm:
        farm.whoami()
        with pytest.raises(errors.LeaderDown) as caught:
            farm.action("pause", ["j1"])
        assert [seen.method for seen in leader.requests] == ["GET", "POST"]
        assert leader.connections == 1
        farm.whoami()
        assert leader.connections == 2
    assert str(caught.value) == (
        f"cannot reach the leader at {leader.url}: Remote end closed connection without response"
    )


def test_a_get_the_leader_dropped_on_a_kept_connection_is_sent_once_more() -> None:
    with LoopbackLeader(["answer", "drop"]) as leader, FarmClient(leader.url, "t") as farm:
        farm.whoami()
        assert farm.whoami().role == "admin"
    assert len(leader.requests) == 3
    assert leader.connections == 2


def test_a_get_dropped_again_on_the_new_connection_is_an_error() -> None:
    with (
        LoopbackLeader(["answer", "drop", "drop"]) as leader,
        FarmClient(leader.url, "t") as farm,
    ):
        farm.whoami()
        with pytest.raises(errors.LeaderDown, match="Remote end closed connection"):
            farm.whoami()
    assert len(leader.requests) == 3


def test_a_leader_that_never_answers_is_no_answer_in_time(
    listening_port: tuple[int, socket.socket],
) -> None:
    port, _ = listening_port
    with (
        FarmClient(f"http://127.0.0.1:{port}", "t", timeout=0.2) as farm,
        pytest.raises(errors.LeaderDown) as caught,
    ):
        farm.whoami()
    assert (
        str(caught.value)
        == f"cannot reach the leader at http://127.0.0.1:{port}: no answer in time"
    )


def test_a_leader_that_drips_its_answer_forever_is_no_answer_in_time() -> None:
    # Each byte comes well within the timeout, so only the whole exchange's deadline ends it.
    with LoopbackLeader(["drip"]) as leader, FarmClient(leader.url, "t", timeout=0.3) as farm:
        with pytest.raises(errors.LeaderDown, match="no answer in time"):
            farm.whoami()
        leader.stopping.set()


def test_an_unknown_host() -> None:
    with (
        FarmClient("http://no-such-host.invalid:7878", "t") as farm,
        pytest.raises(errors.LeaderDown) as caught,
    ):
        farm.whoami()
    assert str(caught.value) == (
        "cannot reach the leader at http://no-such-host.invalid:7878: unknown host"
    )


# --- TLS ------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path)


def test_https_checks_the_certificate_against_the_ca_it_is_given(
    certificate: tuple[Path, Path],
) -> None:
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    with LoopbackLeader([], tls) as leader:
        with FarmClient(leader.url, "t", verify=str(cert)) as farm:
            assert farm.whoami().name == "tester"
            assert farm.whoami().name == "tester"
        assert leader.connections == 1
        with FarmClient(leader.url, "t", verify=False) as farm:
            assert farm.whoami().name == "tester"
        # The system's CAs do not know a self-signed certificate.
        with (
            FarmClient(leader.url, "t") as farm,
            pytest.raises(errors.LeaderDown, match="CERTIFICATE_VERIFY_FAILED"),
        ):
            farm.whoami()
    assert len(leader.requests) == 3


def test_plain_http_builds_no_ssl_context(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tls(*args: object, **kwargs: object) -> ssl.SSLContext:
        raise AssertionError("an SSL context was built for a plain http leader")

    monkeypatch.setattr(ssl, "create_default_context", no_tls)
    monkeypatch.setattr(ssl, "SSLContext", no_tls)
    with LoopbackLeader([]) as leader, FarmClient(leader.url, "t") as farm:
        assert farm.whoami().name == "tester"
