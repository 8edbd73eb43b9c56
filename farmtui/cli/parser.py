"""The ``farm`` parser: every command, its flags and the function that runs it."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn, get_args

from farmtui.cli.argument_types import (
    chunk_index,
    count_arg,
    history_limit,
    port_number,
    positive_float,
    positive_int,
    prefetch_count,
    slot_count,
)
from farmtui.cli.farm_events import cmd_events
from farmtui.cli.job_control import (
    cmd_action,
    cmd_block,
    cmd_chunks,
    cmd_move,
    cmd_priority,
    cmd_set,
)
from farmtui.cli.migrate import add_migrate_command
from farmtui.cli.nodes_and_limits import cmd_limit, cmd_node, cmd_nodes, cmd_pathmap
from farmtui.cli.processes import cmd_agent, cmd_console, cmd_leader, cmd_up
from farmtui.cli.reading_jobs import SHOWN_CHUNKS, cmd_failures, cmd_jobs, cmd_logs, cmd_show
from farmtui.cli.renderers_and_addons import cmd_blender_addon, cmd_demo_render
from farmtui.cli.shared_flags import OPTION_VALUED, add_field_flags, add_service_flags
from farmtui.cli.submission import cmd_submit
from farmtui.cli.tokens import cmd_token, cmd_whoami
from farmtui.config import DEFAULT_PORT
from farmtui.printable import printable
from farmtui.protocol import LEVELS, ChunkAction, JobAction, MoveWhere, OsName, Role

JOB_ACTIONS: tuple[str, ...] = get_args(JobAction)
CHUNK_ACTIONS: tuple[str, ...] = get_args(ChunkAction)
MOVES: tuple[str, ...] = get_args(MoveWhere)
ROLES: tuple[str, ...] = get_args(Role)

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of a usage dump."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []  # the commands built into it (see build_parser)
        # ``--frames -3-2`` (negative frames) is a value, not an unknown flag: any
        # argument that starts like a negative number is one, as from Python 3.13 on
        # (3.11 takes only ``-3`` and ``-3.5``). No flag of ours looks like a number.
        self._negative_number_matcher = re.compile(r"-\.?\d")

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        return super().parse_known_args(None if args is None else _glued(list(args)), namespace)


def _glued(args: list[str]) -> list[str]:
    """``--extra-args -a`` as ``--extra-args=-a``; nothing after ``--`` (the command)."""
    out: list[str] = []
    at = 0
    while at < len(args):
        arg = args[at]
        if arg == "--":
            return out + args[at:]
        following = args[at + 1] if at + 1 < len(args) else None
        if arg in OPTION_VALUED and following and following.startswith("-") and following != "--":
            out.append(f"{arg}={following}")
            at += 2
            continue
        out.append(arg)
        at += 1
    return out


def usage_error(prog: str, message: str) -> NoReturn:
    """``farm submit: ... (see `farm submit --help`)`` and exit 2."""
    sys.stderr.write(f"{prog}: {printable(message)} (see `{prog} --help`)\n")
    raise SystemExit(2)


def _parents() -> tuple[argparse.ArgumentParser, argparse.ArgumentParser]:
    conn = argparse.ArgumentParser(add_help=False)
    group = conn.add_argument_group(
        "connection (default: FARM_LEADER/FARM_TOKEN, then the config `farm up` wrote)"
    )
    group.add_argument(
        "--leader",
        metavar="URL",
        help="the leader, e.g. http://127.0.0.1:7878 (several leaders: URL1,URL2)",
    )
    tokens = group.add_mutually_exclusive_group()
    tokens.add_argument("--token", metavar="T", help="a user token")
    tokens.add_argument("--token-file", metavar="F", help="a file holding the token")
    group.add_argument(
        "--ca",
        metavar="FILE",
        help="PEM file of the CA that signed an https leader's certificate (or FARM_CA)",
    )
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", action="store_true", help="print one JSON document")
    return conn, as_json


def build_parser(argv: Sequence[str] = ()) -> Parser:
    """The parser for ``argv``: only its command's, when it names one; else every command's.

    Why: building all ~40 command parsers (each an ``ArgumentParser``, whose
    set-up looks for translations on disk) and importing what their flags
    need cost a short command like ``farm show`` more than its request did.
    ``farm --help`` and a mistyped command still see every command.
    """
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command is not None:
        parser = _build_parser(only=command)
        if parser.commands:
            return parser
    return _build_parser(only=None)


def _build_parser(only: str | None) -> Parser:
    parser = Parser(
        prog="farm",
        description="farmtui: a render farm you run from a terminal.",
        epilog="Priority: lower numbers render sooner (0-100, default 50).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    conn, as_json = _parents()
    data_cmd = [conn, as_json]

    def wanted(name: str) -> bool:
        return only is None or name == only

    def add(name: str, handler: Handler, help_text: str, parents: list[Any]) -> Parser:
        parser.commands.append(name)
        cmd: Parser = sub.add_parser(name, help=help_text, description=help_text, parents=parents)
        cmd.set_defaults(run=handler)
        return cmd

    if wanted("up"):
        up = add("up", cmd_up, "bring up a local farm: leader, agents, console", [])
        up.add_argument("--data", default="farm-data", metavar="DIR", help="default ./farm-data")
        up.add_argument("--root", metavar="DIR", help="sync root (default <data>/root)")
        up.add_argument("--port", type=port_number, default=DEFAULT_PORT, metavar="P")
        up.add_argument("--agents", type=int, default=2, metavar="N")
        up.add_argument("--slots", type=slot_count, default=1, metavar="K", help="slots per agent")
        up.add_argument("--demo", action="store_true", help="submit a few demo jobs")
        up.add_argument(
            "--no-console",
            action="store_true",
            help="no console: print progress; with --demo, exit when the demo jobs finish",
        )

    if wanted("leader"):
        leader = add("leader", cmd_leader, "run the leader in the foreground", [])
        leader.add_argument("--data", required=True, metavar="DIR", help="database and tokens")
        leader.add_argument("--root", required=True, metavar="DIR", help="the sync root")
        leader.add_argument("--host", default="127.0.0.1")
        leader.add_argument("--port", type=port_number, default=DEFAULT_PORT, metavar="P")
        leader.add_argument("--tls-cert", metavar="F")
        leader.add_argument("--tls-key", metavar="F")
        leader.add_argument(
            "--store",
            metavar="URL",
            help="sqlite:PATH or postgresql://user@host/db (default <data>/farm.db; "
            "a password goes in ~/.pgpass or PGPASSWORD)",
        )
        leader.add_argument(
            "--advertise",
            metavar="URL",
            help="how agents, consoles and the other leaders reach this one "
            "(default http(s)://HOST:PORT; several leaders on one PostgreSQL)",
        )
        add_service_flags(leader, "leader")

    if wanted("agent"):
        agent = add("agent", cmd_agent, "run a render node's agent in the foreground", [])
        agent.add_argument(
            "--leader",
            metavar="URL",
            help="the leader (default FARM_LEADER); several leaders on one PostgreSQL: URL1,URL2",
        )
        agent_tokens = agent.add_mutually_exclusive_group()
        agent_tokens.add_argument("--token", metavar="T", help="an agent token")
        agent_tokens.add_argument("--token-file", metavar="F", help="e.g. <data>/agent.token")
        agent.add_argument("--name", help="node name (default: the host name)")
        agent.add_argument(
            "--slots", type=slot_count, default=1, metavar="K", help="concurrent chunks"
        )
        agent.add_argument(
            "--prefetch",
            type=prefetch_count,
            metavar="N",
            help="chunks of short-chunk jobs held ahead of a free slot (default: as many as "
            "--slots; 0: none)",
        )
        agent.add_argument("--staging", metavar="DIR", help="local staging folder")
        agent.add_argument("--tags", metavar="a,b", help="tags jobs can require")
        agent.add_argument(
            "--gpus",
            metavar="LIST",
            help="the node's GPUs: 0,1 or 0:24G,1:24G; none: no GPU (default: ask nvidia-smi)",
        )
        agent.add_argument(
            "--gpu-only", action="store_true", help="take only jobs that ask for GPUs (--gpus N)"
        )
        agent.add_argument(
            "--ca",
            metavar="FILE",
            help="the CA of an https leader (default: FARM_CA, the system's)",
        )
        agent.add_argument(
            "--state",
            metavar="DIR",
            help="agent id, log and unsent-message outbox "
            "(default ~/.local/state/farmtui/agents/NAME)",
        )
        agent.add_argument(
            "--render-user",
            metavar="USER",
            help="run every renderer as this unprivileged user, out of reach of the agent's "
            "token and files (the agent runs as root)",
        )
        add_service_flags(agent, "agent")

    if wanted("console"):
        add("console", cmd_console, "open the operator console", [conn])

    if wanted("submit"):
        submit = add("submit", cmd_submit, "submit a job (command after --)", data_cmd)
        submit.add_argument(
            "jobfile",
            nargs="?",
            metavar="JOBFILE",
            help="TOML job file, or an Open Job Description template (.yaml, .yml, .json)",
        )
        submit.add_argument(
            "--param",
            action="append",
            metavar="NAME=VALUE",
            help="a job parameter of the OpenJD template (repeat)",
        )
        add_field_flags(submit, settable_only=False)
        submit.set_defaults(argv=[])

    if wanted("jobs"):
        jobs = add("jobs", cmd_jobs, "list jobs in dispatch order", data_cmd)
        jobs.add_argument("--all", action="store_true", help="include archived jobs")
        jobs.add_argument("--limit", type=positive_int, metavar="N", help="one page of N jobs")
        jobs.add_argument("--after", metavar="JOB", help="the page after this job")

    if wanted("show"):
        show = add("show", cmd_show, "a job, its chunks with attempts, and frame states", data_cmd)
        show.add_argument("job", metavar="JOB", help="id, unique id prefix, or unique name")
        show.add_argument(
            "--chunks",
            type=positive_int,
            metavar="N",
            help=f"show N chunks (default {SHOWN_CHUNKS}; with --json every chunk)",
        )
        show.add_argument(
            "--after", type=chunk_index, metavar="I", help="start after chunk I (the next page)"
        )
        show.add_argument(
            "--openjd",
            action="store_true",
            help="print the job as an Open Job Description template (YAML; JSON with --json)",
        )

    for action in JOB_ACTIONS:
        if wanted(action):
            cmd = add(action, cmd_action, f"{action} jobs", data_cmd)
            cmd.add_argument("jobs", nargs="+", metavar="JOB")
            cmd.add_argument("--yes", "-y", action="store_true", help="do not ask to confirm")

    if wanted("priority"):
        priority = add("priority", cmd_priority, "set a job's priority (admin)", data_cmd)
        priority.add_argument("job", metavar="JOB")
        priority.add_argument("priority", metavar="P", help="0-100, lower renders sooner")

    if wanted("move"):
        move = add("move", cmd_move, "move a job within its priority group", data_cmd)
        move.add_argument("job", metavar="JOB")
        move.add_argument("where", choices=MOVES, nargs="?", default="up")
        move.add_argument("--before", metavar="JOB", help="land right before this job instead")

    if wanted("chunks"):
        chunks = add("chunks", cmd_chunks, "act on chunks of one job", data_cmd)
        chunks.add_argument("job", metavar="JOB")
        chunks.add_argument("action", choices=CHUNK_ACTIONS)
        chunks.add_argument("chunks", nargs="+", metavar="N", help="chunk numbers: 3, 1-4, 2,5")

    if wanted("set"):
        setter = add("set", cmd_set, "change a submitted job's settings", data_cmd)
        setter.add_argument("job", metavar="JOB")
        add_field_flags(setter, settable_only=True)

    if wanted("nodes"):
        add("nodes", cmd_nodes, "list render nodes", data_cmd)

    if wanted("pathmap"):
        pathmap = add(
            "pathmap", cmd_pathmap, "show a path as a node of another OS sees it", data_cmd
        )
        pathmap.add_argument("verb", choices=("check",))
        pathmap.add_argument("path", metavar="PATH")
        pathmap.add_argument("--os", required=True, choices=get_args(OsName), help="the node's OS")

    if wanted("failures"):
        failures = add(
            "failures", cmd_failures, "failed attempts farm-wide, newest first", data_cmd
        )
        failures.add_argument("--limit", type=history_limit, default=50, metavar="N")

    if wanted("events"):
        events = add(
            "events", cmd_events, "the farm's latest events, every job's and node's", data_cmd
        )
        events.add_argument("--limit", type=history_limit, default=50, metavar="N")
        events.add_argument("--job", metavar="JOB", help="only this job's")
        events.add_argument(
            "--level", choices=LEVELS, default="info", help="only this level and above"
        )
        events.add_argument("--follow", "-f", action="store_true", help="then each new one")
        events.add_argument("--interval", type=positive_float, default=1.0, help=argparse.SUPPRESS)

    if wanted("node"):
        node = add("node", cmd_node, "enable or disable a node, or read its agent log", data_cmd)
        node.add_argument("verb", choices=("enable", "disable", "log"))
        node.add_argument("name", metavar="NAME")
        node.add_argument("--tail", type=int, default=200, metavar="N", help="lines of log")

    if wanted("limit"):
        text = "farm-wide limits (licences): set NAME UNITS, list, delete NAME"
        limit = add("limit", cmd_limit, text, data_cmd)
        limit.add_argument("verb", choices=("set", "list", "delete"))
        limit.add_argument("name", metavar="NAME", nargs="?")
        limit.add_argument("units", metavar="UNITS", nargs="?", type=count_arg)
        limit.add_argument(
            "--per-node", type=count_arg, default=0, metavar="N", help="at most N units on one node"
        )

    for verb, text in (("block", "keep a node off one job"), ("unblock", "let it back")):
        if wanted(verb):
            blocker = add(verb, cmd_block, text, data_cmd)
            blocker.add_argument("job", metavar="JOB")
            blocker.add_argument("node", metavar="NODE")
            blocker.set_defaults(verb=verb)

    if wanted("logs"):
        logs = add("logs", cmd_logs, "a job's event log, or a chunk attempt's output", data_cmd)
        logs.add_argument("job", metavar="JOB")
        logs.add_argument("--chunk", type=int, metavar="N")
        logs.add_argument("--attempt", type=int, metavar="A", help="default: the latest")
        logs.add_argument("--follow", "-f", action="store_true", help="keep printing until done")
        logs.add_argument(
            "--raw", action="store_true", help="print control characters as they are (no escaping)"
        )
        logs.add_argument("--interval", type=positive_float, default=1.0, help=argparse.SUPPRESS)

    if wanted("token"):
        token = add("token", cmd_token, "make, list or revoke tokens (admin)", data_cmd)
        token.add_argument("verb", choices=("create", "list", "revoke"))
        token.add_argument("target", nargs="?", metavar="ID", help="revoke: the token's id")
        token.add_argument("--role", choices=ROLES, help="create: its role")
        token.add_argument(
            "--name",
            metavar="NAME",
            help="who it is for; with --role agent, the node's name (required): only that node",
        )

    if wanted("whoami"):
        add("whoami", cmd_whoami, "who the token says you are", data_cmd)
    if wanted("migrate"):
        add_migrate_command(add, as_json)

    if wanted("demo-render"):
        from farmtui.demo_render import add_arguments as add_demo_arguments

        demo = add(
            "demo-render", cmd_demo_render, "the built-in demo renderer (demo jobs run it)", []
        )
        add_demo_arguments(demo)
    if wanted("blender-addon"):
        addon = add("blender-addon", cmd_blender_addon, "write the Blender add-on's zip", [as_json])
        addon.add_argument(
            "--out", default=".", metavar="DIR", help="folder for farmtui_blender.zip"
        )
    return parser
