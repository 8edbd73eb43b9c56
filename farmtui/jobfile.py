"""Job files and submit flags -> ``JobSpec``, checked here before anything is sent.

A job file is TOML whose keys are the ``farm submit`` flags without their
dashes (``timeout-max = "2h"``; ``timeout_max`` works too), plus ``argv`` for
the command that follows ``--`` on the command line::

    name = "shot-010"
    frames = "1-240"
    chunk = 10
    renderer = "blender"
    scene = "shot010.blend"
    output = "renders/shot010/frame_####.png"
    timeout-max = "1h30m"
    on-timeout = "requeue"
    [env]
    OCIO = "/studio/ocio/config.ocio"

Unknown keys are errors (with a did-you-mean), so a typo never silently
drops a setting. Flags given on the command line override the file's values.
Both are read with the one table of job fields (``farmtui.jobfields.FIELDS``),
converted into ``JobSpec`` with its own limits, and checked by the same
``check_job`` the leader runs, so a value means the same in either, and an
error names the flag or key as it was typed.

A relative ``scene`` is relative to the sync root; one that exists next to the
job file (or, for ``--scene``, in the current folder) is sent as an absolute
path, which the leader accepts only inside its sync root.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from farmtui.errors import InputError, JobFileError
from farmtui.jobfields import (
    Given,
    JobFieldError,
    UnknownKey,
    check_job,
    check_patch,
    check_scene,
    command_for,
    default_name,
    read,
    to_patch,
    to_spec,
)
from farmtui.protocol import JobPatch, JobSpec

__all__ = [
    "Given",
    "build_patch",
    "build_spec",
    "command_for",
    "load_jobfile",
    "normalize",
    "read_priority",
]


def _refused(exc: JobFieldError, given: Given) -> InputError:
    """The error as one line that starts with the flag or key the user typed, if any."""
    message = given.message(exc)
    return JobFileError(message) if isinstance(exc, UnknownKey) else InputError(message)


def normalize(
    raw: Mapping[str, object], label: Callable[[str], str], *, clearable: bool = False
) -> Given:
    """Read raw values keyed by flag name; ``label(key)`` names a key in errors.

    Keys may use ``_`` for ``-``. Values of ``None`` mean "not given" and are dropped.
    Unknown keys raise JobFileError; bad values InputError.
    """
    try:
        return read(raw, label, clearable=clearable)
    except JobFieldError as exc:
        raise _refused(exc, Given()) from None


def load_jobfile(path: Path) -> Given:
    """A job file's values, read and labelled; JobFileError or InputError on bad content.

    A relative ``scene`` that exists next to the job file is taken from there.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobFileError(f"cannot read job file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise JobFileError(f"job file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"job file {path} is not valid TOML: {exc}") from None
    except RecursionError:  # x = [[[... 5,000 deep: tomllib recurses a level a bracket
        raise JobFileError(f"job file {path} is nested too deeply; refused") from None
    given = normalize(data, lambda key: f"job file {path}: {key}")
    scene = given.values.get("scene")
    if isinstance(scene, str) and not Path(scene).is_absolute():
        candidate = path.parent / scene
        if candidate.exists():
            given.values["scene"] = str(candidate.resolve())
    return given


def build_spec(values: Given | Mapping[str, Any]) -> JobSpec:
    """A checked JobSpec from read values (file values with flags laid over them).

    A plain mapping is taken as values keyed by flag name, named by that key in errors.
    """
    given = values if isinstance(values, Given) else Given(dict(values), {k: k for k in values})
    try:
        return _build(given)
    except JobFieldError as exc:
        raise _refused(exc, given) from None


def _build(given: Given) -> JobSpec:
    given = Given(dict(given.values), dict(given.labels))
    values = given.values
    scene = values.get("scene")
    if isinstance(scene, str):
        check_scene(scene)  # before it may become absolute: '..' is refused as typed
        if Path(scene).exists():
            values["scene"] = scene = str(Path(scene).resolve())
    if "auto-timeout-chunks" in values or "auto-timeout-percent" in values:
        values.setdefault("auto-timeout", True)
    extra: dict[str, Any] = {}
    if not values.get("name"):
        renderer = values.get("renderer", "generic")
        argv = values.get("argv", [])
        extra["name"] = default_name(
            renderer if isinstance(renderer, str) else "generic",
            scene if isinstance(scene, str) else None,
            argv if isinstance(argv, list) else [],
        )
        values.pop("name", None)
    spec = to_spec(given, **extra)
    check_job(spec)
    spec.argv = command_for(spec)
    return spec


def build_patch(given: Given, current: JobSpec | None = None) -> JobPatch:
    """A checked JobPatch from ``farm set`` values.

    With the job's ``current`` spec, the patch carries its timeouts with the
    changes laid over them (a patch replaces them whole), and the spec with the
    patch applied is checked as the leader will check it (min <= max ...).
    Without it, each value is checked on its own (before anything is sent).
    """
    try:
        patch = to_patch(given, current.timeouts if current is not None else None)
        if current is not None:
            check_patch(current, patch)
    except JobFieldError as exc:
        raise _refused(exc, given) from None
    return patch


def read_priority(text: str) -> int:
    """``farm priority JOB P``: P checked against JobSpec's limits."""
    given = normalize({"priority": text}, lambda key: key)
    try:
        priority = to_spec(given).priority
    except JobFieldError as exc:
        raise _refused(exc, given) from None
    assert priority is not None  # given, so read
    return priority
