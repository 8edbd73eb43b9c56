"""What the data commands share: the client for the leader, and printing their answers.

Commands call ``shared.connect(args)``, not a copy imported by name, so a test
can put a fake leader behind every command by replacing this one function.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import msgspec

from farmtui.printable import printable

if TYPE_CHECKING:
    from farmtui.client import FarmClient


def emit_json(value: object) -> None:
    """Print one JSON document (msgspec encoding of the protocol records)."""
    sys.stdout.buffer.write(msgspec.json.encode(value) + b"\n")
    sys.stdout.flush()


def emit(text: str) -> None:
    """Print human output; control characters in it are shown as escapes, never sent raw."""
    sys.stdout.write(printable(text, multiline=True) + "\n")
    sys.stdout.flush()


def connect(args: argparse.Namespace) -> FarmClient:
    """A client for the leader named by flags, environment or the user config."""
    from farmtui import config
    from farmtui.client import FarmClient

    conn = config.resolve(args.leader, args.token, args.token_file, ca=getattr(args, "ca", None))
    return FarmClient(conn.leader, conn.token, verify=conn.ca or True)
