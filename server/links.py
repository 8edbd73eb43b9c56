"""What both WebSocket links share: a non-blocking send queue and message receipt.

A link's ``send`` never awaits: it queues the encoded message and a writer
task drains the queue, so one slow peer never holds up the event loop or the
other peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from farmtui.protocol import encode

log = logging.getLogger("farmtui.leader.links")


class SendQueue:
    """Messages for one peer, written in order by one task."""

    def __init__(self, websocket: WebSocket, label: str, limit: int) -> None:
        self.websocket = websocket
        self.label = label
        self.limit = limit
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.closed = False
        self.overflowed = False
        self.task = asyncio.get_running_loop().create_task(self._write())

    def send(self, message: msgspec.Struct) -> bool:
        """Queue a message; False if the link is closed or hopelessly behind."""
        if self.closed:
            return False
        if self.queue.qsize() >= self.limit:
            log.warning("%s is %d messages behind; closing it", self.label, self.queue.qsize())
            self.overflowed = True
            self.close()
            return False
        self.queue.put_nowait(encode(message))
        return True

    def close(self) -> None:
        """Stop after what is queued (or at once when overflowed)."""
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)

    @property
    def backlog(self) -> int:
        return self.queue.qsize()

    async def _write(self) -> None:
        try:
            while True:
                data = await self.queue.get()
                if data is None or self.overflowed:
                    break
                await self.websocket.send_text(data.decode())
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            log.debug("%s: send failed: %s", self.label, exc)
        finally:
            self.closed = True
            if self.overflowed:
                await close_websocket(self.websocket, 1008, "too far behind")

    async def drain(self) -> None:
        """Close and wait until everything queued has been written (or failed)."""
        self.close()
        await asyncio.gather(self.task, return_exceptions=True)


async def receive_data(websocket: WebSocket) -> str | bytes | None:
    """The next message's payload, or None when the peer is gone."""
    try:
        message = await websocket.receive()
    except (WebSocketDisconnect, RuntimeError):
        return None
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    if text is not None:
        return str(text)
    data = message.get("bytes")
    return bytes(data) if data is not None else b""


async def close_websocket(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(WebSocketDisconnect, OSError, RuntimeError):
        await websocket.close(code, reason[:120])
