"""Task Output: the watched job's chunks on the left, one attempt's raw output on the right.

Every dispatch of a chunk is an attempt with a log of its own. The line above
the output says which attempt is shown ("chunk 5 · attempt 1 of 2 · node-b ·
failed, exit 1"), and ← → step to an older or a newer one. Picking a chunk
shows its newest attempt and keeps following the newest when the chunk is
dispatched again, until the operator steps back to an older attempt.

The output belongs to the watched job: when the detail view moves to another
job, the old job's output goes, and while Task Output is on screen the chunk
under the cursor of the new job takes its place.

The pane never talks to the leader: it posts ``OutputWanted`` and the screen
sends ``FetchTaskOutput``. Output lines, node names and exit statuses are
someone else's text, shown plain with control characters escaped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Log, Static

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.console.widgets.chunk_table import CHUNK_STATE_STYLES
from farmtui.console.widgets.line_table import Cell, Column, LineTable
from farmtui.printable import printable
from farmtui.protocol import AttemptView, ChunkView, FetchTaskOutput, TaskOutput


@dataclass(frozen=True)
class OutputSource:
    """One attempt of one chunk; attempt 0: the chunk has not run, so it has no output."""

    job_id: str
    chunk: int
    attempt: int

    def request(self) -> FetchTaskOutput:
        """Ask the leader for this attempt's output, and to follow it."""
        return FetchTaskOutput(
            job_id=self.job_id, chunk=self.chunk, attempt=self.attempt, follow=True
        )


def attempt_numbers(chunk: ChunkView) -> list[int]:
    """The chunk's attempts, oldest first (none before its first dispatch)."""
    numbers = {attempt.number for attempt in chunk.attempts}
    if chunk.attempt:
        numbers.add(chunk.attempt)
    return sorted(numbers)


