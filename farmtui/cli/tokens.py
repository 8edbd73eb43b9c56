"""``farm token create`` and ``farm whoami``: making tokens, and who a token says you are."""

from __future__ import annotations

import argparse

from farmtui.cli import shared
from farmtui.cli.shared import emit, emit_json
from farmtui.printable import printable


def cmd_token(args: argparse.Namespace) -> int:
    with shared.connect(args) as farm:
        info = farm.create_token(args.role, args.name or "")
    if args.json:
        emit_json(info)
    else:
        emit(info.token)
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    with shared.connect(args) as farm:
        me = farm.whoami()
        url = farm.leader
    if args.json:
        emit_json(me)
    else:
        emit(printable(f"{me.name} ({me.role}) on {url}"))
    return 0
