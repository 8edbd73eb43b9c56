"""``P``: type a priority, applied once on Enter; Esc changes nothing.

A one-line prompt at the bottom naming the jobs and their priorities now.
Only digits can be typed (0–100; lower renders sooner); no arrow key or
button steps the number, so nothing is saved by accident, and the leader hears
of it once, on Enter. Returns the priority, or None.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label

from farmtui.console import fmt

LOW, HIGH = 0, 100


class PriorityPrompt(ModalScreen[int | None]):
    """See the module docstring."""

    MERGED_ESCAPE = "cancel"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="priority.cancel"),
    ]

    DEFAULT_CSS = """
    PriorityPrompt { align: left bottom; background: $background 30%; }
    PriorityPrompt > Vertical { height: auto; background: $panel; border-top: solid $accent; }
    PriorityPrompt Label { padding: 0 1; }
    #priority-row { height: 1; }
    #priority-input { width: 8; border: none; height: 1; padding: 0 1; }
    #priority-error { color: $error; }
    """

    def __init__(self, what: str) -> None:
        """``what``: the jobs and their priority now, in words."""
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(fmt.plain(f"Priority of {self.what}"), id="priority-title")
            with Horizontal(id="priority-row"):
                yield Label("0–100, lower renders sooner:")
                yield Input(restrict=r"[0-9]*", max_length=3, id="priority-input", compact=True)
                yield Label("Enter applies · Esc cancels", id="priority-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        if not text or not LOW <= int(text) <= HIGH:
            self.query_one("#priority-error", Label).update(
                f"type a whole number {LOW}–{HIGH}, or Esc"
            )
            return
        self.dismiss(int(text))

    def action_cancel(self) -> None:
        self.dismiss(None)
