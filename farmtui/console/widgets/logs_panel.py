"""The logs panel: three sources switched from a dropdown.

* Monitor Log — the console's own events and the leader's ``Event`` messages,
  filterable by level (Info / Warn / Error).
* A peer — pick a node, read its agent log; asked for again every 3 s.
* Task Output — pick a chunk of the watched job and one of its attempts, read
  its raw output, followed live (``task_output.py``).

The source stays what the operator last chose: node and job updates refill the
node picker and the chunk list, never switch the source. The panel never talks
to the leader itself: it posts ``PeerLogWanted`` (and the task pane
``OutputWanted``) and the screen sends the requests.

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
from farmtui.console.widgets.task_output import OutputSource, TaskOutputPane
from farmtui.printable import printable
from farmtui.protocol import EventView, NodeLog

Source = Literal["monitor", "peer", "task"]
LevelFilter = Literal["all", "info", "warn", "error"]
LEVEL_RANK = {"info": 0, "warn": 1, "error": 2}
LEVEL_STYLE = {
    "info": Style(),
    "warn": Style(color="yellow"),
    "error": Style(color="red", bold=True),
}


class LogsPanel(Vertical):
    """See the module docstring."""

    PEER_REFRESH: ClassVar[float] = 3.0

    @dataclass
    class PeerLogWanted(Message):
        node: str

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.source: Source = "monitor"
        self.level: LevelFilter = "all"
        self.peer: str | None = None
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
            yield TaskOutputPane(self.state, id="task-pane")

    def on_mount(self) -> None:
        self.query_one("#logs-node").display = False
        self._peer_timer = self.set_interval(self.PEER_REFRESH, self._refresh_peer, pause=True)
        self.rewrite_monitor()

    # -- switching ---------------------------------------------------------------

    def show_source(self, source: Source) -> None:
        """Switch to a source now, as the dropdown does."""
        select = self.query_one("#logs-source", Select)
        with select.prevent(Select.Changed):
            select.value = source
        self._switch(source)

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
            self._choose_peer(value)

    def _switch(self, source: Source) -> None:
        if source == self.source:
            return
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
        """Refill the node picker, keeping the node picked.

        ``Select`` posts ``Changed`` for values set in code too; refilling it
        is not the operator picking a node, so those are not posted.
        """
        select = self.query_one("#logs-node", Select)
        current = select.value
        with select.prevent(Select.Changed):
            select.set_options([(fmt.plain(name), name) for name in names])
            if isinstance(current, str) and current in names:
                select.value = current

    def pick_peer(self, node: str) -> None:
        """Show ``node``'s agent log (``l`` in Nodes): switches the source to A peer."""
        select = self.query_one("#logs-node", Select)
        if select.value != node:
            with select.prevent(Select.Changed):
                select.value = node
        self._choose_peer(node)
        self.show_source("peer")

    def _choose_peer(self, node: str) -> None:
        """Read ``node``'s agent log (refreshed every ``PEER_REFRESH`` seconds)."""
        if node != self.peer:
            self.peer = node
            self._peer_lines = []
            self.query_one("#peer-log", Log).clear()
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
            log.write_lines(fmt.log_lines(new))
        else:
            log.write_lines(fmt.log_lines(new[overlap:]))
        self._peer_lines = list(new)

    # -- task output -------------------------------------------------------------

    @property
    def task_pane(self) -> TaskOutputPane:
        return self.query_one(TaskOutputPane)

    @property
    def following(self) -> OutputSource | None:
        """The chunk attempt whose output is shown, if any."""
        return self.task_pane.following

    def pick_chunk(self, chunk: int) -> None:
        """Show Task Output with ``chunk``'s newest attempt (of the watched job)."""
        self.show_source("task")
        self.task_pane.pick_chunk(chunk)
        self.task_pane.chunk_list.focus()

    def task_lines(self) -> list[str]:
        return self.task_pane.lines()

    def peer_lines(self) -> list[str]:
        return list(self.query_one("#peer-log", Log).lines)


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
