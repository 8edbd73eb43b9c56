"""Every message an agent sends fits in a batch, however much its renderer prints.

The leader refuses unread any frame longer than a batch
(``MAX_BATCH_FRAME_BYTES``): one frame of 3.8 MB of short lines took its loop
40 ms to decode on a quiet machine, and a whole second on a loaded one, long
enough for a healthy node's lease to lapse. So what comes in bulk is cut here
into messages that fit in ``MAX_BATCH_BYTES``: output and log lines go in
several messages, frames written in several reports. What cannot be split (a
finished attempt's reason and missing frames, a started chunk's command) is
shortened, and says so.

Sizes are reckoned without encoding in the common case: a character takes at
most 6 bytes of JSON (``\\u001f``), a frame number at most 12 (sign, ten
digits, comma).
"""

from __future__ import annotations

import msgspec

from farmtui.protocol import (
    MAX_BATCH_BYTES,
    AgentLog,
    AgentToLeader,
    ChunkFinished,
    ChunkOutput,
    ChunkRef,
    ChunkStarted,
    FramesWritten,
    KeptStaged,
)
from farmtui.protocol.records import MAX_KEPT_LISTED

# Bytes of bulk (lines, frames, text) a message may carry: the rest of a batch's room
# is for its other fields (type, ids, seq), which are short.
ROOM = MAX_BATCH_BYTES - 4096
CHAR = 6  # the most JSON bytes a character takes
FRAME = 12  # the most JSON bytes a frame number takes, with its comma
ITEM = 3  # a string's quotes and comma
REF = 64  # a ChunkRef's JSON bytes but its job id's


def fit(message: AgentToLeader) -> list[AgentToLeader]:
    """``message`` as one or more messages that each fit in a batch."""
    match message:
        case ChunkOutput() | AgentLog():
            parts = split_lines(message.lines, ROOM)
            if parts[0] is message.lines:  # it fits as it is
                return [message]
            return [msgspec.structs.replace(message, lines=lines) for lines in parts]
        case FramesWritten():
            per = ROOM // FRAME
            if len(message.frames) <= per:
                return [message]
            frames = message.frames
            return [
                msgspec.structs.replace(message, frames=frames[i : i + per])
                for i in range(0, len(frames), per)
            ]
        case ChunkFinished():
            if CHAR * len(message.reason) + FRAME * len(message.missing) <= ROOM:
                return [message]
            # Half the room each: the reason names the missing frames too, at its start.
            kept = (ROOM // 2) // FRAME
            return [
                msgspec.structs.replace(
                    message,
                    reason=shorten(message.reason, ROOM // 2),
                    missing=message.missing[:kept],
                )
            ]
        case KeptStaged():
            return [msgspec.structs.replace(message, kept=page) for page in pages(message.kept)]
        case ChunkStarted():
            command = shorten_command(message.command)
            if command is not message.command:
                return [msgspec.structs.replace(message, command=command)]
    return [message]


def pages(refs: list[ChunkRef]) -> list[list[ChunkRef]]:
    """``refs`` in order, ``MAX_KEPT_LISTED`` at most a page, each page in the room."""
    parts: list[list[ChunkRef]] = [[]]
    size = 0
    for ref in refs:
        cost = REF + CHAR * len(ref.job_id)
        if len(parts[-1]) == MAX_KEPT_LISTED or size + cost > ROOM:
            parts.append([])
            size = 0
        parts[-1].append(ref)
        size += cost
    return parts


def split_lines(lines: list[str], room: int) -> list[list[str]]:
    """``lines`` in order, in groups of at most ``room`` bytes of JSON each (a line
    longer than that alone is shortened); ``[lines]`` itself when they fit."""
    if sum(map(len, lines)) * CHAR + ITEM * len(lines) <= room:
        return [lines]
    parts: list[list[str]] = []
    part: list[str] = []
    size = 0
    for line in lines:
        cost = len(msgspec.json.encode(line)) + 1
        if cost > room:
            line = shorten(line, room)
            cost = len(msgspec.json.encode(line)) + 1
        if part and size + cost > room:
            parts.append(part)
            part, size = [], 0
        part.append(line)
        size += cost
    if part:
        parts.append(part)
    return parts


def shorten(text: str, room: int) -> str:
    """``text`` in at most ``room`` bytes of JSON, saying how much was left out."""
    if CHAR * len(text) <= room:
        return text
    keep = room // CHAR - 64
    return f"{text[:keep]}… ({len(text) - keep:,} more characters)"


def shorten_command(command: list[str]) -> list[str]:
    """A command to show, in at most half a message's room (the leader only logs it)."""
    room = ROOM // 2
    if CHAR * sum(map(len, command)) + ITEM * len(command) <= room:
        return command
    kept: list[str] = []
    size = 0
    for arg in command:
        arg = shorten(arg, room // 4)
        cost = CHAR * len(arg) + ITEM
        if size + cost > room - 256:
            return [*kept, f"… ({len(command) - len(kept):,} more arguments)"]
        kept.append(arg)
        size += cost
    return kept
