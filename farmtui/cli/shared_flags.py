"""Flags more than one command takes: ``--print-service`` and the job settings' flags."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from typing import Any

# Flags whose value is a renderer's options, so it starts with "-" ("-E CYCLES", "-a"):
# argparse took a lone "-a" after one for an unknown flag of its own (``parser._glued``).
OPTION_VALUED = frozenset({"--extra-args"})


class RendererOptions(argparse.Action):
    """``--extra-args``: each one given is split as a shell would and added to those before.

    Given twice, the first was dropped without a word (argparse keeps the last); and a lone
    ``--`` (argparse takes it out of ``--extra-args=--`` as an end of options) left none.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if not isinstance(values, str):
            parser.error(f"{option_string}: '--' alone is no option of a renderer")
        try:
            words = shlex.split(values)
        except ValueError as exc:
            parser.error(f"{option_string}: cannot split {values!r}: {exc}")
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), *words])


def add_service_flags(parser: argparse.ArgumentParser, what: str) -> None:
    """``--print-service``: print a systemd unit that runs this command instead of running it."""
    from farmtui.service_units import DEFAULT_USER

    parser.add_argument(
        "--print-service",
        action="store_true",
        help=f"print a systemd unit that runs this {what} with these flags, and exit",
    )
    parser.add_argument(
        "--service-user",
        default=DEFAULT_USER,
        metavar="USER",
        help=f"the unit's dedicated user (default {DEFAULT_USER})",
    )


def add_field_flags(parser: argparse.ArgumentParser, *, settable_only: bool) -> None:
    """The job settings' flags, from the one table: all for submit, the changeable for set."""
    from farmtui.jobfields import FIELDS

    for field in FIELDS:
        if field.metavar == "" or (settable_only and not field.settable):
            continue  # a job file key only (argv, staging), or fixed at submission
        if field.switch:
            if settable_only:  # --per-frame-timeouts / --no-per-frame-timeouts
                action: Any = argparse.BooleanOptionalAction
                parser.add_argument(field.flag, action=action, default=None, help=field.help)
            else:
                parser.add_argument(field.flag, action="store_true", default=None, help=field.help)
        elif field.repeat:
            parser.add_argument(field.flag, action="append", metavar=field.metavar, help=field.help)
        elif field.flag in OPTION_VALUED:
            parser.add_argument(
                field.flag, action=RendererOptions, metavar=field.metavar, help=field.help
            )
        else:
            help_text = field.help
            if settable_only:  # a submitted job has its values: no "(default ...)"
                help_text = help_text.split(" (default")[0]
                if field.clearable:
                    help_text += "; 'none' clears it"
            parser.add_argument(field.flag, metavar=field.metavar, help=help_text)
