"""One event as a line of the Monitor Log or of a job's Events tab.

The job is named as the operator knows it (its name, not its id) when the
console knows the job; the text is someone else's, shown plain with control
characters escaped. ``search`` highlights every match of a word typed after
``/`` in the Logs view.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.printable import printable
from farmtui.protocol import EventView

LEVEL_STYLE = {
    "info": Style(),
    "warn": Style(color="yellow"),
    "error": Style(color="red", bold=True),
}
MATCH_STYLE = Style(reverse=True, bold=True)


def event_line(event: EventView, state: ConsoleState, search: str = "") -> Text:
    """``12:31:20 WARN  [alice] shot_010 chunk 3 failed on node-b`` (wraps when long)."""
    text = Text(end="")
    text.append(f"{fmt.clock(event.time)} ", style="dim")
    text.append(f"{event.level.upper():5} ", style=LEVEL_STYLE[event.level])
    if event.actor:
        text.append(f"[{printable(event.actor)}] ", style="dim")
    if event.job_id:
        job = state.jobs.get(event.job_id)
        text.append(f"{printable(job.name if job else event.job_id)} ", style="cyan")
    text.append(printable(event.text))
    if search:
        text.highlight_words([search], MATCH_STYLE, case_sensitive=False)
    return text


def event_matches(event: EventView, state: ConsoleState, search: str) -> bool:
    """Whether the line of ``event`` contains ``search`` (any case)."""
    return not search or search.lower() in event_line(event, state).plain.lower()
