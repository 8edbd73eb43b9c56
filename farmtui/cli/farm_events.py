"""``farm events``: the farm's latest events (the console's Monitor Log), or each new one.

Every job's events and the nodes' (connected, lost, blocked), as ``GET /api/events``
gives them: the lines a wrangler reads to see what the farm did, in a script or a
terminal with no console.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from farmtui.cli import shared
from farmtui.cli.shared import emit_json
from farmtui.printable import printable
from farmtui.protocol import EventView, Level

if TYPE_CHECKING:
    from farmtui.client import FarmClient

# ``--level warn``: the levels shown, the one named and those above it.
LEVELS: tuple[Level, ...] = ("info", "warn", "error")
# How long ``--follow`` waits for a leader that stopped answering (a restart, a failover).
FOLLOW_OUTAGE = 300.0
# The latest events ``--follow`` reads each time: more than came since the last read,
# unless the farm makes over this many an ``--interval`` (it says so then).
FOLLOW_BATCH = 1000

Key = tuple[float, str, str, str | None, str | None]
Filter = Callable[[Sequence[EventView]], list[EventView]]


def cmd_events(args: argparse.Namespace) -> int:
    with shared.connect(args) as farm:
        job_id = None if args.job is None else farm.resolve_job(args.job)
        wanted = frozenset(LEVELS[LEVELS.index(args.level) :])

        def kept(events: Sequence[EventView]) -> list[EventView]:
            return [e for e in events if e.level in wanted and job_id in (None, e.job_id)]

        if not args.follow:
            events = kept(farm.farm_events(args.limit))
            if args.json:
                emit_json(events)
            else:
                for event in events:
                    _print(event)
            return 0
        return _follow(farm, args.limit, kept, interval=args.interval, as_json=args.json)


def _follow(
    farm: FarmClient,
    limit: int,
    kept: Filter,
    *,
    interval: float,
    as_json: bool,
) -> int:
    """The latest ``limit`` events, then each new one as it comes, until Ctrl-C.

    A leader that stops answering is waited for (``FOLLOW_OUTAGE``). An event is new
    when it is later than the last one shown, or as late and not shown: the leader
    keeps its events in the order they happened, and gives the latest ones.
    """
    from farmtui.errors import LeaderDown

    latest, seen = -1.0, set[Key]()
    first = True
    away: float | None = None
    while True:
        try:
            batch = farm.farm_events(limit if first else FOLLOW_BATCH)
        except LeaderDown as exc:
            now = time.monotonic()
            if away is None:
                away = now
                sys.stderr.write(f"farm events: {printable(str(exc))}; still following\n")
            elif now - away > FOLLOW_OUTAGE:
                raise
            time.sleep(interval)
            continue
        away = None
        fresh = [e for e in batch if e.time > latest or (e.time == latest and _key(e) not in seen)]
        if not first and len(fresh) == len(batch) == FOLLOW_BATCH:
            sys.stderr.write(
                f"farm events: more than {FOLLOW_BATCH} events came within {interval:g} s; "
                "the earliest of them are not shown\n"
            )
        first = False
        if fresh:
            latest = max(latest, max(e.time for e in fresh))
            seen = {_key(e) for e in batch if e.time == latest}
        for event in kept(fresh):
            if as_json:
                emit_json(event)
            else:
                _print(event)
        time.sleep(interval)


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
