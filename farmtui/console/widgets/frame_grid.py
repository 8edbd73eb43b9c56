"""The frame grid: one cell per frame of the watched job, by state, with a keyboard cursor.

A ``ScrollView`` drawn with ``render_line``, one component class per frame
state (so themes and ``farm.tcss`` can restyle them), and ``refresh(region)``
for exactly the cells a ``FramesChanged`` touched. A 100,000-frame job is one
widget and a ``bytearray``; only the visible lines are rendered.

Each state has a glyph of its own as well as a colour (``GLYPHS``), so held,
excluded and unassigned frames differ in shape, not only in shade; a job held
as a whole shows its waiting frames as held. The arrows move a cursor over the
frames, ``space`` and ``shift+arrows`` select frames (``k`` then acts on their
chunks), Enter opens the cursor frame's chunk, and ``T`` colours the frames
by render time per frame (a heat map; the legend shows the scale). The leader
times chunks, not frames: a frame's time is its chunk's render time divided
by the chunk's frame count, and the legend says so (``chunk÷frames``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.binding import Binding, BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widget import Widget

from farmtui.console import fmt
from farmtui.console.state import FRAME_CODE, FRAME_STATES, WatchedJob

CELL_WIDTH = 2
GUTTER = 8  # first frame number of the line, right-aligned, then a space

GLYPHS: dict[str, str] = {
    "unassigned": "□",
    "assigned": "▸",
    "staged": "▪",
    "done": "■",
    "failed": "✗",
    "held": "‖",
    "excluded": "─",
}
# The legend's names, short enough for one line at 80 columns.
LEGEND_NAMES: dict[str, str] = {
    "unassigned": "wait",
    "assigned": "rend",
    "staged": "stgd",
    "done": "done",
    "failed": "fail",
    "held": "held",
    "excluded": "excl",
}
LEGEND_ORDER = ("done", "staged", "assigned", "failed", "held", "excluded", "unassigned")
# Heat map: render time per frame, fast to slow.
HEAT_COLOURS = ("#3b82f6", "#06b6d4", "#eab308", "#f97316", "#ef4444")
HELD = FRAME_CODE["held"]
UNASSIGNED = FRAME_CODE["unassigned"]


class FrameGrid(ScrollView, can_focus=True):
    """See the module docstring."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "frame-grid--gutter",
        "frame-grid--cursor",
        "frame-grid--selected",
        "frame-grid--no-time",
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
    FrameGrid > .frame-grid--cursor { text-style: reverse bold; }
    FrameGrid > .frame-grid--selected { background: $primary 60%; }
    FrameGrid > .frame-grid--no-time { color: #606060; }
    FrameGrid > .frame-grid--unassigned { color: #9ca3af; }
    FrameGrid > .frame-grid--assigned { color: #3b82f6; text-style: bold; }
    FrameGrid > .frame-grid--staged { color: #15803d; }
    FrameGrid > .frame-grid--done { color: #4ade80; }
    FrameGrid > .frame-grid--failed { color: #ef4444; text-style: bold; }
    FrameGrid > .frame-grid--held { color: #d946ef; }
    FrameGrid > .frame-grid--excluded { color: #6b7280; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("left", "move(-1, 0)", "Left", show=False, id="grid.left"),
        Binding("right", "move(1, 0)", "Right", show=False, id="grid.right"),
        Binding("up", "move(0, -1)", "Up", show=False, id="grid.up"),
        Binding("down", "move(0, 1)", "Down", show=False, id="grid.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="grid.pageup"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="grid.pagedown"),
        Binding("home", "jump(0)", "First frame", show=False, id="grid.home"),
        Binding("end", "jump(-1)", "Last frame", show=False, id="grid.end"),
        Binding("space", "toggle_select", "Select frame", id="grid.toggle"),
        Binding("shift+left", "extend(-1, 0)", "Select left", show=False, id="grid.extend_left"),
        Binding("shift+right", "extend(1, 0)", "Select right", show=False, id="grid.extend_right"),
        Binding("shift+up", "extend(0, -1)", "Select up", show=False, id="grid.extend_up"),
        Binding("shift+down", "extend(0, 1)", "Select down", show=False, id="grid.extend_down"),
        Binding("ctrl+a", "select_all", "Select all frames", show=False, id="grid.select_all"),
        Binding("escape", "clear_selection", "Clear selection", show=False, id="grid.clear"),
        Binding("enter", "open", "Chunk", id="grid.open", tooltip="Open the frame's chunk"),
        Binding(
            "T",
            "toggle_heat",
            "Heat map",
            id="grid.heat",
            tooltip="Colour by render time per frame: its chunk's time ÷ its frame count",
        ),
    ]

    @dataclass
    class ChunkWanted(Message):
        """Enter on a frame: show the chunk that renders it."""

        frame: int

    @dataclass
    class CursorMoved(Message):
        frame: int | None

    @dataclass
    class HeatToggled(Message):
        heat: bool

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.watched: WatchedJob | None = None
        self._styles: list[Style] = []
        self.cursor = 0
        self.selected: set[int] = set()
        self._anchor: int | None = None
        self.heat = False
        # Per grid index: heat bucket (0..4) or -1 when the frame has no render time yet.
        self._heat: bytearray | None = None
        self.heat_scale: tuple[float, float] | None = None

    # -- data ------------------------------------------------------------------------

    @property
    def columns(self) -> int:
        """Frames per line at the current width."""
        width = self.scrollable_content_region.width - GUTTER
        return max(width // CELL_WIDTH, 1)

    @property
    def count(self) -> int:
        return len(self.watched.frames) if self.watched else 0

    @property
    def cursor_frame(self) -> int | None:
        if self.watched is None or not 0 <= self.cursor < self.count:
            return None
        return self.watched.frames[self.cursor]

    def target_frames(self) -> list[int]:
        """The selected frames in frame order, or the cursor's frame when none is selected."""
        if self.watched is None:
            return []
        if self.selected:
            return [self.watched.frames[i] for i in sorted(self.selected)]
        frame = self.cursor_frame
        return [] if frame is None else [frame]

    def load(self, watched: WatchedJob | None) -> None:
        """Show a (new) job's frames."""
        same_job = (
            watched is not None
            and self.watched is not None
            and watched.job_id == self.watched.job_id
        )
        self.watched = watched
        if not same_job:
            self.cursor = 0
            self.selected = set()
            self._anchor = None
        self.cursor = min(self.cursor, max(self.count - 1, 0))
        self.selected = {i for i in self.selected if i < self.count}
        self._heat = None
        self._update_virtual_size()
        if not same_job:
            self.scroll_to(y=0, animate=False)
        self.refresh()

    def chunks_changed(self) -> None:
        """Chunk times changed: the heat map is worked out again."""
        self._heat = None
        if self.heat:
            self.refresh()

    def _update_virtual_size(self) -> None:
        lines = -(-self.count // self.columns)
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

    def display_code(self, code: int) -> int:
        """The state a frame is drawn as: waiting frames of a held job are held."""
        if code == UNASSIGNED and self.watched is not None and self.watched.held:
            return HELD
        return code

    # -- heat map ----------------------------------------------------------------------

    def heat_buckets(self) -> bytearray:
        """Per grid index, the heat bucket of its render time (255: no time yet)."""
        if self._heat is not None:
            return self._heat
        watched = self.watched
        buckets = bytearray([255]) * self.count
        self.heat_scale = None
        if watched is not None:
            seconds = watched.frame_seconds()
            if seconds:
                low, high = min(seconds.values()), max(seconds.values())
                self.heat_scale = (low, high)
                span = high - low
                last = len(HEAT_COLOURS) - 1
                index = watched.index
                for frame, value in seconds.items():
                    i = index.get(frame)
                    if i is not None:
                        buckets[i] = round((value - low) / span * last) if span else 0
        self._heat = buckets
        return buckets

    def action_toggle_heat(self) -> None:
        """Colour frames by render time per frame, or by state again."""
        self.heat = not self.heat
        self.refresh()
        self.post_message(self.HeatToggled(self.heat))

    # -- drawing -----------------------------------------------------------------------

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

    def _cell_style(self, i: int, code: int, heat: bytearray | None) -> Style:
        if heat is not None:
            bucket = heat[i]
            if bucket == 255:
                return self.rich_style + self.get_component_rich_style("frame-grid--no-time")
            return self.rich_style + Style(color=HEAT_COLOURS[bucket], bold=True)
        return self.frame_styles()[code]

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
        states = watched.states
        heat = self.heat_buckets() if self.heat else None
        selected_style = self.get_component_rich_style("frame-grid--selected", partial=True)
        cursor_style = self.get_component_rich_style("frame-grid--cursor", partial=True)
        show_cursor = self.has_focus
        for i in range(start, stop):
            code = self.display_code(states[i])
            style = self._cell_style(i, code, heat)
            if i in self.selected:
                style += selected_style
            glyph = GLYPHS[FRAME_STATES[code]]
            if show_cursor and i == self.cursor:
                segments.append(Segment(glyph, style + cursor_style))
                segments.append(Segment(" ", style))
            else:
                segments.append(Segment(glyph + " ", style))
        used = GUTTER + (stop - start) * CELL_WIDTH
        if used < width:
            segments.append(Segment(" " * (width - used), base))
        return Strip(segments).simplify().crop(0, width)

    # -- keyboard ---------------------------------------------------------------------

    def _refresh_index(self, i: int) -> None:
        self.refresh_frames([i])

    def _set_cursor(self, i: int) -> None:
        if not self.count:
            return
        i = max(0, min(i, self.count - 1))
        old, self.cursor = self.cursor, i
        line = i // self.columns
        top = int(self.scroll_y)
        if line < top:
            self.scroll_to(y=line, animate=False)
        elif line >= top + self.size.height:
            self.scroll_to(y=line - self.size.height + 1, animate=False)
        self._refresh_index(old)
        self._refresh_index(i)
        self.post_message(self.CursorMoved(self.cursor_frame))

    def _target(self, dx: int, dy: int) -> int:
        return self.cursor + dx + dy * self.columns

    def action_move(self, dx: int, dy: int) -> None:
        self._anchor = None
        self._set_cursor(self._target(dx, dy))

    def action_page(self, direction: int) -> None:
        self._anchor = None
        self._set_cursor(self.cursor + direction * max(self.size.height, 1) * self.columns)

    def action_jump(self, where: int) -> None:
        self._anchor = None
        self._set_cursor(where if where >= 0 else self.count - 1)

    def action_toggle_select(self) -> None:
        if not self.count:
            return
        self.selected ^= {self.cursor}
        self._anchor = self.cursor
        self._refresh_index(self.cursor)

    def action_extend(self, dx: int, dy: int) -> None:
        if not self.count:
            return
        if self._anchor is None:
            self._anchor = self.cursor
        self._set_cursor(self._target(dx, dy))
        low, high = sorted((self._anchor, self.cursor))
        self.selected = set(range(low, high + 1))
        self.refresh()

    def action_select_all(self) -> None:
        self.selected = set(range(self.count))
        self.refresh()

    def action_clear_selection(self) -> None:
        if not self.selected:
            raise SkipAction()  # Escape goes on to the screen: back to the jobs table
        self.selected = set()
        self._anchor = None
        self.refresh()

    def action_open(self) -> None:
        frame = self.cursor_frame
        if frame is not None:
            self.post_message(self.ChunkWanted(frame))

    def on_focus(self) -> None:
        self._refresh_index(self.cursor)

    def on_blur(self) -> None:
        self._refresh_index(self.cursor)

    # -- mouse -------------------------------------------------------------------------

    def index_at(self, x: int, y: int) -> int | None:
        """The grid index under content offset (x, y), if any."""
        if self.watched is None or x < GUTTER:
            return None
        column = (x - GUTTER) // CELL_WIDTH
        i = (int(self.scroll_y) + y) * self.columns + column
        if column >= self.columns or not 0 <= i < self.count:
            return None
        return i

    def frame_at(self, x: int, y: int) -> int | None:
        """The frame number under content offset (x, y), if any."""
        i = self.index_at(x, y)
        return None if i is None or self.watched is None else self.watched.frames[i]

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        i = None if offset is None else self.index_at(offset.x, offset.y)
        if i is not None:
            self._set_cursor(i)
            if event.chain == 2:
                self.action_open()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        offset = event.get_content_offset(self)
        frame = None if offset is None else self.frame_at(offset.x, offset.y)
        if frame is None or self.watched is None:
            self.tooltip = None
        else:
            self.tooltip = f"frame {frame}: {self.watched.state_of(frame)}"


class FrameLegend(Widget):
    """Above the grid, on one line: each state's glyph, name and count, or the heat scale.

    A fixed-height widget repainted with ``refresh()`` (no layout pass), since
    the counts change with every batch of frame events.
    """

    DEFAULT_CSS = """
    FrameLegend { height: 1; padding: 0 1; }
    """

    def __init__(self, grid: FrameGrid, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.grid = grid
        self._text = Text()

    def render(self) -> Text:
        return self._text

    def show(self, watched: WatchedJob | None) -> None:
        text = Text(no_wrap=True, overflow="ellipsis", end="")
        if self.grid.heat:
            self._heat_scale(text)
        else:
            self._counts(text, watched)
        self._text = text
        self.refresh()

    def _counts(self, text: Text, watched: WatchedJob | None) -> None:
        counts = list(watched.counts) if watched else [0] * len(FRAME_STATES)
        if watched is not None and watched.held:
            counts[HELD] += counts[UNASSIGNED]
            counts[UNASSIGNED] = 0
        styles = self.grid.frame_styles()
        for state in LEGEND_ORDER:
            code = FRAME_CODE[state]
            if text:
                text.append("  ")
            text.append(GLYPHS[state], style=Style(color=styles[code].color, bold=True))
            text.append(f"{LEGEND_NAMES[state]} {counts[code]}")
        if watched is not None and watched.held:
            text.append("  (job held)", style="bold")

    def _heat_scale(self, text: Text) -> None:
        self.grid.heat_buckets()
        scale = self.grid.heat_scale
        text.append("time/frame ", style="bold")
        text.append("(chunk÷frames) ", style="dim")
        if scale is None:
            text.append("— no chunk done yet", style="dim")
            return
        low, high = scale
        text.append(f"{fmt.duration(low)} ")
        for colour in HEAT_COLOURS:
            text.append("■", style=Style(color=colour, bold=True))
        text.append(f" {fmt.duration(high)}  ")
        text.append("□", style="#606060")
        text.append(" not done  (T: by state)")
