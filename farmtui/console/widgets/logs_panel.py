"""The logs panel: three sources switched from a dropdown.

* Monitor Log — the console's own events and the leader's ``Event`` messages,
  filterable by level (Info / Warn / Error).
* A peer — pick a node, read its agent log; asked for again every 3 s.
* Task Output — pick a chunk of the watched job on the left, its raw output on
  the right, followed live as ``TaskOutput`` lines arrive.

The panel never talks to the leader itself: it posts ``PeerLogWanted`` and
``TaskOutputWanted`` and the screen sends the requests.

Log lines, event texts and node names are someone else's text: they are shown
plain (``Text``, ``Log``; never markup) with control characters escaped
(``farmtui.printable``). Textual's ``Log`` replaces only some control codes
and lets ESC through to the terminal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Log, RichLog, Select

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.console.widgets.chunk_table import CHUNK_STATE_STYLES
from farmtui.console.widgets.line_table import Cell, Column, LineTable
from farmtui.printable import printable
from farmtui.protocol import EventView, NodeLog, TaskOutput

Source = Literal["monitor", "peer", "task"]
LevelFilter = Literal["all", "info", "warn", "error"]
LEVEL_RANK = {"info": 0, "warn": 1, "error": 2}
LEVEL_STYLE = {
    "info": Style(),
    "warn": Style(color="yellow"),
    "error": Style(color="red", bold=True),
}


class TaskChunkList(LineTable):
    """The chunk picker on the left of Task Output."""

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
            (chunk.state, CHUNK_STATE_STYLES.get(chunk.state)),
            (str(chunk.attempt), None),
        ]


class LogsPanel(Vertical):
    """See the module docstring."""

    PEER_REFRESH: ClassVar[float] = 3.0

    @dataclass
    class PeerLogWanted(Message):
        node: str

    @dataclass
    class TaskOutputWanted(Message):
        job_id: str
        chunk: int

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.source: Source = "monitor"
        self.level: LevelFilter = "all"
        self.peer: str | None = None
        self.following: tuple[str, int] | None = None
        self._peer_lines: list[str] = []
        self._peer_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Horizontal(id="logs-bar"):
            yield Select[str](
                [("Monitor Log", "monitor"), ("A peer", "peer"), ("Task Output", "task")],
                value="monitor",
                allow_blank=False,
                compact=True,
                id="logs-source",
            )
            yield Select[str](
                [("All levels", "all"), ("Info", "info"), ("Warn", "warn"), ("Error", "error")],
                value="all",
                allow_blank=False,
                compact=True,
                id="logs-level",
            )
            yield Select[str]([], prompt="pick a node", compact=True, id="logs-node")
        with ContentSwitcher(initial="monitor-log", id="logs-switch"):
            yield RichLog(id="monitor-log", max_lines=5000, wrap=False, markup=False)
            yield Log(id="peer-log", max_lines=5000)
            with Horizontal(id="task-pane"):
                yield TaskChunkList(self.state, id="task-chunks")
                yield Log(id="task-log", max_lines=20000)

    def on_mount(self) -> None:
        self.query_one("#logs-node").display = False
        self._peer_timer = self.set_interval(self.PEER_REFRESH, self._refresh_peer, pause=True)
        self.rewrite_monitor()

    # -- switching ---------------------------------------------------------------

    def show_source(self, source: Source) -> None:
        """Switch to a source (also what the dropdown does)."""
        self.query_one("#logs-source", Select).value = source

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        value = event.value
        if not isinstance(value, str):
            return
        if event.select.id == "logs-source":
            self._switch(value)  # type: ignore[arg-type]
        elif event.select.id == "logs-level":
            self.level = value  # type: ignore[assignment]
            self.rewrite_monitor()
        elif event.select.id == "logs-node":
            self.pick_peer(value)

    def _switch(self, source: Source) -> None:
        self.source = source
        switch = self.query_one(ContentSwitcher)
        switch.current = {"monitor": "monitor-log", "peer": "peer-log", "task": "task-pane"}[source]
        self.query_one("#logs-level").display = source == "monitor"
        self.query_one("#logs-node").display = source == "peer"
        assert self._peer_timer is not None
        if source == "peer":
            self._peer_timer.resume()
            self._refresh_peer()
        else:
            self._peer_timer.pause()
        if source == "task":
            self.show_chunks()

    # -- monitor log ---------------------------------------------------------------

    def _wanted(self, event: EventView) -> bool:
        return self.level == "all" or LEVEL_RANK[event.level] >= LEVEL_RANK[self.level]

    @staticmethod
    def _line(event: EventView) -> Text:
        text = Text(no_wrap=True)
        text.append(f"{fmt.clock(event.time)} ", style="dim")
        text.append(f"{event.level.upper():5} ", style=LEVEL_STYLE[event.level])
        if event.actor:
            text.append(f"[{printable(event.actor)}] ", style="dim")
        if event.job_id:
            text.append(f"{printable(event.job_id)} ", style="cyan")
        text.append(printable(event.text))
        return text

    def rewrite_monitor(self) -> None:
        """Redraw the monitor log under the current level filter."""
        log = self.query_one("#monitor-log", RichLog)
        log.clear()
        for event in self.state.events:
            if self._wanted(event):
                log.write(self._line(event))

    def add_events(self, events: list[EventView]) -> None:
        log = self.query_one("#monitor-log", RichLog)
        for event in events:
            if self._wanted(event):
                log.write(self._line(event))

    def monitor_lines(self) -> list[str]:
        """The monitor log's lines as plain text (for tests and copy)."""
        return [strip.text for strip in self.query_one("#monitor-log", RichLog).lines]

    # -- peer ----------------------------------------------------------------------

    def set_nodes(self, names: list[str]) -> None:
        select = self.query_one("#logs-node", Select)
        current = select.value
        select.set_options([(fmt.plain(name), name) for name in names])
        if isinstance(current, str) and current in names:
            select.value = current

    def pick_peer(self, node: str) -> None:
        """Show ``node``'s agent log (refreshed every ``PEER_REFRESH`` seconds)."""
        if node != self.peer:
            self.peer = node
            self._peer_lines = []
            self.query_one("#peer-log", Log).clear()
        select = self.query_one("#logs-node", Select)
        if select.value != node:
            select.value = node
        if self.source != "peer":
            self.show_source("peer")
        else:
            self._refresh_peer()

    def _refresh_peer(self) -> None:
        if self.source == "peer" and self.peer is not None:
            self.post_message(self.PeerLogWanted(self.peer))

    def node_log(self, message: NodeLog) -> None:
        """New tail of a node's log: append what is new, or replace when it moved on."""
        if message.node != self.peer:
            return
        log = self.query_one("#peer-log", Log)
        old = self._peer_lines
        new = message.lines
        overlap = _overlap(old, new)
        if overlap is None:
            log.clear()
            log.write_lines(_shown(new))
        else:
            log.write_lines(_shown(new[overlap:]))
        self._peer_lines = list(new)

    # -- task output -------------------------------------------------------------

    def show_chunks(self) -> None:
        """Refill the chunk picker from the watched job."""
        watched = self.state.watched
        table = self.query_one(TaskChunkList)
        table.set_rows([str(i) for i in watched.chunk_order] if watched else [])

    def refresh_chunks(self, keys: set[int]) -> None:
        table = self.query_one(TaskChunkList)
        for key in keys:
            table.refresh_key(str(key))

    def on_line_table_cursor_moved(self, event: LineTable.CursorMoved) -> None:
        if isinstance(event.table, TaskChunkList):
            event.stop()
            if event.key is not None and self.source == "task" and event.table.has_focus:
                self.pick_chunk(int(event.key))

    def on_line_table_activated(self, event: LineTable.Activated) -> None:
        if isinstance(event.table, TaskChunkList):
            event.stop()
            self.pick_chunk(int(event.key))

    def pick_chunk(self, chunk: int) -> None:
        """Follow ``chunk``'s output (of the watched job)."""
        watched = self.state.watched
        if watched is None:
            return
        if self.source != "task":
            self.show_source("task")
        table = self.query_one(TaskChunkList)
        if table.cursor_key != str(chunk):
            table.move_cursor_to_key(str(chunk))
        if self.following == (watched.job_id, chunk):
            return
        self.following = (watched.job_id, chunk)
        self.query_one("#task-log", Log).clear()
        self.post_message(self.TaskOutputWanted(watched.job_id, chunk))

    def task_output(self, message: TaskOutput) -> None:
        if self.following != (message.job_id, message.chunk):
            return
        log = self.query_one("#task-log", Log)
        if not message.append:
            log.clear()
        log.write_lines(_shown(message.lines))

    def task_lines(self) -> list[str]:
        return list(self.query_one("#task-log", Log).lines)

    def peer_lines(self) -> list[str]:
        return list(self.query_one("#peer-log", Log).lines)


def _shown(lines: list[str]) -> list[str]:
    """Log lines as shown: control characters escaped, tabs kept (``Log`` expands them)."""
    return [printable(line, multiline=True) for line in lines]


def _overlap(old: list[str], new: list[str]) -> int | None:
    """How many leading lines of ``new`` are already the tail of ``old`` (None: no overlap)."""
    if not old:
        return 0
    if new[: len(old)] == old:
        return len(old)
    # The tail window moved: find the longest suffix of old that prefixes new.
    for size in range(min(len(old), len(new)), 0, -1):
        if old[-size:] == new[:size]:
            return size
    return None
