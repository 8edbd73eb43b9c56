"""The priority spinner in the detail view: −/+ buttons around a number (admins only).

Each step, or Enter after typing, posts ``PrioritySpinner.Changed``; the
screen sends ``SetPriority``, which takes effect at the next dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.message import Message
from textual.widgets import Button, Input, Label

LOW, HIGH = 0, 100


class PrioritySpinner(Horizontal):
    """See the module docstring."""

    DEFAULT_CSS = """
    PrioritySpinner { height: 1; width: auto; }
    PrioritySpinner Input { width: 6; }
    PrioritySpinner Button { width: 3; min-width: 3; }
    PrioritySpinner Label { padding: 0 1; color: $text-muted; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("plus,equals_sign,up", "step(-1)", "Sooner", id="priority.sooner"),
        Binding("minus,down", "step(1)", "Later", id="priority.later"),
    ]

    @dataclass
    class Changed(Message):
        priority: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.value = 50
        self.allowed = False

    def compose(self) -> ComposeResult:
        yield Label("Priority")
        yield Button("−", id="priority-later", compact=True, tooltip="higher number: later")
        yield Input(str(self.value), type="integer", id="priority-value", compact=True)
        yield Button("+", id="priority-sooner", compact=True, tooltip="lower number: sooner")
        yield Label("lower renders sooner", id="priority-hint")

    def show(self, value: int, allowed: bool) -> None:
        """Display ``value``; editable only when ``allowed`` (the user is an admin)."""
        self.value = value
        self.allowed = allowed
        field = self.query_one("#priority-value", Input)
        if not field.has_focus:
            field.value = str(value)
        for widget in self.query("Button, Input"):
            widget.disabled = not allowed
        hint = "lower renders sooner" if allowed else "lower renders sooner · admins only"
        self.query_one("#priority-hint", Label).update(hint)

    def action_step(self, delta: int) -> None:
        self._apply(self.value + delta)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        # "+" means sooner, which is a lower number.
        self._apply(self.value + (-1 if event.button.id == "priority-sooner" else 1))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            self._apply(int(event.value))
        except ValueError:
            self.notify("priority must be a whole number 0–100", severity="warning")

    def _apply(self, value: int) -> None:
        if not self.allowed:
            self.notify("Only admins can change priority", severity="warning")
            return
        value = max(LOW, min(HIGH, value))
        if value == self.value:
            return
        self.value = value
        self.query_one("#priority-value", Input).value = str(value)
        self.post_message(self.Changed(value))
