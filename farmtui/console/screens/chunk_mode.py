"""Chunk action mode: ``k``, then one key for the chunks it names.

Chunk actions have keys of their own only inside this mode, so ``r`` and ``h``
always mean resume and hold the *job*, whatever has the focus. The mode says
at the bottom what it acts on ("chunks 3, 4 of shot_010 (frames 21-40)") and
its footer lists its keys; any key not listed, or Esc, leaves it untouched.
Returns the chosen action, or None.
"""

from __future__ import annotations

from typing import ClassVar

from textual import events
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Footer, Label

from farmtui.console import fmt
from farmtui.console.actions import CHUNK_ACTIONS
from farmtui.protocol import ChunkAction


class ChunkActionMode(ModalScreen[ChunkAction | None]):
    """See the module docstring."""

    MERGED_ESCAPE = "choose(None)"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        *(
            Binding(
                spec.key,
                f"choose('{spec.action}')",
                spec.label,
                id=spec.binding_id,
                tooltip=spec.description,
            )
            for spec in CHUNK_ACTIONS
        ),
        Binding("escape,k", "choose(None)", "Leave", id="chunks.leave"),
    ]

    DEFAULT_CSS = """
    ChunkActionMode { align: left bottom; background: $background 30%; }
    ChunkActionMode > Vertical { height: auto; background: $panel; border-top: solid $warning; }
    ChunkActionMode Label { padding: 0 1; width: 1fr; }
    #chunk-mode-title { color: $warning; text-style: bold; }
    """

    def __init__(self, what: str) -> None:
        """``what``: the chunks acted on, in words ("chunks 3, 4 of shot_010")."""
        super().__init__()
        self.what = what

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(fmt.plain(f"CHUNK ACTION on {self.what}"), id="chunk-mode-title")
            yield Footer()

    def action_choose(self, action: ChunkAction | None) -> None:
        self.dismiss(action)

    def on_key(self, event: events.Key) -> None:
        # A key that is no chunk action leaves the mode and does nothing else.
        if event.key not in {key for key, _ in self._bindings}:
            event.stop()
            event.prevent_default()
            self.dismiss(None)
