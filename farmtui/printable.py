"""Untrusted text made safe to show on a terminal: control characters become visible escapes.

Job names, owners, node names, paths, tags, log lines and the leader's error
messages all come from someone else. Printed raw, an ESC starts a terminal
escape sequence (recolour, retitle, move the cursor, hide what follows), a
newline splits a table row in two, a carriage return overwrites what was
already shown, and a bidi override reverses the text after it. ``printable``
shows each such character as a Python-style escape (``\\x1b``, ``\\n``,
``\\u202e``) instead, so what is on screen is what is in the data. Backslashes
are left alone: Windows paths stay readable, and the escapes are only for
seeing, never parsed back.

Both front ends use it: the CLI's tables and messages (``farmtui.tables``,
``farmtui.cli``) and every place the console shows user-supplied text
(``farmtui.console.fmt.plain``). It imports nothing, so ``farm jobs`` stays
quick and textual-free.
"""

from __future__ import annotations

import re

# DEL, C1 controls (0x9b is a one-byte CSI on some terminals), the Unicode line
# and paragraph separators, the bidirectional controls, and the invisible ones
# that make two different names look alike (soft hyphen, zero-width space, word
# joiner and invisible operators, byte order mark); not the zero-width joiners,
# which emoji and several scripts need. Written as regex escapes, so an error
# message that quotes a pattern built from them stays printable.
_OTHERS = (
    r"\x7f-\x9f\xad\u061c\u180e\u200b\u200e\u200f\u2028\u2029\u202a-\u202e"
    r"\u2060-\u2064\u2066-\u2069\ufeff"
)
# Every character no name may hold (a regex class body): C0 controls and the above.
# The one definition: names are checked against it (farmtui.protocol) and escaped by it.
CONTROL_CHARACTERS = r"\x00-\x1f" + _OTHERS
_ONE_LINE = re.compile(f"[{CONTROL_CHARACTERS}]")
# Multi-line text keeps its newlines and tabs (and a CRLF is read as a newline).
_MULTILINE = re.compile(rf"\r\n|[\x00-\x08\x0b-\x1f{_OTHERS}]")
_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r", "\r\n": "\n"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str, *, multiline: bool = False) -> str:
    """``text`` with every control character shown as an escape (see the module docstring).

    Single-line (table cells, names in messages) escapes newlines and tabs too;
    ``multiline`` (log text, a whole table) keeps them and reads CRLF as a newline.
    Text that needs nothing is returned as it is, at the cost of one regex scan.
    """
    pattern = _MULTILINE if multiline else _ONE_LINE
    if pattern.search(text) is None:
        return text
    return pattern.sub(_escape, text)


def is_printable(text: str) -> bool:
    """Whether ``printable`` would show ``text`` unchanged as one line."""
    return _ONE_LINE.search(text) is None


def has_control(text: str) -> bool:
    """Whether ``text`` holds a character no name may hold (``CONTROL_CHARACTERS``): paths
    refuse them too, as the names of files and folders everyone lists."""
    return _ONE_LINE.search(text) is not None


def utf8_text(text: str) -> str:
    """``text`` as valid UTF-8: a file name's undecodable bytes (``\\udcff``, as
    ``os.scandir`` gives them) written out as escapes (``\\xff``). A message holding one
    could not be encoded: the agent that sent it died, then the next the chunk went to."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate no file name gives
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace")
