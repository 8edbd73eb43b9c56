"""The agent daemon's entry point: ``farm agent`` calls :func:`run_agent`.

Wires the pieces: the agent's state folder (its id, log and outbox), the
supervisor that runs chunks, and the link to the leader. Also runnable as
``python -m agent.main --leader URL --token T`` for tests and debugging.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import re
import signal
import socket
import ssl
import stat
import sys
import tempfile
import uuid
from pathlib import Path

from agent import agent_log
from agent import gpus as gpu_inventory
from agent.chunk_run import AGENT_STOPPED
from agent.errors import AgentError, LeaderRefused
from agent.link import LeaderLink
from agent.outbox import Outbox
from agent.process_tree import become_subreaper, not_dumpable
from agent.render_user import RenderUser
from agent.staging import UploadToLeader
from agent.supervisor import STAGING_LOCK, Storage, Supervisor
from farmtui.config import TOKEN_VARIABLE
from farmtui.protocol import (
    AGENT_EXIT_REFUSED,
    MAX_PREFETCH,
    MAX_SLOTS,
    MAX_TAGS,
    ChunkFinished,
    GpuInfo,
    agent_tag,
)
from farmtui.protocol.limits import NODE_NAME_PATTERN, default_prefetch

log = logging.getLogger("farmtui.agent")

VERSION = "0.1.0"
# How long a stopping agent waits for the leader to confirm the reports of the chunks
# it killed; what is left then goes with the next start (from the outbox).
STOP_REPORTS_WAIT = 5.0


def _folder_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name) or "agent"


def default_state_dir(name: str) -> Path:
    """``$XDG_STATE_HOME/farmtui/agents/<name>`` (``~/.local/state/...`` by default)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "farmtui" / "agents" / _folder_name(name)


def default_staging_dir(name: str, *, passable: bool = False) -> Path:
    """``<tmp>/farmtui-<uid>/<name>/staging``, below a folder only this user may enter.

    The temporary folder is everyone's: another local user could make
    ``farmtui-<uid>`` first (or put a symlink in it), then swap a render's
    frames or turn one into a symlink the copy to the sync root follows. So
    that folder must be this user's own, not a symlink, and is kept 0700;
    ``passable`` (renderers run as another user, who must reach their folders
    in it): 0711, others may pass through it, not list or change it.
    """
    mode = 0o711 if passable else 0o700
    own = Path(tempfile.gettempdir()) / f"farmtui-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        own.mkdir(mode=mode)
    info = os.lstat(own)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise AgentError(
            f"{own} is not a folder of this user's own (someone else made it): "
            "remove it, or pass --staging DIR"
        )
    if stat.S_IMODE(info.st_mode) != mode:
        os.chmod(own, mode)  # an older agent's, made with the umask's 0755 (or 0711)
    return own / _folder_name(name) / "staging"


def agent_id(state_dir: Path) -> str:
    """A stable id for this agent's state folder, part of every chunk's process marker.

    Stable across restarts, so a restarted agent can find and kill the trees
    its previous run left behind.

    The id tells the node's own agent from another claiming its name (the leader
    refuses that one), so only this user may read it: the file is 0600, and a state
    folder made here 0700 (break round 33b: both were the umask's, 0644 and 0755).
    """
    path = state_dir / "agent-id"
    try:
        value = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        value = ""
    if not value:
        value = uuid.uuid4().hex[:12]
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(value + "\n")
    if stat.S_IMODE(path.stat().st_mode) != 0o600:
        os.chmod(path, 0o600)  # an older agent's, made with the umask's 0644
    return value


def lock_state(state_dir: Path) -> int:
    """Hold ``<state>/agent.lock`` for this process's life; AgentError if another agent does.

    Two agents on one state folder would share an id: each would take the
    other's renderers for its own leftovers and kill them, and the leader
    could not tell them apart. The lock goes with the process (it is not
    inherited by renderers), so a crashed agent never leaves it behind.
    """
    return _hold(state_dir, "agent.lock", "state folder", "--state (and --name)", mode=0o700)


