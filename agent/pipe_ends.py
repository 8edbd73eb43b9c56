"""The agent's ends of a forked shim's pipes, read and written straight from the event loop.

Each chunk forked from the zygote (``agent/zygote_client.py``) comes with three new
pipes: control (the agent writes), status and output (the agent reads). asyncio's pipe
transports cost each chunk three turns of the loop before the shim could be asked
(each waits for its ``connection_made``), a reader more on the control pipe (to see
its far end close), and a dozen callbacks: about 50 us a chunk here, a twelfth of
what the agent spends on a chunk of ``/bin/true`` (``bench/agent_alone.py``). These
do what the agent needs of them, from ``loop.add_reader`` and ``os.read``/``os.write``
on the non-blocking descriptors, set up without a turn of the loop.
"""

from __future__ import annotations

import asyncio
import os

# Bytes read at once, as asyncio's pipe transports do.
READ_SIZE = 256 * 1024


class PipeReader:
    """Feeds ``stream`` from the read end ``fd`` until end of file, then closes it.

    The stream's flow control pauses and resumes the reading (its buffer past twice
    its limit); closing it early ends the stream too, as a transport's close does.
    """

    def __init__(self, fd: int, stream: asyncio.StreamReader) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._stream = stream
        self._loop = asyncio.get_running_loop()
        self._closed = False
        self._paused = False
        stream.set_transport(self)  # type: ignore[arg-type]  # pause_reading, resume_reading
        self._loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            data = os.read(self._fd, READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._stream.set_exception(exc)
            self.close()
            return
        if data:
            self._stream.feed_data(data)
        else:
            self.close()

    def pause_reading(self) -> None:
        if not self._closed and not self._paused:
            self._paused = True
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._closed and self._paused:
            self._paused = False
            self._loop.add_reader(self._fd, self._ready)

    def is_closing(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop reading and close the descriptor; the stream ends (if it had not)."""
        if self._closed:
            return
        self._closed = True
        if not self._paused:
            self._loop.remove_reader(self._fd)
        os.close(self._fd)
        if self._stream.exception() is None:
            self._stream.feed_eof()


class PipeWriter:
    """Writes to the write end ``fd``; what the pipe cannot take now waits for room.

    Writes after ``close``, or after the far end went (the shim exited), are dropped,
    as a transport drops them. ``close`` closes at once, whatever is unsent: to a
    shim, the end of its control pipe means the agent is gone, and it kills its tree.
    """

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._loop = asyncio.get_running_loop()
        self._closing = False
        self._unsent = bytearray()

    def is_closing(self) -> bool:
        return self._closing

    def write(self, data: bytes) -> None:
        if self._closing:
            return
        if self._unsent:
            self._unsent += data
            return
        written = self._write(data)
        if written is not None and written < len(data):
            self._unsent += data[written:]
            self._loop.add_writer(self._fd, self._flush)

    def _write(self, data: bytes | bytearray) -> int | None:
        """Bytes written; None when the far end is gone (and this end closed)."""
        try:
            return os.write(self._fd, data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:  # the shim went (EPIPE), or the pipe broke: nobody reads it now
            self.close()
            return None

    def _flush(self) -> None:
        written = self._write(self._unsent)
        if written is None:
            return
        del self._unsent[:written]
        if not self._unsent:
            self._loop.remove_writer(self._fd)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        if self._unsent:
            self._loop.remove_writer(self._fd)
            self._unsent.clear()
        os.close(self._fd)
