"""A URL as the leader may show it to anyone: where it goes, never what it carries.

A webhook's path or query is often its secret (Slack's and Teams' are the
key themselves), and a URL's user part is a password. Logs, errors and every
reader's view of a job show a webhook by its origin only, through this one rule.
"""

from __future__ import annotations

from urllib.parse import urlsplit


def origin_only(url: str) -> str:
    """``https://hooks.example:8443/…`` for any http(s) URL; a fixed phrase otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is no number
    except (TypeError, ValueError):
        return "(not a URL)"
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        return "(not an http(s) URL)"
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}{f':{port}' if port else ''}/…"