def lock_staging(staging: Path) -> int:
    """Hold ``<staging>/.agent.lock`` for this process's life; AgentError if another agent does.

    An agent starting removes the attempt folders a previous run of it left in
    staging: on another running agent's staging folder it removed that agent's
    live folders, and its chunks failed to start (a retry used each).
    """
    return _hold(staging, STAGING_LOCK, "staging folder", "--staging")


def _hold(folder: Path, name: str, what: str, flag: str, mode: int = 0o777) -> int:
    """``mode``: the folder's if made here (less the umask's)."""
    try:
        folder.mkdir(mode=mode, parents=True, exist_ok=True)
        fd = os.open(folder / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise AgentError(f"cannot use the {what} {folder}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AgentError(
            f"another agent is running with the {what} {folder}; give each agent its own {flag}"
        ) from None
    return fd


class Agent:
    """One agent daemon: a supervisor and a link sharing one state folder."""

    def __init__(
        self,
        leader: str | list[str],
        token: str,
        *,
        name: str | None = None,
        slots: int = 1,
        staging: Path | None = None,
        tags: list[str] | None = None,
        state_dir: Path | None = None,
        log_to_stderr: bool = True,
        ca: Path | None = None,
        gpus: list[GpuInfo] | None = None,
        gpu_only: bool = False,
        prefetch: int | None = None,
        render_user: str | None = None,
    ) -> None:
        """``gpus``: the node's GPUs as given by hand; None finds them with nvidia-smi.
        ``prefetch``: chunks held ahead of a free slot (``server.prefetch``); None:
        ``default_prefetch(slots)``.
        ``render_user``: the user renderers run as (``agent.render_user``); None: ours."""
        if not 1 <= slots <= MAX_SLOTS:
            raise AgentError(f"slots must be 1 to {MAX_SLOTS}, not {slots}")
        if tags and len(tags) > MAX_TAGS:
            raise AgentError(f"a node has at most {MAX_TAGS} tags, not {len(tags)}")
        ahead = default_prefetch(slots) if prefetch is None else prefetch
        if not 0 <= ahead <= MAX_PREFETCH:
            raise AgentError(f"prefetch must be 0 to {MAX_PREFETCH}, not {prefetch}")
        trust = _trust(ca)
        runs_as = None if render_user is None else RenderUser.named(render_user)
        self.name = name or socket.gethostname()
        if not re.fullmatch(NODE_NAME_PATTERN, self.name):
            # Said before anything prints it: a name with an escape reached the terminal.
            raise AgentError(
                f"bad node name {self.name!r} (letters, digits, . _ -; "
                "64 at most, a letter or digit first): give --name"
            )
        self.state_dir = state_dir or default_state_dir(self.name)
        self.staging = staging or default_staging_dir(self.name, passable=runs_as is not None)
        self._lock = lock_state(self.state_dir)
        try:
            self._staging_lock = lock_staging(self.staging)
        except AgentError:
            os.close(self._lock)
            raise
        if runs_as is not None:
            try:
                if os.stat(self.staging).st_uid == os.geteuid():
                    # Renderers pass through it to their folders; they need not list them.
                    os.chmod(self.staging, 0o711)
                runs_as.check_reaches(self.staging, "--staging")
            except AgentError:
                os.close(self._staging_lock)
                os.close(self._lock)
                raise
        self._logging = agent_log.attach(self.state_dir, to_stderr=log_to_stderr)
        self.log_stream = self._logging.stream
        try:
            self.outbox = Outbox(self.state_dir / "outbox.jsonl")
        except OSError as exc:  # its files are made once, in full: a full disk says so here
            agent_log.detach(self._logging)
            os.close(self._staging_lock)
            os.close(self._lock)
            raise AgentError(
                f"cannot keep the outbox in {self.state_dir}: {exc.strerror or exc}"
            ) from None
        self.link = LeaderLink(
            leader=leader,
            token=token,
            name=self.name,
            slots=slots,
            tags=tags or [],
            outbox=self.outbox,
            log_stream=self.log_stream,
            version=VERSION,
            ssl_context=trust,
            gpus=gpu_inventory.detect() if gpus is None else gpus,
            gpu_only=gpu_only,
            prefetch=ahead,
        )
        self.supervisor = Supervisor(
            self.link,
            agent_id=agent_id(self.state_dir),
            staging_root=self.staging,
            storage=Storage(
                sync_root=None,
                delivery=UploadToLeader(self.link.leader, token, verify=trust or True),
            ),
            slots=slots,
            render_user=runs_as,
        )
        self.link.supervisor = self.supervisor
        self._stop = asyncio.Event()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        """Run until cancelled or refused; every chunk is killed on the way out."""
        runs_as = self.supervisor.render_user
        log.info(
            "agent %s (%s) starting: leader %s, state %s, staging %s%s",
            self.name,
            agent_tag(self.supervisor.agent_id),
            ", ".join(self.link.leaders),
            self.state_dir,
            self.staging,
            f", renderers run as {runs_as.name}" if runs_as is not None else "",
        )
        reaper = asyncio.create_task(self.supervisor.reap_forever())
        try:
            leftovers = await self.supervisor.kill_leftovers()
            if leftovers:
                log.warning("killed %d chunk(s) left running by a previous agent run", leftovers)
            reported = {
                (m.job_id, m.chunk, m.attempt)
                for m in self.outbox.pending()
                if isinstance(m, ChunkFinished)
            }
            recovered = self.supervisor.recover(reported)
            if recovered:
                log.warning("%d chunk(s) ended while the agent was down; reporting them", recovered)
            abandoned = await asyncio.to_thread(self.supervisor.clean_abandoned_staging)
            if abandoned:
                log.info("removed %d staging folder(s) a previous run left behind", abandoned)
            await self._linked_until_stopped()
        finally:
            reaper.cancel()
            # Renderers run in their own sessions: they would outlive the agent.
            await asyncio.shield(self.supervisor.kill_all(AGENT_STOPPED))
            log.info("agent %s stopped", self.name)
            agent_log.detach(self._logging)
            os.close(self._staging_lock)
            os.close(self._lock)  # the next agent on these folders may start

    def stop(self) -> None:
        """Stop (SIGTERM, Ctrl-C): kill every chunk, report it, then go (``run``)."""
        self._stop.set()

    async def _all_reported(self) -> bool:
        """Whether the leader confirmed every report, ``STOP_REPORTS_WAIT`` at most: those
        of the chunks killed, and of any it sent before it heard this agent is going
        (each refused at once, and reported)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_REPORTS_WAIT):
                while True:
                    reported = await self.link.reported()
                    if not self.supervisor.runs:
                        return reported
                    await self.supervisor.wait_idle()
        return False

    async def _linked_until_stopped(self) -> None:
        """Run the link until ``stop``; then stop the chunks while it still carries
        their reports, so the leader moves them at once rather than after
        ``node_timeout`` of silence."""
        link = asyncio.create_task(self.link.run())
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({link, stop}, return_when=asyncio.FIRST_COMPLETED)
            if link.done():
                link.result()  # LeaderRefused ...
                return
            self.supervisor.stopping = True
            self.link.say_stopping()
            await asyncio.shield(self.supervisor.kill_all(AGENT_STOPPED))
            if await self._all_reported():
                log.info("agent %s stopping: the leader has every report", self.name)
            elif not self.outbox.pending():
                log.info("agent %s stopping: nothing left to report", self.name)
            else:
                log.warning(
                    "agent %s stopping: the leader did not confirm every report; "
                    "the next start sends the rest",
                    self.name,
                )
        finally:
            for task in (link, stop):
                task.cancel()
            await asyncio.gather(link, stop, return_exceptions=True)


async def _run_until_signal(agent: Agent) -> None:
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert task is not None
    use_pidfd_child_watcher()

    def on_signal() -> None:
        if agent.stopping:
            # A second signal: go now (renderers are killed all the same; what is being
            # copied stays for the next start).
            agent.supervisor.give_up_copies()
            task.cancel()
        agent.stop()

    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        for number in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(number, on_signal)
    await agent.run()


def use_pidfd_child_watcher() -> None:
    """Wait for renderers through pidfds rather than a thread per renderer.

    Python 3.11's default child watcher starts a thread for every process,
    a millisecond or more per chunk; 3.12 uses pidfds by itself. Only
    specific pids are waited for either way, so the subreaper's own reaping
    of orphans never steals a renderer's exit status.
    """
    if sys.version_info >= (3, 12) or not hasattr(os, "pidfd_open"):
        return
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # a kernel older than 5.3
        return
    watcher = asyncio.PidfdChildWatcher()
    watcher.attach_loop(asyncio.get_running_loop())
    asyncio.set_child_watcher(watcher)


def _trust(ca: Path | None) -> ssl.SSLContext | None:
    """The CAs an https leader's certificate is checked against: the system's, or ``ca``'s."""
    if ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(ca))
    except ssl.SSLError as exc:  # before OSError: it is one
        raise AgentError(f"the CA file {ca} holds no usable PEM certificate") from exc
    except OSError as exc:
        raise AgentError(f"cannot read the CA file {ca}: {exc.strerror or exc}") from None


