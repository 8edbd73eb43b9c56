"""Commands about render nodes and farm-wide limits: ``nodes``, ``node``, ``pathmap``, ``limit``."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

import msgspec

from farmtui.cli import shared
from farmtui.cli.shared import emit, emit_json
from farmtui.errors import InputError
from farmtui.printable import printable
from farmtui.protocol import LIMIT_NAME_PATTERN


def cmd_nodes(args: argparse.Namespace) -> int:
    from farmtui.tables import nodes_table

    with shared.connect(args) as farm:
        nodes = farm.nodes()
    if args.json:
        emit_json(nodes)
    else:
        emit(nodes_table(nodes))
    return 0


def cmd_pathmap(args: argparse.Namespace) -> int:
    """``farm pathmap check PATH --os windows``: what the leader's path_map gives such a node."""
    with shared.connect(args) as farm:
        response = farm.request("GET", "/api/pathmap", params={"path": args.path, "os": args.os})
    answer = msgspec.json.decode(response.content, type=dict[str, Any])
    if args.json:
        emit_json(answer)
        return 0
    emit(printable(str(answer.get("mapped", ""))))
    rule = answer.get("rule") or 0
    how = (
        f"rule {rule} (from {answer.get('source', '')!r})"
        if rule
        else "no rule matches: left as it is"
    )
    sys.stderr.write(f"farm pathmap: {args.os} node; {printable(how)}\n")
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from farmtui.tables import nodes_table

    with shared.connect(args) as farm:
        if args.verb == "log":
            text = farm.node_log(args.name, tail=args.tail)
            if args.json:
                emit_json({"node": args.name, "log": text})
            else:
                text = printable(text, multiline=True)
                sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
            return 0
        node = farm.set_node_enabled(args.name, args.verb == "enable")
    if args.json:
        emit_json(node)
    else:
        emit(nodes_table([node]))
    return 0


def cmd_limit(args: argparse.Namespace) -> int:
    from farmtui.tables import limits_table

    with shared.connect(args) as farm:
        if args.verb != "list" and not args.name:
            raise InputError(f"farm limit {args.verb}: which limit? (farm limit {args.verb} NAME)")
        if args.name and not re.fullmatch(LIMIT_NAME_PATTERN, args.name):
            raise InputError(
                f"farm limit: {args.name!r} is not a limit name (a letter or digit, then "
                "letters, digits, '.', '-', '_'; at most 64)"
            )
        if args.verb == "set":
            if args.units is None:
                raise InputError("farm limit set NAME UNITS: how many units (licences) it has")
            limits = farm.set_limit(args.name, args.units, args.per_node)
        elif args.verb == "delete":
            limits = farm.delete_limit(args.name)
        else:
            limits = farm.limits()
    if args.json:
        emit_json(limits)
    else:
        emit(limits_table(limits))
    return 0
