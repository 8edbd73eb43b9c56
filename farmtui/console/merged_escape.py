"""An Escape the terminal merged with the key typed right after it.

A terminal sends Escape as a lone ESC byte, and alt+x as ESC x; Textual tells
them apart by time (ESC then nothing for 0.1 s is Escape). So Esc then x
typed quickly, or arriving together over SSH, reach the console as alt+x;
and Esc then 1 as "¡", Esc then - as "–" (macOS's Option characters, which
Textual maps ESC+digit to). The Escape is lost either way: a confirmation
stayed open and took a later Enter, a search box typed "¡". The console binds
no alt key and nobody types "¡" into a farm console, so these keys are read
as the Escape they began with (``FarmConsole.on_event``).

Esc then Enter, Tab, space or a letter f/b come through as that key alone
(Textual's own mappings); nothing can tell them from the key itself, which
is why a confirmation's Enter never confirms.
"""

from __future__ import annotations

from textual import events

try:  # Textual's table of two-byte escape sequences (private: absent, nothing is read so)
    from textual._ansi_sequences import ANSI_SEQUENCES_KEYS
except ImportError:  # pragma: no cover - a Textual without it
    ANSI_SEQUENCES_KEYS = {}

# The characters ESC followed by a key turns into ("¡" for ESC 1), not the key itself.
OPTION_CHARACTERS: frozenset[str] = frozenset(
    value
    for sequence, value in ANSI_SEQUENCES_KEYS.items()
    if len(sequence) == 2
    and sequence[0] == "\x1b"
    and isinstance(value, str)
    and value != sequence[1]
)


def merged_escape(event: events.Key) -> bool:
    """Whether ``event`` is an Escape merged with the key after it (see the module)."""
    return event.key.startswith("alt+") or event.character in OPTION_CHARACTERS
