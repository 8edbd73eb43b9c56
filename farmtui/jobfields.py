"""A job's fields: one table for the flags and job file keys, one check for every entry point.

The limit on each single value lives on the Structs in ``farmtui.protocol``
(``JobSpec``, ``Timeouts``, ``JobPatch``: ranges, lengths, patterns, no unknown
fields). This module adds what a Struct cannot say:

- ``FIELDS``: every ``farm submit`` flag, which is also a job file key, with
  where it lands in a ``JobSpec``, how its text is read (durations, lists,
  commands) and its help. ``farm set`` offers the ones a ``JobPatch`` can
  change, and the console's settings dialog reads its inputs with them.
- ``read`` / ``to_spec`` / ``to_patch``: flags and TOML values go through
  ``msgspec.convert`` into the Structs, so each limit comes from the Struct,
  and an error names the flag or key the user typed (``explain``).
- ``check_job`` / ``check_patch``: the rules between fields, and the ones
  where a value allowed by its type still means nothing (a maximum render
  time of 0, subframes, a scene outside the sync root). The CLI and the job
  file reader run them before sending; the leader runs them for POST, and for
  PATCH on the job's current spec with the patch applied; so does the console.

Every refusal is a ``JobFieldError``: a ValueError with a one-line message.
Nothing here does I/O except ``check_scene`` resolving symlinks under a root.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Final, TypeVar

import msgspec
import msgspec.inspect

from farmtui.durations import parse_duration
from farmtui.printable import CONTROL_CHARACTERS
from farmtui.protocol import (
    MAX_FRAME_WINDOW,
    MAX_NAME_LENGTH,
    JobPatch,
    JobSpec,
    Timeouts,
)

# ``farm jobs`` builds its parser from FIELDS: fileseq (farmtui.frames, 50 ms) and
# the renderers are imported where a frame list or a command is first checked.

FieldPath = tuple[str, ...]
Reader = Callable[[object], object]


class JobFieldError(ValueError):
    """A job setting refused; ``str()`` is one line, ``path`` the field at fault (may be empty)."""

    def __init__(self, message: str, path: FieldPath = ()) -> None:
        super().__init__(message)
        self.path = path


class UnknownKey(JobFieldError):
    """A flag or job file key that is not a job field (a typo)."""


# --- reading what people type ---------------------------------------------------------

# ``farm set --timeout-max none``: clear the setting (durations only).
CLEAR: Final = "none"


def _text(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value.strip() if isinstance(value, str) else value


def _lower(value: object) -> object:
    text = _text(value)
    return text.lower() if isinstance(text, str) else text


def _integer(value: object) -> object:
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a whole number") from None
    return value


def _number(value: object) -> object:
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
    return value


def _duration(value: object) -> object:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return parse_duration(value)
    raise ValueError("must be a duration such as 90, 90s, 5m, 1h30m")


def _frames(value: object) -> object:
    from farmtui.frames import parse_frames

    text = _text(value)
    if isinstance(text, str):
        parse_frames(text)
    return text


def _output(value: object) -> object:
    from farmtui.frames import check_output_pattern

    text = _text(value)
    if isinstance(text, str):
        check_output_pattern(text)
    return text


def _scene(value: object) -> object:
    text = _text(value)
    if isinstance(text, str):
        check_scene(text)
    return text


def _list(value: object) -> object:
    """A list of strings, or one comma-separated string (``"a,b"``)."""
    if isinstance(value, str):
        value = value.split(",")
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value if item.strip()]
    return value


def _command(value: object) -> object:
    """A command as an argv list; a string is split like a shell would, never run by one."""
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split {value!r}: {exc}") from None
    return value


def _env(value: object) -> object:
    """A table, or a list of ``K=V`` strings (what repeated ``--env`` gives)."""
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        env: dict[str, str] = {}
        for item in value:
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not K=V")
            env[key] = val
        return env
    return value


def _as_is(value: object) -> object:
    return value


# ``--after sim:frames``: a dependency frame by frame rather than on the whole job.
FRAMES_SUFFIX: Final = ":frames"


def _after(value: object) -> object:
    """Job ids; ``JOB:frames`` marks a frame-by-frame dependency (``to_spec`` sorts them)."""
    return _list(value)


def _offset(value: object) -> object:
    """``A`` or ``A:B`` (or ``[A, B]``): frame N waits for upstream frames N+A .. N+B."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    if isinstance(value, str):
        first, sep, last = value.strip().partition(":")
        try:
            start = int(first)
            end = int(last) if sep else start
        except ValueError:
            raise ValueError(f"{value!r} is not A or A:B (whole numbers, e.g. -1:1)") from None
        return [start, end]
    return value


