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
Both go through the same converters, so a value means the same in either.
"""

from __future__ import annotations

import difflib
import shlex
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, get_args

from farmtui.durations import parse_duration
from farmtui.errors import InputError, JobFileError
from farmtui.frames import (
    FrameListError,
    OutputPatternError,
    check_output_pattern,
    parse_frames,
)
from farmtui.protocol import JobSpec, OnTimeout, Timeouts
from farmtui.renderers import TOKENS, RendererError, build_argv, expand

ON_TIMEOUT: tuple[str, ...] = get_args(OnTimeout)

Converter = Callable[[object], Any]


def _text(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a string")
    return str(value).strip()


def _nonempty(value: object) -> str:
    text = _text(value)
    if not text:
        raise ValueError("must not be empty")
    return text


def _frames(value: object) -> str:
    text = _nonempty(value)
    parse_frames(text)
    return text


def _output(value: object) -> str:
    text = _nonempty(value)
    check_output_pattern(text)
    return text


def _integer(low: int, high: int | None = None) -> Converter:
    def convert(value: object) -> int:
        if isinstance(value, bool):
            raise ValueError("must be a whole number")
        if isinstance(value, str):
            try:
                value = int(value.strip())
            except ValueError:
                raise ValueError(f"{value!r} is not a whole number") from None
        if not isinstance(value, int):
            raise ValueError("must be a whole number")
        if value < low or (high is not None and value > high):
            bounds = f"{low}-{high}" if high is not None else f">= {low}"
            raise ValueError(f"{value} is out of range ({bounds})")
        return value

    return convert


def _number(low: float, high: float | None = None, *, inclusive_low: bool = True) -> Converter:
    def convert(value: object) -> float:
        if isinstance(value, bool):
            raise ValueError("must be a number")
        if isinstance(value, str):
            try:
                value = float(value.strip())
            except ValueError:
                raise ValueError(f"{value!r} is not a number") from None
        if not isinstance(value, int | float):
            raise ValueError("must be a number")
        number = float(value)
        too_low = number < low if inclusive_low else number <= low
        if too_low or (high is not None and number > high) or number != number:
            bounds = f"{'>=' if inclusive_low else '>'} {low:g}"
            if high is not None:
                bounds += f" and <= {high:g}"
            raise ValueError(f"{value} is out of range ({bounds})")
        return number

    return convert


def _duration(value: object) -> float:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ValueError("must be a duration such as 90, 90s, 5m, 1h30m")
    return parse_duration(value)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


def _string_list(value: object) -> list[str]:
    """A TOML list of strings, or one comma-separated string (``"a,b"``)."""
    if isinstance(value, str):
        items = value.split(",")
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        items = list(value)
    else:
        raise ValueError("must be a list of strings or a comma-separated string")
    return [item.strip() for item in items if item.strip()]


def _command(value: object) -> list[str]:
    """A command as an argv list; a string is split like a shell would, never run by one."""
    if isinstance(value, str):
        try:
            argv = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"cannot split {value!r}: {exc}") from None
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        argv = list(value)
    else:
        raise ValueError("must be a command string or a list of strings")
    if not argv:
        raise ValueError("must not be empty")
    return argv


def _argv(value: object) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError('must be a list of strings (argv = ["sleep", "1"]), never a shell string')
    return list(value)


def _on_timeout(value: object) -> str:
    text = _nonempty(value).lower()
    if text not in ON_TIMEOUT:
        raise ValueError(f"{text!r} is not one of {', '.join(ON_TIMEOUT)}")
    return text


def _env(value: object) -> dict[str, str]:
    """A TOML table, or a list of ``K=V`` strings (what repeated ``--env`` gives)."""
    if isinstance(value, dict):
        pairs = list(value.items())
    elif isinstance(value, list) and all(isinstance(item, str) for item in value):
        pairs = []
        for item in value:
            key, sep, val = item.partition("=")
            if not sep:
                raise ValueError(f"{item!r} is not K=V")
            pairs.append((key, val))
    else:
        raise ValueError("must be a table of strings or a list of K=V")
    env: dict[str, str] = {}
    for key, val in pairs:
        if not isinstance(key, str) or not key or "=" in key or not isinstance(val, str):
            raise ValueError(f"bad variable {key!r}: names are non-empty, values are strings")
        env[key] = val
    return env


# Every job file key / submit flag, with the converter that checks it.
FIELDS: dict[str, Converter] = {
    "name": _nonempty,
    "frames": _frames,
    "chunk": _integer(1),
    "priority": _integer(0, 100),
    "renderer": _nonempty,
    "scene": _nonempty,
    "output": _output,
    "scout": _frames,
    "after": _string_list,
    "max-running": _integer(0),
    "tags": _string_list,
    "timeout-min": _duration,
    "timeout-max": _duration,
    "timeout-start": _duration,
    "per-frame-timeouts": _boolean,
    "on-timeout": _on_timeout,
    "auto-timeout": _boolean,
    "auto-timeout-chunks": _integer(1),
    "auto-timeout-percent": _number(0.0, 100.0, inclusive_low=False),
    "auto-timeout-multiplier": _number(0.0, inclusive_low=False),
    "pre-job": _command,
    "post-job": _command,
    "script-timeout": _duration,
    "retries": _integer(0),
    "retry-delay": _duration,
    "retry-cap": _duration,
    "staging": _boolean,
    "no-staging": _boolean,
    "webhook": _nonempty,
    "env": _env,
    "argv": _argv,
}


def normalize(raw: Mapping[str, object], label: Callable[[str], str]) -> dict[str, Any]:
    """Check and convert raw values keyed by flag name; ``label(key)`` names a key in errors.

    Keys may use ``_`` for ``-``. Values of ``None`` mean "not given" and are dropped.
    """
    values: dict[str, Any] = {}
    for raw_key, value in raw.items():
        key = raw_key.replace("_", "-")
        if value is None:
            continue
        convert = FIELDS.get(key)
        if convert is None:
            close = difflib.get_close_matches(key, FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise JobFileError(f"{label(raw_key)}: unknown key{hint}")
        try:
            values[key] = convert(value)
        except (ValueError, FrameListError, OutputPatternError) as exc:
            raise InputError(f"{label(raw_key)}: {exc}") from None
    return values


def load_jobfile(path: Path) -> dict[str, Any]:
    """A job file's values, checked and converted; JobFileError or InputError on bad content.

    A relative ``scene`` is taken relative to the job file's folder.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise JobFileError(f"cannot read job file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise JobFileError(f"job file {path} is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"job file {path} is not valid TOML: {exc}") from None
    values = normalize(data, lambda key: f"job file {path}: {key}")
    scene = values.get("scene")
    if scene and not Path(scene).expanduser().is_absolute():
        candidate = path.parent / scene
        if candidate.exists():
            values["scene"] = str(candidate.resolve())
    return values


