"""Saved job-list filters: named ``/`` filters kept in console.toml's ``[filters]``.

The console's answer to Deadline's saved filters and CueCommander's job
filters: ``F`` lists them (Enter applies one, ``d`` deletes it, ``n`` saves
the filter in use under a name), and ``ctrl+s`` in the filter field saves
what is typed there. Each change is written at once, so the filters survive a
restart of the console. Pure: no textual.
"""

from __future__ import annotations

import contextlib

from farmtui.console.settings import (
    ConsoleSettings,
    SettingsError,
    delete_filter,
    save_filter,
    saved_filters,
)


class SavedFilters:
    """The saved filters of ``settings``, written to its file (if it has one) on each change."""

    def __init__(self, settings: ConsoleSettings) -> None:
        self.settings = settings

    def refresh(self) -> None:
        """Read the file again: another console may have saved or deleted filters since.

        A file that cannot be read now keeps the list as it was.
        """
        if self.settings.path is not None:
            with contextlib.suppress(SettingsError):
                self.settings.filters = saved_filters(self.settings.path)

    def items(self) -> list[tuple[str, str]]:
        """(name, filter text), in the order they were saved."""
        return list(self.settings.filters.items())

    def get(self, name: str) -> str | None:
        return self.settings.filters.get(name)

    def save(self, name: str, text: str) -> bool:
        """Save ``text`` as ``name``; True when it replaced a filter of that name.

        Raises ``SettingsError`` (saying why) when the name or the file will not do.
        """
        name = name.strip()
        replaced = name in self.settings.filters
        path = self.settings.path
        if path is None:
            self.settings.filters[name] = text
        else:
            self.settings.filters = save_filter(path, name, text)
        return replaced

    def delete(self, name: str) -> None:
        """Forget ``name`` (``SettingsError`` when the file cannot be written)."""
        path = self.settings.path
        if path is None:
            self.settings.filters.pop(name, None)
        else:
            self.settings.filters = delete_filter(path, name)
