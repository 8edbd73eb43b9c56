"""``farm``: the one command line of farmtui (see SPEC.md, "The command line contract").

Thin on purpose: argparse here, the work elsewhere. Data commands go through
``farmtui.client``; ``leader``, ``agent``, ``console`` and ``up`` import their
packages only when run, so ``farm jobs`` starts fast and never loads textual
or uvicorn. Every data command takes ``--json`` and then prints one JSON
document. Errors are one line on stderr; exit 2 for bad input (nothing was
sent), 1 for a leader that is down or refused.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, get_args

import msgspec

from farmtui.config import DEFAULT_PORT, TOKEN_VARIABLE
from farmtui.errors import FarmError, InputError, LeaderError
from farmtui.printable import printable
from farmtui.protocol import (
    LIMIT_NAME_PATTERN,
    MAX_HISTORY,
    ChunkAction,
    JobAction,
    MoveWhere,
    OsName,
    Role,
)

if TYPE_CHECKING:
    from farmtui.client import FarmClient
    from farmtui.jobfields import Given
    from farmtui.protocol import GpuInfo, JobView

JOB_ACTIONS: tuple[str, ...] = get_args(JobAction)
CHUNK_ACTIONS: tuple[str, ...] = get_args(ChunkAction)
MOVES: tuple[str, ...] = get_args(MoveWhere)
ROLES: tuple[str, ...] = get_args(Role)
CONFIRM_ACTIONS = frozenset({"cancel", "delete"})

Handler = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (exit 2) instead of a usage dump."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[str] = []  # the commands built into it (see build_parser)

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: {printable(message)} (see `{self.prog} --help`)\n")
        raise SystemExit(2)


# --- argument types: a bad value is a one-line usage error before anything runs ---


def port_number(text: str) -> int:
    """A TCP port, 1-65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"port {text!r} is not a whole number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return port


# ``farm chunks`` lists the chunks it changed when they are no further apart.
SHOWN_CHUNKS_AFTER_ACTION = 1_000
# Chunks ``farm show`` lists unless told (a million-chunk job is summed up by its frames).
SHOWN_CHUNKS = 50


