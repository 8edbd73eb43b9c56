"""systemd units for ``farm leader`` and ``farm agent`` (``--print-service``).

Each unit runs its process as a dedicated user, restarts it whatever way it
ended (``Restart=always``), and stops it so that the farm's promises hold
(the ``KillMode=`` comments in the units say why). The command line is the
one given to ``--print-service``, with every path made absolute (a unit has
no working folder of the user's) and run as ``<this python> -m farmtui``, so
the unit uses the interpreter farmtui is installed in.

Tokens never go into a unit: unit files are readable by every user of the
machine. The agent reads its token from ``--token-file``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from farmtui.config import DEFAULT_PORT
from farmtui.errors import InputError
from farmtui.protocol.conventions import AGENT_EXIT_REFUSED

DEFAULT_USER = "farm"
LEADER_UNIT = "farmtui-leader.service"
AGENT_UNIT = "farmtui-agent.service"
# Under /var/lib (systemd's StateDirectory=): kept across restarts and reboots.
AGENT_STATE_DIRECTORY = "farmtui-agent"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class LeaderService:
    data: Path
    root: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    tls_cert: Path | None = None
    tls_key: Path | None = None
    user: str = DEFAULT_USER
    python: str = sys.executable


@dataclass(frozen=True, slots=True)
class AgentService:
    leader: str
    token_file: Path
    name: str | None = None
    slots: int = 1
    staging: Path | None = None
    state: Path | None = None
    tags: list[str] = field(default_factory=list)
    # ``--gpus`` as given (None: the agent asks nvidia-smi), and ``--gpu-only``.
    gpus: str | None = None
    gpu_only: bool = False
    # ``--prefetch`` as given (None: the agent's default).
    prefetch: int | None = None
    # The private CA the agent trusts for an https leader (``--ca``).
    ca: Path | None = None
    user: str = DEFAULT_USER
    python: str = sys.executable
    # ``--render-user``: renderers run as this user, the agent as root (not ``user``).
    render_user: str | None = None


def exec_argument(value: str) -> str:
    """One word of ``ExecStart=``, quoted the way systemd reads it back.

    ``%`` starts a specifier and ``$`` a variable in systemd's command lines,
    so both are doubled; a word with spaces, quotes or backslashes is put in
    double quotes with those escaped. Control characters are refused.
    """
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise InputError(f"{value!r} has control characters: it cannot go into a systemd unit")
    value = value.replace("%", "%%").replace("$", "$$")
    if value and not any(c.isspace() or c in "\"'\\;" for c in value):
        return value
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _command(python: str, argv: Sequence[str]) -> str:
    return " ".join(exec_argument(word) for word in [python, "-m", "farmtui", *argv])


def _absolute(path: Path) -> Path:
    return path.expanduser().absolute()


def _user(user: str, flag: str = "--service-user") -> str:
    if not user or not all(c.isalnum() or c in "_.-" for c in user) or user[0] == "-":
        raise InputError(f"{flag} {user!r} is not a user name")
    return user


def leader_unit(service: LeaderService) -> str:
    """The ``farmtui-leader.service`` unit."""
    argv = [
        "leader",
        "--data",
        str(_absolute(service.data)),
        "--root",
        str(_absolute(service.root)),
    ]
    argv += ["--host", service.host, "--port", str(service.port)]
    if service.tls_cert is not None and service.tls_key is not None:
        argv += ["--tls-cert", str(_absolute(service.tls_cert))]
        argv += ["--tls-key", str(_absolute(service.tls_key))]
    user = _user(service.user)
    reach = (
        f"# Listening on {service.host} only: agents on other machines cannot reach it\n"
        "# (give --host 0.0.0.0, or the farm network's address, with --tls-cert/--tls-key).\n"
        if service.host in LOOPBACK
        else ""
    )
    return f"""\
# {LEADER_UNIT}, written by `farm leader --print-service`.
# Install (as root):
#   useradd --system --home-dir {_absolute(service.data)} --shell /usr/sbin/nologin {user}
#   install -d -o {user} -g {user} -m 0700 {_absolute(service.data)}
#   (and let {user} write the sync root {_absolute(service.root)})
#   farm leader --print-service ... > /etc/systemd/system/{LEADER_UNIT}
#   systemctl daemon-reload && systemctl enable --now {LEADER_UNIT}
{reach}[Unit]
Description=farmtui leader (render farm manager)
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
User={user}
Group={user}
ExecStart={_command(service.python, argv)}
Restart=always
RestartSec=2
# SIGTERM reaches the leader alone, which shuts down gracefully: it stops
# accepting, closes the agents' and consoles' links (agents keep what they
# have not had acknowledged and send it to the next leader), flushes the job
# logs and closes the database. Running renders are untouched: they belong to
# the agents. The leader starts no processes; KillMode=mixed kills whatever
# might be left in its cgroup once it has exited or TimeoutStopSec has passed.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=30
# One connection per agent and per console.
LimitNOFILE=65536
NoNewPrivileges=yes
UMask=0077

