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
# libpq's key=value form (``host=db password=...``), whatever keyword comes first.
_KEYWORDS = re.compile(r"\s*[A-Za-z_]+\s*=")
# libpq reads an option's value up to the next "&": a "#" is the password's own.
_PASSWORD_OPTION = re.compile(r"((?:^|&)password=)[^&]*", re.IGNORECASE)


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
    if _KEYWORDS.match(url):
        # libpq's "host=... password=..." form: never a file name (and never shown).
        raise StoreError(
            "a store is a URL: use a postgresql:// URL (postgresql://user@host/database) "
            "or sqlite:PATH, not libpq's key=value form"
        )
    return "sqlite", url


def _user_part_ends(rest: str) -> list[int]:
    """Where the user part of a URL's remainder (after ``://``) may end: its ``@``.

    libpq ends it at the first ``@`` before any ``/`` (so a password may hold a
    ``?`` or a ``#``); a URL written for other tools may end it at the last
    ``@`` before the query. Both are hidden: better too much than a password.
    """
    ends = []
    first = re.search(r"[@/]", rest)
    if first is not None and first.group() == "@":
        ends.append(first.start())
    last = rest.partition("?")[0].rfind("@")
    if last >= 0 and last not in ends:
        ends.append(last)
    return ends


def redacted(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` option) as ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    for secret in passwords(url):  # whatever any reading of the URL calls a password
        rest = rest.replace(secret, _HIDDEN)
    ends = _user_part_ends(rest)
    userinfo, at, host = (rest[: ends[0]], "@", rest[ends[0] + 1 :]) if ends else ("", "", rest)
    if ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + _HIDDEN
    main, question, query = host.partition("?")
    query = _PASSWORD_OPTION.sub(r"\1" + _HIDDEN, query)
    return f"{scheme}{sep}{userinfo}{at}{main}{question}{query}"


def passwords(url: str) -> list[str]:
    """The password(s) a URL holds, as written and unescaped, to scrub from any text."""
    found: list[str] = []
    _, sep, rest = url.partition("://")
    if not sep:
        return found
    for end in _user_part_ends(rest):
        userinfo = rest[:end]
        if ":" in userinfo:
            found.append(userinfo.split(":", 1)[1])
    for match in re.finditer(r"(?:^|[?&])password=([^&]*)", rest, re.IGNORECASE):
        found.append(match.group(1))
    found += [unquote(secret) for secret in found]
    # Longest first: a password that holds another is scrubbed whole.
    secrets = {secret for secret in found if secret and secret != _HIDDEN}
    return sorted(secrets, key=len, reverse=True)


def scrubbed(text: str, url: str) -> str:
    """``text`` (a driver's error message) with the URL's password(s) hidden."""
    for secret in passwords(url):
        text = text.replace(secret, _HIDDEN)
    return text
