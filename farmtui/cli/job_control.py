"""Commands that change submitted jobs.

The job actions (``pause``, ``cancel``, ...), ``priority``, ``move``, ``chunks``,
``set``, and ``block``/``unblock`` (a node kept off one job).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from farmtui.cli import shared
from farmtui.cli.shared import emit, emit_json
from farmtui.errors import InputError
from farmtui.printable import printable

CONFIRM_ACTIONS = frozenset({"cancel", "delete"})

# ``farm chunks`` lists the chunks it changed when they are no further apart.
SHOWN_CHUNKS_AFTER_ACTION = 1_000


# Actions whose whole effect is a job's state: the same state after says it did nothing.
STATE_ACTIONS = frozenset({"pause", "resume", "hold", "unhold", "cancel"})


def cmd_action(args: argparse.Namespace) -> int:
    from farmtui.tables import job_summary

    action = args.command
    if action in CONFIRM_ACTIONS and not args.yes and not sys.stdin.isatty():
        # Refuse before touching the leader: a script must say --yes.
        raise InputError(f"refusing to {action} without --yes: stdin is not a terminal to ask on")
    with shared.connect(args) as farm:
        jobs = farm.jobs(include_archived=True)
        ids = farm.resolve_jobs(args.jobs, jobs)
        ids = list(dict.fromkeys(ids))
        if action in CONFIRM_ACTIONS and not args.yes:
            names = {job.id: job.name for job in jobs}
            confirm(action, [f"{names.get(i, '?')} ({i})" for i in ids])
        result = farm.action(action, ids)
    if args.json:
        emit_json(result)
    else:
        before = {job.id: job.state for job in jobs}
        for job in result.jobs:
            # Said, not left to the reader to notice (break round 33c: "farm pause" of a
            # done job printed its row as if paused).
            same = action in STATE_ACTIONS and before.get(job.id) == job.state
            emit(job_summary(job) + (f"  ({action} changed nothing)" if same else ""))
        for removed in result.removed:
            emit(f"{removed}  deleted")
    return 0


def confirm(action: str, what: Sequence[str]) -> None:
    """Ask on the terminal; refuse outright when there is no terminal to ask on."""
    count = f"{len(what)} job{'s' if len(what) != 1 else ''}"
    listing = ", ".join(map(printable, what[:5]))
    listing += f" and {len(what) - 5} more" if len(what) > 5 else ""
    sys.stderr.write(f"{action.capitalize()} {count}: {listing}? [y/N] ")
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise InputError(f"not confirmed; did not {action} anything")


def cmd_priority(args: argparse.Namespace) -> int:
    from farmtui.jobfile import read_priority

    priority = read_priority(args.priority)
    with shared.connect(args) as farm:
        job = farm.priority(farm.resolve_job(args.job), priority)
    if args.json:
        emit_json(job)
    else:
        emit(printable(f"{job.id}  {job.name}  priority {job.priority}, position {job.position}"))
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    from farmtui.tables import jobs_table

    with shared.connect(args) as farm:
        jobs = farm.jobs(include_archived=True)
        job_id = farm.resolve_job(args.job, jobs)
        before = farm.resolve_job(args.before, jobs) if args.before else None
        group = farm.move(job_id, where=None if before else args.where, before=before)
    if args.json:
        emit_json(group)
    else:
        emit(jobs_table(group))
    return 0


def cmd_chunks(args: argparse.Namespace) -> int:
    from farmtui.frames import FrameListError, parse_frames
    from farmtui.tables import chunks_table

    chunks: list[int] = []
    for item in args.chunks:
        try:
            chunks.extend(parse_frames(item))
        except FrameListError:
            raise InputError(f"bad chunk number {item!r} (e.g. 3, 1-4, 2,5)") from None
    with shared.connect(args) as farm:
        job_id = farm.resolve_job(args.job)
        detail = farm.chunk_action(job_id, args.action, chunks)
        first, last = min(chunks), max(chunks)
        if not args.json and last - first < SHOWN_CHUNKS_AFTER_ACTION:
            # The chunks acted on, wherever they are in a big job.
            detail = farm.show(job_id, last - first + 1, first - 1 if first else None)
    if args.json:
        emit_json(detail)
    else:
        wanted = set(chunks)
        shown = [c for c in detail.chunks if c.index in wanted]
        emit(chunks_table(shown))
        if len(shown) < len(wanted):
            emit(f"{len(wanted):,} chunks changed; farm show {job_id} --after N shows any of them")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    """Change settings of a submitted job (``PATCH``): merges into its current timeouts."""
    from farmtui import jobfile
    from farmtui.jobfields import FIELDS

    flags = {
        field.key: getattr(args, field.key.replace("-", "_")) for field in FIELDS if field.settable
    }
    given = jobfile.normalize(flags, lambda key: f"--{key}", clearable=True)
    if not given.values:
        raise InputError("nothing to set: give at least one setting (see `farm set --help`)")
    jobfile.build_patch(given)  # each value on its own, before anything is sent
    with shared.connect(args) as farm:
        job_id = farm.resolve_job(args.job)
        # Checked against the job as it is, as the leader will (min <= max ...).
        patch = jobfile.build_patch(given, farm.show(job_id).job.spec)
        job = farm.patch(job_id, patch)
    if args.json:
        emit_json(job)
    else:
        emit(f"{job.id}  {job.name}  updated")
    return 0


def cmd_block(args: argparse.Namespace) -> int:
    from farmtui.tables import job_summary

    with shared.connect(args) as farm:
        job = farm.block_node(farm.resolve_job(args.job), args.node, args.verb == "block")
    if args.json:
        emit_json(job)
    else:
        blocked = ", ".join(sorted(job.blocked_nodes)) or "none"
        emit(f"{job_summary(job)}\nblocked nodes: {printable(blocked)}")
    return 0
