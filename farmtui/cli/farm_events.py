"""``farm events``: the farm's latest events (the console's Monitor Log), or each new one.

Every job's events and the nodes' (connected, lost, blocked), as ``GET /api/events``
gives them: the lines a wrangler reads to see what the farm did, in a script or a
terminal with no console.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from datetime import datetime

from farmtui.cli import shared
from farmtui.cli.shared import emit_json
from farmtui.errors import LeaderDown, LeaderError
from farmtui.printable import printable
from farmtui.protocol import EventView

# The latest events ``--follow`` reads each time: more than came since the last read,
# unless the farm makes over this many an ``--interval`` (it says so then).
FOLLOW_BATCH = 1000

Key = tuple[float, str, str, str | None, str | None]


def cmd_events(args: argparse.Namespace) -> int:
    with shared.connect(args) as farm:
        job_id = None if args.job is None else farm.resolve_job(args.job)

        def read(limit: int) -> list[EventView]:
            return farm.farm_events(limit, job_id, args.level)

        if not args.follow:
            events = read(args.limit)
            if args.json:
                emit_json(events)
            else:
                for event in events:
                    _print(event)
            return 0
        return _follow(read, args.limit, interval=args.interval, as_json=args.json)


def _follow(
    read: Callable[[int], list[EventView]], limit: int, *, interval: float, as_json: bool
) -> int:
    """The latest ``limit`` events, then each new one as it comes, until Ctrl-C.

    A leader that stops answering is waited for (``shared.FOLLOW_OUTAGE``), and one that
    answers for a moment that it is not serving (a proxy's 502, a standby's 503 during
    a failover). An event is new when it is later than the last one read, or as late
    and not read: the leader keeps its events in the order they happened, and gives
    the latest ones. Every read is ``FOLLOW_BATCH`` long, the first too: read only
    ``limit`` long, it left older events of the same moment to look new the next time.
    """
    latest, seen = -math.inf, set[Key]()
    first = True
    outage = shared.Outage("farm events")
    while True:
        try:
            batch = read(max(limit, FOLLOW_BATCH))
        except (LeaderDown, LeaderError) as exc:
            if not _passing(exc):
                raise
            outage.wait(exc, interval)
            continue
        outage.over()
        fresh = [e for e in batch if e.time > latest or (e.time == latest and _key(e) not in seen)]
        if not first and len(fresh) == len(batch) == FOLLOW_BATCH:
            sys.stderr.write(
                f"farm events: more than {FOLLOW_BATCH} events came within {interval:g} s; "
                "the earliest of them are not shown\n"
            )
        if fresh:
            latest = max(latest, max(e.time for e in fresh))
            seen = {_key(e) for e in batch if e.time == latest}
        for event in fresh[-limit:] if first else fresh:
            if as_json:
                emit_json(event)
            else:
                _print(event)
        first = False
        time.sleep(interval)


def _passing(exc: LeaderDown | LeaderError) -> bool:
    """Whether ``exc`` says the leader is away for a moment: unreachable, or a proxy or
    a standby in front of it answering for it (502, 503, 504) while it restarts."""
    return isinstance(exc, LeaderDown) or exc.status in (502, 503, 504)


def _key(event: EventView) -> Key:
    return (event.time, event.level, event.text, event.job_id, event.actor)


def _print(event: EventView) -> None:
    """``2026-12-08 01:10:11 WARN  j-3f2a alice: text``, user text as plain text."""
    try:
        when = datetime.fromtimestamp(event.time).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        when = f"{event.time!r} (not a date)"
    text = " ".join(event.text.splitlines())
    line = (
        f"{when} {event.level.upper():<5} {event.job_id or '-'} {event.actor or 'leader'}: {text}"
    )
    sys.stdout.write(printable(line) + "\n")
    sys.stdout.flush()
