"""The client side's exceptions: what the CLI, ``farm up`` and scripts can catch.

Every one carries a one-line message fit for a terminal and the exit code the
``farm`` command uses for it (2: the input was wrong and nothing was sent;
1: the leader is down or refused the request)::

    FarmError
    ├── InputError            bad input caught here, before any request (exit 2)
    │   ├── DurationError     "5x" is not a duration (also a ValueError)
    │   ├── JobFileError      a job file that is not TOML or has unknown keys
    │   ├── ConfigError       no leader/token configured, unreadable token file
    │   └── AmbiguousJob      a job id prefix that matches several jobs
    ├── LeaderDown            cannot reach the leader (refused, timed out, DNS)
    ├── LeaderError           the leader answered with an error status; .status
    │   ├── AuthError         401: no token or a token the leader does not know
    │   ├── PermissionDenied  403: the token's role may not do this
    │   ├── NotFound          404: unknown job, node or path
    │   ├── BadRequest        400/409/413/422: the leader refused the input
    │   └── ServerError       5xx: the leader failed
    └── LocalFarmError        ``farm up`` could not start or keep its processes
"""

from __future__ import annotations


class FarmError(Exception):
    """Base of every client-side error; ``str(exc)`` is one line."""

    exit_code = 1


class InputError(FarmError):
    """The user's input is wrong; nothing was sent to the leader."""

    exit_code = 2


class DurationError(InputError, ValueError):
    """A duration that is not ``90``, ``90s``, ``5m``, ``1h30m`` or ``1.5h``."""


class JobFileError(InputError):
    """A job file that cannot be read, is not TOML or has unknown or bad keys."""


class ConfigError(InputError):
    """The leader's URL or a token could not be found or read."""


class AmbiguousJob(InputError):
    """A job id prefix (or name) that matches more than one job."""


class LeaderDown(FarmError):
    """The leader could not be reached at all."""


class LeaderError(FarmError):
    """The leader answered with an error; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class AuthError(LeaderError):
    """401: the leader refused the token."""


class PermissionDenied(LeaderError):
    """403: the token's role is not allowed to do this."""


class NotFound(LeaderError):
    """404: no such job, node or file."""


class BadRequest(LeaderError):
    """400, 409, 413 or 422: the leader refused the request's content."""


class ServerError(LeaderError):
    """5xx: the leader failed while answering."""


class LocalFarmError(FarmError):
    """``farm up`` could not start its leader or agents (port busy, early exit ...)."""


def for_status(status: int, message: str) -> LeaderError:
    """The exception class that matches an HTTP error status."""
    cls: type[LeaderError]
    if status == 401:
        cls = AuthError
    elif status == 403:
        cls = PermissionDenied
    elif status == 404:
        cls = NotFound
    elif status >= 500:
        cls = ServerError
    else:
        cls = BadRequest
    return cls(message, status)
