"""The nodes panel: each node's state, slots in use, CPU, memory and current chunks.

A ``DataTable`` keyed by node name, updated cell by cell (``update_cell``).
Admins enable or disable a node with ``e``; ``l`` opens its agent log.
Every cell is a ``Text`` (``fmt.plain``): a ``str`` cell would be read as
markup, and node names come from the agents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.protocol import NodeView

NODE_STATE_STYLES = {"online": "bright_green", "offline": "red", "disabled": "dim"}
COLUMNS = (
    ("name", "Node"),
    ("state", "State"),
    ("slots", "Slots"),
    ("cpu", "CPU"),
    ("mem", "Mem"),
    ("chunks", "Chunks"),
)


def _cells(node: NodeView) -> dict[str, Text]:
    memory_gb = node.memory_total / 2**30 if node.memory_total else 0
    chunks = ", ".join(f"{ref.job_id}#{ref.chunk}" for ref in node.running) or "—"
    return {
        "name": fmt.plain(node.name),
        "state": fmt.plain(node.state, NODE_STATE_STYLES.get(node.state, "")),
        "slots": fmt.plain(f"{len(node.running)}/{node.slots}"),
        "cpu": fmt.plain(f"{node.cpu_percent:3.0f}% of {node.cpu_count}"),
        "mem": fmt.plain(f"{node.memory_percent:3.0f}% of {memory_gb:.0f}G"),
        "chunks": fmt.plain(chunks),
    }


class NodesPanel(DataTable[Text]):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("e", "toggle_enabled", "Enable/disable", id="nodes.toggle"),
        Binding("l", "open_log", "Agent log", id="nodes.log"),
    ]

    @dataclass
    class EnableRequested(Message):
        node: str
        enabled: bool

    @dataclass
    class LogRequested(Message):
        node: str

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.state = state

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def show_nodes(self) -> None:
        """Bring the table in line with ``state.nodes``: update cells, add and drop rows."""
        nodes = self.state.nodes
        present = {row.value for row in self.rows if row.value is not None}
        for name in present - nodes.keys():
            self.remove_row(name)
        for name in sorted(nodes):
            cells = _cells(nodes[name])
            if name in present:
                for key, value in cells.items():
                    if self.get_cell(name, key) != value:
                        self.update_cell(name, key, value)
            else:
                self.add_row(*cells.values(), key=name)

    @property
    def current(self) -> str | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return key.value

    def action_toggle_enabled(self) -> None:
        name = self.current
        if name is None:
            return
        node = self.state.nodes[name]
        self.post_message(self.EnableRequested(name, node.state == "disabled"))

    def action_open_log(self) -> None:
        name = self.current
        if name is not None:
            self.post_message(self.LogRequested(name))
