"""Plain-text views of the protocol's records for the ``farm`` command's human output.

ASCII only (progress bars are ``[####......]``) so the output survives any
terminal, ``less`` and log files. ``--json`` bypasses all of this.

Every value that came from someone else (names, owners, paths, node names,
reasons) goes through ``printable``: a control character in it is shown as an
escape (``\\x1b``, ``\\n``), so it can neither drive the terminal nor split a row.
``table`` does this for every cell; the free-text lines do it line by line.
"""

from __future__ import annotations

import time
import unicodedata
from collections.abc import Mapping, Sequence

import msgspec

from farmtui.durations import format_duration
from farmtui.frames import format_frames
from farmtui.printable import printable
from farmtui.protocol import (
    ChunkView,
    FailureView,
    FrameRun,
    JobDetail,
    JobView,
    LimitView,
    NodeView,
    TokenView,
    is_operator_block,
)
from farmtui.reasons import reason_line, shown_etr

PRIORITY_HEADER = "PRI(low first)"


_ZERO_WIDTH = frozenset({"Mn", "Me", "Cf"})


def cell_width(text: str) -> int:
    """The terminal columns ``text`` takes: two for a wide character (日, 長, most
    emoji), none for a mark drawn on the one before it (combining accents, Thai
    vowels, enclosing circles), a format character (a zero-width joiner) or a
    Hangul vowel or final consonant of a decomposed syllable (macOS file names),
    one for the rest. Emoji joined into one glyph still count each."""
    width = 0
    for char in text:
        if unicodedata.category(char) in _ZERO_WIDTH or "\u1160" <= char <= "\u11ff":
            continue
        width += 2 if unicodedata.east_asian_width(char) in "WF" else 1
    return width


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Columns padded to their widest cell; column numbers in ``right`` align right.

    Cells are shown through ``printable`` (escaped before measuring, so the
    columns line up with what is printed), and measured in terminal columns: a
    name in 日本語 pushed the columns after it out of line.
    """
    headers = [printable(header) for header in headers]
    rows = [[printable(cell) for cell in row] for row in rows]
    widths = [cell_width(h) for h in headers]
    for row in rows:
        widths = [max(w, cell_width(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in [list(headers), *rows]:
        cells = []
        for i, (cell, width) in enumerate(zip(row, widths, strict=True)):
            pad = " " * (width - cell_width(cell))
            cells.append(pad + cell if i in right else cell + pad)
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def short_ids(ids: Sequence[str], minimum: int = 8) -> dict[str, str]:
    """Shortest prefixes (at least ``minimum`` long) that still tell these ids apart."""
    length = minimum
    while length < max((len(i) for i in ids), default=0):
        if len({i[:length] for i in ids}) == len(set(ids)):
            break
        length += 1
    return {i: i[:length] for i in ids}


def progress_bar(done: int, total: int, width: int = 10) -> str:
    fraction = done / total if total else 0.0
    filled = min(width, int(fraction * width))
    return f"[{'#' * filled}{'.' * (width - filled)}] {int(fraction * 100):3d}%"


def job_state(job: JobView) -> str:
    flags = [flag for flag, on in (("archived", job.archived), ("reviewed", job.reviewed)) if on]
    return job.state + (f" ({', '.join(flags)})" if flags else "")


def jobs_table(jobs: Sequence[JobView]) -> str:
    """``farm jobs``: one row per job in dispatch order."""
    if not jobs:
        return "no jobs (submit one with `farm submit`, or see archived ones with --all)"
    ids = short_ids([job.id for job in jobs])
    now = time.time()
    rows = [
        [
            ids[job.id],
            str(job.priority),
            job.name,
            job.owner,
            job_state(job),
            progress_bar(job.stats.frames_done, job.stats.frames_total),
            f"{job.stats.frames_done}/{job.stats.frames_total}",
            format_duration(shown_etr(job)),
            reason_line(job.reason, now),
        ]
        for job in jobs
    ]
    headers = ["ID", PRIORITY_HEADER, "NAME", "OWNER", "STATE", "PROGRESS", "FRAMES", "ETR"]
    headers.append("WHY")
    return table(headers, rows, right={1, 6, 7})


def job_summary(job: JobView) -> str:
    """One line per changed job after an action: ``<id>  <name>  <state>``."""
    return printable(f"{job.id}  {job.name}  {job_state(job)}")


def scheduling_line(job: JobView) -> str:
    """What a job's chunks wait for besides a slot: jobs, frames upstream, GPUs, limits, tags."""
    spec = job.spec
    parts: list[str] = []
    if spec.after:
        if spec.after_frames:
            start, end = spec.after_offset
            reach = (
                ""
                if (start, end) == (0, 0)
                else (f" {start:+d}" if start == end else f" {start:+d}..{end:+d}")
            )
            parts.append(f"frames of {', '.join(spec.after)} (frame by frame{reach})")
        else:
            parts.append(f"jobs {', '.join(spec.after)} done")
    if spec.gpus:
        size = f" of {spec.gpu_memory} MiB" if spec.gpu_memory else ""
        parts.append(f"{spec.gpus} GPU{'s' if spec.gpus > 1 else ''}{size} per chunk")
    if spec.limits:
        parts.append(f"a unit of {', '.join(spec.limits)}")
    if spec.tags:
        parts.append(f"tags {', '.join(spec.tags)}")
    return "; ".join(parts)


