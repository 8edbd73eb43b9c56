"""A keyed, multi-select table drawn with the Line API (``ScrollView.render_line``).

Only the visible lines are ever rendered, so 10,000 jobs or 100,000 chunks cost
the same as twenty. Rows are identified by key: ``set_rows`` swaps the order
(keeping cursor and selection on the same keys) and ``refresh_key`` repaints
just one line when one row's data changes — nothing is cleared and rebuilt.
Subclasses say what a row looks like (``row_cells``) and may allow reordering
by dragging the handle at the left edge (``DRAGGABLE``), with an indicator line
where the row will land.

Cells are plain text drawn as segments (never markup), and every line goes
through ``printable`` here, so a name with a newline or an escape sequence in it
stays on its row and cannot drive the terminal, whatever a subclass returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

from rich.cells import cell_len, set_cell_size
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.actions import SkipAction
from textual.binding import Binding, BindingType
from textual.geometry import Offset, Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from farmtui.console.state import GroupHeader, Row
from farmtui.printable import printable

HANDLE = "⠿"


@dataclass(frozen=True)
class Column:
    """One column: a header label and a width in cells (0 shares the spare width)."""

    key: str
    label: str
    width: int
    align: Literal["left", "right"] = "left"
    # Dropped (in order of this number, highest first) when the flexible columns get too narrow.
    optional: int = 0


Cell = tuple[str, Style | None]


class LineTable(ScrollView, can_focus=True):
    """Base class of the jobs and chunk tables; see the module docstring."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "line-table--header",
        "line-table--cursor",
        "line-table--selected",
        "line-table--group",
        "line-table--handle",
        "line-table--drop",
        "line-table--drop-refused",
    }

    DEFAULT_CSS = """
    LineTable {
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        height: 1fr;
        background: $surface;
    }
    LineTable > .line-table--header { text-style: bold; background: $panel; color: $text; }
    LineTable > .line-table--cursor { background: $secondary 30%; }
    LineTable:focus > .line-table--cursor { background: $accent 50%; text-style: bold; }
    LineTable > .line-table--selected { background: $primary 35%; }
    LineTable > .line-table--group { text-style: bold; color: $text-accent; background: $boost; }
    LineTable > .line-table--handle { color: $text-muted; }
    LineTable > .line-table--drop { background: $success; color: $text; text-style: bold; }
    LineTable > .line-table--drop-refused { background: $error; color: $text; text-style: bold; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor(-1)", "Up", show=False, id="table.up"),
        Binding("down", "cursor(1)", "Down", show=False, id="table.down"),
        Binding("pageup", "page(-1)", "Page up", show=False, id="table.pageup"),
        Binding("pagedown", "page(1)", "Page down", show=False, id="table.pagedown"),
        Binding("home", "cursor_to(0)", "First", show=False, id="table.home"),
        Binding("end", "cursor_to(-1)", "Last", show=False, id="table.end"),
        Binding("space", "toggle_select", "Select", id="table.toggle"),
        Binding("shift+up", "extend(-1)", "Extend up", show=False, id="table.extend_up"),
        Binding("shift+down", "extend(1)", "Extend down", show=False, id="table.extend_down"),
        Binding("ctrl+a", "select_all", "All", id="table.select_all"),
        Binding("escape", "clear_selection", "Clear", show=False, id="table.clear"),
        Binding("enter", "activate", "Open", id="table.open"),
        Binding("m,shift+f10", "context_menu", "Menu", id="table.menu"),
    ]

    COLUMNS: ClassVar[tuple[Column, ...]] = ()
    DRAGGABLE: ClassVar[bool] = False
    GAP = 1
    MIN_FLEX = 16

    # -- messages ------------------------------------------------------------
    # Each carries the table it came from, as ``control``, so ``@on(..., "#id")`` works.

    @dataclass
    class CursorMoved(Message):
        table: LineTable
        key: str | None

        @property
        def control(self) -> LineTable:
            return self.table

    @dataclass
    class _Message(Message):
        """Base of this table's messages: ``control`` is the table, for ``@on`` selectors."""

        table: LineTable

        @property
        def control(self) -> LineTable:
            return self.table

    @dataclass
    class SelectionChanged(_Message):
        keys: frozenset[str]

    @dataclass
    class Activated(_Message):
        key: str

    @dataclass
    class ContextRequested(_Message):
        key: str
        screen_offset: Offset

    @dataclass
    class DropRequested(_Message):
        key: str
        gap: int

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(id=id, classes=classes)
        self.rows: list[Row] = []
        self._index: dict[str, int] = {}
        self.cursor = 0
        self.selected: set[str] = set()
        self._anchor: int | None = None
        self._drag_key: str | None = None
        self._drop_gap: int | None = None
        self._widths: tuple[int, list[int]] | None = None

    # -- subclass hooks --------------------------------------------------------

    def row_cells(self, key: str) -> list[Cell]:
        """The cells of the row for ``key``, one per column."""
        raise NotImplementedError

    def header_label(self, column: Column) -> str:
        """The header text of ``column`` (a subclass may mark the sort column)."""
        return column.label

    def drop_preview(self, key: str, gap: int) -> tuple[str, bool]:
        """The indicator line's text while dragging ``key`` to land before row ``gap``."""
        return ("move here", True)

    # -- data ----------------------------------------------------------------

    @property
    def cursor_key(self) -> str | None:
        if 0 <= self.cursor < len(self.rows):
            row = self.rows[self.cursor]
            return row if isinstance(row, str) else None
        return None

    @property
    def keys(self) -> list[str]:
        return [row for row in self.rows if isinstance(row, str)]

    def targets(self) -> list[str]:
        """Selected keys in row order, or the cursor's key when nothing is selected."""
        if self.selected:
            return [row for row in self.rows if isinstance(row, str) and row in self.selected]
        key = self.cursor_key
        return [key] if key is not None else []

    def set_rows(self, rows: list[Row]) -> None:
        """Show ``rows`` (a new order or membership), keeping cursor and selection by key."""
        old_key = self.cursor_key
        self.rows = rows
        self._index = {row: i for i, row in enumerate(rows) if isinstance(row, str)}
        dropped = {key for key in self.selected if key not in self._index}
        self.selected -= dropped
        if old_key is not None and old_key in self._index:
            self.cursor = self._index[old_key]
        else:
            self.cursor = min(self.cursor, max(len(rows) - 1, 0))
            self._skip_headers(1)
        self.virtual_size = Size(self.size.width, len(rows) + 1)
        self.refresh()
        if dropped:
            self.post_message(self.SelectionChanged(self, frozenset(self.selected)))
        if self.cursor_key != old_key:
            self.post_message(self.CursorMoved(self, self.cursor_key))

    def refresh_key(self, key: str) -> None:
        """Repaint the one line showing ``key`` (if it is on screen)."""
        row = self._index.get(key)
        if row is None:
            return
        y = row - int(self.scroll_y) + 1
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def row_of(self, key: str) -> int | None:
        return self._index.get(key)

    def move_cursor_to_key(self, key: str) -> None:
        row = self._index.get(key)
        if row is not None:
            self._set_cursor(row)

    # -- geometry ------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self._widths = None
        self.virtual_size = Size(self.size.width, len(self.rows) + 1)

    def _column_widths(self) -> list[int]:
        width = self.scrollable_content_region.width
        if self._widths is not None and self._widths[0] == width:
            return self._widths[1]
        widths = [column.width for column in self.COLUMNS]
        flex = [i for i, column in enumerate(self.COLUMNS) if column.width == 0]
        droppable = sorted(
            (i for i, column in enumerate(self.COLUMNS) if column.optional),
            key=lambda i: -self.COLUMNS[i].optional,
        )
        shown = set(range(len(self.COLUMNS)))

        def spare() -> int:
            gaps = self.GAP * max(len(shown) - 1, 0)
            return width - sum(widths[i] for i in shown) - gaps

        def flex_shown() -> list[int]:
            return [i for i in flex if i in shown]

        while droppable and spare() < self.MIN_FLEX * max(len(flex_shown()), 1):
            shown.discard(droppable.pop(0))
        flex = flex_shown()
        left = max(spare(), len(flex) * 4)
        for n, i in enumerate(flex):
            widths[i] = left // len(flex) + (1 if n < left % len(flex) else 0)
        for i in range(len(widths)):
            if i not in shown:
                widths[i] = -1  # hidden
        self._widths = (width, widths)
        return widths

    @property
    def _body_height(self) -> int:
        return max(self.scrollable_content_region.height - 1, 1)

    # -- rendering -----------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        widths = self._column_widths()
        base = self.rich_style
        if y == 0:
            header = self.get_component_rich_style("line-table--header")
            cells: list[Cell] = [(self.header_label(column), None) for column in self.COLUMNS]
            return self._strip(cells, widths, base + header, width)
        row = int(self.scroll_y) + y - 1
        if self._drop_gap is not None and self._drag_key is not None:
            if row == self._drop_gap:
                text, ok = self.drop_preview(self._drag_key, self._drop_gap)
                style = self.get_component_rich_style(
                    "line-table--drop" if ok else "line-table--drop-refused"
                )
                line = set_cell_size(f"{'▶' if ok else '✗'} {printable(text)}", width)
                return Strip([Segment(line, base + style)], width)
            if row > self._drop_gap:
                row -= 1
        if row >= len(self.rows):
            return Strip([Segment(" " * width, base)], width)
        item = self.rows[row]
        if isinstance(item, GroupHeader):
            style = base + self.get_component_rich_style("line-table--group")
            line = set_cell_size(f" {printable(item.label)}  ({item.count})", width)
            return Strip([Segment(line, style)], width)
        style = base
        if item in self.selected:
            style += self.get_component_rich_style("line-table--selected")
        if row == self.cursor:
            style += self.get_component_rich_style("line-table--cursor")
        cells = self.row_cells(item)
        if self.DRAGGABLE:
            cells[0] = (HANDLE, self.get_component_rich_style("line-table--handle", partial=True))
        return self._strip(cells, widths, style, width)

    def _strip(self, cells: list[Cell], widths: list[int], style: Style, width: int) -> Strip:
        segments: list[Segment] = []
        gap = Segment(" " * self.GAP, style)
        used = 0
        first = True
        for (text, cell_style), column, cell_width in zip(
            cells, self.COLUMNS, widths, strict=False
        ):
            if cell_width < 0:
                continue
            if not first:
                segments.append(gap)
                used += self.GAP
            first = False
            text = _fit(printable(text), cell_width, column.align)
            segments.append(Segment(text, style + cell_style if cell_style else style))
            used += cell_width
        if used < width:
            segments.append(Segment(" " * (width - used), style))
        return Strip(segments).crop(0, width)

    # -- keyboard --------------------------------------------------------------

    def _set_cursor(self, row: int, scroll: bool = True) -> None:
        row = max(0, min(row, len(self.rows) - 1))
        old = self.cursor
        old_key = self.cursor_key
        self.cursor = row
        if scroll:
            self._scroll_to_row(row)
        self._refresh_row(old)
        self._refresh_row(row)
        if self.cursor_key != old_key:
            self.post_message(self.CursorMoved(self, self.cursor_key))

    def _refresh_row(self, row: int) -> None:
        y = row - int(self.scroll_y) + 1
        if 1 <= y < self.size.height:
            self.refresh(Region(0, y, self.size.width, 1))

    def _scroll_to_row(self, row: int) -> None:
        top = int(self.scroll_y)
        if row < top:
            self.scroll_to(y=row, animate=False)
        elif row >= top + self._body_height:
            self.scroll_to(y=row - self._body_height + 1, animate=False)

    def _skip_headers(self, step: int) -> None:
        row = self.cursor
        while 0 <= row < len(self.rows) and isinstance(self.rows[row], GroupHeader):
            row += step
        if not 0 <= row < len(self.rows):
            row = self.cursor
            while 0 <= row < len(self.rows) and isinstance(self.rows[row], GroupHeader):
                row -= step
        if 0 <= row < len(self.rows):
            self.cursor = row

    def _step(self, row: int, step: int) -> int:
        """The next job row from ``row`` going ``step``, skipping group titles."""
        target = row + step
        while 0 <= target < len(self.rows) and isinstance(self.rows[target], GroupHeader):
            target += 1 if step > 0 else -1
        if not 0 <= target < len(self.rows):
            return row
        return target

    def action_cursor(self, step: int) -> None:
        self._anchor = None
        self._set_cursor(self._step(self.cursor, step))

    def action_page(self, direction: int) -> None:
        self._anchor = None
        target = self.cursor + direction * self._body_height
        target = max(0, min(target, len(self.rows) - 1))
        if isinstance(self.rows[target] if self.rows else None, GroupHeader):
            target = self._step(target, 1 if direction > 0 else -1)
        self._set_cursor(target)

    def action_cursor_to(self, row: int) -> None:
        if not self.rows:
            return
        target = row if row >= 0 else len(self.rows) - 1
        if isinstance(self.rows[target], GroupHeader):
            target = self._step(target, 1 if row >= 0 else -1)
        self._set_cursor(target)

    def action_toggle_select(self) -> None:
        key = self.cursor_key
        if key is None:
            return
        self.selected ^= {key}
        self._anchor = self.cursor
        self.refresh_key(key)
        self.post_message(self.SelectionChanged(self, frozenset(self.selected)))

    def action_extend(self, step: int) -> None:
        if self._anchor is None:
            self._anchor = self.cursor
        self._set_cursor(self._step(self.cursor, step))
        low, high = sorted((self._anchor, self.cursor))
        self.selected = {row for row in self.rows[low : high + 1] if isinstance(row, str)}
        self.refresh()
        self.post_message(self.SelectionChanged(self, frozenset(self.selected)))

    def action_select_all(self) -> None:
        self.selected = set(self.keys)
        self.refresh()
        self.post_message(self.SelectionChanged(self, frozenset(self.selected)))

    def action_clear_selection(self) -> None:
        if not self.selected:
            # Nothing to clear: let Escape go on to the screen (back to the jobs table).
            raise SkipAction()
        self.selected = set()
        self._anchor = None
        self.refresh()
        self.post_message(self.SelectionChanged(self, frozenset()))

    def select_only(self, keys: set[str]) -> None:
        self.selected = {key for key in keys if key in self._index}
        self.refresh()
        self.post_message(self.SelectionChanged(self, frozenset(self.selected)))

    def action_activate(self) -> None:
        key = self.cursor_key
        if key is not None:
            self.post_message(self.Activated(self, key))

    def action_context_menu(self) -> None:
        key = self.cursor_key
        if key is None:
            return
        y = self.cursor - int(self.scroll_y) + 1
        origin = self.content_region.offset + Offset(4, max(y, 1))
        self.post_message(self.ContextRequested(self, key, origin))

    # -- mouse -------------------------------------------------------------------

    def _row_at_y(self, y: int) -> int | None:
        if y < 1:
            return None
        row = int(self.scroll_y) + y - 1
        return row if 0 <= row < len(self.rows) else None

    def on_mouse_down(self, event: events.MouseDown) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = self._row_at_y(offset.y)
        if row is None or not isinstance(self.rows[row], str):
            return
        key = self.rows[row]
        assert isinstance(key, str)
        if event.button == 3:
            self._set_cursor(row, scroll=False)
            self.post_message(self.ContextRequested(self, key, event.screen_offset))
            event.stop()
        elif event.button == 1 and self.DRAGGABLE and offset.x <= 1:
            self._drag_key = key
            self._drop_gap = None
            self.capture_mouse()
            event.stop()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._drag_key is None:
            return
        offset = event.get_content_offset_capture(self)
        gap = int(self.scroll_y) + offset.y - 1
        gap = max(0, min(gap, len(self.rows)))
        if gap != self._drop_gap:
            self._drop_gap = gap
            self.refresh()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        if self._drag_key is None:
            return
        key, gap = self._drag_key, self._drop_gap
        self._drag_key = None
        self._drop_gap = None
        self.release_mouse()
        self.refresh()
        event.stop()
        if gap is not None:
            self.post_message(self.DropRequested(self, key, gap))

    def on_click(self, event: events.Click) -> None:
        if event.button != 1:
            return
        offset = event.get_content_offset(self)
        if offset is None:
            return
        row = self._row_at_y(offset.y)
        if row is None or not isinstance(self.rows[row], str):
            return
        key = self.rows[row]
        assert isinstance(key, str)
        if event.ctrl or event.meta:
            self.selected ^= {key}
            self._anchor = row
        elif event.shift and self._anchor is not None:
            low, high = sorted((self._anchor, row))
            self.selected = {r for r in self.rows[low : high + 1] if isinstance(r, str)}
        else:
            self.selected = {key}
            self._anchor = row
        self._set_cursor(row, scroll=False)
        self.refresh()
        self.post_message(self.SelectionChanged(self, frozenset(self.selected)))
        if event.chain == 2:
            self.post_message(self.Activated(self, key))


def _fit(text: str, width: int, align: Literal["left", "right"]) -> str:
    """Pad or truncate ``text`` to exactly ``width`` cells, with an ellipsis when cut."""
    length = cell_len(text)
    if length > width:
        return set_cell_size(text, width - 1) + "…" if width > 1 else set_cell_size(text, width)
    if align == "right":
        return " " * (width - length) + text
    return text + " " * (width - length)
