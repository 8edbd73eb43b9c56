"""A yes/no dialog that names every job a destructive action will touch.

Cancel and Delete go through here so a stray key cannot wipe a batch; the
answer is the screen's result (``ModalScreen[bool]``). "No" has the focus.
The names are shown as plain text (``fmt.plain``): a job named ``[/oops]`` is
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

SHOWN = 8


class ConfirmScreen(ModalScreen[bool]):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "No", id="confirm.no"),
    ]

    def __init__(self, title: str, names: list[str], warning: str, verb: str) -> None:
        super().__init__()
        self.title_text = title
        self.names = names
        self.warning = warning
        self.verb = verb

    def compose(self) -> ComposeResult:
        listed = [fmt.plain(f" • {name}") for name in self.names[:SHOWN]]
        if len(self.names) > SHOWN:
            listed.append(fmt.plain(f"   … and {len(self.names) - SHOWN} more"))
        with Vertical(id="confirm-dialog"):
            yield Label(fmt.plain(self.title_text), id="confirm-title")
            yield Static(Text("\n").join(listed), id="confirm-jobs")
            yield Static(fmt.plain(self.warning, multiline=True), id="confirm-warning")
            with Horizontal(id="confirm-buttons"):
                yield Button(fmt.plain(f"{self.verb} (y)"), variant="error", id="confirm-yes")
                yield Button("Keep (n)", variant="primary", id="confirm-no")

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)
