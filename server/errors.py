"""The leader's exceptions.

Request errors carry the HTTP status the REST API answers with, so the REST
handlers and the console link (which answers with ``Reply(ok=False)``) share
one set of checks::

    LeaderError
    ├── ConfigError           leader.toml unreadable, malformed or with unknown keys
    ├── StoreError            the database cannot be opened, is newer than this leader,
    │   │                     or refused a change (disk full): nothing was changed
    │   └── NoRoom            refused before it was applied: the disk is below its reserve
    └── RequestError          a request the leader refuses; .status, one-line message
        ├── BadRequest        400: malformed JSON, bad frame list, path escaping the root
        ├── Unauthorized      401: no token, or a token the leader does not know
        ├── Forbidden         403: the token's role may not do this
        ├── NotFound          404: unknown job, node, chunk or log
        ├── Conflict          409: the farm refuses it in the current state
        ├── TooLarge          413: the body is over the limit
        ├── Unprocessable     422: well-formed JSON of the wrong shape or types
        └── Unavailable       503: the change could not be saved (disk full); try again later
"""

from __future__ import annotations


class LeaderError(Exception):
    """Base of every leader error; ``str(exc)`` is one line."""


class ConfigError(LeaderError):
    """``<data>/leader.toml`` cannot be used."""


class StoreError(LeaderError):
    """The SQLite store cannot be opened or migrated, or did not save a change.

    ``str(exc)`` is the one line a client sees; ``detail`` is SQLite's own
    reason, for the leader's log.
    """

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


class FarmMoved(StoreError):
    """``farm migrate`` moved the farm to another store: this one is a backup now, and
    a leader on it must not start, however often it tries."""


class NoRoom(StoreError):
    """Refused before anything changed: the data folder's disk is below its reserve
    (``server.disk_room``)."""


class RequestError(LeaderError):
    """A refused request; ``status`` is the HTTP status to answer with."""

    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()) or self.__class__.__name__)


class BadRequest(RequestError):
    status = 400


class Unauthorized(RequestError):
    status = 401


class Forbidden(RequestError):
    status = 403


class NotFound(RequestError):
    status = 404


class Conflict(RequestError):
    status = 409


class TooLarge(RequestError):
    status = 413


class UnsupportedMediaType(RequestError):
    status = 415


class Unprocessable(RequestError):
    status = 422


class Unavailable(RequestError):
    """The leader cannot save changes now (its disk is full); reads still work."""

    status = 503


def shown(text: str, limit: int = 80) -> str:
    """A client's text (a path, a name) for an error message, quoted and cut short: an
    error line is no place for a 5,000-character name."""
    return repr(cut(text, limit))


def cut(text: str, limit: int = 80) -> str:
    """``text`` cut to ``limit`` characters (the last one "…"): a job id a client named, in
    "unknown job ...", was echoed whole at 10,000 characters (break round 33b)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
