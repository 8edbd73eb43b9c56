"""Textual's command palette, dismissed once.

Textual 8.2.8 dismisses its palette for every Enter or Escape that reaches
it, including one that arrives before the first dismissal has popped it:
``ctrl+p``, Enter, Enter (or Enter, Escape) popped the screen under it, and
with nothing under that the console died with ``ScreenStackError``. Under
``farm up`` that stopped the farm, renders and all. A second dismissal of a
palette that is no longer the current screen is dropped here.
"""

from __future__ import annotations

from textual.await_complete import AwaitComplete
from textual.command import CommandPalette


class DismissedOnce(CommandPalette):
    """The palette, whose dismissal pops it and nothing else."""

    def dismiss(self, result: None = None) -> AwaitComplete:
        if self._dismissed or self.app.screen is not self:
            return AwaitComplete()  # already on its way out: the screen below stays
        self._dismissed = True
        return super().dismiss(result)

    _dismissed = False
