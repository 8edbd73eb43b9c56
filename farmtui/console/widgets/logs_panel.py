"""The logs panel: three sources switched from a dropdown.

* Monitor Log — the console's own events and the leader's ``Event`` messages,
  back-filled from the leader's event log on every connect, jobs named by
  name, long lines wrapped; filterable by level (Info / Warn / Error) and
  searchable with ``/`` (only the matching lines, matches highlighted; Enter
  keeps the search, Esc clears it).
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

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.text import Text
from textual import on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.timer import Timer
from textual.widgets import ContentSwitcher, Input, Log, Select

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.console.widgets.event_line import event_line, event_matches
from farmtui.console.widgets.pane_log import PaneLog
from farmtui.console.widgets.task_output import OutputSource, TaskOutputPane
from farmtui.protocol import EventView, NodeLog

# A rewrite of the Monitor Log (a new level or search, a back-fill) shows this many of
# the latest matching events: Rich wraps each line it is given, ~0.2 ms a line here, and
# a rewrite of all 5,000 kept held a console under a flood of events for seconds at
# every keystroke of a search (break round 27a). Events that arrive later are added.
REWRITTEN = 1000
# A search is applied this long after its last keystroke, not at each.
SEARCH_SETTLES = 0.2

Source = Literal["monitor", "peer", "task"]
LevelFilter = Literal["all", "info", "warn", "error"]
LEVEL_RANK = {"info": 0, "warn": 1, "error": 2}


class LogsPanel(Vertical):
    """See the module docstring."""

    PEER_REFRESH: ClassVar[float] = 3.0
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "slash",
            "search",
            "Search log",
            id="logs.search",
            tooltip="Monitor Log lines with these words; Enter keeps, Esc clears",
        ),
        Binding("escape", "end_search", "Clear search", id="logs.clear_search", show=False),
    ]

    @dataclass
    class PeerLogWanted(Message):
        node: str

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state
        self.source: Source = "monitor"
        self.level: LevelFilter = "all"
        self.peer: str | None = None
        self.search = ""
        self._peer_lines: list[str] = []
        self._peer_timer: Timer | None = None
        self._search_timer: Timer | None = None

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
            yield Input(placeholder="search: Enter keeps, Esc clears", id="logs-search")
        with ContentSwitcher(initial="monitor-log", id="logs-switch"):
            yield PaneLog(id="monitor-log", max_lines=5000, max_held=REWRITTEN)
            yield Log(id="peer-log", max_lines=5000)
            yield TaskOutputPane(self.state, id="task-pane")

    def on_mount(self) -> None:
        self.query_one("#logs-node").display = False
        self.query_one("#logs-search").display = False
        self._peer_timer = self.set_interval(self.PEER_REFRESH, self._refresh_peer, pause=True)
        self.rewrite_monitor()

    # -- switching ---------------------------------------------------------------

    def show_source(self, source: Source) -> None:
        """Switch to a source now, as the dropdown does."""
        select = self.query_one("#logs-source", Select)
        with select.prevent(Select.Changed):
            select.value = source
        self._switch(source)

    def focus_shown(self) -> None:
        """The shown source takes the keyboard (its log, or Task Output's chunk list):
        arrows scroll it, Shift+Tab reaches the pickers above it. The source picker had
        it, and the first arrow pressed to scroll opened the picker's list instead."""
        if self.source == "task":
            self.task_pane.chunk_list.focus()
        else:
            self.query_one("#monitor-log" if self.source == "monitor" else "#peer-log").focus()

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
        self.query_one("#logs-search").display = source == "monitor" and bool(self.search)
        self.query_one("#logs-node").display = source == "peer"
        assert self._peer_timer is not None
        if source == "peer":
            self._peer_timer.resume()
            self._refresh_peer()
        else:
            self._peer_timer.pause()

    # -- monitor log ---------------------------------------------------------------

    def _wanted(self, event: EventView) -> bool:
        if self.level != "all" and LEVEL_RANK[event.level] < LEVEL_RANK[self.level]:
            return False
        return event_matches(event, self.state, self.search)

    def rewrite_monitor(self) -> None:
        """Redraw the monitor log under the current level filter and search: the latest
        ``REWRITTEN`` matching events, with a line saying how many older ones match."""
        log = self.query_one("#monitor-log", PaneLog)
        log.clear()
        wanted: list[EventView] = []
        older = 0
        for event in reversed(self.state.events):
            if self._wanted(event):
                if len(wanted) < REWRITTEN:
                    wanted.append(event)
                else:
                    older += 1
        wanted.reverse()
        if older:
            log.write_lines(
                [
                    Text(
                        f"… {older} older matching event(s) not shown: narrow the level or search",
                        style="dim",
                    )
                ]
            )
        self._write(wanted)
        field = self.query_one("#logs-search", Input)
        field.set_class(bool(self.search) and not wanted, "-empty")

    def add_events(self, events: Iterable[EventView]) -> None:
        self._write([event for event in events if self._wanted(event)])

    def _write(self, events: list[EventView]) -> None:
        lines = [event_line(event, self.state, self.search) for event in events]
        self.query_one("#monitor-log", PaneLog).write_lines(lines)

    def monitor_lines(self) -> list[str]:
        """The monitor log's lines as plain text, wrapped as shown (for tests and copy)."""
        return [strip.text for strip in self.query_one("#monitor-log", PaneLog).lines]

    # -- search ------------------------------------------------------------------

    def action_search(self) -> None:
        """``/``: search the Monitor Log (switching to it)."""
        self.show_source("monitor")
        field = self.query_one("#logs-search", Input)
        field.display = True
        field.value = self.search
        # At once (see ``Filtering.action_filter``): ``/ x`` typed fast opened Complete.
        self.screen.set_focus(field)

    @on(Input.Changed, "#logs-search")
    def _search_changed(self, event: Input.Changed) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        self._search_timer = self.set_timer(SEARCH_SETTLES, self._apply_search)

    def _apply_search(self) -> None:
        self._search_timer = None
        search = self.query_one("#logs-search", Input).value.strip()
        if search != self.search:
            self.search = search
            self.rewrite_monitor()

    @on(Input.Submitted, "#logs-search")
    def _search_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if self._search_timer is not None:
            self._search_timer.stop()
        self._apply_search()  # Enter: at once
        if not self.search:
            event.input.display = False
        self.query_one("#monitor-log").focus()

    def action_end_search(self) -> None:
        """Esc: clear the search (else Esc goes on: back to the jobs table)."""
        field = self.query_one("#logs-search", Input)
        if not field.display:
            raise SkipAction()
        self.search = ""
        field.value = ""
        field.display = False
        self.rewrite_monitor()
        self.query_one("#monitor-log").focus()

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
            log.write_lines(fmt.log_lines([_compact(line) for line in new]))
        else:
            log.write_lines(fmt.log_lines([_compact(line) for line in new[overlap:]]))
        self._peer_lines = list(new)

    # -- task output -------------------------------------------------------------

    @property
    def task_pane(self) -> TaskOutputPane:
        return self.query_one(TaskOutputPane)

    @property
    def following(self) -> OutputSource | None:
        """The chunk attempt whose output is shown, if any."""
        return self.task_pane.following

    def pick_chunk(self, chunk: int, attempt: int | None = None) -> None:
        """Show Task Output with ``chunk``'s ``attempt`` (default: newest) of the watched job."""
        self.show_source("task")
        self.task_pane.pick_chunk(chunk, attempt)
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


# An agent log line: ``2026-12-07 17:56:02,114 INFO    farmtui.agent.supervisor: ...``.
_AGENT_LINE = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d)[,.]\d+ (\w+) +farmtui\.[\w.]+: ")


def _compact(line: str) -> str:
    """``17:56:02 INFO chunk ...``: at 80 columns the date and the logger's name filled the
    width, and every line showed the same (break round 33c). Other lines as they are."""
    found = _AGENT_LINE.match(line)
    if found is None:
        return line
    return f"{found[1]} {found[2]:<5} {line[found.end() :]}"
