"""Commands that run a farm process: ``leader``, ``agent``, ``console`` and ``up``.

Each imports its package only when run, so the data commands never load the
leader, the agent, textual or uvicorn.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from farmtui.config import TOKEN_VARIABLE
from farmtui.errors import AuthError, FarmError, InputError, PermissionDenied
from farmtui.interrupts import interrupts_held

if TYPE_CHECKING:
    from farmtui.protocol import GpuInfo


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
        with interrupts_held():
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

    # Given empty, a flag or variable is an error, not a fall-back (``config.resolve``).
    leader = args.leader if args.leader is not None else os.environ.get("FARM_LEADER")
    if leader is None:
        raise InputError("farm agent needs --leader URL (or FARM_LEADER)")
    if args.print_service:
        return print_agent_service(args, normalize_leaders(leader))
    if args.token is not None:
        token, source = args.token.strip(), "--token"
    elif args.token_file is not None:
        if not args.token_file:
            raise InputError("--token-file is empty")
        token, source = read_token_file(args.token_file), args.token_file
    elif os.environ.get(TOKEN_VARIABLE) is not None:
        token, source = os.environ[TOKEN_VARIABLE].strip(), TOKEN_VARIABLE
    else:
        raise InputError("farm agent needs --token or --token-file (the leader's agent.token)")
    check_token(token, source)
    if source == "--token":
        # A process's command line is every local user's to read (ps), for its whole life.
        sys.stderr.write(
            "farm agent: --token shows the token to every user of this machine (ps); "
            "--token-file F or FARM_TOKEN keep it private\n"
        )
    try:
        with interrupts_held():
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
        render_user=args.render_user,
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
    from farmtui.protocol import MAX_TAGS
    from farmtui.service_units import DEFAULT_USER

    tags = _split_tags(args.tags) or []
    if len(tags) > MAX_TAGS:  # the agent would refuse them at its first start
        raise InputError(f"a node has at most {MAX_TAGS} tags, not {len(tags)}")
    if args.render_user is not None and _names_root(args.render_user):
        raise InputError(
            f"--render-user {args.render_user} would run renderers as root: "
            "name an unprivileged user"
        )
    if args.render_user and args.service_user not in (DEFAULT_USER, "root"):
        raise InputError(
            "--render-user runs the agent as root (it starts renderers as that user): "
            "leave out --service-user"
        )
    unit = agent_unit(
        AgentService(
            leader=leader,
            token_file=Path(args.token_file),
            name=args.name,
            slots=args.slots,
            staging=Path(args.staging) if args.staging else None,
            state=Path(args.state) if args.state else None,
            tags=tags,
            gpus=args.gpus,
            gpu_only=args.gpu_only,
            prefetch=args.prefetch,
            # The unit's agent sees neither this shell's FARM_CA nor its folder.
            ca=_agent_ca(args.ca, os.environ.get("FARM_CA")),
            user=args.service_user,
            render_user=args.render_user,
        )
    )
    sys.stdout.write(unit)
    return 0


def _names_root(user: str) -> bool:
    """``root``, ``0``, ``00``...: the agent would refuse it at every start of the unit."""
    return user == "root" or (user.isdigit() and int(user) == 0)


# Seconds ``farm console`` gives the leader to say whether it takes the token, before
# the console opens anyway (on a leader that is down, it shows so and keeps trying).
TOKEN_CHECK_TIMEOUT = 3.0


def cmd_console(args: argparse.Namespace) -> int:
    from farmtui import config
    from farmtui.client import FarmClient

    conn = config.resolve(args.leader, args.token, args.token_file, ca=args.ca)
    # A token the leader refuses is said in one line before the screen is taken (break
    # round 33c: the console said "reconnecting" for ever). A leader that does not answer
    # now is left to the console, which shows so and connects once one does.
    # Only of one leader: with several, the client asks each which is active, and leaders
    # that did not answer held the screen back for 8-16 s (break round 33d).
    if "," not in conn.leader:
        with FarmClient(
            conn.leader, conn.token, timeout=TOKEN_CHECK_TIMEOUT, verify=conn.ca or True
        ) as farm:
            try:
                farm.whoami()
            except (AuthError, PermissionDenied):
                raise
            except FarmError:
                pass
    try:
        with interrupts_held():
            from farmtui.console.app import run_console
    except ImportError as exc:
        raise FarmError(f"the console is not available ({exc})") from None
    return run_console(conn.leader, conn.token, ca=conn.ca)  # 1: it stopped on an error


def cmd_up(args: argparse.Namespace) -> int:
    with interrupts_held():
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


def _split_tags(text: str | None) -> list[str] | None:
    if not text:
        return None
    return [tag.strip() for tag in text.split(",") if tag.strip()]
