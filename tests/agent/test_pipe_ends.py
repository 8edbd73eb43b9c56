"""The agent's ends of a forked shim's pipes (``agent.pipe_ends``): nothing a renderer
prints is lost or piles up, and a shim always learns that the agent let go of it."""

from __future__ import annotations

import asyncio
import os
import select

from agent.pipe_ends import READ_SIZE, PipeReader, PipeWriter

LIMIT = 2**16


async def test_a_chatty_renderers_output_arrives_whole_and_in_order_without_piling_up() -> None:
    """Read slower than it is written: the reader stops taking from the pipe while the
    stream holds more than twice its limit, so the writer waits rather than the agent's
    memory growing; every byte still arrives, in order."""
    read_end, write_end = os.pipe()
    stream = asyncio.StreamReader(limit=LIMIT)
    reader = PipeReader(read_end, stream)
    sent = bytes(range(256)) * 8192  # 2 MiB
    writing = asyncio.create_task(asyncio.to_thread(_write_all, write_end, sent))
    received = bytearray()
    most = 0
    while chunk := await stream.read(4096):
        received += chunk
        most = max(most, len(stream._buffer))
        await asyncio.sleep(0)  # a slow consumer: the writer gets ahead
    await writing
    assert bytes(received) == sent
    assert most <= 2 * LIMIT + READ_SIZE, f"{most} bytes held at once"
    assert reader.is_closing(), "closed at end of file"


def _write_all(fd: int, data: bytes) -> None:
    with open(fd, "wb") as pipe:
        pipe.write(data)


async def test_control_lines_wait_for_room_in_a_full_pipe_and_arrive_in_order() -> None:
    """A shim that does not read its control pipe for a while (stopped, busy) fills it:
    the lines the agent writes meanwhile wait, and arrive whole once it reads again."""
    read_end, write_end = os.pipe()
    writer = PipeWriter(write_end)
    lines = [f"lease {n}.5\n".encode() for n in range(20_000)]  # more than a pipe holds
    for line in lines:
        writer.write(line)
    received = bytearray()
    while len(received) < sum(map(len, lines)):
        if select.select([read_end], [], [], 0)[0]:
            received += os.read(read_end, 65536)
        await asyncio.sleep(0)  # the loop writes what waited as room comes
    assert bytes(received) == b"".join(lines)
    writer.close()
    assert os.read(read_end, 10) == b"", "then end of file"
    os.close(read_end)


async def test_closing_the_control_pipe_is_end_of_file_to_the_shim_at_once() -> None:
    """Even with lines unsent (its pipe full): the shim must learn that the agent let go
    (it kills its tree), not wait for lines nobody will write."""
    read_end, write_end = os.pipe()
    writer = PipeWriter(write_end)
    writer.write(b"x" * (4 * 65536))  # more than the pipe holds: some waits
    writer.close()
    assert writer.is_closing()
    received = b""
    while chunk := os.read(read_end, 65536):
        received += chunk
    assert 0 < len(received) < 4 * 65536, "what the pipe held, then end of file"
    os.close(read_end)


async def test_writing_to_a_shim_that_is_gone_is_dropped_quietly() -> None:
    read_end, write_end = os.pipe()
    writer = PipeWriter(write_end)
    os.close(read_end)  # the shim exited
    writer.write(b"kill 0.5\n")
    assert writer.is_closing(), "a closed pipe takes nothing more"
    writer.write(b"lease 9.0\n")  # and says nothing


async def test_a_reader_closed_early_ends_its_stream() -> None:
    """A chunk given up before its shim spoke: whoever reads its status sees the end."""
    read_end, write_end = os.pipe()
    stream = asyncio.StreamReader(limit=LIMIT)
    reader = PipeReader(read_end, stream)
    waiting = asyncio.create_task(stream.readline())
    await asyncio.sleep(0)
    reader.close()
    assert await asyncio.wait_for(waiting, 5.0) == b""
    os.close(write_end)
