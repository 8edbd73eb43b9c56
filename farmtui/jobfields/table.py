"""The one table of job fields: every ``farm submit`` flag, which is also a job file key.

Each ``Field`` says where the setting lands in a ``JobSpec``, how its text is read
(durations, lists, commands, sizes) and its help. ``farm set`` offers the ones a
``JobPatch`` can change, and the console's settings dialog reads its inputs with them.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from farmtui.durations import parse_duration
from farmtui.jobfields.errors import FieldPath
from farmtui.jobfields.scene_path import check_scene
from farmtui.protocol import MAX_LIMITS, MAX_NAME_LENGTH, MAX_TAGS, JobPatch

# ``farm jobs`` builds its parser from FIELDS: fileseq (farmtui.frames, 50 ms) and
# the renderers are imported where a frame list or a command is first checked.

Reader = Callable[[object], object]

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
    Field("priority", ("priority",), _integer,
          "0-100, lower renders sooner (default 50, or a user's lowest allowed)", "P"),
    Field("renderer", ("renderer",), _lower,
          "blender, ffmpeg, nuke, aerender, houdini, maya, demo, generic", "NAME",
          rule="must be a renderer's name (letters, digits, '.', '-', '_')"),
    Field("scene", ("scene",), _scene,
          "scene file: relative to the sync root, or a path inside it", "FILE"),
    Field("output", ("output",), _output, "output relative to the sync root, # marks padding",
          "PATTERN"),
    Field("extra-args", ("extra_args",), _command,
          "options added to the renderer's built command (blender: '-E CYCLES')", "ARGS",
          rule="must be a string of options or a list of strings"),
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
          rule=f"must be a list of at most {MAX_TAGS} tags (each 1-64 characters, no "
          "control characters) or a comma-separated string"),
    Field("gpus", ("gpus",), _integer, "GPUs each chunk gets to itself (default 0)", "N"),
    Field("gpu-memory", ("gpu_memory",), _memory, "least memory of each GPU: 8G, 12000M",
          "SIZE"),
    Field("limits", ("limits",), _list, "farm limits (licences) each chunk holds a unit of",
          "a,b", rule=f"must be a list of at most {MAX_LIMITS} limit names (letters, digits, "
          "'_', '.', '-') or a comma-separated string"),
    Field("timeout-min", ("timeouts", "min_render"), _duration,
          "minimum render time (catches renderers that quit early)", "D"),
    Field("timeout-max", ("timeouts", "max_render"), _duration,
          "maximum render time (more than 0; no limit if left out)", "D"),
    Field("timeout-start", ("timeouts", "max_start"), _duration,
          "maximum time from dispatch to the renderer's first output (more than 0)", "D"),
    Field("per-frame-timeouts", ("timeouts", "per_frame"), _as_is,
          "apply min/max render time per frame rather than per chunk", None),
    Field("on-timeout", ("timeouts", "on_timeout"), _lower,
          "notify, requeue, error, fail or complete (default error)", "ACTION"),
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
