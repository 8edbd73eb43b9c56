"""What the jobs table shows: filter, hide finished, sort column, grouping. Pure: no textual.

The filter typed after ``/`` is words and ``key:value`` terms, all of which must
match: ``state:failed owner:alice shot_01``. Plain words match the name (or
the owner, state, id or renderer, so a quick ``alice`` still finds her jobs);
``state:`` takes a state, its abbreviation or a prefix of it, and several with
commas (``state:fail,paus``); ``owner:``, ``name:``, ``id:``, ``renderer:``
and ``pri:`` (``pri:10``, ``pri:<50``) match one field each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from farmtui.console.fmt import JOB_STATE_SHORT
from farmtui.console.state import JOB_STATES, ConsoleState, GroupBy, GroupHeader, Row
from farmtui.protocol import JobView
from farmtui.reasons import FINISHED

SortColumn = Literal["dispatch", "name", "owner", "state", "progress", "etr"]
SORT_CYCLE: tuple[SortColumn, ...] = ("dispatch", "name", "owner", "state", "progress", "etr")
# The jobs table column that shows the sort (its header gets an arrow).
SORT_COLUMN_KEY: dict[SortColumn, str] = {
    "dispatch": "priority",
    "name": "name",
    "owner": "owner",
    "state": "state",
    "progress": "progress",
    "etr": "etr",
}
FILTER_KEYS = ("state", "owner", "name", "id", "renderer", "pri")


class FilterError(ValueError):
    """A filter term the console cannot read (an unknown key or state)."""


@dataclass(frozen=True)
class JobFilter:
    """A parsed ``/`` filter; ``matches`` tells whether a job passes."""

    words: tuple[str, ...] = ()
    states: frozenset[str] = frozenset()
    terms: tuple[tuple[str, str], ...] = ()

    @property
    def empty(self) -> bool:
        """Whether every job passes (no filter typed): the table can skip asking each."""
        return not (self.words or self.states or self.terms)

    def matches(self, job: JobView) -> bool:
        if self.empty:
            return True
        if self.states and job.state not in self.states:
            return False
        for key, value in self.terms:
            if not _term_matches(job, key, value):
                return False
        texts = (job.name, job.owner, job.state, job.id, job.renderer)
        return all(any(word in text.lower() for text in texts) for word in self.words)


def _term_matches(job: JobView, key: str, value: str) -> bool:
    if key == "pri":
        return _priority_matches(job.priority, value)
    text = {"owner": job.owner, "name": job.name, "id": job.id, "renderer": job.renderer}[key]
    return value in text.lower()


def _priority_matches(priority: int, value: str) -> bool:
    for op, test in (
        ("<=", priority.__le__),
        (">=", priority.__ge__),
        ("<", priority.__lt__),
        (">", priority.__gt__),
    ):
        if value.startswith(op):
            return test(int(value[len(op) :]))
    return priority == int(value)


def _states(value: str) -> frozenset[str]:
    states: set[str] = set()
    for part in filter(None, value.split(",")):
        found = {
            state
            for state in JOB_STATES
            if state.startswith(part) or JOB_STATE_SHORT[state] == part
        }
        if not found:
            raise FilterError(f"no job state {part!r} (try {', '.join(JOB_STATES)})")
        states |= found
    return frozenset(states)


def parse_filter(text: str) -> JobFilter:
    """Read a ``/`` filter (see the module docstring); FilterError names what is wrong."""
    words: list[str] = []
    states: frozenset[str] = frozenset()
    terms: list[tuple[str, str]] = []
    for token in text.lower().split():
        key, colon, value = token.partition(":")
        if not colon:
            words.append(token)
            continue
        if key not in FILTER_KEYS:
            raise FilterError(f"unknown filter {key}: (try {', '.join(FILTER_KEYS)})")
        if not value:
            continue  # still being typed
        if key == "state":
            states = states | _states(value)
        elif key == "pri":
            digits = value.lstrip("<>=")
            if not digits.isdigit():
                raise FilterError(f"pri:{value}: a number, or <N, >N, <=N, >=N")
            terms.append((key, value))
        else:
            terms.append((key, value))
    return JobFilter(tuple(words), states, tuple(terms))


def _progress(job: JobView) -> float:
    total = job.stats.frames_total
    return job.stats.frames_done / total if total else 0.0


SORT_KEYS: dict[SortColumn, Callable[[JobView], object]] = {
    "name": lambda job: job.name.lower(),
    "owner": lambda job: job.owner.lower(),
    "state": lambda job: JOB_STATES.index(job.state),
    "progress": _progress,
    # Unknown ETR last.
    "etr": lambda job: (job.stats.etr is None, job.stats.etr or 0.0),
}


@dataclass
class JobList:
    """How the operator wants the jobs table: the state behind ``/``, ``s``, ``H``, ``g``, ``A``."""

    group_by: GroupBy = "none"
    sort: SortColumn = "dispatch"
    hide_finished: bool = False
    show_archived: bool = False
    text_filter: str = ""
    _parsed: JobFilter = field(default_factory=JobFilter)

    def set_filter(self, text: str) -> str | None:
        """Use ``text`` as the filter; returns why it cannot be read (the old filter stays)."""
        try:
            self._parsed = parse_filter(text)
        except FilterError as exc:
            return str(exc)
        self.text_filter = text
        return None

    @property
    def reorderable(self) -> bool:
        """Whether the rows are in dispatch order, so a drag can move a job."""
        return self.sort == "dispatch" and self.group_by != "state"

    def next_sort(self) -> SortColumn:
        self.sort = SORT_CYCLE[(SORT_CYCLE.index(self.sort) + 1) % len(SORT_CYCLE)]
        return self.sort

    def rows(self, state: ConsoleState) -> list[Row]:
        """The jobs table's lines: jobs filtered and sorted, with group titles."""
        jobs = state.jobs
        order = state.dispatch_order()
        wanted = self._parsed
        if not (wanted.empty and self.show_archived and not self.hide_finished):
            order = [
                job_id
                for job_id in order
                if (self.show_archived or not jobs[job_id].archived)
                and not (self.hide_finished and jobs[job_id].state in FINISHED)
                and wanted.matches(jobs[job_id])
            ]
        if self.sort != "dispatch":
            sort_key = SORT_KEYS[self.sort]
            # Sorted into a new list: ``order`` may be the state's cached dispatch order.
            order = sorted(order, key=lambda job_id: sort_key(jobs[job_id]))  # type: ignore[arg-type,return-value]
        if self.group_by == "none":
            return list(order)
        groups: dict[object, list[str]]
        if self.group_by == "priority":
            groups = {}
            for job_id in order:
                groups.setdefault(jobs[job_id].priority, []).append(job_id)
            if self.sort != "dispatch":
                groups = dict(sorted(groups.items(), key=lambda item: item[0]))  # type: ignore[arg-type,return-value]
            labels = {key: f"Priority {key}" for key in groups}
        else:
            groups = {job_state: [] for job_state in JOB_STATES}
            for job_id in order:
                groups[jobs[job_id].state].append(job_id)
            groups = {key: ids for key, ids in groups.items() if ids}
            labels = {key: str(key).capitalize() for key in groups}
        rows: list[Row] = []
        for key, ids in groups.items():
            rows.append(GroupHeader(labels[key], len(ids)))
            rows.extend(ids)
        return rows
