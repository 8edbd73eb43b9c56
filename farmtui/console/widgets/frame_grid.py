"""The frame grid: one cell per frame of the watched job, coloured by frame state.

A ``ScrollView`` drawn with ``render_line``, one component class per frame
state (so themes and ``farm.tcss`` can restyle them), and ``refresh(region)``
for exactly the cells a ``FramesChanged`` touched. A 100,000-frame job is one
widget and a ``bytearray``; only the visible lines are rendered.
"""

from __future__ import annotations

from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from farmtui.console.state import FRAME_STATES, WatchedJob

CELL = "■ "
CELL_WIDTH = 2
GUTTER = 8  # first frame number of the line, right-aligned, then a space


class FrameGrid(ScrollView, can_focus=True):
    """See the module docstring."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "frame-grid--gutter",
        *(f"frame-grid--{state}" for state in FRAME_STATES),
    }

    DEFAULT_CSS = """
    FrameGrid {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        height: 1fr;
        background: $surface;
    }
    FrameGrid > .frame-grid--gutter { color: $text-muted; }
    FrameGrid > .frame-grid--unassigned { color: #808080; }
    FrameGrid > .frame-grid--assigned { color: #3b82f6; }
    FrameGrid > .frame-grid--staged { color: #15803d; }
    FrameGrid > .frame-grid--done { color: #4ade80; }
    FrameGrid > .frame-grid--failed { color: #ef4444; }
    FrameGrid > .frame-grid--held { color: #808080 40%; text-style: dim; }
    FrameGrid > .frame-grid--excluded { color: #808080 25%; text-style: dim; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.watched: WatchedJob | None = None
        self._styles: list[Style] = []

    @property
    def columns(self) -> int:
        """Frames per line at the current width."""
        width = self.scrollable_content_region.width - GUTTER
        return max(width // CELL_WIDTH, 1)

    def load(self, watched: WatchedJob | None) -> None:
        """Show a (new) job's frames."""
        self.watched = watched
        self._update_virtual_size()
        self.scroll_to(y=0, animate=False)
        self.refresh()

    def _update_virtual_size(self) -> None:
        count = len(self.watched.frames) if self.watched else 0
        lines = -(-count // self.columns)
        self.virtual_size = Size(self.size.width, lines)

    def on_resize(self, event: events.Resize) -> None:
        self._update_virtual_size()

    def on_mount(self) -> None:
        self.watch(self.app, "theme", lambda _: self._forget_styles(), init=False)

    def _forget_styles(self) -> None:
        self._styles = []
        self.refresh()

    def frame_styles(self) -> list[Style]:
        """The Rich style of each frame state, in ``FRAME_STATES`` order."""
        if not self._styles:
            base = self.rich_style
            self._styles = [
                base + self.get_component_rich_style(f"frame-grid--{state}")
                for state in FRAME_STATES
            ]
        return self._styles

    def refresh_frames(self, indexes: list[int]) -> None:
        """Repaint only the cells of the grid positions in ``indexes``."""
        if not indexes or self.watched is None:
            return
        columns = self.columns
        top = int(self.scroll_y)
        height = self.size.height
        regions: dict[int, tuple[int, int]] = {}
        for i in indexes:
            y = i // columns - top
            if 0 <= y < height:
                x = GUTTER + (i % columns) * CELL_WIDTH
                low, high = regions.get(y, (x, x))
                regions[y] = (min(low, x), max(high, x))
        if regions:
            self.refresh(
                *(Region(low, y, high - low + CELL_WIDTH, 1) for y, (low, high) in regions.items())
            )

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        watched = self.watched
        line = int(self.scroll_y) + y
        columns = self.columns
        if watched is None or line * columns >= len(watched.frames):
            return Strip([Segment(" " * width, base)], width)
        start = line * columns
        stop = min(start + columns, len(watched.frames))
        gutter_style = base + self.get_component_rich_style("frame-grid--gutter")
        segments = [Segment(f"{watched.frames[start]:>{GUTTER - 1}} ", gutter_style)]
        styles = self.frame_styles()
        states = watched.states
        run_code = states[start]
        run_start = start
        for i in range(start + 1, stop + 1):
            code = states[i] if i < stop else -1
            if code != run_code:
                segments.append(Segment(CELL * (i - run_start), styles[run_code]))
                run_code, run_start = code, i
        used = GUTTER + (stop - start) * CELL_WIDTH
        if used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments).crop(0, width)

    def frame_at(self, x: int, y: int) -> int | None:
        """The frame number under content offset (x, y), if any."""
        if self.watched is None or x < GUTTER:
            return None
        i = (int(self.scroll_y) + y) * self.columns + (x - GUTTER) // CELL_WIDTH
        if (x - GUTTER) // CELL_WIDTH >= self.columns or not 0 <= i < len(self.watched.frames):
            return None
        return self.watched.frames[i]

    def on_mouse_move(self, event: events.MouseMove) -> None:
        offset = event.get_content_offset(self)
        frame = None if offset is None else self.frame_at(offset.x, offset.y)
        if frame is None or self.watched is None:
            self.tooltip = None
        else:
            self.tooltip = f"frame {frame}: {self.watched.state_of(frame)}"


class FrameLegend(Widget):
    """Above the grid: each state's colour, name and frame count.

    A fixed-height widget repainted with ``refresh()`` (no layout pass), since
    the counts change with every batch of frame events.
    """

    DEFAULT_CSS = """
    FrameLegend { height: 2; padding: 0 1; }
    """

    def __init__(self, grid: FrameGrid, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.grid = grid
        self._text = Text()

    def render(self) -> Text:
        return self._text

    def show(self, watched: WatchedJob | None) -> None:
        counts = watched.counts if watched else [0] * len(FRAME_STATES)
        styles = self.grid.frame_styles()
        text = Text(no_wrap=False)
        for i, state in enumerate(FRAME_STATES):
            text.append("■ ", style=Style(color=styles[i].color, dim=styles[i].dim))
            text.append(f"{state} {counts[i]}  ")
        self._text = text
        self.refresh()
