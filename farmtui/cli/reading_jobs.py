"""Commands that read jobs: ``jobs``, ``show``, ``logs`` (and ``--follow``), ``failures``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from farmtui.cli import shared
from farmtui.cli.shared import emit, emit_json
from farmtui.errors import InputError, NotFound
from farmtui.printable import printable

if TYPE_CHECKING:
    from farmtui.client import FarmClient
    from farmtui.protocol import JobDetail

# Chunks ``farm show`` lists unless told (a million-chunk job is summed up by its frames).
SHOWN_CHUNKS = 50


def cmd_jobs(args: argparse.Namespace) -> int:
    from farmtui.tables import jobs_table

    with shared.connect(args) as farm:
        try:
            jobs = farm.jobs(include_archived=args.all, limit=args.limit, after=args.after)
        except NotFound:
            if args.after is None:
                raise
            # ``--after`` by name or id prefix, as every other command takes a job:
            # looked up (a listing of every job) only when it is not an id.
            after = farm.resolve_job(args.after)
            jobs = farm.jobs(include_archived=args.all, limit=args.limit, after=after)
    if args.json:
        emit_json(jobs)
    else:
        emit(jobs_table(jobs))
        if args.limit is not None and len(jobs) == args.limit:
            emit(f"next page: --after {jobs[-1].id}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from farmtui.tables import detail_text

    if args.openjd:
        return show_openjd(args)
    with shared.connect(args) as farm:
        job_id = farm.resolve_job(args.job)
        if args.json and args.chunks is None and args.after is None:
            detail = farm.show_all(job_id)  # the whole job, as SPEC.md promises scripts
        else:
            detail = farm.show(job_id, args.chunks or SHOWN_CHUNKS, args.after)
    if args.json:
        emit_json(show_document(detail))
    else:
        emit(detail_text(detail))
    return 0


def show_document(detail: JobDetail) -> dict[str, object]:
    """``farm show --json``: the job's own fields (``id``, ``name``, ``state``,
    ``priority``, ``frames`` ...) at the top, as SPEC.md promises scripts reading
    ``.state``, beside the detail (``job``, ``chunks``, ``frame_states`` ...)."""
    job = msgspec.to_builtins(detail.job)
    assert isinstance(job, dict)
    document = msgspec.to_builtins(detail)
    assert isinstance(document, dict)
    return {**job, **document}


def show_openjd(args: argparse.Namespace) -> int:
    """``farm show JOB --openjd``: the job as an OpenJD job template (YAML; JSON with --json)."""
    from farmtui import openjd_export

    with shared.connect(args) as farm:
        job = farm.show(farm.resolve_job(args.job), 1).job
    template = openjd_export.job_template(job)
    if args.json:
        emit_json(template)
    else:
        sys.stdout.write(openjd_export.to_yaml(template))
    return 0


def cmd_failures(args: argparse.Namespace) -> int:
    from farmtui.tables import failures_table

    with shared.connect(args) as farm:
        failures = farm.failures(args.limit)
    if args.json:
        emit_json(failures)
    else:
        emit(failures_table(failures))
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with shared.connect(args) as farm:
        job_id = farm.resolve_job(args.job)

        def fetch() -> str:
            if args.chunk is None:
                return farm.events(job_id)
            return farm.logs(job_id, args.chunk, args.attempt)

        if args.follow and args.chunk is not None:
            chunks = len(farm.show(job_id).chunks)
            if not 0 <= args.chunk < chunks:  # else --follow would wait for it forever
                raise InputError(f"job {job_id} has no chunk {args.chunk} (it has {chunks})")
        if not args.follow:
            text = fetch()
            if args.json:
                emit_json({"job_id": job_id, "chunk": args.chunk, "log": text})
            else:
                sys.stdout.write(text if args.raw else printable(text, multiline=True))
                sys.stdout.flush()
            return 0
        return follow_log(
            farm, job_id, args.chunk, fetch, interval=args.interval, as_json=args.json, raw=args.raw
        )


def follow_log(
    farm: FarmClient,
    job_id: str,
    chunk: int | None,
    fetch: Callable[[], str],
    *,
    interval: float,
    as_json: bool,
    raw: bool = False,
) -> int:
    """Print the log, then what is appended to it, until the job finishes (or Ctrl-C).

    A leader that stops answering is waited for (``shared.FOLLOW_OUTAGE``), so a
    follow outlives the leader's restart.

    With ``--json`` each new piece is one JSON line ``{"job_id", "chunk", "log",
    "restarted"}`` and the last line says the job's final ``state``. Without
    ``raw``, control characters in the text are shown as escapes (see
    ``farmtui.printable``).
    """
    from farmtui.client import FINAL_STATES
    from farmtui.errors import LeaderDown, NotFound

    shown = ""
    outage = shared.Outage("farm logs")
    while True:
        try:
            # Read the state first so the final fetch below sees everything the job wrote.
            state = farm.show(job_id, limit=1).job.state
            try:
                text = fetch()
            except NotFound:
                text = shown  # the attempt's log does not exist yet
        except LeaderDown as exc:
            # A leader restarting (an upgrade, a crash) is back within seconds: wait for it.
            outage.wait(exc, interval)
            continue
        outage.over()
        restarted = not text.startswith(shown)  # a new attempt replaced the log
        piece = text if restarted else text[len(shown) :]
        if as_json:
            if piece:
                line = {"job_id": job_id, "chunk": chunk, "log": piece, "restarted": restarted}
                emit_json(line)
        else:
            if not raw:
                piece = printable(piece, multiline=True)
            sys.stdout.write("\n--- log restarted ---\n" + piece if restarted else piece)
            sys.stdout.flush()
        shown = text
        if state in FINAL_STATES:
            if as_json:
                emit_json({"job_id": job_id, "chunk": chunk, "state": state})
            return 0
        time.sleep(interval)