def whole_number(text: str, least: int) -> int:
    """``text`` as a whole number of at least ``least``, or argparse's one-line error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} must be at least {least}")
    return value


def positive_int(text: str) -> int:
    return whole_number(text, 1)


def count_arg(text: str) -> int:
    return whole_number(text, 0)


def slot_count(text: str) -> int:
    from farmtui.protocol import MAX_SLOTS

    value = whole_number(text, 1)
    if value > MAX_SLOTS:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_SLOTS}")
    return value


def prefetch_count(text: str) -> int:
    from farmtui.protocol import MAX_PREFETCH

    value = whole_number(text, 0)
    if value > MAX_PREFETCH:
        raise argparse.ArgumentTypeError(f"{value} is more than {MAX_PREFETCH}")
    return value


def chunk_index(text: str) -> int:
    return whole_number(text, 0)


def history_limit(text: str) -> int:
    """How many records a history read may ask for (the leader's own limit)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not 1 <= value <= MAX_HISTORY:
        raise argparse.ArgumentTypeError(f"{text} is not between 1 and {MAX_HISTORY}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


# --- output helpers -----------------------------------------------------------


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


# --- processes: leader, agent, console, up --------------------------------------


def cmd_leader(args: argparse.Namespace) -> int:
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InputError("--tls-cert and --tls-key go together")
    for flag, value in (("--tls-cert", args.tls_cert), ("--tls-key", args.tls_key)):
        if value and not Path(value).is_file():
            raise InputError(f"{flag} {value}: no such file")
    if args.print_service and args.store:
        raise InputError("--print-service does not take --store: put store = URL in leader.toml")
    if args.print_service:
        from farmtui.service_units import LeaderService, leader_unit

        sys.stdout.write(
            leader_unit(
                LeaderService(
                    data=Path(args.data),
                    root=Path(args.root),
                    host=args.host,
                    port=args.port,
                    tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                    tls_key=Path(args.tls_key) if args.tls_key else None,
                    user=args.service_user,
                )
            )
        )
        return 0
    try:
        from server.errors import LeaderError as LeaderSetupError
        from server.main import run_leader
    except ImportError as exc:
        raise FarmError(f"the leader is not installed here ({exc})") from None
    try:
        run_leader(
            Path(args.data),
            Path(args.root),
            host=args.host,
            port=args.port,
            tls_cert=Path(args.tls_cert) if args.tls_cert else None,
            tls_key=Path(args.tls_key) if args.tls_key else None,
            store=args.store,
            advertise=args.advertise,
        )
    except LeaderSetupError as exc:
        raise FarmError(str(exc)) from None
    except OSError as exc:
        raise FarmError(f"the leader stopped: {exc}") from None
    return 0


def cmd_agent(args: argparse.Namespace) -> int:
    import os

    from farmtui.config import check_token, leader_urls, normalize_leaders, read_token_file

    leader = args.leader or os.environ.get("FARM_LEADER")
    if not leader:
        raise InputError("farm agent needs --leader URL (or FARM_LEADER)")
    if args.print_service:
        return print_agent_service(args, normalize_leaders(leader))
    if args.token:
        token = args.token.strip()
    elif args.token_file:
        token = read_token_file(args.token_file)
    elif os.environ.get(TOKEN_VARIABLE):
        token = os.environ[TOKEN_VARIABLE].strip()
    else:
        raise InputError("farm agent needs --token or --token-file (the leader's agent.token)")
    check_token(token, "--token" if args.token else args.token_file or TOKEN_VARIABLE)
    try:
        from agent.main import run_agent
    except ImportError as exc:
        raise FarmError(f"the agent is not installed here ({exc})") from None
    run_agent(
        leader_urls(leader),
        token,
        name=args.name,
        slots=args.slots,
        staging=Path(args.staging) if args.staging else None,
        tags=_split_tags(args.tags),
        state_dir=Path(args.state) if args.state else None,
        ca=_agent_ca(args.ca, os.environ.get("FARM_CA")),
        gpus=_agent_gpus(args.gpus),
        gpu_only=args.gpu_only,
        prefetch=args.prefetch,
    )
    return 0


def _agent_gpus(flag: str | None) -> list[GpuInfo] | None:
    """``--gpus``: the node's GPUs by hand; None (not given): the agent asks nvidia-smi."""
    if flag is None:
        return None
    from agent.gpus import GpuListError, parse_given

    try:
        return parse_given(flag)
    except GpuListError as exc:
        raise InputError(str(exc)) from None


def _agent_ca(flag: str | None, env: str | None) -> Path | None:
    """The CA file an agent trusts for an https leader (``--ca``, then FARM_CA), checked."""
    from farmtui.config import check_ca_file

    if flag:
        return Path(check_ca_file(flag, "--ca"))
    return Path(check_ca_file(env, "FARM_CA")) if env else None


def print_agent_service(args: argparse.Namespace, leader: str) -> int:
    """``farm agent --print-service``: the systemd unit that runs this agent."""
    import os

    from farmtui.service_units import AgentService, agent_unit

    if args.token or not args.token_file:
        # A unit file is readable by every user of the machine.
        raise InputError(
            "farm agent --print-service takes the token from a file: give --token-file F "
            "(readable by the service's user only), not --token"
        )
    unit = agent_unit(
        AgentService(
            leader=leader,
            token_file=Path(args.token_file),
            name=args.name,
            slots=args.slots,
            staging=Path(args.staging) if args.staging else None,
            state=Path(args.state) if args.state else None,
            tags=_split_tags(args.tags) or [],
            gpus=args.gpus,
            gpu_only=args.gpu_only,
            prefetch=args.prefetch,
            # The unit's agent sees neither this shell's FARM_CA nor its folder.
            ca=_agent_ca(args.ca, os.environ.get("FARM_CA")),
            user=args.service_user,
        )
    )
    sys.stdout.write(unit)
    return 0


def cmd_console(args: argparse.Namespace) -> int:
    from farmtui import config

    conn = config.resolve(args.leader, args.token, args.token_file, ca=args.ca)
    try:
        from farmtui.console.app import run_console
    except ImportError as exc:
        raise FarmError(f"the console is not available ({exc})") from None
    run_console(conn.leader, conn.token, ca=conn.ca)
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from farmtui.localfarm import UpOptions, run_up

    if args.agents < 0:
        raise InputError("--agents must be >= 0")
    data = Path(args.data)
    return run_up(
        UpOptions(
            data=data,
            root=Path(args.root) if args.root else data / "root",
            port=args.port,
            agents=args.agents,
            slots=args.slots,
            demo=args.demo,
            console=not args.no_console,
        )
    )


# --- submit ---------------------------------------------------------------------


def cmd_submit(args: argparse.Namespace) -> int:
    from farmtui import jobfile
    from farmtui.jobfields import FIELDS
    from farmtui.openjd import is_template

    template = bool(args.jobfile) and is_template(Path(args.jobfile))
    base = jobfile.Given()
    if args.jobfile and not template:
        base = jobfile.load_jobfile(Path(args.jobfile))
    flags: dict[str, object] = {
        field.key: getattr(args, field.key.replace("-", "_"))
        for field in FIELDS
        if field.metavar != ""  # a flag, not a job file key only
    }
    flags["argv"] = args.argv or None
    if template or args.param:
        return submit_template(args, jobfile.normalize(flags, lambda key: f"--{key}"))
    given = jobfile.normalize(flags, lambda key: f"--{key.replace('_', '-')}").over(base)
    spec = jobfile.build_spec(given)
    with connect(args) as farm:
        if spec.after:
            spec.after = farm.resolve_jobs(spec.after)
        job = farm.submit(spec)
    if args.json:
        emit_json(job)
    else:
        emit(job.id)
    return 0


def submit_template(args: argparse.Namespace, flags: Given) -> int:
    """``farm submit job.template.yaml --param K=V``: one job per step, in dependency order.

    Every step is mapped and checked before the first is sent (``farmtui.openjd``).
    """
    from farmtui import openjd

    if not args.jobfile:
        raise InputError("--param goes with an OpenJD template: farm submit T.yaml --param K=V")
    plans = openjd.plan_jobs(Path(args.jobfile), openjd.parse_params(args.param or []), flags)
    for plan in plans:
        for note in plan.notes:
            sys.stderr.write(f"farm submit: note: {printable(note)}\n")
    submitted: list[JobView] = []
    with connect(args) as farm:
        extra = farm.resolve_jobs(plans[0].spec.after) if plans and plans[0].spec.after else []
        ids: dict[str, str] = {}
        for plan in plans:
            plan.spec.after = [*extra, *(ids[step] for step in plan.after_steps)]
            try:
                job = farm.submit(plan.spec)
            except FarmError:
                if submitted:  # say what exists, so a retry does not submit it twice
                    done = printable(", ".join(f"{j.id} ({j.name})" for j in submitted))
                    sys.stderr.write(f"farm submit: submitted before the error: {done}\n")
                raise
            ids[plan.step] = job.id
            submitted.append(job)
    if args.json:
        emit_json(submitted)
    else:
        emit("\n".join(f"{job.id}  {job.name}" for job in submitted))
    return 0


# --- reading ----------------------------------------------------------------------


def cmd_jobs(args: argparse.Namespace) -> int:
    from farmtui.tables import jobs_table

    with connect(args) as farm:
        jobs = farm.jobs(include_archived=args.all, limit=args.limit, after=args.after)
    if args.json:
        emit_json(jobs)
    else:
        emit(jobs_table(jobs))
        if args.limit is not None and len(jobs) == args.limit:
            emit(f"next page: --after {jobs[-1].id}")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from farmtui.tables import detail_text

    if args.openjd:
        return show_openjd(args)
    with connect(args) as farm:
        job_id = farm.resolve_job(args.job)
        if args.json and args.chunks is None and args.after is None:
            detail = farm.show_all(job_id)  # the whole job, as SPEC.md promises scripts
        else:
            detail = farm.show(job_id, args.chunks or SHOWN_CHUNKS, args.after)
    if args.json:
        emit_json(detail)
    else:
        emit(detail_text(detail))
    return 0


def show_openjd(args: argparse.Namespace) -> int:
    """``farm show JOB --openjd``: the job as an OpenJD job template (YAML; JSON with --json)."""
    from farmtui import openjd_export

    with connect(args) as farm:
        job = farm.show(farm.resolve_job(args.job), 1).job
    template = openjd_export.job_template(job)
    if args.json:
        emit_json(template)
    else:
        sys.stdout.write(openjd_export.to_yaml(template))
    return 0


def cmd_nodes(args: argparse.Namespace) -> int:
    from farmtui.tables import nodes_table

    with connect(args) as farm:
        nodes = farm.nodes()
    if args.json:
        emit_json(nodes)
    else:
        emit(nodes_table(nodes))
    return 0


def cmd_pathmap(args: argparse.Namespace) -> int:
    """``farm pathmap check PATH --os windows``: what the leader's path_map gives such a node."""
    with connect(args) as farm:
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


def cmd_failures(args: argparse.Namespace) -> int:
    from farmtui.tables import failures_table

    with connect(args) as farm:
        failures = farm.failures(args.limit)
    if args.json:
        emit_json(failures)
    else:
        emit(failures_table(failures))
    return 0


def cmd_node(args: argparse.Namespace) -> int:
    from farmtui.tables import nodes_table

    with connect(args) as farm:
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

    with connect(args) as farm:
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


def cmd_block(args: argparse.Namespace) -> int:
    from farmtui.tables import job_summary

    with connect(args) as farm:
        job = farm.block_node(farm.resolve_job(args.job), args.node, args.verb == "block")
    if args.json:
        emit_json(job)
    else:
        blocked = ", ".join(sorted(job.blocked_nodes)) or "none"
        emit(f"{job_summary(job)}\nblocked nodes: {printable(blocked)}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    with connect(args) as farm:
        job_id = farm.resolve_job(args.job)

        def fetch() -> str:
            if args.chunk is None:
                return farm.events(job_id)
            return farm.logs(job_id, args.chunk, args.attempt)

        if args.follow and args.chunk is not None:
            chunks = len(farm.show(job_id).chunks)
            if not 0 <= args.chunk < chunks:  # else --follow would wait for it forever
                raise InputError(f"job {job_id} has no chunk {args.chunk} (it has {chunks})")
        if not args.follow:
            text = fetch()
            if args.json:
                emit_json({"job_id": job_id, "chunk": args.chunk, "log": text})
            else:
                sys.stdout.write(text if args.raw else printable(text, multiline=True))
                sys.stdout.flush()
            return 0
        return follow_log(
            farm, job_id, args.chunk, fetch, interval=args.interval, as_json=args.json, raw=args.raw
        )


# How long ``farm logs --follow`` waits for a leader that stopped answering.
FOLLOW_OUTAGE = 300.0


def follow_log(
    farm: FarmClient,
    job_id: str,
    chunk: int | None,
    fetch: Callable[[], str],
    *,
    interval: float,
    as_json: bool,
    raw: bool = False,
) -> int:
    """Print the log, then what is appended to it, until the job finishes (or Ctrl-C).

    A leader that stops answering is waited for (``FOLLOW_OUTAGE``), so a
    follow outlives the leader's restart.

    With ``--json`` each new piece is one JSON line ``{"job_id", "chunk", "log",
    "restarted"}`` and the last line says the job's final ``state``. Without
    ``raw``, control characters in the text are shown as escapes (see
    ``farmtui.printable``).
    """
    from farmtui.client import FINAL_STATES
    from farmtui.errors import LeaderDown, NotFound

    shown = ""
    away: float | None = None  # since when the leader has not answered
    while True:
        try:
            # Read the state first so the final fetch below sees everything the job wrote.
            state = farm.show(job_id, limit=1).job.state
            try:
                text = fetch()
            except NotFound:
                text = shown  # the attempt's log does not exist yet
        except LeaderDown as exc:
            # A leader restarting (an upgrade, a crash) is back within seconds: wait for it.
            now = time.monotonic()
            if away is None:
                away = now
                sys.stderr.write(f"farm logs: {printable(str(exc))}; still following\n")
            elif now - away > FOLLOW_OUTAGE:
                raise
            time.sleep(interval)
            continue
        away = None
        restarted = not text.startswith(shown)  # a new attempt replaced the log
        piece = text if restarted else text[len(shown) :]
        if as_json:
            if piece:
                line = {"job_id": job_id, "chunk": chunk, "log": piece, "restarted": restarted}
                emit_json(line)
        else:
            if not raw:
                piece = printable(piece, multiline=True)
            sys.stdout.write("\n--- log restarted ---\n" + piece if restarted else piece)
            sys.stdout.flush()
        shown = text
        if state in FINAL_STATES:
            if as_json:
                emit_json({"job_id": job_id, "chunk": chunk, "state": state})
            return 0
        time.sleep(interval)


# --- control ----------------------------------------------------------------------


def cmd_action(args: argparse.Namespace) -> int:
    from farmtui.tables import job_summary

    action = args.command
    if action in CONFIRM_ACTIONS and not args.yes and not sys.stdin.isatty():
        # Refuse before touching the leader: a script must say --yes.
        raise InputError(f"refusing to {action} without --yes: stdin is not a terminal to ask on")
    with connect(args) as farm:
        jobs = farm.jobs(include_archived=True)
        ids = farm.resolve_jobs(args.jobs, jobs)
        ids = list(dict.fromkeys(ids))
        if action in CONFIRM_ACTIONS and not args.yes:
            names = {job.id: job.name for job in jobs}
            confirm(action, [f"{names.get(i, '?')} ({i})" for i in ids])
        result = farm.action(action, ids)
    if args.json:
        emit_json(result)
    else:
        for job in result.jobs:
            emit(job_summary(job))
        for removed in result.removed:
            emit(f"{removed}  deleted")
    return 0


def confirm(action: str, what: Sequence[str]) -> None:
    """Ask on the terminal; refuse outright when there is no terminal to ask on."""
    count = f"{len(what)} job{'s' if len(what) != 1 else ''}"
    listing = ", ".join(map(printable, what[:5]))
    listing += f" and {len(what) - 5} more" if len(what) > 5 else ""
    sys.stderr.write(f"{action.capitalize()} {count}: {listing}? [y/N] ")
    sys.stderr.flush()
    try:
        answer = input()
    except EOFError:
        answer = ""
    if answer.strip().lower() not in ("y", "yes"):
        raise InputError(f"not confirmed; did not {action} anything")


def cmd_priority(args: argparse.Namespace) -> int:
    from farmtui.jobfile import read_priority

    priority = read_priority(args.priority)
    with connect(args) as farm:
        job = farm.priority(farm.resolve_job(args.job), priority)
    if args.json:
        emit_json(job)
    else:
        emit(printable(f"{job.id}  {job.name}  priority {job.priority}, position {job.position}"))
    return 0


def cmd_move(args: argparse.Namespace) -> int:
    from farmtui.tables import jobs_table

    with connect(args) as farm:
        jobs = farm.jobs(include_archived=True)
        job_id = farm.resolve_job(args.job, jobs)
        before = farm.resolve_job(args.before, jobs) if args.before else None
        group = farm.move(job_id, where=None if before else args.where, before=before)
    if args.json:
        emit_json(group)
    else:
        emit(jobs_table(group))
    return 0


def cmd_chunks(args: argparse.Namespace) -> int:
    from farmtui.frames import FrameListError, parse_frames
    from farmtui.tables import chunks_table

    chunks: list[int] = []
    for item in args.chunks:
        try:
            chunks.extend(parse_frames(item))
        except FrameListError:
            raise InputError(f"bad chunk number {item!r} (e.g. 3, 1-4, 2,5)") from None
    with connect(args) as farm:
        job_id = farm.resolve_job(args.job)
        detail = farm.chunk_action(job_id, args.action, chunks)
        first, last = min(chunks), max(chunks)
        if not args.json and last - first < SHOWN_CHUNKS_AFTER_ACTION:
            # The chunks acted on, wherever they are in a big job.
            detail = farm.show(job_id, last - first + 1, first - 1 if first else None)
    if args.json:
        emit_json(detail)
    else:
        wanted = set(chunks)
        shown = [c for c in detail.chunks if c.index in wanted]
        emit(chunks_table(shown))
        if len(shown) < len(wanted):
            emit(f"{len(wanted):,} chunks changed; farm show {job_id} --after N shows any of them")
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    """Change settings of a submitted job (``PATCH``): merges into its current timeouts."""
    from farmtui import jobfile
    from farmtui.jobfields import FIELDS

    flags = {
        field.key: getattr(args, field.key.replace("-", "_")) for field in FIELDS if field.settable
    }
    given = jobfile.normalize(flags, lambda key: f"--{key}", clearable=True)
    if not given.values:
        raise InputError("nothing to set: give at least one setting (see `farm set --help`)")
    jobfile.build_patch(given)  # each value on its own, before anything is sent
    with connect(args) as farm:
        job_id = farm.resolve_job(args.job)
        # Checked against the job as it is, as the leader will (min <= max ...).
        patch = jobfile.build_patch(given, farm.show(job_id).job.spec)
        job = farm.patch(job_id, patch)
    if args.json:
        emit_json(job)
    else:
        emit(f"{job.id}  {job.name}  updated")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    with connect(args) as farm:
        info = farm.create_token(args.role, args.name or "")
    if args.json:
        emit_json(info)
    else:
        emit(info.token)
    return 0


def cmd_whoami(args: argparse.Namespace) -> int:
    with connect(args) as farm:
        me = farm.whoami()
        url = farm.leader
    if args.json:
        emit_json(me)
    else:
        emit(printable(f"{me.name} ({me.role}) on {url}"))
    return 0


# --- renderers and integrations -------------------------------------------------


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


# --- farm migrate: move a stopped leader's farm to another store ---------------------


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


# --- the parser -------------------------------------------------------------------


def _split_tags(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [tag.strip() for tag in text.split(",") if tag.strip()]


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
        else:
            help_text = field.help
            if settable_only:  # a submitted job has its values: no "(default ...)"
                help_text = help_text.split(" (default")[0]
                if field.clearable:
                    help_text += "; 'none' clears it"
            parser.add_argument(field.flag, metavar=field.metavar, help=help_text)


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
        token = add("token", cmd_token, "make a token (admin)", data_cmd)
        token.add_argument("verb", choices=("create",))
        token.add_argument("--role", required=True, choices=ROLES)
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


def split_command_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """``farm submit ... -- CMD ARGS`` -> (farm's own arguments, the job's argv)."""
    if argv[:1] == ["submit"] and "--" in argv:
        cut = argv.index("--")
        return argv[:cut], argv[cut + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    """The ``farm`` console script; returns the exit code."""
    own, command = split_command_argv(list(sys.argv[1:] if argv is None else argv))
    args = build_parser(own).parse_args(own)
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
