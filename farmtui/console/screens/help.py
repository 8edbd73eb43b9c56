"""``?``: every key of the current view, read from the bindings themselves.

Nothing here is a hand-kept list: each section is a node's bindings (after
the user's keymap, so a remapped key shows as remapped), grouped by what they
do, with the binding's description. The abbreviations of states are listed
from the tables the columns use (``fmt.ABBREVIATIONS``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingsMap, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Label, Static

from farmtui.console import fmt

Section = tuple[str, list[tuple[str, str]]]


def describe(app: App[object], bindings: BindingsMap) -> list[tuple[str, str]]:
    """(keys, description) per action in ``bindings``, keys of one action joined with ``/``."""
    bindings = bindings.copy()
    if app._keymap:
        bindings.apply_keymap(app._keymap)
    grouped: dict[tuple[str, str], list[str]] = {}
    for key, binding in bindings:
        if not binding.description:
            continue
        text = binding.description
        if binding.tooltip and binding.tooltip.startswith(binding.description):
            text = binding.tooltip
        elif binding.tooltip:
            text = f"{binding.description}: {binding.tooltip}"
        shown = app.get_key_display(binding.with_key(key))
        keys = grouped.setdefault((binding.action, text), [])
        if shown not in keys:
            keys.append(shown)
    return [(" / ".join(keys), text) for (_, text), keys in grouped.items()]


def class_bindings(bindings: Iterable[BindingType]) -> BindingsMap:
    """A BindingsMap of a class's ``BINDINGS`` (for a screen that is not open)."""
    return BindingsMap(bindings)


class HelpScreen(ModalScreen[None]):
    """See the module docstring."""

    MERGED_ESCAPE = "close"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark", "close", "Close", id="help.close"),
    ]

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > Vertical {
        width: 90; max-width: 100%; height: 90%; border: thick $accent; background: $panel;
    }
    #help-title { text-style: bold; padding: 0 1; width: 1fr; }
    #help-body { height: 1fr; padding: 0 1; }
    """

    def __init__(self, title: str, sections: list[Section]) -> None:
        super().__init__()
        self.help_title = title
        self.sections = sections

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(fmt.plain(f"Keys — {self.help_title}   (Esc or ? closes)"), id="help-title")
            with VerticalScroll(id="help-body"):
                yield Static(self.body(), id="help-text")

    def body(self) -> Text:
        text = Text()
        width = max((len(keys) for _, rows in self.sections for keys, _ in rows), default=8)
        width = min(width, 16)
        for title, rows in self.sections:
            if not rows:
                continue
            text.append(f"{title}\n", style="bold underline")
            for keys, description in rows:
                text.append(f"  {keys:>{width}}  ", style="bold")
                text.append(f"{description}\n")
            text.append("\n")
        text.append("Abbreviations\n", style="bold underline")
        for kind, table in fmt.ABBREVIATIONS:
            pairs = ", ".join(f"{short}={full}" for full, short in table.items() if short != full)
            text.append(f"  {kind}: {pairs}\n")
        text.append(
            f"  {fmt.REVIEWED_MARK} after a job's state: reviewed; {fmt.ARCHIVED_MARK}: archived\n"
        )
        return text

    def text(self) -> str:
        """Everything the overlay lists, as plain text (for tests)."""
        return self.body().plain

    def action_close(self) -> None:
        self.dismiss(None)
