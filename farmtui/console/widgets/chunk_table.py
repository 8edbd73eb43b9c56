"""The watched job's chunks (tasks): number, frames, state, node, tries, start, duration, log.

A ``LineTable`` keyed by chunk index, so a job cut into 100,000 one-frame
chunks is as quick as one of ten. Chunk actions (retry, hold, set failed, set
done, exclude) are bindings here, generated from ``actions.CHUNK_ACTIONS``;
they post ``ChunkActionRequested`` and the screen sends it to the leader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.style import Style
from textual.binding import Binding, BindingType
from textual.message import Message

from farmtui.console import fmt
from farmtui.console.actions import CHUNK_ACTIONS
from farmtui.console.state import ConsoleState
from farmtui.console.widgets.line_table import Cell, Column, LineTable
from farmtui.protocol import ChunkAction

CHUNK_STATE_STYLES: dict[str, Style] = {
    "assigned": Style(color="bright_cyan", bold=True),
    "done": Style(color="bright_green"),
    "failed": Style(color="bright_red", bold=True),
    "waiting-retry": Style(color="yellow"),
    "preempted": Style(color="yellow"),
    "held": Style(dim=True),
    "excluded": Style(dim=True, strike=True),
    "cancelled": Style(dim=True),
}


class ChunkTable(LineTable):
    """See the module docstring."""

    COLUMNS: ClassVar[tuple[Column, ...]] = (
        Column("sel", "", 1),
        Column("index", "#", 5, "right"),
        Column("frames", "Frames", 0),
        Column("state", "State", 9),
        Column("node", "Node", 10),
        Column("tries", "Tries", 5, "right"),
        Column("start", "Start", 8, optional=2),
        Column("time", "Time", 7, "right"),
        Column("log", "Log", 3, optional=1),
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(spec.key, f"chunk_action('{spec.action}')", spec.label, id=spec.binding_id)
            for spec in CHUNK_ACTIONS
        ),
        Binding("o", "activate", "Output", id="chunks.output"),
    ]

    @dataclass
    class ActionRequested(Message):
        """The operator asked for a chunk action on these chunks."""

        action: ChunkAction
        chunks: list[int]

    def __init__(self, state: ConsoleState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.state = state

    def show_watched(self) -> None:
        watched = self.state.watched
        self.set_rows([str(index) for index in watched.chunk_order] if watched else [])

    def row_cells(self, key: str) -> list[Cell]:
        watched = self.state.watched
        chunk = watched.chunks.get(int(key)) if watched else None
        if chunk is None:
            return [("", None)] * len(self.COLUMNS)
        if chunk.started is None:
            took = None
        else:
            took = (chunk.finished or self.state.clock()) - chunk.started
        frames = fmt.frame_range(chunk.frames) if chunk.frames else chunk.kind
        return [
            ("●" if key in self.selected else " ", None),
            (str(chunk.index), None),
            (frames, None),
            (chunk.state, CHUNK_STATE_STYLES.get(chunk.state)),
            (chunk.node or fmt.EMPTY, None),
            (str(chunk.attempt), None),
            (fmt.clock(chunk.started), None),
            (fmt.duration(took), None),
            ("▤" if chunk.attempt else "", None),
        ]

    def action_chunk_action(self, action: ChunkAction) -> None:
        chunks = [int(key) for key in self.targets()]
        if chunks:
            self.post_message(self.ActionRequested(action, chunks))
