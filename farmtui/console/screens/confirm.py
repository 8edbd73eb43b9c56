"""A yes/no dialog for a costly action: what it touches and what it costs.

Requeue, Complete, Cancel, Delete, a chunk's Set done / Set failed / Exclude,
and quitting a ``farm up`` farm that is rendering come through here with a
``Confirmation`` from ``confirmations.py``, so a stray key cannot throw work
away. The answer is the screen's result (``ModalScreen[bool]``): y (or a click
on the costly button, which the keyboard never focuses) confirms; Escape, n or
Enter (Keep has the focus) keeps everything as it was.
Everything is shown as plain text (``fmt.plain``): a job named ``[/oops]`` is
listed as ``[/oops]``, not parsed as markup.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from farmtui.console import fmt
from farmtui.console.confirmations import Confirmation

SHOWN = 8


class ConfirmScreen(ModalScreen[bool]):
    """See the module docstring."""

    MERGED_ESCAPE = "answer(False)"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, confirmation: Confirmation) -> None:
        super().__init__()
        self.confirmation = confirmation

    def compose(self) -> ComposeResult:
        asked = self.confirmation
        listed = [fmt.plain(f" • {item}") for item in asked.items[:SHOWN]]
        if len(asked.items) > SHOWN:
            listed.append(fmt.plain(f"   … and {len(asked.items) - SHOWN} more"))
        with Vertical(id="confirm-dialog"):
            yield Label(fmt.plain(asked.question), id="confirm-title")
            if listed:
                yield Static(Text("\n").join(listed), id="confirm-items")
            yield Static(fmt.plain(asked.cost, multiline=True), id="confirm-cost")
            with Horizontal(id="confirm-buttons"):
                costly = Button(fmt.plain(f"{asked.verb} (y)"), variant="error", id="confirm-yes")
                # Never focused, so no Enter presses it: a terminal sends Esc followed at
                # once by Enter as a bare Enter (the Esc lost); that must not throw work away.
                costly.can_focus = False
                yield costly
                yield Button("Keep (n, Esc, Enter)", variant="primary", id="confirm-no")

    def on_mount(self) -> None:
        # Enter presses the focused button, Keep: only y (or a click) confirms.
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
