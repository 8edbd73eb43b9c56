"""A right-click (or ``m``) menu of actions for one row, opened where the click was.

Returns the chosen typed command (``actions.RunJobs``, ``MoveJobs`` ...), or
None when dismissed. The title (a job's name) and the labels are plain text,
never markup.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.geometry import Offset
from textual.screen import ModalScreen
from textual.widgets import OptionList
from textual.widgets.option_list import Option

from farmtui.console import fmt
from farmtui.console.actions import ChunkCommand, JobCommand

MenuCommand = JobCommand | ChunkCommand


class ContextMenu(ModalScreen[MenuCommand | None]):
    """See the module docstring."""

    MERGED_ESCAPE = "dismiss_menu"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_menu", "Close", id="menu.close"),
    ]

    DEFAULT_CSS = """
    ContextMenu { background: transparent; align: left top; }
    ContextMenu > OptionList {
        width: auto; min-width: 20; max-width: 40; height: auto; max-height: 20;
        border: round $accent; background: $panel;
    }
    """

    def __init__(self, title: str, items: list[tuple[MenuCommand, str]], at: Offset) -> None:
        """``items`` are (command, label with key) pairs."""
        super().__init__()
        self.menu_title = title
        self.items = items
        self.at = at

    def compose(self) -> ComposeResult:
        menu = OptionList(
            *(Option(fmt.plain(label), id=str(i)) for i, (_, label) in enumerate(self.items))
        )
        menu.border_title = fmt.plain_content(self.menu_title)
        yield menu

    def on_mount(self) -> None:
        menu = self.query_one(OptionList)
        width = max((fmt.plain(label).cell_len for _, label in self.items), default=16) + 4
        height = len(self.items) + 2
        x = max(0, min(self.at.x, self.size.width - width - 1))
        y = max(0, min(self.at.y, self.size.height - height))
        menu.styles.offset = (x, y)
        menu.highlighted = 0
        menu.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(self.items[int(event.option.id or 0)][0])

    def on_click(self, event: events.Click) -> None:
        # A click outside the menu closes it (clicks inside are handled by the list).
        if event.widget is self:
            self.dismiss(None)

    def action_dismiss_menu(self) -> None:
        self.dismiss(None)
