"""Pick a node blocked on a job to let it back (``b`` in the detail view).

Each entry says what choosing it does and until when the block would last;
Escape keeps every block. The answer is the node's name, or None.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from farmtui.console import fmt
from farmtui.printable import printable
from farmtui.protocol import JobView
from farmtui.reasons import block_end


class UnblockScreen(ModalScreen[str | None]):
    """See the module docstring."""

    MERGED_ESCAPE = "dismiss_none"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss_none", "Keep blocked", id="unblock.cancel"),
    ]
    DEFAULT_CSS = """
    UnblockScreen { align: center middle; }
    #unblock-dialog {
        width: 64; max-width: 95%; height: auto; max-height: 90%;
        border: thick $accent; background: $panel; padding: 0 1;
    }
    #unblock-list { height: auto; max-height: 12; }
    """

    def __init__(self, job: JobView, now: float) -> None:
        super().__init__()
        self.job = job
        self.now = now

    def compose(self) -> ComposeResult:
        with Vertical(id="unblock-dialog"):
            yield Label(fmt.plain(f"Let a node render {self.job.name} again (Esc keeps)"))
            yield OptionList(
                *[
                    Option(
                        Text(f"Unblock {printable(node)}  (blocked {block_end(until, self.now)})"),
                        id=node,
                    )
                    for node, until in sorted(self.job.blocked_nodes.items())
                ],
                id="unblock-list",
            )

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_dismiss_none(self) -> None:
        self.dismiss(None)
