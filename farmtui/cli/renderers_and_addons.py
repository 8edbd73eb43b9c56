"""The renderers and integrations farmtui ships: ``demo-render``, ``blender-addon``."""

from __future__ import annotations

import argparse
from pathlib import Path

from farmtui.cli.shared import emit, emit_json
from farmtui.errors import InputError


def cmd_demo_render(args: argparse.Namespace) -> int:
    from farmtui.demo_render import render

    return render(args)


def cmd_blender_addon(args: argparse.Namespace) -> int:
    from farmtui.integrations.addon import write_blender_addon

    try:
        path = write_blender_addon(Path(args.out))
    except OSError as exc:
        why = exc.strerror or exc
        raise InputError(f"cannot write the add-on into {args.out}: {why}") from None
    if args.json:
        emit_json({"path": str(path)})
    else:
        emit(str(path))
    return 0
