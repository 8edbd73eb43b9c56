"""``farm token create|list|revoke`` and ``farm whoami``: tokens, and whose a token is."""

from __future__ import annotations

import argparse
import re

from farmtui.cli import shared
from farmtui.cli.shared import emit, emit_json
from farmtui.errors import InputError
from farmtui.printable import printable
from farmtui.tables import tokens_table


def cmd_token(args: argparse.Namespace) -> int:
    """``farm token create|list|revoke``: admins make, list and revoke tokens."""
    verb, role, target = args.verb, args.role, args.target
    if verb == "create" and (role is None or target is not None):
        raise InputError("farm token create takes --role ROLE [--name NAME], no ID")
    if verb != "create" and (role is not None or args.name is not None):
        raise InputError(f"farm token {verb} takes no --role or --name")
    if verb == "create" and role == "agent" and not args.name:
        # Known here: said as an input error (exit 2), not as the leader's refusal (1).
        raise InputError("an agent token is named for its node: --name NODE")
    if verb == "revoke" and not target:
        raise InputError("farm token revoke needs the token's ID (farm token list)")
    if verb == "revoke" and not re.fullmatch(r"[0-9a-fA-F]{1,64}", target):
        raise InputError(f"{printable(target)!r} is not a token ID (farm token list)")
    if verb == "list" and target is not None:
        raise InputError("farm token list takes no ID")
    info: object
    with shared.connect(args) as farm:
        if verb == "create":
            made = farm.create_token(role, args.name or "")
            info, shown = made, made.token
        elif verb == "list":
            tokens = farm.tokens()
            info, shown = tokens, tokens_table(tokens)
        else:
            gone = farm.revoke_token(target)
            info, shown = gone, printable(f"revoked token {gone.id} ({gone.name}, {gone.role})")
    if args.json:
        emit_json(info)
    else:
        emit(shown)
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