def attempt_text(chunk: ChunkView, number: int) -> Text:
    """``chunk 5 · attempt 1 of 2 · node-b · failed, exit 1``: what the pane shows."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    text.append(f"chunk {chunk.index}", style="bold")
    if not number:
        text.append(" · not run yet: no output", style="dim")
        return text
    newest = chunk.attempt
    text.append(f" · attempt {number} of {newest}", style="bold")
    if number == newest:
        text.append(" (latest)")
    record = next((a for a in chunk.attempts if a.number == number), None)
    if record is None and number == newest:
        # A leader that lists no attempts still says where and how the latest one is.
        record = AttemptView(
            number=number, node=chunk.node or "", started=chunk.started or 0.0, outcome=chunk.state
        )
    if record is not None:
        if record.node:
            text.append(f" · {printable(record.node)}")
        text.append(f" · {printable(record.outcome)}", style=CHUNK_STATE_STYLES.get(record.outcome))
        if record.exit_status and record.exit_status != "0":
            text.append(f", exit {printable(record.exit_status)}")
    if len(attempt_numbers(chunk)) > 1:
        text.append("   ←/→ other attempts", style="dim")
    return text


class TaskChunkList(LineTable):
    """The chunk picker on the left of Task Output; ← → step through the attempts shown."""

    # Bound here too: a ScrollView's own ← → (scroll sideways) would shadow the pane's.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "step_attempt(-1)", "Older attempt", id="task.older_attempt"),
        Binding("right", "step_attempt(1)", "Newer attempt", id="task.newer_attempt"),
    ]

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("index", "#", 5, "right"),
        Column("state", "State", 0),
        Column("tries", "Try", 3, "right"),
    )

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def row_cells(self, key: str) -> list[Cell]:
        watched = self.state.watched
        chunk = watched.chunks.get(int(key)) if watched else None
        if chunk is None:
            return [("", None)] * 3
        return [
            (str(chunk.index), None),
            (
                fmt.CHUNK_STATE_SHORT.get(chunk.state, chunk.state),
                CHUNK_STATE_STYLES.get(chunk.state),
            ),
            (str(chunk.attempt), None),
        ]

    def action_step_attempt(self, step: int) -> None:
        self.query_ancestor(TaskOutputPane).action_step_attempt(step)


class TaskOutputPane(Vertical):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "step_attempt(-1)", "Older attempt", id="task.older_attempt"),
        Binding("right", "step_attempt(1)", "Newer attempt", id="task.newer_attempt"),
    ]

    @dataclass
    class OutputWanted(Message):
        """Send this attempt's output, then follow it."""

        source: OutputSource

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.following: OutputSource | None = None
        # Following the newest attempt, so a new dispatch of the chunk moves the pane on.
        self._newest = True

    def compose(self) -> ComposeResult:
        yield Static(id="task-attempt")
        with Horizontal(id="task-body"):
            yield TaskChunkList(self.state, id="task-chunks")
            yield Log(id="task-log", max_lines=20000)

    def on_mount(self) -> None:
        self._show_attempt()

    @property
    def chunk_list(self) -> TaskChunkList:
        return self.query_one(TaskChunkList)

    # -- the watched job -----------------------------------------------------------

    def job_changed(self) -> None:
        """The detail view watches another job, none, or the same one afresh."""
        self.show_chunks()
        watched = self.state.watched
        following = self.following
        if following is not None and watched is not None and following.job_id == watched.job_id:
            self._catch_up()
            return
        self.following = None
        self.query_one("#task-log", Log).clear()
        self._show_attempt()
        key = self.chunk_list.cursor_key
        if self.display and key is not None:
            self.pick_chunk(int(key))

    def show_chunks(self) -> None:
        """Refill the chunk list from the watched job."""
        watched = self.state.watched
        self.chunk_list.set_rows([str(i) for i in watched.chunk_order] if watched else [])

    def chunks_changed(self, keys: set[int], new: bool) -> None:
        """Chunks of the watched job changed: repaint them, follow a new attempt of ours."""
        if new:
            self.show_chunks()
        else:
            for key in keys:
                self.chunk_list.refresh_key(str(key))
        if self.following is not None and self.following.chunk in keys:
            self._catch_up()

    def _catch_up(self) -> None:
        """Move on to the newest attempt when following it; else just say what is shown."""
        following = self.following
        watched = self.state.watched
        chunk = watched.chunks.get(following.chunk) if watched and following else None
        if following is not None and chunk is not None and self._newest:
            newest = chunk.attempt
            if newest != following.attempt:
                self._follow(replace(following, attempt=newest))
                return
        self._show_attempt()

    # -- picking ---------------------------------------------------------------------

    def pick_chunk(self, chunk: int, attempt: int | None = None) -> None:
        """Show ``chunk``'s output: ``attempt``, or the newest one (and keep to the newest)."""
        watched = self.state.watched
        view = watched.chunks.get(chunk) if watched else None
        if watched is None or view is None:
            return
        if self.chunk_list.cursor_key != str(chunk):
            self.chunk_list.move_cursor_to_key(str(chunk))
        if attempt is None:
            attempt = view.attempt
        self._newest = attempt == view.attempt
        self._follow(OutputSource(watched.job_id, chunk, attempt))

    def action_step_attempt(self, step: int) -> None:
        """Show the previous (-1) or next (+1) attempt of the chunk shown."""
        following = self.following
        watched = self.state.watched
        chunk = watched.chunks.get(following.chunk) if watched and following else None
        if following is None or chunk is None:
            return
        numbers = attempt_numbers(chunk)
        if following.attempt not in numbers:
            return
        i = numbers.index(following.attempt) + step
        if 0 <= i < len(numbers):
            self.pick_chunk(chunk.index, numbers[i])

    def on_line_table_cursor_moved(self, event: LineTable.CursorMoved) -> None:
        event.stop()
        # Moving the cursor by hand picks a chunk; moves made by pick_chunk do not re-pick.
        if event.key is None or not event.table.has_focus:
            return
        if self.following is None or self.following.chunk != int(event.key):
            self.pick_chunk(int(event.key))

    def on_line_table_activated(self, event: LineTable.Activated) -> None:
        event.stop()
        self.pick_chunk(int(event.key))

    def _follow(self, source: OutputSource) -> None:
        if source == self.following:
            self._show_attempt()
            return
        self.following = source
        self.query_one("#task-log", Log).clear()
        self._show_attempt()
        self.post_message(self.OutputWanted(source))

    def _show_attempt(self) -> None:
        following = self.following
        watched = self.state.watched
        chunk = watched.chunks.get(following.chunk) if watched and following else None
        if following is None or chunk is None:
            shown = Text("Pick a chunk on the left to read its output.", style="dim")
        else:
            shown = attempt_text(chunk, following.attempt)
        self.query_one("#task-attempt", Static).update(shown)

    # -- output ----------------------------------------------------------------------

    def task_output(self, message: TaskOutput) -> None:
        """Lines from the leader; only those of the attempt shown are kept."""
        if self.following != OutputSource(message.job_id, message.chunk, message.attempt):
            return
        log = self.query_one("#task-log", Log)
        if not message.append:
            log.clear()
        log.write_lines(fmt.log_lines(message.lines))

    def lines(self) -> list[str]:
        """The output shown, as plain text (for tests and copy)."""
        return list(self.query_one("#task-log", Log).lines)

    def attempt_line(self) -> str:
        """The line naming the attempt shown, as plain text."""
        return str(self.query_one("#task-attempt", Static).render())
