"""A ``RichLog`` for a pane that is often hidden: lines written meanwhile wait for a width.

Rich wraps a line once, when it is written, at the log's width then. Textual's
``RichLog`` keeps a ``min_width`` of 78 columns for a hidden log, so the lines
written while the Monitor Log or a job's Events tab was hidden, and every line
in a pane narrower than 78 columns, were cut at the pane's edge instead of
wrapped. With a ``min_width`` of 1 they would be wrapped at one column. So a
hidden ``PaneLog`` holds its lines (the latest ``max_lines``), and writes them
at the width it has once shown; lines are written many at once, so that
Textual measures and scrolls once for all of them. Resized, it wraps its latest
``max_held`` lines again at the new width (they were cut at the old one).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from rich.text import Text
from textual.events import Resize
from textual.timer import Timer
from textual.widgets import RichLog

# A resized log wraps its lines again this long after the last resize.
REWRAP_SETTLES = 0.2


class PaneLog(RichLog):
    """See the module docstring."""

    def __init__(
        self, *, id: str | None = None, max_lines: int = 5000, max_held: int = 5000
    ) -> None:
        """``max_held``: the most lines held while hidden (the latest); one line says how
        many more were left out. Rich wraps ~5,000 lines a second here: what is held is
        written at once when the pane is shown."""
        super().__init__(id=id, max_lines=max_lines, wrap=True, markup=False, min_width=1)
        self.max_held = max_held
        self._held: list[Text] = []
        self._dropped = 0
        # The latest lines written, to wrap again at a new width (also at most max_held).
        self._written: deque[Text] = deque(maxlen=max_held)
        self._written_total = 0
        self._wrapped_at = 0
        self._rewrap_timer: Timer | None = None

    @property
    def hidden(self) -> bool:
        return self.scrollable_content_region.width == 0

    def write_lines(self, lines: Sequence[Text]) -> None:
        """Append ``lines`` (each a line of plain ``Text``, never markup)."""
        if not lines:
            return
        if self.hidden:
            self._held.extend(lines)
            if len(self._held) > self.max_held:
                self._dropped += len(self._held) - self.max_held
                del self._held[: len(self._held) - self.max_held]
            return
        self._write_now([*self._take_held(), *lines])

    def _write_now(self, lines: list[Text]) -> None:
        self._written.extend(lines)
        self._written_total += len(lines)
        self._wrapped_at = self.scrollable_content_region.width
        self.write(Text("\n", end="").join(lines))

    def clear(self) -> PaneLog:
        self._held = []
        self._dropped = 0
        self._written.clear()
        self._written_total = 0
        super().clear()
        return self

    def on_resize(self, event: Resize) -> None:
        super().on_resize(event)
        if event.size.width and self._held:
            self.call_after_refresh(self._write_held)
        elif event.size.width and self._written and event.size.width != self._wrapped_at:
            # Narrowed or widened: wrapped again once the resizing settles (each wrap of
            # a thousand lines is ~0.2 s), not cut at the old width.
            if self._rewrap_timer is not None:
                self._rewrap_timer.stop()
            self._rewrap_timer = self.set_timer(REWRAP_SETTLES, self._rewrap)

    def _write_held(self) -> None:
        if self._held and not self.hidden:
            self._write_now(self._take_held())

    def _rewrap(self) -> None:
        self._rewrap_timer = None
        width = self.scrollable_content_region.width
        if not width or width == self._wrapped_at or not self._written:
            return
        lines = list(self._written)
        older = self._written_total - len(lines)
        super().clear()
        self._written.clear()
        self._written_total = 0
        if older:
            lines.insert(0, Text(f"… {older} older line(s) not wrapped again", style="dim"))
        self._write_now(lines)

    def _take_held(self) -> list[Text]:
        held, self._held = self._held, []
        if self._dropped:
            left_out = f"… {self._dropped} line(s) that came while this pane was hidden left out"
            held.insert(0, Text(left_out, style="dim"))
            self._dropped = 0
        return held