def limits_line(job: JobView) -> str:
    """The settings ``farm set`` changes that bound a job's chunks: ``max-running 4;
    retries 2 (delay 10s); max render 1h00m, on timeout requeue``. Unset ones (the
    farm's defaults) are left out."""
    spec, t = job.spec, job.spec.timeouts
    parts: list[str] = []
    if spec.max_running:
        parts.append(f"max-running {spec.max_running}")
    if spec.retries is not None:
        delays = [
            f"{what} {format_duration(value)}"
            for what, value in (("delay", spec.retry_delay), ("cap", spec.retry_cap))
            if value is not None
        ]
        parts.append(f"retries {spec.retries}" + (f" ({', '.join(delays)})" if delays else ""))
    limits = [
        f"{what} {format_duration(value)}"
        for what, value in (
            ("min render", t.min_render),
            ("max render", t.max_render),
            ("max start", t.max_start),
            ("scripts", t.script_timeout),  # pre- and post-job scripts
        )
        if value is not None
    ]
    if t.auto:
        limits.append(f"auto timeout x{t.auto_multiplier:g}")
    if limits:
        each = " per frame" if t.per_frame else ""
        parts.append(f"{', '.join(limits)}{each}, on timeout {t.on_timeout}")
    return "; ".join(parts)


def detail_text(detail: JobDetail) -> str:
    """``farm show``: the job, its chunks with their latest attempt, and frames by state."""
    job = detail.job
    stats = job.stats
    lines = [
        f"job       {job.id}",
        f"name      {job.name}",
        f"owner     {job.owner}",
        f"state     {job_state(job)}",
        *([f"why       {reason_line(job.reason)}"] if job.reason else []),
        f"priority  {job.priority} (lower renders sooner), position {job.position}",
        f"renderer  {job.renderer}" + (f"  scene {job.spec.scene}" if job.spec.scene else ""),
        f"frames    {job.frames} in chunks of {job.chunk}",
        f"progress  {progress_bar(stats.frames_done, stats.frames_total)}"
        f"  {stats.frames_done}/{stats.frames_total} frames,"
        f" {stats.chunks_done}/{stats.chunks_total} chunks done,"
        f" {stats.chunks_running} running, {stats.chunks_failed} failed",
        f"times     mean {format_duration(stats.mean_render)},"
        f" p90 {format_duration(stats.p90_render)}, ETR {format_duration(shown_etr(job))}",
    ]
    if job.spec.output:
        lines.append(f"output    {job.spec.output}")
    if job.spec.argv:
        lines.append(f"argv      {' '.join(job.spec.argv)}")
    needs = scheduling_line(job)
    if needs:
        lines.append(f"needs     {needs}")
    limits = limits_line(job)
    if limits:
        lines.append(f"limits    {limits}")
    if detail.blocked_nodes:
        now = time.time()
        blocked = ", ".join(
            f"{node} (until unblocked)"
            if is_operator_block(until, now)
            else f"{node} ({format_duration(until - now)} left)"
            for node, until in sorted(detail.blocked_nodes.items())
        )
        lines.append(f"blocked   {blocked}")
    lines = [printable(line) for line in lines]
    lines.append("")
    lines.append(chunks_table(detail.chunks))
    if detail.chunks and (detail.next_after is not None or detail.chunks[0].index > 0):
        shown = f"chunks {detail.chunks[0].index}-{detail.chunks[-1].index}"
        more = f"; next: --after {detail.next_after}" if detail.next_after is not None else ""
        lines.append(f"{shown} of {detail.chunk_count:,}{more}")
    lines.append("")
    lines.append(frames_line(detail))
    return "\n".join(lines)


