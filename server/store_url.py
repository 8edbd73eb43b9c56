"""Store URLs: which store a ``--store`` value names, and how to show it without its password.

``sqlite:PATH`` or a plain path is the embedded SQLite store;
``postgresql://user[:password]@host[:port]/database[?options]`` (or
``postgres://``) is PostgreSQL, in libpq's URI form. A password may be in the
URL, but is better kept out of it (``~/.pgpass`` or ``PGPASSWORD``, which
libpq reads): a command line shows in ``ps``. Wherever a URL is shown (logs,
errors) it goes through ``redacted``.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import unquote

from server.errors import StoreError

StoreKind = Literal["sqlite", "postgresql"]

_POSTGRES_SCHEMES = ("postgresql://", "postgres://")
_HIDDEN = "***"
_PASSWORD_OPTION = re.compile(r"((?:^|&)password=)[^&#]*", re.IGNORECASE)


def parse_store_url(url: str) -> tuple[StoreKind, str]:
    """("sqlite", path) or ("postgresql", url); StoreError for anything else."""
    if url.startswith(_POSTGRES_SCHEMES):
        return "postgresql", url
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:")
        if not path:
            raise StoreError("sqlite: needs a path, e.g. sqlite:farm-data/farm.db")
        return "sqlite", path
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", url)
    if scheme:
        raise StoreError(
            f"unknown store {scheme.group(1)}://...: use sqlite:PATH or postgresql://..."
        )
    if not url:
        raise StoreError("no store given: use sqlite:PATH or postgresql://...")
    return "sqlite", url


def redacted(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` option) as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    main, question, query = rest.partition("?")
    # The last "@" ends the user part: a password may hold an unescaped "@" or "/".
    userinfo, at, host = main.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + _HIDDEN
    query = _PASSWORD_OPTION.sub(r"\1" + _HIDDEN, query)
    return f"{scheme}{sep}{userinfo}{at}{host}{question}{query}"


def passwords(url: str) -> list[str]:
    """The password(s) a URL holds, as written and unescaped, to scrub from any text."""
    found: list[str] = []
    _, sep, rest = url.partition("://")
    if not sep:
        return found
    main, _, query = rest.partition("?")
    userinfo, at, _ = main.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    for match in re.finditer(r"(?:^|&)password=([^&#]*)", query, re.IGNORECASE):
        found.append(match.group(1))
    found += [unquote(secret) for secret in found]
    # Longest first: a password that holds another is scrubbed whole.
    return sorted({secret for secret in found if secret}, key=len, reverse=True)


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's error message) with the URL's password(s) hidden."""
    for secret in passwords(url):
        text = text.replace(secret, _HIDDEN)
    return text