_SIZE = re.compile(r"^(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[kmgt]?)(?:i?b)?$", re.IGNORECASE)
_MIB_PER: Final = {"": 1, "m": 1, "k": 1 / 1024, "g": 1024, "t": 1024 * 1024}


def _memory(value: object) -> object:
    """A GPU memory size in MiB: ``8G``, ``8GB``, ``12000M``, ``12000`` (MiB)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        match = _SIZE.match(value.strip())
        if match is None:
            raise ValueError(f"{value!r} is not a size such as 8G, 12000M or 12000 (MiB)")
        return round(float(match["n"]) * _MIB_PER[match["unit"].lower()])
    return value


@dataclass(frozen=True)
class Field:
    """One job setting as a flag and a job file key (``key``, dashes), and where it lands."""

    key: str
    path: FieldPath
    read: Reader
    help: str
    # None: a switch (``--per-frame-timeouts``); "": not a flag (job file only).
    metavar: str | None = ""
    # Says what a pattern or a type on the Struct wants, for error messages.
    rule: str = ""
    # The switch sets the opposite (``--no-staging`` -> staging = false).
    inverted: bool = False
    # A flag that may be given several times (``--env``, ``--after``).
    repeat: bool = False

    @property
    def flag(self) -> str:
        return f"--{self.key}"

    @property
    def switch(self) -> bool:
        return self.metavar is None

    @property
    def settable(self) -> bool:
        """Whether a submitted job can change it (``farm set``, PATCH): from ``JobPatch``."""
        return self.path[0] in JobPatch.__struct_fields__ and not self.inverted

    @property
    def clearable(self) -> bool:
        """``farm set --KEY none`` clears it: a timeout (a patch replaces them whole)."""
        return self.path[0] == "timeouts" and self.read is _duration


# Every job setting: the flags of `farm submit` (and `farm set` for the settable
# ones) and the keys of a job file, in the order `--help` lists them.
FIELDS: tuple[Field, ...] = (
    Field("name", ("name",), _text, "job name (default: the scene's or command's name)", "N",
          rule=f"must be printable text (no tab, newline or escape), at most "
               f"{MAX_NAME_LENGTH} characters"),
    Field("frames", ("frames",), _frames,
          "frame list: 1-100, 1-100x5, 1,5,10-20, 100-1 (default 1)", "LIST"),
    Field("chunk", ("chunk",), _integer, "frames per chunk (default 1)", "K"),
    Field("priority", ("priority",), _integer, "0-100, lower renders sooner (default 50)", "P"),
    Field("renderer", ("renderer",), _lower,
          "blender, ffmpeg, nuke, aerender, houdini, maya, demo, generic", "NAME",
          rule="must be a renderer's name (letters, digits, '.', '-', '_')"),
    Field("scene", ("scene",), _scene,
          "scene file: relative to the sync root, or a path inside it", "FILE"),
    Field("output", ("output",), _output, "output relative to the sync root, # marks padding",
          "PATTERN"),
    Field("scout", ("scout",), _frames, "scout frames rendered first; then the job holds", "LIST"),
    Field("after", ("after",), _after,
          "wait for JOB; JOB:frames waits frame by frame (repeat)", "JOB", repeat=True,
          rule="must be a list of job ids or a comma-separated string"),
    Field("after-frames", ("after_frames",), _as_is,
          "every --after job frame by frame: frame N waits for its frame N", None),
    Field("after-offset", ("after_offset",), _offset,
          "frame N waits for frames N+A .. N+B of the --after jobs (default 0)", "A[:B]",
          rule="must be A or A:B, whole numbers from -10000 to 10000"),
    Field("max-running", ("max_running",), _integer, "at most N chunks at once (0: no limit)",
          "N"),
    Field("tags", ("tags",), _list, "only nodes with all these tags", "a,b",
          rule="must be a list of strings or a comma-separated string"),
    Field("gpus", ("gpus",), _integer, "GPUs each chunk gets to itself (default 0)", "N"),
    Field("gpu-memory", ("gpu_memory",), _memory, "least memory of each GPU: 8G, 12000M",
          "SIZE"),
    Field("limits", ("limits",), _list, "farm limits (licences) each chunk holds a unit of",
          "a,b", rule="must be a list of limit names or a comma-separated string"),
    Field("timeout-min", ("timeouts", "min_render"), _duration,
          "minimum render time (catches renderers that quit early)", "D"),
    Field("timeout-max", ("timeouts", "max_render"), _duration,
          "maximum render time (more than 0; no limit if left out)", "D"),
    Field("timeout-start", ("timeouts", "max_start"), _duration,
          "maximum time from dispatch to the renderer's first output (more than 0)", "D"),
    Field("per-frame-timeouts", ("timeouts", "per_frame"), _as_is,
          "apply min/max render time per frame rather than per chunk", None),
    Field("on-timeout", ("timeouts", "on_timeout"), _lower,
          "notify, requeue, error (default), fail or complete", "ACTION"),
    Field("auto-timeout", ("timeouts", "auto"), _as_is, "turn the auto timeout on", None),
    Field("auto-timeout-chunks", ("timeouts", "auto_min_chunks"), _integer,
          "auto timeout after N completed chunks", "N"),
    Field("auto-timeout-percent", ("timeouts", "auto_min_percent"), _number,
          "auto timeout after P percent of chunks", "P"),
    Field("auto-timeout-multiplier", ("timeouts", "auto_multiplier"), _number,
          "auto timeout = mean render time x X (default 2)", "X"),
    Field("pre-job", ("pre_job",), _command, "command run once before the job", "CMD",
          rule="must be a command string or a list of strings"),
    Field("post-job", ("post_job",), _command, "command run once after the job", "CMD",
          rule="must be a command string or a list of strings"),
    Field("script-timeout", ("timeouts", "script_timeout"), _duration,
          "timeout for the pre- and post-job commands (more than 0)", "D"),
    Field("retries", ("retries",), _integer, "retries per chunk", "N"),
    Field("retry-delay", ("retry_delay",), _duration, "first retry delay (doubles each time)",
          "D"),
    Field("retry-cap", ("retry_cap",), _duration, "longest retry delay", "D"),
    Field("no-staging", ("staging",), _as_is, "render straight into the sync root", None,
          inverted=True),
    Field("staging", ("staging",), _as_is, "stage output on the node (default true)"),
    Field("webhook", ("webhook",), _text, "POST job notifications here", "URL"),
    Field("env", ("env",), _env, "environment (repeat)", "K=V", repeat=True,
          rule="must be a table of strings or a list of K=V; names are non-empty, without '='"),
    Field("argv", ("argv",), _as_is, "the command (after -- on the command line)",
          rule='must be a list of strings (argv = ["sleep", "1"]), never a shell string'),
)  # fmt: skip

BY_KEY: dict[str, Field] = {f.key: f for f in FIELDS}
# What each place in a JobSpec is called, for messages that name a JSON field.
_BY_PATH: dict[FieldPath, Field] = {f.path: f for f in FIELDS if not f.inverted}


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


def _texts(value: object) -> Iterator[str]:
    """Every string in ``value``: itself, its items, or its keys and values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)


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


