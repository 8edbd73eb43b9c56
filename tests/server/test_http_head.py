"""A request's head (request line and headers) is bounded: an endless one is refused.

httptools parses the leader's HTTP (it reads requests several times faster than
h11), but uvicorn gives it no limit; a client sending one endless header held a
core and hundreds of MB, and every other request waited.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx
import pytest

from server import http_head
from server.http_head import MAX_HEAD
from tests.helpers.leader import InProcessLeader

DEADLINE = 20.0


async def _open(leader: InProcessLeader) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    where = urlsplit(leader.url)
    assert where.hostname is not None
    assert where.port is not None
    return await asyncio.open_connection(where.hostname, where.port)


async def test_an_endless_header_is_refused_431_and_others_are_served(
    leader: InProcessLeader,
) -> None:
    reader, writer = await _open(leader)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: farm\r\nX-Big: ")
    block = b"a" * 16384
    answer = b""
    sent = 0
    try:
        async with asyncio.timeout(DEADLINE):
            # Sent until the leader answers and closes; never more than 4x the bound.
            while not reader.at_eof() and sent < 4 * MAX_HEAD:
                writer.write(block)
                sent += len(block)
                await writer.drain()
                try:
                    answer += await asyncio.wait_for(reader.read(65536), 0.05)
                except TimeoutError:
                    continue
            answer += await reader.read()
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert sent <= 2 * MAX_HEAD, f"the leader read {sent} bytes of one head"
    async with httpx.AsyncClient(base_url=leader.url, timeout=DEADLINE) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_heads_within_the_bound_are_served_one_after_another(
    leader: InProcessLeader,
) -> None:
    """A big but honest head is served, and so is the next request on the connection."""
    reader, writer = await _open(leader)
    big = b"X-Note: " + b"n" * (MAX_HEAD // 2) + b"\r\n"
    request = b"GET /healthz HTTP/1.1\r\nHost: farm\r\n" + big + b"\r\n"
    writer.write(request + request)
    await writer.drain()
    answers = b""
    async with asyncio.timeout(DEADLINE):
        while answers.count(b"HTTP/1.1 200 ") < 2:
            data = await reader.read(65536)
            assert data, f"closed after {answers[:300]!r}"
            answers += data
    writer.close()


async def test_requests_sent_far_ahead_of_their_answers_close_the_connection(
    leader: InProcessLeader,
) -> None:
    """Pipelined requests queue their scope and cycle until answered: 52 MB of tiny ones,
    their answers never read, held 3.4 GB of the leader's memory."""
    from server.http_head import MAX_PIPELINED

    reader, writer = await _open(leader)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: farm\r\n\r\n" * (4 * MAX_PIPELINED))
    await writer.drain()
    answers = b""
    async with asyncio.timeout(DEADLINE):
        while data := await reader.read(65536):
            answers += data
    writer.close()
    assert answers.count(b"HTTP/1.1 200 ") <= MAX_PIPELINED + 1
    assert b"HTTP/1.1 400 " in answers or b"HTTP/1.1 431 " in answers
    async with httpx.AsyncClient(base_url=leader.url, timeout=DEADLINE) as http:
        assert (await http.get("/healthz")).status_code == 200


async def test_a_request_that_goes_on_after_its_answer_is_cut_off(
    leader: InProcessLeader,
) -> None:
    """Refused without a token, an upload's endless trailers were read on (100 MB: 19 s
    of CPU; many small ones: 827 MB of memory). Past a MiB after the answer, closed."""
    from server.http_head import MAX_UNWANTED

    reader, writer = await _open(leader)
    writer.write(
        b"POST /api/jobs HTTP/1.1\r\nHost: farm\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\n{}\r\n0\r\n"  # the body ends; trailers follow, without end
    )
    sent = 0
    answer = b""
    try:
        async with asyncio.timeout(DEADLINE):
            while not reader.at_eof() and sent < 8 * MAX_UNWANTED:
                writer.write(b"X-T: a\r\n" * 2048)
                sent += 8 * 2048
                await writer.drain()
                try:
                    answer += await asyncio.wait_for(reader.read(65536), 0.01)
                except TimeoutError:
                    continue
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 401 "), answer[:200]
    assert sent < 4 * MAX_UNWANTED, f"the leader read {sent} bytes after answering"


async def test_a_connection_that_never_speaks_is_closed(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    # uvicorn times a connection out only after an answer: a silent one was held for ever.
    monkeypatch.setattr(http_head, "FIRST_BYTES_WITHIN", 0.3)
    silent_reader, silent = await _open(leader)
    talking_reader, talking = await _open(leader)
    talking.write(b"GET /healthz HTTP/1.1\r\nHost: farm\r\n\r\n")
    try:
        async with asyncio.timeout(DEADLINE):
            assert await silent_reader.read() == b""  # closed by the leader
            # One that spoke keeps its connection past that (uvicorn's keep-alive is 5 s).
            for _ in range(2):
                assert (await talking_reader.readline()).startswith(b"HTTP/1.1 200 ")
                await talking_reader.readuntil(b"}")  # the rest of the answer
                talking.write(b"GET /healthz HTTP/1.1\r\nHost: farm\r\n\r\n")
    finally:
        silent.close()
        talking.close()
