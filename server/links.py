"""What both WebSocket links share: a non-blocking send queue and message receipt.

A link's ``send`` never awaits: it queues the encoded message and a writer
task drains the queue, so one slow peer never holds up the event loop or the
other peers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque

import msgspec
from starlette.websockets import WebSocket, WebSocketDisconnect

from farmtui.protocol import (
    MAX_BATCH_BYTES,
    MAX_BATCH_MESSAGES,
    Ack,
    LeaseRenewed,
    encode,
    encode_batch,
)
from server.turns import Account, turns

log = logging.getLogger("farmtui.leader.links")


class SendQueue:
    """Messages for one peer, written in order by one task."""

    def __init__(
        self,
        websocket: WebSocket,
        label: str,
        limit: int,
        *,
        batches: bool = False,
        held: bool = False,
        reads: Account | None = None,
    ) -> None:
        self.websocket = websocket
        self.label = label
        self.limit = limit
        # The peer reads batches: what is queued when the writer wakes goes in one frame.
        self.batches = batches
        self.queue: deque[bytes] = deque()
        # The highest sequence number to acknowledge, and the highest sent (``ack``).
        self._ack = 0
        self._ack_sent = 0
        # The same for the highest heartbeat answered (``renew``).
        self._beat = 0
        self._beat_sent = 0
        # The last frame was an Ack or a renewal alone: a message queued goes next.
        self._owed_last = False
        self._ready = asyncio.Event()
        # Nothing is written until ``open`` puts the first message ahead of what is queued.
        self._held = held
        self.closed = False
        self.overflowed = False
        loop = asyncio.get_running_loop()
        self._turns = turns(loop)
        # The link's writes' use of the loop (``server.turns``; its reads have their own,
        # ``reads``, whose line the writes share while the reads are costly).
        self.account = Account()
        self.reads = reads
        # Done once the first message is written, or the link is gone (``first_written``).
        self._first: asyncio.Future[None] = loop.create_future()
        self.task = loop.create_task(self._write())

    def send(self, message: msgspec.Struct) -> bool:
        """Queue a message; False if the link is closed or hopelessly behind."""
        if self.closed:
            return False
        if len(self.queue) >= self.limit:
            log.warning("%s is %d messages behind; closing it", self.label, len(self.queue))
            self.overflowed = True
            self.close()
            return False
        self.queue.append(encode(message))
        self._ready.set()
        return True

    def open(self, first: msgspec.Struct) -> bool:
        """Write ``first``, then what was queued while the queue was held."""
        if self.closed:
            return False
        self.queue.appendleft(encode(first))
        self._held = False
        self._ready.set()
        return True

    def ack(self, seq: int) -> bool:
        """Acknowledge everything up to ``seq`` (committed), in the next frame.

        Acks are cumulative, so a peer gets one ``Ack`` per frame, for the
        highest number committed by then, however many of its messages that
        frame acknowledges (one a message was a third of what the leader
        encoded and sent per chunk). A peer that does not read batches gets it
        as a frame of its own. (One an Ack a message, a link sending frames of a
        thousand numbered messages had ten thousand queued and was closed as
        too far behind.)
        """
        if self.closed:
            return False
        if seq > self._ack:
            self._ack = seq
            self._ready.set()
        return True

    def renew(self, beat: int) -> bool:
        """Renew the peer's lease up to heartbeat ``beat`` (``LeaseRenewed``), in the next frame.

        Cumulative like ``ack``: the agent's lease runs from the latest heartbeat
        answered, and the ones before it add nothing. (One a heartbeat, a peer
        that does not read batches and sent a thousand heartbeats a frame had ten
        thousand queued and was closed as too far behind.)
        """
        if self.closed:
            return False
        if beat > self._beat:
            self._beat = beat
            self._ready.set()
        return True

    def close(self) -> None:
        """Stop after what is queued (or at once when overflowed)."""
        if not self.closed:
            self.closed = True
            self._ready.set()

    @property
    def backlog(self) -> int:
        return len(self.queue)

    async def _write(self) -> None:
        sent = 0
        granted = False  # this frame's place in the turn is won: never queue again for it
        try:
            while True:
                owing = sent > 0 and self._owing()
                if self._held or (not self.queue and not owing):
                    if self.closed:  # held: never opened, nothing of it may go out
                        break
                    granted = False
                    self._ready.clear()
                    await self._ready.wait()
                    continue
                if self.overflowed:
                    break
                if not granted and self._turns.full():
                    await self._turns.share(self.account, self.reads)
                    granted = True
                    continue  # what is queued may have changed meanwhile
                granted = False
                began = time.thread_time()
                # The first message (Welcome) goes alone: the peer reads it before it
                # knows whether this leader speaks batches.
                if self.batches and sent:
                    frame = self._batch()
                elif owing and not (self.queue and self._owed_last):
                    frame = self._due()
                    self._owed_last = True
                else:
                    frame = self.queue.popleft()
                    self._owed_last = False
                text = frame.decode()
                # Charged what it took up to the send, not the send: awaited, that may
                # wait for the peer's socket, and other tasks' time with it.
                self._turns.charge(self.account, time.thread_time() - began, self.reads)
                await self.websocket.send_text(text)
                sent += 1
                if not self._first.done():
                    self._first.set_result(None)
        except (WebSocketDisconnect, OSError, RuntimeError) as exc:
            log.debug("%s: send failed: %s", self.label, exc)
        finally:
            self.closed = True
            if not self._first.done():
                self._first.set_result(None)
            if self.overflowed:
                await close_websocket(self.websocket, 1008, "too far behind")

    def _batch(self) -> bytes:
        """What is queued, up to a batch's limits, as one frame."""
        queue = self.queue
        batch: list[bytes] = []
        size = 0
        # First: everything acknowledged was committed before anything queued here was sent.
        while self._owing():
            batch.append(self._due())
            size += len(batch[-1]) + 1
        while (
            queue
            and len(batch) < MAX_BATCH_MESSAGES
            and (not batch or size + len(queue[0]) < MAX_BATCH_BYTES)
        ):
            size += len(queue[0]) + 1
            batch.append(queue.popleft())
        return encode_batch(batch)

    def _owing(self) -> bool:
        """Whether an Ack or a renewal is due (``ack``, ``renew``)."""
        return self._ack > self._ack_sent or self._beat > self._beat_sent

    def _due(self) -> bytes:
        """The Ack due, else the renewal due, encoded, and counted as sent."""
        if self._ack > self._ack_sent:
            self._ack_sent = self._ack
            return encode(Ack(seq=self._ack))
        self._beat_sent = self._beat
        return encode(LeaseRenewed(beat=self._beat))

    async def first_written(self) -> None:
        """Until the first message is written (``open``'s), or the link is gone."""
        await asyncio.shield(self._first)

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
