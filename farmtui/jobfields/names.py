"""A job's name when none was given."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

from farmtui.printable import CONTROL_CHARACTERS
from farmtui.protocol import MAX_NAME_LENGTH

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