def chunks_table(chunks: Sequence[ChunkView]) -> str:
    if not chunks:
        return "no chunks"
    rows = []
    for chunk in chunks:
        last = chunk.attempts[-1] if chunk.attempts else None
        if last is None:
            outcome = "-"
        else:
            outcome = last.outcome + (f" ({last.exit_status})" if last.exit_status else "")
            if last.reason:
                outcome += f": {last.reason}"
        took = (
            format_duration(chunk.finished - chunk.started)
            if chunk.started is not None and chunk.finished is not None
            else "-"
        )
        frames = format_frames(chunk.frames) or "-"
        kind = "" if chunk.kind == "render" else f" [{chunk.kind}]"
        rows.append(
            [
                str(chunk.index),
                frames + kind,
                chunk.state + (f" (stopping on {chunk.stopping_on})" if chunk.stopping_on else ""),
                chunk.node or "-",
                str(chunk.attempt),
                str(chunk.errors),
                took,
                outcome,
            ]
        )
    headers = ["CHUNK", "FRAMES", "STATE", "NODE", "ATTEMPT", "ERRORS", "TOOK", "LAST ATTEMPT"]
    return table(headers, rows, right={0, 4, 5, 6})


def frames_by_state(frame_states: Mapping[str, str]) -> str:
    """``done 1-12  assigned 13-16  unassigned 17-48``: compact, one state after another."""
    groups: dict[str, list[int]] = {}
    for frame, state in frame_states.items():
        try:
            groups.setdefault(state, []).append(int(frame))
        except ValueError:
            continue
    if not groups:
        return "frames    -"
    order = ["done", "staged", "assigned", "unassigned", "failed", "held", "excluded"]
    states = sorted(groups, key=lambda s: order.index(s) if s in order else len(order))
    parts = [f"{state} {format_frames(sorted(groups[state]))}" for state in states]
    return printable("frames    " + "  ".join(parts))


# Ranges shown per state; a job whose states alternate frame by frame says how many more.
MAX_RANGES = 12


def frames_by_runs(runs: Sequence[FrameRun]) -> str:
    """``done 1-12  assigned 13-16  unassigned 17-48x2`` from the leader's frame runs."""
    groups: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    for run in runs:
        ranges = groups.setdefault(run.state, [])
        frames = abs(run.last - run.first) // (abs(run.step) or 1) + 1
        counts[run.state] = counts.get(run.state, 0) + frames
        if len(ranges) <= MAX_RANGES:
            text = str(run.first) if run.first == run.last else f"{run.first}-{run.last}"
            ranges.append(text + (f"x{abs(run.step)}" if abs(run.step) != 1 else ""))
    order = ["done", "staged", "assigned", "unassigned", "failed", "held", "excluded"]
    states = sorted(groups, key=lambda s: order.index(s) if s in order else len(order))
    parts = []
    for state in states:
        ranges = groups[state]
        text = ",".join(ranges[:MAX_RANGES]) + (",…" if len(ranges) > MAX_RANGES else "")
        parts.append(f"{state} {text}" + (f" ({counts[state]:,})" if counts[state] > 1 else ""))
    return printable("frames    " + "  ".join(parts)) if parts else "frames    -"


def held_as_a_whole(job: JobView) -> bool:
    """Held as a whole (job state ``holding``): its waiting frames are shown held, in
    ``farm show`` and the console's frame grid alike."""
    return job.state == "holding"


