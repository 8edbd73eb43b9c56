"""The jobs filter field: a key never types into it while it is hidden.

When the jobs pane is hidden (another view at 80 columns) the field cannot
take the focus, and if it had it, it gives up the keys it would type, so ``1``
switches views instead of landing in a filter nobody can see. ``ctrl+s`` saves
what is typed as a named filter (the screen's ``save_filter``).
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import Input


class FilterInput(Input):
    """See the module docstring."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "screen.save_filter", "Save filter as…", id="filter.save"),
    ]

    @property
    def shown(self) -> bool:
        """Whether the field and every container around it are displayed."""
        return all(node.display for node in self.ancestors_with_self if isinstance(node, Widget))

    def allow_focus(self) -> bool:
        return self.shown and super().allow_focus()

    def check_consume_key(self, key: str, character: str | None) -> bool:
        return self.shown and super().check_consume_key(key, character)