def build_spec(values: Mapping[str, Any]) -> JobSpec:
    """A JobSpec from normalized values (file values with flags laid over them)."""
    renderer = values.get("renderer", "generic").lower()
    argv: list[str] = values.get("argv", [])
    if renderer == "generic" and not argv:
        raise InputError(
            "a generic job needs its command after `--` (farm submit --frames 1-10 -- CMD ARGS)"
        )
    frames = values.get("frames", "1")
    scout = values.get("scout")
    if scout is not None:
        outside = sorted(set(parse_frames(scout)) - set(parse_frames(frames)))
        if outside:
            raise InputError(f"scout frame {outside[0]} is not in the frame list {frames!r}")
    scene = values.get("scene")
    if scene and Path(scene).expanduser().exists():
        scene = str(Path(scene).expanduser().resolve())
    staging = values.get("staging", True)
    if values.get("no-staging"):
        staging = False
    timeouts = Timeouts(
        min_render=values.get("timeout-min"),
        max_render=values.get("timeout-max"),
        max_start=values.get("timeout-start"),
        per_frame=values.get("per-frame-timeouts", False),
        on_timeout=values.get("on-timeout", "error"),
        auto=values.get("auto-timeout", False)
        or "auto-timeout-chunks" in values
        or "auto-timeout-percent" in values,
        auto_min_chunks=values.get("auto-timeout-chunks"),
        auto_min_percent=values.get("auto-timeout-percent"),
        auto_multiplier=values.get("auto-timeout-multiplier", 2.0),
        script_timeout=values.get("script-timeout"),
    )
    if (
        timeouts.min_render is not None
        and timeouts.max_render is not None
        and timeouts.min_render > timeouts.max_render
    ):
        raise InputError("the minimum render time is longer than the maximum")
    spec = JobSpec(
        name=values.get("name") or _default_name(renderer, scene, argv),
        frames=frames,
        chunk=values.get("chunk", 1),
        priority=values.get("priority", 50),
        renderer=renderer,
        scene=scene,
        output=values.get("output"),
        argv=argv,
        scout=scout,
        after=values.get("after", []),
        max_running=values.get("max-running", 0),
        tags=values.get("tags", []),
        timeouts=timeouts,
        retries=values.get("retries"),
        retry_delay=values.get("retry-delay"),
        retry_cap=values.get("retry-cap"),
        pre_job=values.get("pre-job"),
        post_job=values.get("post-job"),
        env=values.get("env", {}),
        staging=staging,
        webhook=values.get("webhook"),
    )
    spec.argv = command_for(spec)
    return spec


def command_for(spec: JobSpec) -> list[str]:
    """The job's argv: the submitter's, or the renderer adapter's template when empty.

    Refuses here what the leader would: an unknown renderer, a missing scene
    or output, an unknown ``{token}`` in the argv.
    """
    try:
        template = build_argv(spec)
        expand(template, dict.fromkeys(TOKENS, "x"))
    except RendererError as exc:
        raise InputError(str(exc)) from None
    return template


def _default_name(renderer: str, scene: str | None, argv: list[str]) -> str:
    if scene:
        return Path(scene).stem
    if argv:
        return Path(argv[0]).name
    return renderer
