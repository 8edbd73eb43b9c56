"""What the data commands share: the client for the leader, and printing their answers.

Commands call ``shared.connect(args)``, not a copy imported by name, so a test
can put a fake leader behind every command by replacing this one function.
"""

from __future__ import annotations

import argparse
import sys
import time
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


# How long a ``--follow`` waits for a leader that stopped answering (a restart, a failover).
FOLLOW_OUTAGE = 300.0


class Outage:
    """A ``--follow``'s wait for a leader that is away: said once, given up after
    ``FOLLOW_OUTAGE`` (``prog``: the command that says it)."""

    def __init__(self, prog: str) -> None:
        self.prog = prog
        self.since: float | None = None

    def wait(self, exc: Exception, interval: float) -> None:
        """The leader did not answer (``exc``): said the first time, then ``interval`` s of
        sleep; ``exc`` raised again once the leader has been away ``FOLLOW_OUTAGE`` s."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            sys.stderr.write(f"{self.prog}: {printable(str(exc))}; still following\n")
        elif now - self.since > FOLLOW_OUTAGE:
            raise exc
        time.sleep(interval)

    def over(self) -> None:
        """The leader answered."""
        self.since = None
