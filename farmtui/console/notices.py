"""Which job state changes deserve the operator's attention (a bell, a toast). Pure.

A job that fails or finishes while the console is open is worth a bell and a
toast; the states that count and whether to ring are ``NotifySettings``. Only
live changes count: a snapshot after a reconnect does not ring for everything
that ended meanwhile.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from farmtui.console.settings import NotifySettings
from farmtui.protocol import JobState, JobView

TITLES = {"failed": "Job failed", "done": "Job finished", "cancelled": "Job cancelled"}


@dataclass(frozen=True)
class Notice:
    title: str
    text: str
    severity: str  # "error" or "information"
    bell: bool
    toast: bool


def notices(
    transitions: Iterable[tuple[str, JobState, JobState]],
    jobs: Mapping[str, JobView],
    settings: NotifySettings,
) -> list[Notice]:
    """One notice per job that reached a state in ``settings.on``."""
    found: list[Notice] = []
    for job_id, _old, new in transitions:
        job = jobs.get(job_id)
        if job is None or new not in settings.on or not (settings.bell or settings.toast):
            continue
        stats = job.stats
        text = f"{job.name} ({job.owner}): {stats.frames_done}/{stats.frames_total} frames done"
        if stats.frames_failed:
            text += f", {stats.frames_failed} failed"
        found.append(
            Notice(
                title=TITLES.get(new, f"Job {new}"),
                text=text,
                severity="error" if new == "failed" else "information",
                bell=settings.bell,
                toast=settings.toast,
            )
        )
    return found


# More notices than this at once become one.
MOST_AT_ONCE = 3


def grouped(found: list[Notice], most: int = MOST_AT_ONCE) -> list[Notice]:
    """``found`` as they are, or one notice for them all when there are more than ``most``."""
    if len(found) <= most:
        return found
    counts: dict[str, int] = {}
    for notice in found:
        counts[notice.title] = counts.get(notice.title, 0) + 1
    kinds = ", ".join(f"{n} × {title.lower()}" for title, n in counts.items())
    names = "; ".join(notice.text for notice in found[:3])
    return [
        Notice(
            title=f"{len(found)} jobs ended",
            text=f"{kinds}: {names}; …",
            severity="error" if any(n.severity == "error" for n in found) else "information",
            bell=any(n.bell for n in found),
            toast=any(n.toast for n in found),
        )
    ]
