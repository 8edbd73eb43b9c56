"""A request's head (request line and headers) is bounded: an endless one is refused.

httptools parses the leader's HTTP (it reads requests several times faster than
h11), but uvicorn gives it no limit; a client sending one endless header held a
core and hundreds of MB, and every other request waited.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

import httpx

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
