"""The limits of a job's fields and of what a node reports, each written once.

The annotated types here carry their limits (``msgspec.Meta``); ``JobSpec``,
``Timeouts``, ``JobPatch`` and the agents' messages use them, and
``farmtui.jobfields`` quotes them in its errors.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from farmtui.printable import CONTROL_CHARACTERS

# One definition each, used by JobSpec, Timeouts and JobPatch alike.

MAX_NAME_LENGTH = 200
# Longest duration a job may set (a year): keeps infinities out of the records.
MAX_SECONDS = 365 * 86400.0

# Printable text of at most MAX_NAME_LENGTH characters.
JobName = Annotated[
    str, msgspec.Meta(max_length=MAX_NAME_LENGTH, pattern=f"^[^{CONTROL_CHARACTERS}]*\\Z")
]
RendererName = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\Z")
]
Priority = Annotated[int, msgspec.Meta(ge=0, le=100)]
# A job's priority when its submitter names none (lower renders sooner).
DEFAULT_PRIORITY = 50
# A chunk of more frames than a job may have is a typo (the job's limit, farmtui.frames).
ChunkSize = Annotated[int, msgspec.Meta(ge=1, le=1_000_000)]
# Retries, machine limits: bounded, so that a typo cannot store an absurd number.
Count = Annotated[int, msgspec.Meta(ge=0, le=1_000_000)]
# A duration in seconds; 0 is allowed here, farmtui.jobfields says where it means nothing.
Seconds = Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)]
# A node's wall clock as it reports a render's times (0: not known). Bounded so that what
# the leader writes from it (a chunk log's times, render times) is a date: 2100-01-01.
MAX_TIMESTAMP = 4_102_444_800.0
Timestamp = Annotated[float, msgspec.Meta(ge=0, le=MAX_TIMESTAMP)]
Percent = Annotated[float, msgspec.Meta(gt=0, le=100)]
# How many records a history read (failures, events) may ask for at once.
MAX_HISTORY = 5000
HistoryLimit = Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY)]
Multiplier = Annotated[float, msgspec.Meta(gt=0, le=1000)]
NonEmptyText = Annotated[str, msgspec.Meta(min_length=1)]
# A word of a command or an environment value: the system cannot pass a NUL byte on,
# so every attempt would fail on every node ("embedded null byte"); nor one over 128 KiB
# (Linux's MAX_ARG_STRLEN: "Argument list too long"), up to four bytes a character.
MAX_PROCESS_TEXT = 131_071 // 4
ProcessText = Annotated[str, msgspec.Meta(pattern=r"^[^\x00]*\Z", max_length=MAX_PROCESS_TEXT)]
# A command as an argv list: never empty.
Command = Annotated[list[ProcessText], msgspec.Meta(min_length=1)]
EnvName = Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[^=\x00]+\Z")]
# Tags (pools) and version strings: short printable text, shown by every front end.
Label = Annotated[
    str, msgspec.Meta(min_length=1, max_length=64, pattern=f"^[^{CONTROL_CHARACTERS}]+\\Z")
]
# A job's pool or a node's tags: a handful; thousands are a script gone wrong.
MAX_TAGS = 64
Tags = Annotated[list[Label], msgspec.Meta(max_length=MAX_TAGS)]
Version = Annotated[str, msgspec.Meta(max_length=64, pattern=f"^[^{CONTROL_CHARACTERS}]*\\Z")]
# The names of the argv tokens an agent knows (``farmtui.renderers.TOKENS``).
TokenNames = Annotated[
    list[Annotated[str, msgspec.Meta(max_length=32, pattern=r"^[A-Za-z_][A-Za-z0-9_]*\Z")]],
    msgspec.Meta(max_length=64),
]
# Who owns a job: a token's name (the leader's token-name rule is this pattern).
USER_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"
UserName = Annotated[str, msgspec.Meta(pattern=f"^{USER_NAME_PATTERN}\\Z")]
# A node's name, and so the name of its agent token: printable, no spaces. The agent
# checks its own before it says anything with it; the leader refuses a hello without.
NODE_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
# A farm-wide limit's name (a licence: "nuke", "houdini-engine"): a word, as typed in job files.
LIMIT_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}"
LimitName = Annotated[str, msgspec.Meta(pattern=f"^{LIMIT_NAME_PATTERN}\\Z")]
# GPUs a chunk asks for: more than any machine holds is a typo.
MAX_GPUS = 64
# Chunks an agent runs at once (``--slots``; 0: a node that takes none) and may
# hold ahead of them (``--prefetch``). A bound keeps one hello from taking the queue.
MAX_SLOTS = 256
SlotCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_SLOTS)]
MAX_PREFETCH = 64


def default_prefetch(slots: int) -> int:
    """An agent's ``--prefetch`` when none is given: one chunk a slot.

    Deeper helps a node of chunks of milliseconds (2 slots ran 2,000 × /bin/true at
    about 600 a second with 2 ahead, 680-790 with 32; the leader fills past one a
    slot only for chunks under a second, ``server.prefetch.ahead_a_slot``), but 300
    agents holding 64 each made the leader's loop lag past 50 ms (bench/README.md).
    """
    return min(slots, MAX_PREFETCH)


# GPUs a node may list, numbered 0 .. MAX_NODE_GPUS - 1.
MAX_NODE_GPUS = 1024
GpuCount = Annotated[int, msgspec.Meta(ge=0, le=MAX_GPUS)]
# GPU memory in MiB (what nvidia-smi reports): up to 16 TiB.
MebiBytes = Annotated[int, msgspec.Meta(ge=0, le=16 * 1024 * 1024)]
# How far a frame dependency reaches: frame N waits for upstream frames N+start .. N+end,
# at most MAX_FRAME_WINDOW + 1 of them (a temporal filter reads a few neighbours; the
# checks of a chunk grow with its window).
MAX_FRAME_OFFSET = 10_000
MAX_FRAME_WINDOW = 100
FrameOffset = Annotated[int, msgspec.Meta(ge=-MAX_FRAME_OFFSET, le=MAX_FRAME_OFFSET)]
# A job names a handful of limits; a typo or a script gone wrong is refused.
MAX_LIMITS = 32
