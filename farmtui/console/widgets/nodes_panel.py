"""The nodes panel: state, slots used/total, GPUs in use, a CPU sparkline, memory, last
seen, tags, agent version and current chunks of every node.

A ``LineTable`` keyed by node name (columns give way by priority at 80
columns: version, then GPUs, then chunks, then tags). The CPU sparkline is the node's
last readings as the console received them (``ConsoleState.cpu_history``); an
offline node shows no CPU or memory reading at all, since the last one it sent
is stale. Admins enable or disable a node with ``d``; ``l`` opens its agent
log. Node names, tags and versions come from the agents: cells are plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from textual.binding import Binding, BindingType
from textual.message import Message

from farmtui.console import fmt
from farmtui.console.state import ConsoleState
from farmtui.console.widgets.line_table import Cell, Column, LineTable
from farmtui.protocol import NodeView
from farmtui.tables import slots_cell

NODE_STATE_STYLES = {
    "online": Style(color="bright_green"),
    "offline": Style(color="red", bold=True),
    "disabled": Style(dim=True),
}
SPARK_STYLE = Style(color="cyan")
SPARK_WIDTH = 8


def gpus_cell(node: NodeView) -> str:
    """GPUs in use / GPUs (``only``: it takes only jobs that ask for GPUs)."""
    if not node.gpus:
        return fmt.EMPTY
    used = f"{len(node.gpus_busy)}/{len(node.gpus)}"
    return f"{used} only" if node.gpu_only else used


class NodesPanel(LineTable):
    """See the module docstring."""

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("name", "Node", 0),
        Column("state", "St", 3),
        Column("slots", "Slots", 7, "right"),
        Column("gpus", "GPUs", 8, "right", optional=4),
        Column("cpu", "CPU", SPARK_WIDTH + 5),
        Column("mem", "Mem", 8, "right"),
        Column("seen", "Seen", 4, "right"),
        Column("tags", "Tags", 12, optional=2),
        Column("version", "Agent", 8, optional=5),
        Column("chunks", "Chunks", 14, optional=3),
    )
    MIN_FLEX = 10

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("d", "toggle_enabled", "Enable/disable", id="nodes.toggle", tooltip="Admins only"),
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
        super().__init__(id=id)
        self.state = state

    def show_nodes(self) -> None:
        """Bring the table in line with ``state.nodes`` (rows kept by name)."""
        names = sorted(self.state.nodes)
        if names != self.keys:
            self.set_rows(list(names))
        else:
            self.refresh()

    def row_cells(self, key: str) -> list[Cell]:
        node = self.state.nodes.get(key)
        if node is None:
            return [("", None)] * len(self.COLUMNS)
        offline = node.state == "offline"
        if offline:
            cpu, mem = fmt.EMPTY, fmt.EMPTY
        else:
            history = list(self.state.cpu_history.get(key, ()))
            cpu = f"{fmt.sparkline(history, SPARK_WIDTH)}{node.cpu_percent:4.0f}%"
            memory_gb = node.memory_total / 2**30 if node.memory_total else 0
            mem = f"{node.memory_percent:.0f}%/{memory_gb:.0f}G"
        seen = fmt.ago(self.state.clock() - node.last_seen) if node.last_seen else fmt.EMPTY
        chunks = ", ".join(f"{ref.job_id}#{ref.chunk}" for ref in node.running) or fmt.EMPTY
        return [
            (node.name, None),
            (fmt.NODE_STATE_SHORT.get(node.state, node.state), NODE_STATE_STYLES.get(node.state)),
            (slots_cell(node), None),
            (gpus_cell(node), None),
            (cpu, None if offline else SPARK_STYLE),
            (mem, None),
            (seen, None),
            (",".join(node.tags) or fmt.EMPTY, None),
            (node.version or fmt.EMPTY, None),
            (chunks, None),
        ]

    @property
    def current(self) -> str | None:
        return self.cursor_key

    def action_toggle_enabled(self) -> None:
        name = self.current
        node = self.state.nodes.get(name) if name is not None else None
        if node is not None:
            self.post_message(self.EnableRequested(node.name, node.state == "disabled"))

    def action_open_log(self) -> None:
        name = self.current
        if name is not None:
            self.post_message(self.LogRequested(name))
