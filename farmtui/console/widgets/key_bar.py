"""The footer: the keys that matter where the focus is, as many as fit on one line.

Generated from the active bindings (after the user's keymap), in the order of
``KEY_BAR_ORDER``: a key shows only while pressing it would do something here,
and what does not fit is dropped whole from the end; ``?`` (every key) comes
first, so it is always there. Clicking a key (or its label) presses it: the
same binding runs as from the keyboard, so a costly action still asks first.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len
from textual import events
from textual.content import Content
from textual.screen import Screen
from textual.widgets import Static

# Binding ids, most useful first; ids not active where the focus is are skipped.
KEY_BAR_ORDER: tuple[str, ...] = (
    "help.show",
    "chunks.mode",
    "grid.open",
    "grid.heat",
    "detail.next_tab",
    "task.older_attempt",
    "task.newer_attempt",
    "failures.retry",
    "failures.block",
    "detail.unblock",
    "logs.search",
    "nodes.toggle",
    "nodes.log",
    "table.open",
    "table.toggle",
    "jobs.pause",
    "jobs.resume",
    "jobs.hold",
    "jobs.retry-failed",
    "jobs.filter",
    "filter.save",
    "jobs.sort",
    "jobs.saved_filters",
    "jobs.hide_finished",
    "jobs.priority",
    "jobs.group",
    "jobs.edit",
    "jobs.requeue",
    "jobs.cancel",
    "chunks.leave",
    "chunks.retry",
    "chunks.hold",
    "chunks.set-failed",
    "chunks.set-done",
    "chunks.exclude",
)
SHORT_LABELS: dict[str, str] = {
    "chunks.mode": "chunk action",
    "jobs.retry-failed": "retry",
    "jobs.hide_finished": "hide done",
    "jobs.priority": "priority",
    "table.toggle": "select",
    "failures.retry": "retry",
    "failures.block": "block node",
    "detail.unblock": "unblock",
    "logs.search": "search",
    "jobs.saved_filters": "saved",
    "filter.save": "save filter",
}


def key_pairs(
    screen: Screen[object], order: Sequence[str] = KEY_BAR_ORDER
) -> list[tuple[str, str]]:
    """(key as shown, label) for each binding in ``order`` that is active on ``screen``."""
    return [(shown, label) for _, shown, label in bar_keys(screen, order)]


def bar_keys(
    screen: Screen[object], order: Sequence[str] = KEY_BAR_ORDER
) -> list[tuple[str, str, str]]:
    """(key, key as shown, label) for each binding in ``order`` that is active on ``screen``."""
    found: dict[str, tuple[str, str, str]] = {}
    app = screen.app
    for key, active in screen.active_bindings.items():
        binding = active.binding
        if not binding.id or binding.id in found or not active.enabled:
            continue
        label = SHORT_LABELS.get(binding.id, binding.description.lower())
        found[binding.id] = (key, app.get_key_display(binding.with_key(key)), label)
    return [found[binding_id] for binding_id in order if binding_id in found]


class KeyBar(Static):
    """See the module docstring."""

    DEFAULT_CSS = """
    KeyBar { height: 1; background: $panel; color: $text-muted; padding: 0 1; }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        # (first column, column after the last, key) of each key shown, left to right.
        self._spans: list[tuple[int, int, str]] = []

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)
        self.call_after_refresh(self.refresh_keys)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def on_resize(self) -> None:
        self.refresh_keys()

    def _bindings_changed(self, screen: Screen[object]) -> None:
        self.refresh_keys()

    def refresh_keys(self) -> None:
        if not self.is_attached:
            return
        width = self.content_region.width or self.app.size.width - 2
        parts: list[Content | str] = []
        spans: list[tuple[int, int, str]] = []
        used = 0
        for key, shown, label in bar_keys(self.screen):
            gap = 2 if parts else 0
            cells = cell_len(shown) + 1 + cell_len(label)
            if used + gap + cells > width:
                break
            if parts:
                parts.append("  ")
            parts.append(Content.styled(shown, "bold $text-accent"))
            parts.append(f" {label}")
            spans.append((used + gap, used + gap + cells, key))
            used += gap + cells
        self._spans = spans
        self.update(Content.assemble(*parts))

    def key_at(self, x: int) -> str | None:
        """The key whose key or label is drawn at column ``x`` of the content; None between."""
        for start, end, key in self._spans:
            if start <= x < end:
                return key
        return None

    def on_click(self, event: events.Click) -> None:
        """A click on a key (or its label) presses that key."""
        offset = event.get_content_offset(self)
        key = self.key_at(offset.x) if offset is not None else None
        if key is not None:
            event.stop()
            self.app.simulate_key(key)
