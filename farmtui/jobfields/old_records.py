"""Records written by an older leader: a stored spec that today's limits refuse, repaired."""

from __future__ import annotations

import msgspec

from farmtui.jobfields.errors import JobFieldError
from farmtui.jobfields.msgspec_errors import _value_at, explain
from farmtui.jobfields.names import _CONTROL
from farmtui.protocol import MAX_NAME_LENGTH, JobSpec


def repair_spec(raw: object) -> tuple[JobSpec, list[str]]:
    """A stored spec that today's limits refuse, made valid; and what was changed.

    A name loses its control characters and is cut to length; any other value
    out of bounds, and any field no longer known, goes back to its default.
    """
    data = msgspec.to_builtins(raw)
    if not isinstance(data, dict):
        raise JobFieldError("a stored job spec is not an object")
    notes: list[str] = []
    for _ in range(64):
        try:
            return msgspec.convert(data, JobSpec), notes
        except msgspec.ValidationError as exc:
            problem = explain(exc, data, JobSpec)
        path = problem.path
        parent = _value_at(data, path[:-1]) if len(path) > 1 else data
        if not path or not isinstance(parent, dict) or path[-1] not in parent:
            raise problem
        if path == ("name",) and isinstance(parent["name"], str):
            parent["name"] = _CONTROL.sub("", parent["name"])[:MAX_NAME_LENGTH]
            notes.append(f"{problem}; now {parent['name']!r}")
        else:
            del parent[path[-1]]
            notes.append(f"{problem}; back to its default")
    raise JobFieldError("a stored job spec has too many bad fields")
