"""Where a job's scene may be: inside the sync root, judged before anything is sent.

``check_scene`` is the one check here that does I/O: it resolves symlinks under a root.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from farmtui.jobfields.errors import JobFieldError
from farmtui.printable import has_control


def check_scene(scene: str | None, root: Path | None = None) -> None:
    """A scene path stays in the sync root: relative without ``..``, or absolute inside it.

    Without ``root`` (the CLI, the scheduler) an absolute path cannot be judged and
    passes; the leader calls this again with its sync root.
    """
    if scene is None:
        return
    if "\x00" in scene or "\\" in scene:
        raise JobFieldError(f"scene {scene!r} has a backslash or NUL", ("scene",))
    if has_control(scene):
        raise JobFieldError(f"scene {scene!r} has a control character", ("scene",))
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
