"""The refusal every job field check raises, and how it names the field at fault."""

from __future__ import annotations

FieldPath = tuple[str, ...]


class JobFieldError(ValueError):
    """A job setting refused; ``str()`` is one line, ``path`` the field at fault (may be empty)."""

    def __init__(self, message: str, path: FieldPath = ()) -> None:
        super().__init__(message)
        self.path = path


class UnknownKey(JobFieldError):
    """A flag or job file key that is not a job field (a typo)."""
