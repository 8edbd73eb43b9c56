"""Dispatch order: priority first (lower number sooner), then queue order.

Every job carries a ``queue_key``; within a priority group the smaller key
dispatches sooner. Submitting or re-prioritising a job gives it a key larger
than any in use, so it joins the end of its group. Moves only ever change the
moved job's key, and never its priority: a move across groups is refused,
because priority always wins.
"""

from __future__ import annotations

from collections.abc import Iterable

from farmtui.protocol import MoveWhere
from server.model import Job
from server.scheduler_config import SchedulerError


def dispatch_key(job: Job) -> tuple[int, float, str]:
    return (job.priority, job.queue_key, job.id)


def in_dispatch_order(jobs: Iterable[Job], include_archived: bool = False) -> list[Job]:
    return sorted(
        (j for j in jobs if include_archived or not j.archived),
        key=dispatch_key,
    )


def positions(jobs: Iterable[Job]) -> dict[str, int]:
    """Job id -> rank among active (non-archived) jobs; archived jobs are absent."""
    return {job.id: rank for rank, job in enumerate(in_dispatch_order(jobs))}


def next_key(jobs: Iterable[Job]) -> float:
    """A key after every key in use: the end of any group."""
    return max((j.queue_key for j in jobs), default=0.0) + 1.0


def group(jobs: Iterable[Job], priority: int) -> list[Job]:
    """The active jobs of one priority group, in queue order."""
    return [j for j in in_dispatch_order(jobs) if j.priority == priority]


def move(jobs: list[Job], job: Job, where: MoveWhere | None, before: Job | None) -> list[Job]:
    """Give ``job`` a new queue_key; return the jobs whose key changed.

    ``before`` lands the job directly before that job (drag and drop);
    ``where`` moves it one place up or down or to the top or bottom; with
    neither it goes to the bottom of its group.
    """
    if job.archived:
        raise SchedulerError(f"{_called(job)} is archived; unarchive it before moving it")
    members = group(jobs, job.priority)
    index = members.index(job)
    if before is not None:
        if before.archived:
            raise SchedulerError(f"{_called(before)} is archived; cannot move next to it")
        if before.priority != job.priority:
            raise SchedulerError(
                f"cannot move {_called(job)} (priority {job.priority}) before {_called(before)} "
                f"(priority {before.priority}): priority always wins; change the priority instead"
            )
        if before is job:
            return []
        others = [j for j in members if j is not job]
        target = others.index(before)
        return _place(others, job, target)
    if where in ("up", "down"):
        other = index - 1 if where == "up" else index + 1
        if not 0 <= other < len(members):
            raise SchedulerError(_edge(jobs, job, where))
        return _swap(members, index, other)
    if where == "top":
        others = [j for j in members if j is not job]
        return _place(others, job, 0)
    # "bottom", or no direction at all.
    others = [j for j in members if j is not job]
    return _place(others, job, len(others))


def passed_by(jobs: list[Job], job: Job, where: MoveWhere | None, before: Job | None) -> list[Job]:
    """The jobs of ``job``'s group that a move would pass (their order with it flips)."""
    members = group(jobs, job.priority)
    if job not in members or (before is not None and before not in members):
        return []
    others = [j for j in members if j is not job]
    index = members.index(job)
    if before is not None:
        target = others.index(before)
    elif where == "up":
        target = max(index - 1, 0)
    elif where == "down":
        target = min(index + 1, len(others))
    elif where == "top":
        target = 0
    else:
        target = len(others)
    after = [*others[:target], job, *others[target:]]
    return [j for j in others if (members.index(j) < index) != (after.index(j) < after.index(job))]


def _edge(jobs: list[Job], job: Job, where: MoveWhere) -> str:
    """Why ``job``, at the edge of its priority group, moves no further ``where``."""
    order = in_dispatch_order(jobs)
    step = -1 if where == "up" else 1
    index = order.index(job) + step
    edge = "first" if where == "up" else "last"
    said = f"{_called(job)} is already {edge} of priority {job.priority}"
    if not 0 <= index < len(order):
        return said
    beyond = order[index]
    return (
        f"{said}; moving it {where} would pass {_called(beyond)} (priority "
        f"{beyond.priority}): priority always wins; change the priority instead"
    )


def _called(job: Job) -> str:
    """``job shot_010 (0001abcdef0001)``: its name first, which people know it by (its id
    alone was all a refusal said: break round 33c)."""
    return f"job {job.spec.name} ({job.id})" if job.spec.name else f"job {job.id}"


def _swap(members: list[Job], a: int, b: int) -> list[Job]:
    first, second = members[a], members[b]
    first.queue_key, second.queue_key = second.queue_key, first.queue_key
    return [first, second]


def _place(others: list[Job], job: Job, index: int) -> list[Job]:
    """Key ``job`` so it sits at ``index`` among ``others`` (which stay as they are)."""
    if not others:
        return []
    if index <= 0:
        key = others[0].queue_key - 1.0
    elif index >= len(others):
        key = others[-1].queue_key + 1.0
    else:
        low, high = others[index - 1].queue_key, others[index].queue_key
        key = (low + high) / 2
        if not low < key < high:
            # Halved too often: renumber the group, keeping its order.
            ordered = [*others[:index], job, *others[index:]]
            base = others[0].queue_key
            for offset, member in enumerate(ordered):
                member.queue_key = base + offset
            return ordered
    if key == job.queue_key:
        return []
    job.queue_key = key
    return [job]
