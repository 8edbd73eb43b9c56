"""Secrets never reach a log: tokens sent in a URL (``?token=``) are blotted out.

Clients that cannot set headers may pass their token as a query parameter;
uvicorn writes request lines (a WebSocket's accept line included) into its
log. :class:`RedactTokens` sits on every log handler the leader sets up.
"""

from __future__ import annotations

import logging
import re

_TOKEN = re.compile(r"(?i)(token=)[^&\s\"']+")


def redact(text: str) -> str:
    """``/ws/console?token=abc&x=1`` -> ``/ws/console?token=<redacted>&x=1``."""
    return _TOKEN.sub(r"\1<redacted>", text)


class RedactTokens(logging.Filter):
    """Rewrites a record's message with every ``token=...`` redacted."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
        return True
