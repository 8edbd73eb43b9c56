"""A job's fields: one table for the flags and job file keys, one check for every entry point.

The limit on each single value lives on the Structs in ``farmtui.protocol``
(``JobSpec``, ``Timeouts``, ``JobPatch``: ranges, lengths, patterns, no unknown
fields). This package adds what a Struct cannot say:

- ``FIELDS`` (``table``): every ``farm submit`` flag, which is also a job file key,
  with where it lands in a ``JobSpec``, how its text is read (durations, lists,
  commands) and its help. ``farm set`` offers the ones a ``JobPatch`` can
  change, and the console's settings dialog reads its inputs with them.
- ``read`` / ``to_spec`` / ``to_patch`` (``reading``): flags and TOML values go
  through ``msgspec.convert`` into the Structs, so each limit comes from the
  Struct, and an error names the flag or key the user typed (``explain``, in
  ``msgspec_errors``).
- ``check_job`` / ``check_patch`` (``rules``, with ``check_scene`` in
  ``scene_path``): the rules between fields, and the ones where a value allowed
  by its type still means nothing (a maximum render time of 0, subframes, a
  scene outside the sync root). The CLI and the job file reader run them before
  sending; the leader runs them for POST, and for PATCH on the job's current spec
  with the patch applied; so does the console.
- ``default_name`` (``names``) and ``repair_spec`` (``old_records``, for records
  written by an older leader).

Every refusal is a ``JobFieldError`` (``errors``): a ValueError with a one-line message.
Nothing here does I/O except ``check_scene`` resolving symlinks under a root.
"""

from farmtui.jobfields.errors import FieldPath, JobFieldError, UnknownKey
from farmtui.jobfields.msgspec_errors import explain, revalidate
from farmtui.jobfields.names import default_name
from farmtui.jobfields.old_records import repair_spec
from farmtui.jobfields.reading import Given, read, to_patch, to_spec
from farmtui.jobfields.rules import (
    apply_patch,
    check_job,
    check_patch,
    check_scheduling,
    check_settings,
    command_for,
)
from farmtui.jobfields.scene_path import check_scene
from farmtui.jobfields.table import BY_KEY, CLEAR, FIELDS, FRAMES_SUFFIX, Field, Reader

__all__ = [
    "BY_KEY",
    "CLEAR",
    "FIELDS",
    "FRAMES_SUFFIX",
    "Field",
    "FieldPath",
    "Given",
    "JobFieldError",
    "Reader",
    "UnknownKey",
    "apply_patch",
    "check_job",
    "check_patch",
    "check_scene",
    "check_scheduling",
    "check_settings",
    "command_for",
    "default_name",
    "explain",
    "read",
    "repair_spec",
    "revalidate",
    "to_patch",
    "to_spec",
]
