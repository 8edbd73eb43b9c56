"""``farm up``: a whole farm on this machine, leader and agents as child processes.

``LocalFarm`` starts ``python -m farmtui leader`` and ``python -m farmtui agent``
subprocesses (each in its own session, so a Ctrl-C in the terminal reaches
only ``farm up``, which then stops them in order: agents first so they can
kill their renderers, then the leader; SIGTERM, a grace period, SIGKILL).
Tests and benchmarks reuse it to get a real farm with one call.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType

import httpx

from farmtui.client import FINAL_STATES, FarmClient
from farmtui.config import DEFAULT_PORT, write_user_config
from farmtui.errors import LocalFarmError
from farmtui.protocol import JobSpec
from farmtui.renderers import build_argv

HEALTH_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class UpOptions:
    data: Path
    root: Path
    port: int = DEFAULT_PORT
    agents: int = 2
    slots: int = 1
    demo: bool = False
    console: bool = True


@dataclass(slots=True)
class Child:
    """One subprocess of the local farm and the file its output goes to."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text.splitlines()[-lines:] if line.strip())


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``host:port`` (a bind with SO_REUSEADDR succeeds)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (for tests and benchmarks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


def spawn_farm(
    name: str,
    args: list[str],
    log: Path,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> Child:
    """``python -m farmtui ARGS`` in a session of its own, its output appended to ``log``."""
    with open(log, "ab") as out:
        process = subprocess.Popen(
            [python, "-m", "farmtui", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**child_environment(python), **(env or {})},
        )
    return Child(name, process, log)


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> int | None:
    """SIGTERM the process's group, wait up to ``grace`` s, then SIGKILL it; its exit code."""
    stop_processes([process], grace)
    return process.returncode


def stop_processes(processes: Sequence[subprocess.Popen[bytes]], grace: float = 10.0) -> None:
    """Stop several at once: SIGTERM to all, one shared grace period, SIGKILL the rest."""
    for process in processes:
        _signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            _signal_group(process, signal.SIGKILL)
            process.wait()
        # Anything left in its group (it started in its own session) goes too.
        _signal_group(process, signal.SIGKILL)


def _signal_group(process: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)


@dataclass
class LocalFarm:
    """A leader and agents on this machine, as subprocesses; a context manager that stops them."""

    data: Path
    root: Path
    port: int = DEFAULT_PORT
    host: str = "127.0.0.1"
    python: str = sys.executable
    leader: Child | None = None
    agents: list[Child] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.data = self.data.resolve()
        self.root = self.root.resolve()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def admin_token_file(self) -> Path:
        return self.data / "admin.token"

    @property
    def agent_token_file(self) -> Path:
        return self.data / "agent.token"

    @property
    def logs(self) -> Path:
        return self.data / "logs"

    def admin_token(self) -> str:
        return self.admin_token_file.read_text(encoding="utf-8").strip()

    def _spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Child:
        self.logs.mkdir(parents=True, exist_ok=True)
        return spawn_farm(name, args, self.logs / f"{name}.log", self.python, env)

    def start_leader(self, timeout: float = HEALTH_TIMEOUT) -> None:
        """Start the leader and return once ``/healthz`` answers and its tokens exist."""
        if not port_is_free(self.port, self.host):
            raise LocalFarmError(
                f"port {self.port} is busy: another leader may be running (try --port)"
            )
        self.data.mkdir(parents=True, exist_ok=True)
        self.root.mkdir(parents=True, exist_ok=True)
        args = ["leader", "--data", str(self.data), "--root", str(self.root)]
        args += ["--host", self.host, "--port", str(self.port)]
        self.leader = self._spawn("leader", args)
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = HEALTH_TIMEOUT) -> None:
        leader = self.leader
        if leader is None:
            raise LocalFarmError("the leader was not started")

        def healthy() -> bool:
            if not leader.alive():
                raise LocalFarmError(
                    f"the leader exited with status {leader.process.returncode}: "
                    f"{leader.log_tail() or 'no output'} (log: {leader.log})"
                )
            try:
                answer = httpx.get(self.url + "/healthz", timeout=1.0)
            except httpx.HTTPError:
                return False
            return answer.status_code == 200 and self.admin_token_file.exists()

        wait_for(healthy, timeout, f"the leader did not answer on {self.url} (log: {leader.log})")

    def start_agent(
        self,
        index: int,
        slots: int = 1,
        name: str | None = None,
        tags: Sequence[str] = (),
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> Child:
        """Start agent number ``index`` with its own staging folder under the data folder.

        ``extra``: more ``farm agent`` flags (``--gpus 0,1``); ``env``: set in its environment.
        """
        name = name or f"{socket.gethostname()}-agent{index}"
        staging = self.data / "staging" / f"agent{index}"
        staging.mkdir(parents=True, exist_ok=True)
        args = ["agent", "--leader", self.url, "--token-file", str(self.agent_token_file)]
        args += ["--name", name, "--slots", str(slots), "--staging", str(staging)]
        # The farm's own data folder holds the agent's state, so a local farm
        # never shares an outbox with another farm's agent of the same name.
        args += ["--state", str(self.data / "agents" / name)]
        if tags:
            args += ["--tags", ",".join(tags)]
        args += extra
        child = self._spawn(f"agent{index}", args, env)
        child.name = name
        self.agents.append(child)
        return child

    def wait_nodes_online(self, names: Sequence[str], timeout: float = HEALTH_TIMEOUT) -> None:
        """Return once every named node shows as online on the leader."""
        with FarmClient(self.url, self.admin_token()) as farm:

            def online() -> bool:
                self.check_alive()
                states = {node.name: node.state for node in farm.nodes()}
                return all(states.get(name) == "online" for name in names)

            wait_for(online, timeout, f"agents {', '.join(names)} did not come online")

    def check_alive(self) -> None:
        """LocalFarmError if the leader or an agent has exited."""
        for child in [c for c in (self.leader, *self.agents) if c is not None]:
            if not child.alive():
                raise LocalFarmError(
                    f"{child.name} exited with status {child.process.returncode}: "
                    f"{child.log_tail() or 'no output'} (log: {child.log})"
                )

    def stop_agents(self, grace: float = 10.0) -> None:
        """Stop every agent at once (each kills its renderers on SIGTERM)."""
        stop_processes([agent.process for agent in self.agents], grace)

    def stop(self, grace: float = 10.0) -> None:
        """Agents first (they kill their renderers), then the leader."""
        self.stop_agents(grace)
        if self.leader is not None:
            stop_processes([self.leader.process], grace)

    def __enter__(self) -> LocalFarm:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def child_environment(python: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for the farm's children: ``farm`` of this install first on PATH.

    Demo jobs run ``farm demo-render`` (renderers are found on the node's PATH);
    the ``farm`` script installed beside ``python`` is the one that matches the
    agents, even when its folder is not on the user's PATH (an unactivated venv).
    """
    env = dict(os.environ if env is None else env)
    scripts = Path(python).parent
    if (scripts / "farm").is_file():
        env["PATH"] = os.pathsep.join([str(scripts), *filter(None, [env.get("PATH")])])
    return env


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (every 50 ms) until true; LocalFarmError(what) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise LocalFarmError(f"{what} within {timeout:g} s")
        time.sleep(0.05)


# --- farm up --------------------------------------------------------------------


def demo_specs() -> list[JobSpec]:
    """The demo jobs ``farm up --demo`` submits (renderer "demo": real PNGs, no DCC).

    Their command is ``farm demo-render ...``: nothing of this machine (its
    interpreter's path) is baked in, so any node with farmtui renders them.
    """

    def output(name: str) -> str:
        return f"renders/{name}/frame_####.png"

    specs = [
        JobSpec(name="demo-shot-010", frames="1-48", chunk=4, renderer="demo",
                output=output("demo-shot-010")),
        JobSpec(name="demo-shot-020", frames="1-24", chunk=2, priority=40, renderer="demo",
                output=output("demo-shot-020")),
        JobSpec(name="demo-scout", frames="1-36", chunk=3, renderer="demo", scout="1,18,36",
                output=output("demo-scout")),
    ]  # fmt: skip
    for spec in specs:
        spec.argv = build_argv(spec)
    return specs


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` stops the children."""

    def leave(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def say(text: str) -> None:
    print(f"farm up: {text}", flush=True)


def run_up(options: UpOptions) -> int:
    """Start the farm, optionally submit the demo, run the console; always stop the children."""
    farm = LocalFarm(options.data, options.root, options.port)
    with _stop_on_signals():
        try:
            say(f"starting the leader on {farm.url} (data {farm.data}, sync root {farm.root})")
            farm.start_leader()
            for index in range(1, options.agents + 1):
                farm.start_agent(index, options.slots)
            if options.agents:
                names = ", ".join(agent.name for agent in farm.agents)
                say(f"started {options.agents} agent(s) with {options.slots} slot(s): {names}")
            config = write_user_config(farm.url, farm.admin_token_file)
            say(f"`farm jobs` and friends now find this farm ({config}); logs in {farm.logs}")
            with FarmClient(farm.url, farm.admin_token()) as client:
                demo_ids: list[str] = []
                if options.demo:
                    for spec in demo_specs():
                        job = client.submit(spec)
                        demo_ids.append(job.id)
                        say(f"submitted {job.name} ({job.id})")
                if options.console:
                    return _console(farm, client)
                if demo_ids:
                    return watch_demo(farm, client, demo_ids)
                watch_table(farm, client, clear=False)
                return 0
        except KeyboardInterrupt:
            return 130
        finally:
            say("stopping agents and leader")
            farm.stop()


def _console(farm: LocalFarm, client: FarmClient) -> int:
    try:
        from farmtui.console.app import run_console
    except ImportError:
        say("the console is not available here; showing a plain job table (Ctrl-C to stop)")
        watch_table(farm, client, clear=sys.stdout.isatty())
        return 0
    if run_console(farm.url, farm.admin_token(), local_farm=True) == 0:
        return 0
    # A console that died is no operator's quit: the farm's renders go on.
    say(
        "the console stopped on an error (above); the farm goes on: `farm console` "
        "opens it again, Ctrl-C stops the farm"
    )
    watch_table(farm, client, clear=False)
    return 0


def watch_table(farm: LocalFarm, client: FarmClient, clear: bool) -> None:
    """A plain live job table, redrawn every second until Ctrl-C."""
    from farmtui.tables import jobs_table

    previous = ""
    while True:
        farm.check_alive()
        text = jobs_table(client.jobs())
        if clear:
            sys.stdout.write("\x1b[H\x1b[2J" + time.strftime("%H:%M:%S ") + farm.url + "\n")
            sys.stdout.write(text + "\n")
        elif text != previous:
            sys.stdout.write(text + "\n\n")
        sys.stdout.flush()
        previous = text
        time.sleep(1.0)


def watch_demo(farm: LocalFarm, client: FarmClient, job_ids: Sequence[str]) -> int:
    """Print a line per change until every demo job has finished; 0 only if all are done.

    The scout job holds after its scout frames; with nobody at a console to look
    at them, it is un-held here.
    """
    seen: dict[str, tuple[str, int]] = {}
    released: set[str] = set()
    while True:
        farm.check_alive()
        jobs = {job.id: job for job in client.jobs(include_archived=True) if job.id in job_ids}
        for job_id in job_ids:
            job = jobs.get(job_id)
            if job is None:
                continue
            now = (job.state, job.stats.frames_done)
            if seen.get(job_id) != now:
                seen[job_id] = now
                say(f"{job.name}: {job.state} {job.stats.frames_done}/{job.stats.frames_total}")
            if job.state == "holding" and job_id not in released:
                released.add(job_id)
                say(f"{job.name}: scout frames rendered; un-holding it (nobody is watching)")
                client.action("unhold", [job_id])
        if len(jobs) == len(job_ids) and all(j.state in FINAL_STATES for j in jobs.values()):
            failed = [job.name for job in jobs.values() if job.state != "done"]
            if failed:
                say(f"not done: {', '.join(failed)} (see `farm show JOB`, `farm logs JOB`)")
                return 1
            say(f"all demo jobs done; frames are in {farm.root / 'renders'}")
            return 0
        time.sleep(0.5)