def frames_line(detail: JobDetail) -> str:
    """The job's frames by state; a job held as a whole shows its waiting frames held,
    as the console's frame grid does (the data still says "unassigned": no chunk of
    theirs is held)."""
    held = held_as_a_whole(detail.job)
    if not detail.frame_runs:  # a leader from before frame runs
        states = detail.frame_states
        if held:
            states = {f: "held" if s == "unassigned" else s for f, s in states.items()}
        line = frames_by_state(states)
    else:
        runs = detail.frame_runs
        if held:
            runs = [
                msgspec.structs.replace(r, state="held") if r.state == "unassigned" else r
                for r in runs
            ]
        line = frames_by_runs(runs)
        if not detail.frame_runs_complete:
            line += "  (and more, too ragged to list)"
    return line + "  (job held)" if held else line


def failure_error(failure: FailureView) -> str:
    """``exited 1; Error: out of memory``: why the attempt failed, then the renderer's
    last error line (a copy failure's reason is the whole story; its last line is not)."""
    return "; ".join(part for part in (failure.reason, failure.error_line) if part)


def slots_cell(node: NodeView) -> str:
    """``used/slots``, and ``+N`` for the chunks held ahead of a free slot (a node given
    short chunks holds a few beyond its slots, each starting as a slot frees): ``4/4+2``.
    Before, those counted as rendering: ``6/4``."""
    held = len(node.running)
    ahead = max(held - node.slots, 0)
    return f"{held - ahead}/{node.slots}" + (f"+{ahead}" if ahead else "")


def nodes_table(nodes: Sequence[NodeView]) -> str:
    if not nodes:
        return "no nodes (start one with `farm agent --leader URL --token-file F`)"
    now = time.time()
    rows = [
        [
            node.name,
            node.state,
            slots_cell(node),
            gpus_cell(node),
            # An offline node's last readings are old news: not shown as if current.
            f"{node.cpu_percent:.0f}%" if node.state != "offline" else "-",
            f"{node.memory_percent:.0f}%" if node.state != "offline" else "-",
            ",".join(node.tags) or "-",
            f"{format_duration(now - node.last_seen)} ago" if node.last_seen else "never",
            node.version or "-",
        ]
        for node in nodes
    ]
    headers = ["NAME", "STATE", "BUSY", "GPUS", "CPU", "MEM", "TAGS", "SEEN", "VERSION"]
    return table(headers, rows, right={2, 3, 4, 5})


def tokens_table(tokens: Sequence[TokenView]) -> str:
    """``farm token list``: the leader's own two are marked (they cannot be revoked)."""
    now = time.time()
    rows = [
        [
            token.id,
            token.name,
            token.role,
            f"{format_duration(max(0.0, now - token.created))} ago",
            "the leader's own" if token.leaders else "",
        ]
        for token in tokens
    ]
    return table(["ID", "NAME", "ROLE", "MADE", ""], rows, right=set())


def gpus_cell(node: NodeView) -> str:
    """``1/2`` GPUs in use; ``only`` marks a node kept for GPU jobs; ``-``: none."""
    if not node.gpus:
        return "-"
    text = f"{len(node.gpus_busy)}/{len(node.gpus)}"
    return f"{text} only" if node.gpu_only else text


def limits_table(limits: Sequence[LimitView]) -> str:
    """``farm limit list``: each limit's units in use and who waits for one."""
    if not limits:
        return "no limits (define one with `farm limit set NAME UNITS`)"
    rows = [
        [
            limit.name,
            f"{limit.in_use}/{limit.units}",
            str(limit.per_node) if limit.per_node else "-",
            str(limit.waiting_jobs),
        ]
        for limit in limits
    ]
    return table(["LIMIT", "IN USE", "PER NODE", "JOBS WAITING"], rows, right={1, 2, 3})


def failures_table(failures: Sequence[FailureView]) -> str:
    """``farm failures``: one row per failed attempt, newest first."""
    if not failures:
        return "no failed attempts"
    ids = short_ids([f.job_id for f in failures])
    now = time.time()
    rows = [
        [
            f"{format_duration(now - f.finished)} ago",
            ids[f.job_id],
            f.job_name,
            str(f.chunk),
            f.frames,
            f.node,
            str(f.attempt),
            f.chunk_state,
            failure_error(f),
        ]
        for f in failures
    ]
    headers = ["WHEN", "JOB", "NAME", "CHUNK", "FRAMES", "NODE", "TRY", "NOW", "ERROR"]
    return table(headers, rows, right={3, 6})
