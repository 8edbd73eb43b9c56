"""``F``: the saved job-list filters, and the prompt that names a new one.

``SavedFiltersScreen`` lists each saved filter with its text; Enter applies
the highlighted one, ``d`` deletes it, ``n`` saves the filter in use under a
name, Escape closes. It changes nothing itself: its result is a typed choice
(``ApplyFilter``, ``DeleteFilter``, ``SaveFilterAs``) that the main screen
carries out. ``SaveFilterPrompt`` asks for the name (Enter saves, Escape
cancels). Names and filters are the user's text, shown plain.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, OptionList
from textual.widgets.option_list import Option

from farmtui.console import fmt
from farmtui.console.settings import FILTER_NAME_MAX, filter_name_problem
from farmtui.printable import printable


@dataclass(frozen=True)
class ApplyFilter:
    """Filter the jobs table with a saved filter."""

    name: str
    text: str


@dataclass(frozen=True)
class DeleteFilter:
    """Forget a saved filter."""

    name: str


@dataclass(frozen=True)
class SaveFilterAs:
    """Save the filter in use under a name (asks for it)."""


FilterChoice = ApplyFilter | DeleteFilter | SaveFilterAs


class SavedFiltersScreen(ModalScreen[FilterChoice | None]):
    """See the module docstring."""

    MERGED_ESCAPE = "close"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", id="filters.close"),
        Binding("n", "save_as", "Save current as…", id="filters.save"),
        Binding("d,delete", "delete", "Delete", id="filters.delete"),
    ]
    DEFAULT_CSS = """
    SavedFiltersScreen { align: center middle; }
    #filters-dialog {
        width: 72; max-width: 95%; height: auto; max-height: 90%;
        border: thick $accent; background: $panel; padding: 0 1;
    }
    #filters-list { height: auto; max-height: 14; }
    #filters-keys { color: $text-muted; }
    """

    def __init__(self, filters: list[tuple[str, str]], current: str, highlight: int = 0) -> None:
        """``filters``: (name, text) saved; ``current``: the filter in use ("" for none)."""
        super().__init__()
        self.filters = filters
        self.current = current
        self.highlight = highlight

    def compose(self) -> ComposeResult:
        width = max((len(name) for name, _ in self.filters), default=0)
        with Vertical(id="filters-dialog"):
            yield Label("Saved filters", id="filters-title")
            if self.filters:
                yield OptionList(
                    *[
                        Option(
                            Text(f"{printable(name):<{width}}  ")
                            + Text(printable(text), style="dim"),
                            id=f"filter-{i}",
                        )
                        for i, (name, text) in enumerate(self.filters)
                    ],
                    id="filters-list",
                )
            else:
                yield Label("None saved yet.", id="filters-none")
            current = f"n saves {printable(self.current)!r}" if self.current else "/ types one"
            yield Label(
                fmt.plain(f"Enter applies · d deletes · {current} · Esc closes"),
                id="filters-keys",
            )

    def on_mount(self) -> None:
        if self.filters:
            options = self.query_one(OptionList)
            options.highlighted = min(self.highlight, len(self.filters) - 1)
            options.focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        name, text = self.filters[event.option_index]
        self.dismiss(ApplyFilter(name, text))

    def action_delete(self) -> None:
        if not self.filters:
            return
        index = self.query_one(OptionList).highlighted
        if index is not None:
            self.dismiss(DeleteFilter(self.filters[index][0]))

    def action_save_as(self) -> None:
        self.dismiss(SaveFilterAs())

    def action_close(self) -> None:
        self.dismiss(None)


class SaveFilterPrompt(ModalScreen[str | None]):
    """The name to save a filter under; a bottom prompt like ``P``'s."""

    MERGED_ESCAPE = "cancel"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="filters.save_cancel"),
    ]
    DEFAULT_CSS = """
    SaveFilterPrompt { align: left bottom; background: $background 30%; }
    SaveFilterPrompt > Vertical { height: auto; background: $panel; border-top: solid $accent; }
    SaveFilterPrompt Label { padding: 0 1; }
    #save-filter-row { height: 1; }
    #save-filter-name { width: 1fr; border: none; height: 1; padding: 0 1; }
    #save-filter-error { color: $error; }
    """

    def __init__(self, text: str, names: list[str]) -> None:
        """``text``: the filter to save; ``names``: those saved already (to warn of a replace)."""
        super().__init__()
        self.text = text
        self.names = names

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(fmt.plain(f"Save the filter {self.text!r} as"), id="save-filter-title")
            with Horizontal(id="save-filter-row"):
                yield Label("Name:")
                yield Input(max_length=FILTER_NAME_MAX, id="save-filter-name", compact=True)
            yield Label("Enter saves · Esc cancels", id="save-filter-error")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        name = event.value.strip()
        hint = f"Enter replaces {name!r}" if name in self.names else "Enter saves"
        self.query_one("#save-filter-error", Label).update(fmt.plain(f"{hint} · Esc cancels"))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        problem = filter_name_problem(event.value)
        if problem is not None:
            self.query_one("#save-filter-error", Label).update(fmt.plain(f"{problem}, or Esc"))
            return
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)
