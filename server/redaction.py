"""Secrets never reach a log: tokens sent in a URL (``?token=``) are blotted out.

Clients that cannot set headers may pass their token as a query parameter;
uvicorn writes request lines (a WebSocket's accept line included) into its
log. :class:`RedactTokens` sits on every log handler the leader sets up.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import unquote_plus

# A query parameter (or a bare ``name=value`` in a message): its name and its value.
_PARAMETER = re.compile(r"(?:(?<=[?&;\s\"'])|^)([^=&;\s\"'?#]+)=([^&;\s\"'#]*)")


# A URL's query string, up to what ends a URL in a log line.
_QUERY = re.compile(r"\?([^\s\"'#]+)")
# Percent-decoding rounds a query is looked through for a hidden token parameter.
_DECODINGS = 3
_HIDDEN_TOKEN = re.compile(r"token\s*=", re.IGNORECASE)
_DONE = re.compile(r"token=<redacted>", re.IGNORECASE)


def redact(text: str) -> str:
    """``/ws/console?token=abc&x=1`` -> ``/ws/console?token=<redacted>&x=1``.

    The name is compared as the server reads it, percent-decoded: ``?%74oken=``
    is a token too. A query with ``token=`` anywhere else, behind percent-encoding
    or in another parameter's value (``?token%3Dabc``, ``?x=token=abc``: the
    leader refuses both, but a client sent its token), is blotted out whole.
    """
    return _QUERY.sub(_blot_query, _PARAMETER.sub(_blot, text))


def _blot(match: re.Match[str]) -> str:
    name = match.group(1)
    if unquote_plus(name).strip().lower() != "token":
        return match.group(0)
    return f"{name}=<redacted>"


def _blot_query(match: re.Match[str]) -> str:
    query = match.group(1)
    for _ in range(_DECODINGS):
        # "token=" anywhere, a parameter's value included (?x=token=...): not the leader's
        # way to read a token, but a client that wrote one there did send its token.
        if _HIDDEN_TOKEN.search(_DONE.sub("", query)):
            return "?<redacted>"
        decoded = unquote_plus(query)
        if decoded == query:
            break
        query = decoded
    return match.group(0)


class RedactTokens(logging.Filter):
    """Rewrites a record's message with every ``token=...`` redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        return True
