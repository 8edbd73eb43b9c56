"""The command palette's provider: every console action, found by name.

The screen lists its commands (``palette_commands``); this provider only
matches and shows them, so the palette and the keys cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from textual.command import DiscoveryHit, Hit, Hits, Provider

Command = tuple[str, Callable[[], object], str]


@runtime_checkable
class HasCommands(Protocol):
    def palette_commands(self) -> list[Command]: ...


class FarmCommands(Provider):
    """See the module docstring."""

    def _commands(self) -> list[Command]:
        screen = self.screen
        return screen.palette_commands() if isinstance(screen, HasCommands) else []

    async def discover(self) -> Hits:
        for name, callback, help_text in self._commands():
            yield DiscoveryHit(name, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, callback, help_text in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
