"""New connections are let in a few a turn of the loop: a crowd of them never holds it.

With 300 agents connecting at once, the leader read every handshake in one turn
of its event loop and then started every link in the next: turns of 45-100 ms
in which nothing else (``/healthz``, consoles) was answered.
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from server.doorway import PER_TURN, Doorway, doorway
from tests.helpers.leader import InProcessLeader

DEADLINE = 30.0


class Connection:
    def __init__(self, name: int, log: list[tuple[int, int]], turn: list[int]) -> None:
        self.name = name
        self.log = log
        self.turn = turn
        self.closed = False

    def come_in(self) -> None:
        self.log.append((self.turn[0], self.name))

    def gone(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class Faulty(Connection):
    def come_in(self) -> None:
        raise RuntimeError("its first read failed")


async def test_a_crowd_comes_in_a_few_a_turn_in_the_order_it_came() -> None:
    door = Doorway(asyncio.get_running_loop())
    log: list[tuple[int, int]] = []
    turn = [0]
    crowd = [Connection(n, log, turn) for n in range(3 * PER_TURN + 5)]
    now = [c.name for c in crowd if door.enter(c)]
    assert now == list(range(PER_TURN))  # this turn's room, then the line
    crowd[PER_TURN + 1].closed = True  # closed while it waited: skipped
    while door.line:
        turn[0] += 1
        await asyncio.sleep(0)  # one turn of the loop
    let_in = [name for _, name in log]
    assert let_in == [n for n in range(PER_TURN, len(crowd)) if n != PER_TURN + 1]
    per_turn = [sum(1 for t, _ in log if t == k) for k in range(1, turn[0] + 1)]
    assert max(per_turn) <= PER_TURN
    assert door.waited == len(crowd) - PER_TURN


async def test_one_who_comes_after_a_line_waits_behind_it() -> None:
    door = Doorway(asyncio.get_running_loop(), per_turn=2)
    log: list[tuple[int, int]] = []
    turn = [0]
    first = [Connection(n, log, turn) for n in range(3)]
    assert [door.enter(c) for c in first] == [True, True, False]
    await asyncio.sleep(0)  # the next turn lets the third in
    assert [name for _, name in log] == [2]
    assert door.enter(Connection(3, log, turn))  # the line is empty: room again
    late = Connection(4, log, turn)
    assert not door.enter(late)
    await asyncio.sleep(0)
    assert [name for _, name in log] == [2, 4]


async def test_one_that_fails_to_come_in_is_dropped_and_the_line_goes_on() -> None:
    door = Doorway(asyncio.get_running_loop(), per_turn=1)
    log: list[tuple[int, int]] = []
    turn = [0]
    assert door.enter(Connection(0, log, turn))
    faulty = Faulty(1, log, turn)
    rest = [Connection(n, log, turn) for n in (2, 3)]
    assert not any(door.enter(c) for c in [faulty, *rest])
    for _ in range(3):  # one a turn
        await asyncio.sleep(0)
    assert not door.line
    assert faulty.closed
    assert [name for _, name in log] == [2, 3]


async def test_hundreds_of_connections_at_once_are_all_answered(
    leader: InProcessLeader,
) -> None:
    where = urlsplit(leader.url)
    assert where.hostname is not None
    assert where.port is not None
    host, port = where.hostname, where.port

    async def ask(quit_early: bool) -> bytes:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: farm\r\nConnection: close\r\n\r\n")
            await writer.drain()
            if quit_early:  # gone while it may still wait at the door
                return b"gone"
            return await reader.read()
        finally:
            writer.close()

    async with asyncio.timeout(DEADLINE):
        answers = await asyncio.gather(*(ask(n % 10 == 0) for n in range(300)))
    served = [a for a in answers if a != b"gone"]
    assert len(served) == 270
    assert all(a.startswith(b"HTTP/1.1 200 ") for a in served), [a[:80] for a in served[:3]]
    # They came together: some waited at the door rather than all going in one turn.
    assert doorway(asyncio.get_running_loop()).waited > 0
