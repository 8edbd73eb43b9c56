"""``farm migrate``: move a stopped leader's farm to another store."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from farmtui.cli.shared import emit, emit_json
from farmtui.errors import FarmError

if TYPE_CHECKING:
    from farmtui.cli.parser import Parser


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        from server.errors import LeaderError as LeaderSetupError
        from server.migrate import migrate
    except ImportError as exc:
        raise FarmError(f"the leader is not installed here ({exc})") from None
    try:
        done = migrate(args.source, args.target)
    except LeaderSetupError as exc:
        raise FarmError(str(exc)) from None
    if args.json:
        emit_json({"from": done.source, "to": done.target, "copied": done.counts})
    else:
        copied = ", ".join(f"{count} {table}" for table, count in done.counts.items())
        emit(f"copied {copied} from {done.source} to {done.target}")
    return 0


def add_migrate_command(add: Callable[..., Parser], as_json: argparse.ArgumentParser) -> None:
    text = "copy a stopped leader's farm to another store"
    migrate = add("migrate", cmd_migrate, text, [as_json])
    migrate.add_argument(
        "--from", dest="source", required=True, metavar="URL", help="e.g. sqlite:DATA/farm.db"
    )
    migrate.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="URL",
        help="an empty store, e.g. postgresql://farm@db/farm",
    )
