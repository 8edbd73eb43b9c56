"""The agent's ends of a forked shim's pipes (``agent.pipe_ends``): nothing a renderer
prints is lost or piles up, and a shim always learns that the agent let go of it."""

from __future__ import annotations

import asyncio
import os
import select
import time
from collections.abc import Callable
from typing import Any

from agent.pipe_ends import READ_SIZE, PipeReader, PipeWriter
from farmtui.protocol import AssignChunk
from tests.agent.conftest import poll_until

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
    deadline = time.monotonic() + 10.0
    while len(received) < sum(map(len, lines)) and time.monotonic() < deadline:
        if select.select([read_end], [], [], 0)[0]:
            received += os.read(read_end, 65536)
        await asyncio.sleep(0)  # a turn of the loop: it writes what waited as room comes
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


async def test_an_output_pipe_held_open_outside_the_renderers_tree_is_let_go(
    farm: Any, demo_chunk: Callable[..., AssignChunk], python: str
) -> None:
    """Something outside the render's tree (here: this test) holds its output pipe open
    after the renderer exited. The chunk ends (5 s later, as before) and the agent lets
    go of the pipe: a write there is told so (EPIPE) rather than blocking for good once
    the pipe is full, the agent holding a descriptor for each such chunk (break round
    32b: its reader, paused on a full buffer, never saw the end)."""
    # Says its pid, then waits for this test to hold its output before it exits.
    script = "import os, time; print('PID', os.getpid(), flush=True); time.sleep(1.0)"
    assign = demo_chunk([1], argv=[python, "-c", script], renderer="generic", staging=False)
    farm.supervisor.assign(assign)
    said = await poll_until(
        lambda: [line for line in farm.recorder.output() if line.startswith("PID ")],
        within=20.0,
        what="the renderer's pid",
    )
    pid = int(said[0].split()[1])
    writer = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY | os.O_NONBLOCK)  # the same pipe
    try:
        await farm.finish(within=30.0)
        block = b"x" * 65536
        written = 0
        try:
            for _ in range(64):  # 4 MiB: more than a reader would hold before pausing
                written += os.write(writer, block)
        except BrokenPipeError:
            pass
        except BlockingIOError:
            raise AssertionError(f"the pipe is held full ({written} bytes taken)") from None
        else:
            raise AssertionError(f"{written} bytes taken after the chunk ended")
    finally:
        os.close(writer)