# --- turning msgspec's errors into a line that names the setting -----------------------

_AT = re.compile(
    r"^(?P<problem>.*?)(?: - at `key` in `\$(?P<keyof>[^`]*)`| - at `\$(?P<at>[^`]*)`)?$"
)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]*)`")
_BOUND = re.compile(r"Expected `(?P<type>\w+)` (?P<op>>=|<=|>|<) (?P<limit>\S+)$")
_LENGTH = re.compile(r"Expected `(?P<type>\w+)` of length (?P<op>>=|<=) (?P<limit>\d+)$")
_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_ENUM = re.compile(r"Invalid enum value (?P<value>.*)$")
_WANT = {
    "int": "must be a whole number",
    "float": "must be a number",
    "bool": "must be true or false",
    "str": "must be text",
    "array": "must be a list",
    "object": "must be a table",
}


def _split_path(text: str) -> FieldPath:
    """msgspec's ``.timeouts.max_render`` or ``.argv[1]`` -> ``("timeouts", "max_render")``."""
    return tuple(part for part in re.sub(r"\[[^\]]*\]", "", text).split(".") if part)


def _type_at(kind: type[msgspec.Struct], path: FieldPath) -> msgspec.inspect.Type | None:
    """The msgspec type description of the field at ``path`` (None-less), or None."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(kind)
    for name in path:
        if isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        found = [f for f in info.fields if f.name == name]
        if not found:
            return None
        info = found[0].type
    if isinstance(info, msgspec.inspect.UnionType):
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    return info


def _value_at(data: object, path: FieldPath) -> object:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


def _show(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _bounds(info: msgspec.inspect.Type | None) -> str:
    """``0-100``, ``>= 1``, ``> 0 and <= 100`` from the Struct's own limits."""
    if not isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return ""
    low = f">= {_show(info.ge)}" if info.ge is not None else None
    low = f"> {_show(info.gt)}" if info.gt is not None else low
    high = f"<= {_show(info.le)}" if info.le is not None else None
    high = f"< {_show(info.lt)}" if info.lt is not None else high
    if info.ge is not None and info.le is not None:
        return f"{_show(info.ge)}-{_show(info.le)}"
    return " and ".join(part for part in (low, high) if part)


def explain(
    exc: msgspec.ValidationError,
    data: object,
    kind: type[msgspec.Struct],
    label: Callable[[FieldPath], str] | None = None,
) -> JobFieldError:
    """msgspec's ``Expected `int` >= 1 - at `$.chunk``` as ``chunk: 0 is out of range (>= 1)``.

    ``data`` is what was converted (to quote the value), ``kind`` the Struct (for its
    limits), ``label(path)`` how the user named the field (default: its JSON path).
    """
    name_of = label or (lambda path: ".".join(path))
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any line
    problem = match.group("problem")
    where = match.group("keyof") if match.group("keyof") is not None else match.group("at")
    path = _split_path(where or "")
    value = _value_at(data, path)
    info = _type_at(kind, path)
    known = _BY_PATH.get(path)
    rule = known.rule if known is not None else ""
    if unknown := _UNKNOWN.match(problem):
        path = (*path, unknown.group("name"))
        inner = _type_at(kind, path[:-1]) if len(path) > 1 else msgspec.inspect.type_info(kind)
        choices = (
            [f.name for f in inner.fields] if isinstance(inner, msgspec.inspect.StructType) else []
        )
        close = difflib.get_close_matches(path[-1], choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return UnknownKey(f"{'.'.join(path)}: unknown field{hint}", path)
    if match.group("keyof") is not None:
        text = rule or "has a key that is not allowed"
    elif bound := _BOUND.match(problem):
        limits = _bounds(info) or f"{bound.group('op')} {bound.group('limit')}"
        if value is None:  # the caller could not say what was sent
            text = f"must be {limits}"
        else:
            text = f"{_show(value)} is out of range ({limits})"
    elif length := _LENGTH.match(problem):
        limit = int(length.group("limit"))
        unit = "characters" if length.group("type") == "str" else "items"
        if length.group("op") == ">=":
            text = "must not be empty" if limit == 1 else f"must have at least {limit} {unit}"
        else:
            text = f"must have at most {limit} {unit}"
    elif "matching regex" in problem:
        # A NUL first: no rule of a field says why a program cannot be given one.
        nul = any("\x00" in text for text in _texts(value))
        text = "must not hold a NUL byte" if nul else rule or "has characters that are not allowed"
    elif typed := _TYPE.match(problem):
        want = typed.group("want").split(" | ")[0]
        text = rule or _WANT.get(want, f"must be {want}")
        if want == "int" and isinstance(value, float):
            text = f"{_show(value)} is not a whole number"
    elif enum := _ENUM.match(problem):
        values = info.values if isinstance(info, msgspec.inspect.LiteralType) else ()
        text = f"{enum.group('value')} is not one of {', '.join(map(str, values))}"
    else:
        text = problem
    return JobFieldError(f"{name_of(path)}: {text}", path)


S = TypeVar("S", bound=msgspec.Struct)


def revalidate(value: S) -> S:
    """``value`` checked against its Struct's limits (a Struct built in Python is not)."""
    kind = type(value)
    data = msgspec.to_builtins(value)
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise explain(exc, data, kind) from None


# --- the rules between fields ---------------------------------------------------------

# Timeouts where 0 would fire at once: a limit is more than 0, or unset for none.
_NO_ZERO: tuple[tuple[str, str], ...] = (
    ("max_render", "maximum render time"),
    ("max_start", "maximum start time"),
    ("script_timeout", "script timeout"),
)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def check_settings(spec: JobSpec) -> None:
    """The rules on what can change after submission: timeouts and retries."""
    t = spec.timeouts
    for name, what in _NO_ZERO:
        if getattr(t, name) == 0:
            raise JobFieldError(
                f"the {what} must be more than 0 (leave it unset for no limit)",
                ("timeouts", name),
            )
    if t.min_render is not None and t.max_render is not None and t.min_render > t.max_render:
        raise JobFieldError(
            f"the minimum render time ({_seconds(t.min_render)}) is longer than the "
            f"maximum render time ({_seconds(t.max_render)})",
            ("timeouts", "min_render"),
        )
    if (
        spec.retry_delay is not None
        and spec.retry_cap is not None
        and spec.retry_delay > spec.retry_cap
    ):
        raise JobFieldError(
            f"the retry delay ({_seconds(spec.retry_delay)}) is longer than the "
            f"retry cap ({_seconds(spec.retry_cap)})",
            ("retry_delay",),
        )


def check_scene(scene: str | None, root: Path | None = None) -> None:
    """A scene path stays in the sync root: relative without ``..``, or absolute inside it.

    Without ``root`` (the CLI, the scheduler) an absolute path cannot be judged and
    passes; the leader calls this again with its sync root.
    """
    if scene is None:
        return
    if "\x00" in scene or "\\" in scene:
        raise JobFieldError(f"scene {scene!r} has a backslash or NUL", ("scene",))
    if scene.startswith("~"):
        raise JobFieldError(
            f"scene {scene!r} must be relative to the sync root or inside it", ("scene",)
        )
    pure = PurePosixPath(scene)
    if not pure.is_absolute() and ".." in pure.parts:
        raise JobFieldError(f"scene {scene!r} escapes the sync root", ("scene",))
    if root is None:
        return
    base = root.resolve()
    target = (base / pure).resolve()
    if target != base and base not in target.parents:
        raise JobFieldError(f"scene {scene!r} is outside the sync root", ("scene",))


def command_for(spec: JobSpec) -> list[str]:
    """The job's argv: the submitter's, or its renderer's template when empty.

    Refused: an unknown renderer, a generic job without a command, a template
    missing what it needs, an unknown ``{token}``, or ``{output}``/``{scene}``
    in a job that has none (a typo fails here, not on every node).
    """
    from farmtui.renderers import TOKENS, RendererError, build_argv, expand

    if spec.renderer.lower() == "generic" and not spec.argv:
        raise JobFieldError(
            "a generic job needs its command after `--` (argv in a job file or the API)",
            ("argv",),
        )
    try:
        argv = build_argv(spec)
        expand(argv, dict.fromkeys(TOKENS, ""))
    except RendererError as exc:
        raise JobFieldError(str(exc), ("argv",)) from None
    for token, value, what in (
        ("output", spec.output, "output pattern"),
        ("scene", spec.scene, "scene"),
    ):
        if not value:
            try:
                expand(argv, dict.fromkeys(TOKENS - {token}, ""))
            except RendererError:
                raise JobFieldError(
                    f"the command uses {{{token}}} but the job has no {what}", ("argv",)
                ) from None
    return argv


def check_job(spec: JobSpec, root: Path | None = None) -> list[int]:
    """Refuse a bad spec with a JobFieldError; the job's frames when it is good.

    Every entry point runs this: the CLI and the job file reader before sending,
    the leader on POST (with ``root``, its sync root, to judge absolute scene paths).
    Checks the Struct's own limits again first, for specs built in Python.
    """
    from farmtui.frames import check_output_pattern, parse_frames

    revalidate(spec)
    try:
        frames = parse_frames(spec.frames)
    except ValueError as exc:
        raise JobFieldError(str(exc), ("frames",)) from None
    if spec.scout is not None:
        try:
            scouts = parse_frames(spec.scout)
        except ValueError as exc:
            raise JobFieldError(f"scout frames: {exc}", ("scout",)) from None
        outside = sorted(set(scouts) - set(frames))
        if outside:
            raise JobFieldError(
                f"scout frame {outside[0]} is not in the frame list {spec.frames!r}", ("scout",)
            )
    if spec.output is not None:
        try:
            check_output_pattern(spec.output)
        except ValueError as exc:
            raise JobFieldError(str(exc), ("output",)) from None
    check_scene(spec.scene, root)
    command_for(spec)
    check_settings(spec)
    check_scheduling(spec)
    return frames


def check_scheduling(spec: JobSpec) -> None:
    """What the dependency, GPU and limit fields mean together."""
    start, end = spec.after_offset
    if start > end:
        raise JobFieldError(
            f"the frame offset {start}:{end} ends before it starts (write A:B with A <= B)",
            ("after_offset",),
        )
    if end - start > MAX_FRAME_WINDOW:
        raise JobFieldError(
            f"the frame offset {start}:{end} spans {end - start + 1} frames; "
            f"a frame may wait for at most {MAX_FRAME_WINDOW + 1}",
            ("after_offset",),
        )
    if (spec.after_frames or spec.after_offset != (0, 0)) and not spec.after:
        raise JobFieldError(
            "a frame-by-frame dependency needs a job to wait on (--after JOB:frames)",
            ("after_frames",),
        )
    if spec.after_offset != (0, 0) and not spec.after_frames:
        raise JobFieldError(
            "a frame offset applies to frame-by-frame dependencies (--after JOB:frames)",
            ("after_offset",),
        )
    if spec.gpu_memory and not spec.gpus:
        raise JobFieldError("a GPU memory needs GPUs to apply to (--gpus N)", ("gpu_memory",))
    seen = [name for i, name in enumerate(spec.limits) if name in spec.limits[:i]]
    if seen:
        raise JobFieldError(f"limit {seen[0]!r} is named twice", ("limits",))


def apply_patch(spec: JobSpec, patch: JobPatch) -> JobSpec:
    """The spec with every setting the patch gives (those not None) replaced."""
    changes = {name: getattr(patch, name) for name in patch.__struct_fields__}
    return msgspec.structs.replace(
        spec, **{name: value for name, value in changes.items() if value is not None}
    )


def check_patch(spec: JobSpec, patch: JobPatch) -> JobSpec:
    """The job's spec with the patch applied, checked as a whole; JobFieldError otherwise.

    So a minimum render time above the job's existing maximum is refused even
    when the patch sets only the minimum.
    """
    merged = apply_patch(spec, revalidate(patch))
    check_settings(merged)
    return merged


# --- names --------------------------------------------------------------------------

_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def default_name(renderer: str, scene: str | None, argv: list[str]) -> str:
    """A job's name when none was given: the scene's or the command's, made a valid name."""
    if scene:
        name = PurePosixPath(scene).stem
    elif argv:
        name = PurePosixPath(argv[0]).name
    else:
        name = renderer
    return _CONTROL.sub("", name)[:MAX_NAME_LENGTH]


# --- records written by an older leader ---------------------------------------------------


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