[Install]
WantedBy=multi-user.target
"""


def agent_unit(service: AgentService) -> str:
    """The ``farmtui-agent.service`` unit."""
    state_root = Path("/var/lib") / AGENT_STATE_DIRECTORY
    staging = _absolute(service.staging) if service.staging else state_root / "staging"
    state = _absolute(service.state) if service.state else state_root / "state"
    argv = ["agent", "--leader", service.leader, "--token-file", str(_absolute(service.token_file))]
    if service.name:
        argv += ["--name", service.name]
    argv += ["--slots", str(service.slots), "--staging", str(staging), "--state", str(state)]
    if service.tags:
        argv += ["--tags", ",".join(service.tags)]
    if service.gpus is not None:
        argv += ["--gpus", service.gpus]
    if service.gpu_only:
        argv.append("--gpu-only")
    if service.prefetch is not None:
        argv += ["--prefetch", str(service.prefetch)]
    if service.ca is not None:
        argv += ["--ca", str(_absolute(service.ca))]
    if service.render_user is not None:
        argv += ["--render-user", _user(service.render_user, "--render-user")]
        user = "root"
        account = f"""\
#   useradd --system --no-create-home --shell /usr/sbin/nologin {service.render_user}
#   (unless {service.render_user} is there already)
#   (renderers run as {service.render_user}, the agent as root: the token file must be
#   root's alone, chmod 0600; {service.render_user} needs to read scenes, not the token)"""
        # Renderers must pass through it to their folders in staging; they may not list it.
        state_mode = "0711"
    else:
        user = _user(service.user)
        account = f"""\
#   useradd --system --home-dir {state_root} --shell /usr/sbin/nologin {user}
#   (the token file must be readable by {user}, and by nobody else: chmod 0600)"""
        state_mode = "0700"
    # Description= expands systemd's %-specifiers too.
    node = f" (node {service.name.replace('%', '%%')})" if service.name else ""
    return f"""\
# {AGENT_UNIT}, written by `farm agent --print-service`.
# Install (as root):
{account}
#   farm agent --print-service ... > /etc/systemd/system/{AGENT_UNIT}
#   systemctl daemon-reload && systemctl enable --now {AGENT_UNIT}
[Unit]
Description=farmtui render agent{node}
Wants=network-online.target
After=network-online.target

[Service]
Type=exec
User={user}
Group={user}
ExecStart={_command(service.python, argv)}
# /var/lib/{AGENT_STATE_DIRECTORY}, made for {user}. The staging folder holds the
# journal of running attempts (.attempts/): a restarted agent reads there which
# renders ended while it was down and reports them instead of rendering them
# again. So it must outlive the process: not under /tmp, and no PrivateTmp=.
StateDirectory={AGENT_STATE_DIRECTORY}
StateDirectoryMode={state_mode}
Restart=always
RestartSec=2
# Refused by the leader (its token revoked or wrong, its name another's): the same
# token would be refused again, every two seconds, for good.
RestartPreventExitStatus={AGENT_EXIT_REFUSED}
# KillMode=mixed, for the exactly-once rules. Each renderer tree runs in a
# session of its own under a per-chunk supervisor (the shim), not under the
# agent; the agent must be the one to stop them.
# - SIGTERM goes to the agent alone. It tells each shim to kill its tree, waits
#   until every tree is confirmed dead, and records each chunk's end in its
#   outbox for the leader: those chunks are requeued without using a retry.
#   With control-group (the default), systemd would SIGTERM the renderers too,
#   behind the agent's back, while it is still reporting on them.
# - Then, or after TimeoutStopSec, systemd SIGKILLs whatever is left in the
#   unit (a renderer stuck in a stopped state, a helper that escaped): no
#   render outlives its agent, so the leader never sees one chunk on two
#   nodes. KillMode=process would leave such leftovers running untracked.
# - If the agent dies instead, systemd SIGKILLs what is left of the unit before
#   starting it again. Renders cut short are run again by the leader without
#   using a retry; a render that had already ended had its exit status written
#   into the journal by its shim at that moment, and the restarted agent
#   reports it: credited once, not rendered again.
KillMode=mixed
KillSignal=SIGTERM
TimeoutStopSec=60
# Renderers inherit the agent's environment.
Environment=PYTHONUNBUFFERED=1

[Install]
WantedBy=multi-user.target
"""
