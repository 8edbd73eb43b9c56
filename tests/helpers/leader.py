"""A real leader inside the test's event loop: uvicorn on a loopback ephemeral port.

In-process, so a test can look at the leader's scheduler and store directly
while talking to it over real HTTP and WebSockets::

    async with leader_in_process(tmp_path) as farm:
        async with farm.http() as http:            # admin token
            r = await http.post("/api/jobs", json={...})

The ``leader`` fixture in ``tests/server/conftest.py`` wraps it. Readiness is
polled on ``/healthz`` with a deadline, never a sleep. For a leader in its own
process use ``tests.helpers.farm.farm_leader``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette

from server.config import LeaderConfig, LeaderSettings
from server.handshakes import LeaderServer
from server.leader import Leader
from server.log_process import LogProcess
from server.main import uvicorn_config

START_DEADLINE = 15.0


@dataclass
class InProcessLeader:
    url: str
    data: Path
    root: Path
    server: uvicorn.Server
    settings: LeaderSettings

    @property
    def leader(self) -> Leader:
        """The live leader object (scheduler, store, links)."""
        app = self.server.config.app
        assert isinstance(app, Starlette)
        leader: Leader = app.state.leader
        return leader

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def admin_token(self) -> str:
        return (self.data / "admin.token").read_text().strip()

    @property
    def agent_token(self) -> str:
        return (self.data / "agent.token").read_text().strip()

    def token(self, role: str, name: str) -> str:
        """A new token with this role and name, made directly in the leader."""
        return self.leader.tokens.create(role, name)

    def http(self, token: str | None = "admin") -> httpx.AsyncClient:
        """An httpx client on the leader; ``token`` "admin", None (no header) or a token."""
        headers = {}
        if token is not None:
            value = self.admin_token if token == "admin" else token
            headers["Authorization"] = f"Bearer {value}"
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=10.0, verify=False)


async def wait_for(
    condition: Callable[[], bool | Awaitable[bool]], deadline: float = 10.0, what: str = ""
) -> None:
    """Poll ``condition`` until it holds, failing after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > end:
            raise TimeoutError(f"gave up waiting for {what or condition}")
        await asyncio.sleep(0.005)


@asynccontextmanager
async def leader_in_process(
    tmp_path: Path,
    config: LeaderConfig | None = None,
    tls: tuple[Path, Path] | None = None,
) -> AsyncIterator[InProcessLeader]:
    """Start a leader with data and sync root under ``tmp_path``; stop it afterwards.

    ``tls`` is (certificate, key): the leader then serves https:// and wss://.
    """
    # proto=IPPROTO_TCP, or asyncio leaves Nagle on for accepted connections (40 ms stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    settings = LeaderSettings(
        data=tmp_path / "data",
        root=tmp_path / "root",
        port=port,
        config=config or LeaderConfig(),
        tls_cert=tls[0] if tls else None,
        tls_key=tls[1] if tls else None,
    )
    server = LeaderServer(uvicorn_config(settings, log_config=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    scheme = "https" if tls else "http"
    farm = InProcessLeader(
        f"{scheme}://127.0.0.1:{port}", settings.data, settings.root, server, settings
    )

    async def healthy() -> bool:
        if task.done():
            task.result()  # raise the start-up error
        try:
            async with httpx.AsyncClient(timeout=1.0, verify=False) as client:
                response = await client.get(f"{farm.url}/healthz")
            return response.status_code == 200
        except httpx.TransportError:
            return False

    try:
        await wait_for(healthy, START_DEADLINE, "the leader's /healthz")
        yield farm
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15.0)
        sock.close()


@contextmanager
def hung_log_writer(writer: LogProcess) -> Iterator[int]:
    """The job and node logs' writer process stopped (SIGSTOP) as a filer that stopped
    answering would leave it, until the block ends (SIGCONT); its process id."""
    pid = writer.started()
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        with suppress(ProcessLookupError):  # killed meanwhile (a leader that stopped)
            os.kill(pid, signal.SIGCONT)
