"""Reading what people type: flags and job file keys, read and converted into the Structs.

Values go through ``msgspec.convert`` into ``JobSpec`` or ``JobPatch``, so each
limit comes from the Struct, and an error names the flag or key the user typed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from farmtui.jobfields.errors import FieldPath, JobFieldError, UnknownKey
from farmtui.jobfields.msgspec_errors import _texts, explain
from farmtui.jobfields.table import BY_KEY, CLEAR, FRAMES_SUFFIX
from farmtui.protocol import JobPatch, JobSpec, Timeouts


@dataclass
class Given:
    """Values someone gave, by field key, already read; and how to name each in an error."""

    values: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def over(self, base: Given) -> Given:
        """These values laid over ``base`` (flags over a job file); ``env`` tables merge."""
        values = {**base.values, **self.values}
        if isinstance(base.values.get("env"), dict) and isinstance(self.values.get("env"), dict):
            values["env"] = {**base.values["env"], **self.values["env"]}
        return Given(values, {**base.labels, **self.labels})

    def typed(self, path: FieldPath) -> str | None:
        """The flag or key the user typed for the setting at ``path``, if they gave it."""
        for key, label in self.labels.items():
            known = BY_KEY.get(key)
            if known is not None and path and path[: len(known.path)] == known.path:
                return label
        return None

    def label(self, path: FieldPath) -> str:
        """How to name the setting at ``path`` in an error: as typed, else its JSON path."""
        return self.typed(path) or ".".join(path)

    def message(self, exc: JobFieldError) -> str:
        """The refusal as one line that starts with the flag or key the user typed, if any."""
        message = str(exc)
        label = self.typed(exc.path)
        if label is not None and not message.startswith(label):
            message = f"{label}: {message}"
        return message


def read(
    raw: Mapping[str, object], label: Callable[[str], str], *, clearable: bool = False
) -> Given:
    """Read raw values keyed by flag name (``_`` works for ``-``); ``None`` means not given.

    ``label(key)`` names a key in errors: ``--timeout-max``, ``job file x.toml: timeout-max``.
    ``clearable``: ``none`` or ``off`` clears a timeout (``farm set``). Values are only
    read here (durations to seconds, lists split); their limits are checked by ``to_spec``.
    """
    given = Given()
    for raw_key, value in raw.items():
        key = raw_key.replace("_", "-")
        if value is None:
            continue
        known = BY_KEY.get(key)
        if known is None:
            close = difflib.get_close_matches(key, BY_KEY, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UnknownKey(f"{label(raw_key)}: unknown key{hint}")
        if (
            clearable
            and known.clearable
            and isinstance(value, str)
            and value.strip().lower() in (CLEAR, "off")
        ):
            given.values[key] = None
        else:
            try:
                given.values[key] = known.read(value)
            except ValueError as exc:
                raise JobFieldError(f"{label(raw_key)}: {exc}", known.path) from None
        given.labels[key] = label(raw_key)
    return given


def _nest(given: Given, keys: Iterable[str]) -> dict[str, Any]:
    """``{"timeout-max": 60}`` -> ``{"timeouts": {"max_render": 60}}`` (JobSpec's shape)."""
    nested: dict[str, Any] = {}
    for key in keys:
        known = BY_KEY[key]
        value = given.values[key]
        if known.inverted:
            if not value:
                continue
            value = not value
        place = nested
        for part in known.path[:-1]:
            place = place.setdefault(part, {})
        place[known.path[-1]] = value
    return nested


def _check_text(given: Given) -> None:
    """Refuse a value that is not UTF-8 text, naming it (not a traceback as it is sent).

    A shell hands Python bytes of another encoding (a Latin-1 file name) as lone
    surrogates, which JSON cannot carry.
    """
    for key, value in given.values.items():
        try:
            for text in _texts(value):
                text.encode()
        except UnicodeEncodeError:
            raise JobFieldError(
                f"{given.labels.get(key, key)}: is not UTF-8 text", BY_KEY[key].path
            ) from None


def to_spec(given: Given, **extra: Any) -> JobSpec:
    """A JobSpec from what was given (and ``extra`` JSON-shaped fields), limits from the Struct."""
    _check_text(given)
    data = {**_nest(given, given.values), **extra}
    _split_frame_dependencies(data, given)
    try:
        return msgspec.convert(data, JobSpec)
    except msgspec.ValidationError as exc:
        raise explain(exc, data, JobSpec, given.label) from None


def _split_frame_dependencies(data: dict[str, Any], given: Given) -> None:
    """``after = ["sim:frames"]`` -> ``after = ["sim"], after_frames = true``."""
    after = data.get("after")
    if not isinstance(after, list) or not all(isinstance(item, str) for item in after):
        return
    marked = [item.endswith(FRAMES_SUFFIX) for item in after]
    if not any(marked):
        return
    if not all(marked) or data.get("after_frames") is False:
        raise JobFieldError(
            f"{given.label(('after',))}: a job waits on whole jobs or frame by frame, not both "
            f"(mark every dependency {FRAMES_SUFFIX}, or none)",
            ("after",),
        )
    data["after"] = list(dict.fromkeys(item.removesuffix(FRAMES_SUFFIX) for item in after))
    data["after_frames"] = True


def to_patch(given: Given, timeouts: Timeouts | None = None) -> JobPatch:
    """A JobPatch from what was given; timeout changes are laid over ``timeouts``.

    A patch replaces the timeouts whole, so pass the job's current ones; without
    them, the changes are laid over the defaults (enough to check each value).
    """
    refused = [key for key in given.values if not BY_KEY[key].settable]
    if refused:
        raise JobFieldError(f"{given.labels[refused[0]]}: cannot change after submission")
    _check_text(given)
    data = _nest(given, [key for key in given.values if given.values[key] is not None])
    cleared = [BY_KEY[key].path for key in given.values if given.values[key] is None]
    if "timeouts" in data or cleared:
        merged = msgspec.to_builtins(timeouts or Timeouts())
        merged.update(data.get("timeouts", {}))
        for path in cleared:
            merged.pop(path[-1], None)
        data["timeouts"] = merged
    try:
        return msgspec.convert(data, JobPatch)
    except msgspec.ValidationError as exc:
        raise explain(exc, data, JobPatch, given.label) from None
