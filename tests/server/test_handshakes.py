"""TLS handshakes are begun a few a turn, so a storm of TLS connections never holds the loop.

Served the usual way, a leader began the handshake of every connection that had
spoken in one turn of its event loop: a storm of 1,500 held it 740 ms, and every
``/healthz`` waited. Each test runs on asyncio's loop and on uvloop (the
leader's), whose TLS is its own.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import psutil
import pytest
import uvloop

from server import handshakes
from server.handshakes import PER_TURN, HandshakeDoor
from tests.helpers.leader import leader_in_process, wait_for
from tests.helpers.tls import self_signed_certificate

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}
STORM = 6 * PER_TURN + 3
DEADLINE = 30.0


def run(loop: str, main: Coroutine[Any, Any, None]) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def server_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


class Hello:
    """A client that has sent its ClientHello (and then finishes in a thread, blocking)."""

    def __init__(self, port: int) -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing)
        self._step()

    def _step(self) -> bool:
        try:
            self.tls.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        self.sock.sendall(self.outgoing.read())
        return done

    def finish(self) -> None:
        while True:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed before the handshake ended")
            self.incoming.write(data)
            if self._step():
                return


class Turns:
    """Counts the event loop's turns, and the handshakes (ClientHellos read) in each."""

    def __init__(self, loop: asyncio.AbstractEventLoop, context: ssl.SSLContext) -> None:
        self.loop = loop
        self.now = 0
        self.hellos: dict[int, int] = {}
        self.running = True
        context.sni_callback = self._hello
        loop.call_soon(self._tick)

    def _tick(self) -> None:
        self.now += 1
        if self.running:
            self.loop.call_soon(self._tick)

    def _hello(self, *_: object) -> None:
        self.hellos[self.now] = self.hellos.get(self.now, 0) + 1


class Made(asyncio.Protocol):
    """Notes each connection whose handshake ended."""

    def __init__(self, made: list[asyncio.BaseTransport] | None = None) -> None:
        self.made = made if made is not None else []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made.append(transport)


def closed_by_the_leader(sock: socket.socket) -> bool:
    sock.settimeout(DEADLINE)
    try:
        return sock.recv(65536) == b"" or closed_by_the_leader(sock)
    except ConnectionResetError:
        return True


async def one_handshake_fails(port: int) -> None:
    """uvloop opens /dev/null, once, the first time a TLS transport closes: before counting."""
    with socket.create_connection(("127.0.0.1", port)) as first:
        first.sendall(b"\x00" * 300)
        assert await asyncio.to_thread(closed_by_the_leader, first)


def listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1024)
    return sock