def run_agent(
    leader: str | list[str],
    token: str,
    name: str | None = None,
    slots: int = 1,
    staging: Path | None = None,
    tags: list[str] | None = None,
    *,
    state_dir: Path | None = None,
    ca: Path | None = None,
    gpus: list[GpuInfo] | None = None,
    gpu_only: bool = False,
    prefetch: int | None = None,
    render_user: str | None = None,
) -> None:
    """Run an agent until SIGINT/SIGTERM. Blocking.

    ``leader`` is the leader's HTTP URL, or every leader's (one active, the
    others standing by: ``agent.link``); ``name`` defaults to the hostname,
    ``staging`` to a per-agent temporary folder, ``state_dir`` (id, log,
    outbox) to ``~/.local/state/farmtui/agents/<name>``. A refused token
    says so in one line and exits with ``AGENT_EXIT_REFUSED`` (a service manager then
    does not start it again: the same token would be refused again).
    """
    become_subreaper()
    not_dumpable()
    with agent_log.lean_records():
        try:
            agent = Agent(
                leader,
                token,
                name=name,
                slots=slots,
                staging=staging,
                tags=tags,
                state_dir=state_dir,
                ca=ca,
                gpus=gpus,
                gpu_only=gpu_only,
                prefetch=prefetch,
                render_user=render_user,
            )
        except AgentError as exc:
            raise SystemExit(f"farm agent: {exc}") from None
        try:
            asyncio.run(_run_until_signal(agent))
        except LeaderRefused as exc:
            print(f"farm agent: {exc}", file=sys.stderr)
            raise SystemExit(AGENT_EXIT_REFUSED) from None
        except (KeyboardInterrupt, asyncio.CancelledError):
            pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agent.main", description=__doc__)
    parser.add_argument(
        "--leader", required=True, help="http://host:port of the leader (several: URL1,URL2)"
    )
    parser.add_argument("--token", default=os.environ.get(TOKEN_VARIABLE, ""))
    parser.add_argument("--name")
    parser.add_argument("--slots", type=int, default=1)
    parser.add_argument("--staging", type=Path)
    parser.add_argument("--state", type=Path, help="state folder (id, log, outbox)")
    parser.add_argument("--tags", default="", help="comma list")
    parser.add_argument("--gpus", help="0,1 or 0:24G,1:24G; none: no GPU (default: nvidia-smi)")
    parser.add_argument("--gpu-only", action="store_true", help="only jobs that ask for GPUs")
    parser.add_argument(
        "--prefetch",
        type=int,
        help=f"chunks held ahead of a free slot (default one a slot, at most {MAX_PREFETCH})",
    )
    parser.add_argument("--render-user", help="run renderers as this user (the agent as root)")
    args = parser.parse_args(argv)
    tags = [t for t in args.tags.split(",") if t]
    try:
        gpus = None if args.gpus is None else gpu_inventory.parse_given(args.gpus)
    except gpu_inventory.GpuListError as exc:
        parser.error(str(exc))
    run_agent(
        [url for url in args.leader.split(",") if url],
        args.token,
        args.name,
        args.slots,
        args.staging,
        tags,
        state_dir=args.state,
        gpus=gpus,
        gpu_only=args.gpu_only,
        prefetch=args.prefetch,
        render_user=args.render_user,
    )


if __name__ == "__main__":
    main()
