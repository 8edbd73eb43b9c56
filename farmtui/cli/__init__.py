"""``farm``: the one command line of farmtui (see SPEC.md, "The command line contract").

Thin on purpose: argparse here, the work elsewhere. Data commands go through
``farmtui.client``; ``leader``, ``agent``, ``console`` and ``up`` import their
packages only when run, so ``farm jobs`` starts fast and never loads textual
or uvicorn. Every data command takes ``--json`` and then prints one JSON
document. Errors are one line on stderr; exit 2 for bad input (nothing was
sent), 1 for a leader that is down or refused.

The commands live in the modules of this package, grouped by what a user does:
``parser`` (every command's flags, built from ``shared_flags`` and
``argument_types``), ``submission``, ``reading_jobs``, ``job_control``,
``nodes_and_limits``, ``tokens``, ``processes`` (leader, agent, console, up),
``migrate`` and ``renderers_and_addons``; ``shared`` connects and prints.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from farmtui.errors import FarmError, LeaderError
from farmtui.interrupts import interrupts_held
from farmtui.printable import printable

if TYPE_CHECKING:
    from farmtui.cli.parser import Handler, Parser


def build_parser(argv: Sequence[str] = ()) -> Parser:
    """``farmtui.cli.parser.build_parser``, imported when first needed (see ``main``)."""
    with interrupts_held():
        from farmtui.cli.parser import build_parser as build

    return build(argv)


def _stopped_while_loading(signum: int, frame: object) -> None:
    raise SystemExit(0)


def split_command_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """``farm submit ... -- CMD ARGS`` -> (farm's own arguments, the job's argv)."""
    if argv[:1] == ["submit"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    """The ``farm`` console script; returns the exit code."""
    own, command = split_command_argv(list(sys.argv[1:] if argv is None else argv))
    if argv is None and own[:1] in (["agent"], ["leader"]):
        # Stopped while it loads (a service manager's stop just after its start): nothing
        # runs yet, so it goes with exit 0, as a stop later does (the default was 143).
        # The daemon puts its own handler in place once it runs.
        signal.signal(signal.SIGTERM, _stopped_while_loading)
    try:
        # Most of ``farm``'s start is importing its commands: a Ctrl-C meanwhile is
        # the same quiet 130 as one during the command, not a traceback.
        args, unknown = build_parser(own).parse_known_args(own)
        if unknown:  # said by the command they were given to, not by ``farm``
            from farmtui.cli.parser import usage_error

            usage_error(f"farm {args.command}", f"unrecognized arguments: {' '.join(unknown)}")
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    if command:
        args.argv = command
    handler: Handler = args.run
    try:
        return handler(args)
    except FarmError as exc:
        sys.stderr.write(f"farm {args.command}: {printable(str(exc))}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return 130
    except BrokenPipeError:
        # `farm jobs | head`: the reader left; not an error worth a traceback.
        sys.stderr.close()
        return 0


__all__ = ["LeaderError", "main"]