@pytest.mark.parametrize("loop", LOOPS)
def test_a_storm_of_handshakes_is_begun_a_few_a_turn(
    loop: str, certificate: tuple[Path, Path]
) -> None:
    async def main() -> None:
        running = asyncio.get_running_loop()
        context = server_context(certificate)
        made: list[asyncio.BaseTransport] = []
        door = HandshakeDoor(running, listening(), context, lambda: Made(made))
        port = door.listening.getsockname()[1]
        # Every ClientHello is sent before the loop reads any.
        storm = [Hello(port) for _ in range(STORM)]
        turns = Turns(running, context)
        door.start()
        finished = asyncio.gather(*(asyncio.to_thread(c.finish) for c in storm))
        await asyncio.wait_for(finished, DEADLINE)
        await wait_for(lambda: len(made) == STORM, DEADLINE, "every connection made")
        turns.running = False
        assert sum(turns.hellos.values()) == STORM
        assert max(turns.hellos.values()) <= PER_TURN, turns.hellos
        assert all(t.get_extra_info("sslcontext") is context for t in made)  # TLS, as served
        door.close()
        await door.wait_closed()
        for client in storm:
            client.sock.close()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_silent_connections_are_closed_and_broken_handshakes_leave_nothing_open(
    loop: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handshakes, "SILENT_FOR", 0.3)
    me = psutil.Process()

    async def main() -> None:
        running = asyncio.get_running_loop()
        door = HandshakeDoor(running, listening(), server_context(certificate), Made)
        door.start()
        port = door.listening.getsockname()[1]

        await one_handshake_fails(port)
        before = me.num_fds()
        silent = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        # Plain HTTP to a TLS port, and bytes that are nothing at all.
        wrong = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        for n, sock in enumerate(wrong):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" if n % 2 else b"\x00" * 300)

        ended = await asyncio.to_thread(lambda: [closed_by_the_leader(s) for s in silent + wrong])
        assert all(ended)
        for sock in silent + wrong:
            sock.close()
        # The leader's side of each is closed too: no descriptor left behind.
        await wait_for(lambda: me.num_fds() <= before, DEADLINE, "the leader's sockets closed")
        assert not door.silent
        assert not door.door.line
        door.close()
        await door.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_client_that_hung_up_while_it_waited_gets_no_handshake(
    loop: str, certificate: tuple[Path, Path]
) -> None:
    """A flood of clients that send a ClientHello and leave costs no handshake (0.6 ms each)."""
    me = psutil.Process()

    async def main() -> None:
        running = asyncio.get_running_loop()
        context = server_context(certificate)
        made: list[asyncio.BaseTransport] = []
        door = HandshakeDoor(running, listening(), context, lambda: Made(made), per_turn=1)
        port = door.listening.getsockname()[1]
        door.start()
        await one_handshake_fails(port)
        door.stop_accepting()  # the clients below speak before it accepts them
        before = me.num_fds()
        gone = [Hello(port) for _ in range(3 * PER_TURN)]
        stays = Hello(port)
        for client in gone:
            client.sock.close()
        turns = Turns(running, context)
        door.start_accepting()
        await asyncio.wait_for(asyncio.to_thread(stays.finish), DEADLINE)
        await wait_for(lambda: len(made) == 1, DEADLINE, "the one that stayed, made")
        turns.running = False
        assert sum(turns.hellos.values()) == 1  # only the client that stayed was answered
        stays.sock.close()
        made[0].close()
        await wait_for(lambda: me.num_fds() <= before, DEADLINE, "every socket closed")
        door.close()
        await door.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_a_full_line_stops_accepting_until_half_of_it_is_through(
    loop: str, certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handshakes, "MAX_WAITING", 4)

    async def main() -> None:
        running = asyncio.get_running_loop()
        context = server_context(certificate)
        made: list[asyncio.BaseTransport] = []
        door = HandshakeDoor(running, listening(), context, lambda: Made(made), per_turn=1)
        port = door.listening.getsockname()[1]
        first = [Hello(port) for _ in range(12)]
        door.start()
        # The first twelve are accepted in one turn and all speak: the line is full.
        await wait_for(lambda: not door.accepting, DEADLINE, "accepting stopped")
        late = [Hello(port) for _ in range(4)]  # left in the kernel's queue meanwhile
        waited = len(door.door.line) + len(door.silent)
        assert waited <= len(first)
        storm = first + late
        finished = asyncio.gather(*(asyncio.to_thread(c.finish) for c in storm))
        await asyncio.wait_for(finished, DEADLINE)  # accepting started again: all answered
        # The late four filled the line again, once in: accepting resumes at the next look.
        await wait_for(lambda: door.accepting, DEADLINE, "accepting again")
        assert len(made) == len(storm)
        for client in storm:
            client.sock.close()
        door.close()
        await door.wait_closed()

    run(loop, main())


@pytest.mark.parametrize("loop", LOOPS)
def test_closing_drops_connections_not_yet_in(loop: str, certificate: tuple[Path, Path]) -> None:
    async def main() -> None:
        running = asyncio.get_running_loop()
        door = HandshakeDoor(running, listening(), server_context(certificate), Made, per_turn=1)
        door.start()
        port = door.listening.getsockname()[1]
        silent = socket.create_connection(("127.0.0.1", port))
        await wait_for(lambda: len(door.silent) == 1, DEADLINE, "the silent one accepted")
        door.close()
        await door.wait_closed()
        silent.settimeout(DEADLINE)
        assert silent.recv(10) == b""
        with pytest.raises(ConnectionRefusedError):  # nobody listens any more
            socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
        silent.close()

    run(loop, main())


# TLS clients from a process of their own: they connect as the leader runs, as a farm's do.
STORM_SCRIPT = """
import asyncio, ssl, sys
context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
async def one():
    reader, writer = await asyncio.open_connection("127.0.0.1", int(sys.argv[1]), ssl=context)
    writer.write(b"GET /healthz HTTP/1.1\\r\\nhost: farm\\r\\n\\r\\n")
    assert b" 200 " in await reader.readline()
    writer.close()
async def main():
    await asyncio.gather(*(one() for _ in range(int(sys.argv[2]))))
asyncio.run(main())
"""


def test_a_tls_leader_answers_beside_a_storm_of_handshakes(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    """The leader's own server: its handshakes come in a few a turn, and it still answers."""

    async def main() -> None:
        async with leader_in_process(tmp_path, tls=certificate) as farm:
            context = farm.server.config.ssl
            assert context is not None
            port = farm.url.rsplit(":", 1)[1]
            turns = Turns(asyncio.get_running_loop(), context)
            storm = await asyncio.create_subprocess_exec(
                sys.executable, "-c", STORM_SCRIPT, port, str(20 * PER_TURN)
            )
            async with farm.http() as client:
                assert (await client.get("/healthz")).json()["ok"] is True
            assert await asyncio.wait_for(storm.wait(), DEADLINE) == 0  # every one answered
            turns.running = False
            assert sum(turns.hellos.values()) >= 20 * PER_TURN
            assert max(turns.hellos.values()) <= PER_TURN, turns.hellos

    run("uvloop", main())
