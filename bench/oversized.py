"""What the largest bodies and hellos cost the leader's loop to refuse, side by side.

Each case is a body or hello near the megabyte the leader reads (``max_request_bytes``,
``MAX_FRAME_READ_BYTES``) whose list is over its limit. Timed in one process,
alternating, medians of ``--runs``: msgspec's typed decode alone (what the leader
did before ``over_long_list``), and what it does now (the lists counted first, their
items unread, and the typed decode only for what passes). Also a body that passes, so the cost of
the look is seen where it buys nothing.

    python bench/oversized.py [--runs 7]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import msgspec

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from farmtui.protocol import (  # noqa: E402 (the repository root first)
    LOOK_OVER_BYTES,
    MAX_FRAME_READ_BYTES,
    AgentHello,
    GpuInfo,
    JobSpec,
    ProtocolError,
    agent_to_leader,
    decode_checked,
    encode,
    over_long_list,
)

MEGABYTE = 1024 * 1024


def _fill(item: bytes, room: int) -> list[bytes]:
    return [item] * (room // (len(item) + 1))


def cases() -> dict[str, tuple[bytes, type[msgspec.Struct]]]:
    spec = b'"name":"x","frames":"1","argv":["true"]'
    hello = encode(AgentHello(name="n1", slots=1))[:-1]
    room = MAX_FRAME_READ_BYTES - len(hello) - 20
    return {
        "POST /api/jobs, one-letter tags": (
            b'{"tags":[' + b",".join(_fill(b'"t"', MEGABYTE - 60)) + b"]," + spec + b"}",
            JobSpec,
        ),
        "POST /api/jobs, the tags twice, the long list first": (
            b'{"tags":[' + b",".join(_fill(b'"t"', MEGABYTE - 70)) + b'],"tags":[],' + spec + b"}",
            JobSpec,
        ),
        "POST /api/jobs, a 250,000-item argv (passes)": (
            b'{"name":"x","frames":"1","argv":[' + b",".join(_fill(b'"a"', MEGABYTE - 60)) + b"]}",
            JobSpec,
        ),
        "hello, one-letter tags": (
            hello + b',"tags":[' + b",".join(_fill(b'"t"', room)) + b"]}",
            AgentHello,
        ),
        "hello, GPUs named g": (
            hello
            + b',"gpus":['
            + b",".join(_fill(encode(GpuInfo(index=0, name="g")), room))
            + b"]}",
            AgentHello,
        ),
    }


def old_way(data: bytes, kind: type[msgspec.Struct]) -> None:
    try:
        if kind is AgentHello:
            decode_checked(agent_to_leader, data)
        else:
            msgspec.json.decode(data, type=kind)
    except (msgspec.ValidationError, ProtocolError):
        pass


def new_way(data: bytes, kind: type[msgspec.Struct]) -> None:
    if len(data) > LOOK_OVER_BYTES and over_long_list(data, kind) is not None:
        return
    old_way(data, kind)


def timed(run: Callable[[], None]) -> float:
    began = time.perf_counter()
    run()
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    print("| case | bytes | typed decode alone | counted first | ratio |")
    print("|---|---|---|---|---|")
    for name, (data, kind) in cases().items():
        old: list[float] = []
        new: list[float] = []
        for _ in range(args.runs):
            old.append(timed(functools.partial(old_way, data, kind)))
            new.append(timed(functools.partial(new_way, data, kind)))
        before, after = statistics.median(old), statistics.median(new)
        print(
            f"| {name} | {len(data):,} | {1e3 * before:.1f} ms | {1e3 * after:.1f} ms "
            f"| {after / before:.2f} |"
        )


if __name__ == "__main__":
    main()
