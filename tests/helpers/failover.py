"""Several real leaders on one PostgreSQL database, agents given every URL, the tally renderer.

Used by ``tests/server/test_failover.py`` and ``bench/failover.py`` (so: no
pytest here). Each leader is ``python -m farmtui leader`` in its own process,
with its own data folder (``leader.toml`` names the store, so the password
stays off the command line) and port, all on one sync root. Agents are
``farm agent --leader URL1,URL2``; jobs run the tallying renderer of
``tests/e2e/fault_support.py``, which records every run of every frame.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from farmtui.client import FarmClient
from farmtui.localfarm import Child, free_port, spawn_farm, stop_processes
from tests.e2e.fault_support import Tally, wait_until, write_tally_script

Json = dict[str, Any]


def failover_toml(
    store: str, node_timeout: float = 6.0, lease: float = 2.0, renew: float = 0.5
) -> str:
    """A leader.toml for a fast failover on a test machine (``lease``: leader_lease)."""
    return (
        f"node_timeout = {node_timeout}\nheartbeat_interval = 0.2\ntick_interval = 0.1\n"
        f"leader_lease = {lease:g}\nlease_renew_interval = {renew:g}\n"
        f'store = "{store}"\n'
    )


class LeaderProcess:
    """One leader: its data folder, port, log and process (None while not running)."""

    def __init__(self, name: str, folder: Path, root: Path, toml: str) -> None:
        self.name = name
        self.data = folder / name
        self.data.mkdir(parents=True, exist_ok=True)
        (self.data / "leader.toml").write_text(toml)
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.data / "leader.log"
        self.child: Child | None = None
        self._frozen = False

    def start(self) -> None:
        args = ["leader", "--data", str(self.data), "--root", str(self.root)]
        args += ["--port", str(self.port), "--advertise", self.url]
        self.child = spawn_farm(self.name, args, self.log)

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.child is not None, f"leader {self.name} is not running"
        return self.child.process

    def health(self) -> Json | None:
        """``GET /healthz``'s body; None when it does not answer."""
        if self.child is None or self.child.process.poll() is not None:
            return None
        try:
            answer = httpx.get(self.url + "/healthz", timeout=1.0)
        except httpx.HTTPError:
            return None
        body: Json = answer.json() if answer.status_code == 200 else {}
        return body or None

    def role(self) -> str | None:
        health = self.health()
        return None if health is None else str(health.get("role"))

    def kill(self) -> float:
        """``kill -9``; the moment of the signal. Returns once it is reaped."""
        at = time.time()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.child = None
        return at

    def freeze(self) -> float:
        self._frozen = True
        at = time.time()
        self.process.send_signal(signal.SIGSTOP)
        return at

    def thaw(self) -> float:
        at = time.time()
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGCONT)
        self._frozen = False
        return at

    def stop(self) -> None:
        if self.child is None:
            return
        if self._frozen:
            self.thaw()
        stop_processes([self.child.process], grace=10.0)
        self.child = None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def admin_token(self) -> str:
        return (self.data / "admin.token").read_text().strip()


class FailoverFarm:
    """Leaders ``a``, ``b`` ... on one PostgreSQL, agents that know them all, a tally."""

    def __init__(
        self, folder: Path, store: str, names: tuple[str, ...] = ("a", "b"), **toml: float
    ) -> None:
        self.folder = folder
        self.root = folder / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.leaders = {
            name: LeaderProcess(name, folder / "leaders", self.root, failover_toml(store, **toml))
            for name in names
        }
        self.tally = Tally(folder / "tally")
        self.script = write_tally_script(folder)
        self.agents: dict[str, Child] = {}
        self._client: FarmClient | None = None

    def __enter__(self) -> FailoverFarm:
        self.tally.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        stop_processes([a.process for a in self.agents.values()], grace=10.0)
        for leader in self.leaders.values():
            leader.stop()
        self.tally.__exit__()
        self.tally.kill_leftovers()

    @property
    def urls(self) -> str:
        return ",".join(leader.url for leader in self.leaders.values())

    # -- leaders -------------------------------------------------------------------------

    def start(self, name: str, timeout: float = 30.0) -> LeaderProcess:
        """Start leader ``name``; return once its /healthz answers (active or standby)."""
        leader = self.leaders[name]
        leader.start()

        def up() -> bool:
            if leader.process.poll() is not None:
                raise AssertionError(f"leader {name} exited: {leader.log_text()[-2000:]}")
            return leader.health() is not None and (leader.data / "agent.token").exists()

        wait_until(up, timeout, f"leader {name}'s /healthz")
        return leader

    def active(self) -> LeaderProcess | None:
        """The leader that says it is active (None if none does); AssertionError if two do."""
        found = [leader for leader in self.leaders.values() if leader.role() == "active"]
        if len(found) > 1:
            # Asked one after another, a handover between two answers shows both active
            # (seen on a loaded machine). Two at once is an earlier one still active
            # after a later one said so.
            still = [leader.name for leader in found[:-1] if leader.role() == "active"]
            assert not still, f"two active leaders: {[*still, found[-1].name]}"
            found = found[-1:]
        return found[0] if found else None

    def wait_active(self, timeout: float = 30.0, *, not_: str | None = None) -> LeaderProcess:
        def found() -> LeaderProcess | None:
            leader = self.active()
            return leader if leader is not None and leader.name != not_ else None

        try:
            return wait_until(
                found, timeout, "an active leader" + (f" other than {not_}" if not_ else "")
            )
        except AssertionError as exc:
            # What each leader said is what tells why none took over.
            logs = "\n".join(
                f"--- leader {leader.name}:\n{leader.log_text()[-3000:]}"
                for leader in self.leaders.values()
            )
            raise AssertionError(f"{exc}\n{logs}") from None

    def token(self) -> str:
        """An admin token (leader a's: every leader knows every token, they share the store)."""
        return next(iter(self.leaders.values())).admin_token()

    @property
    def client(self) -> FarmClient:
        """A client given every leader's URL, as ``farm --leader URL1,URL2`` is."""
        if self._client is None:
            self._client = FarmClient(self.urls, self.token(), timeout=5.0)
        return self._client

    def cli(
        self, *args: str, leader: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["FARM_LEADER"] = leader or self.urls
        env["FARM_TOKEN"] = self.token()
        env.pop("FARM_TOKEN_FILE", None)
        env["XDG_CONFIG_HOME"] = str(self.folder / "config")
        done = subprocess.run(
            [sys.executable, "-m", "farmtui", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check:
            assert done.returncode == 0, f"farm {' '.join(args)}: {done.stderr.strip()}"
        return done

    def submit(self, *options: str, sleep: float = 0.3) -> str:
        argv = [sys.executable, str(self.script), "{start}", "{end}"]
        argv += ["--tally", str(self.tally.folder), "--sleep", str(sleep)]
        job: Json = json.loads(self.cli("submit", "--json", *options, "--", *argv).stdout)
        return str(job["id"])

    def show(self, job_id: str) -> Json:
        detail: Json = self.client.request("GET", f"/api/jobs/{job_id}").json()
        return detail

    def wait_job(self, job_id: str, *states: str, timeout: float = 60.0) -> Json:
        def reached() -> Json | None:
            try:
                detail = self.show(job_id)
            except Exception:  # a leader changing hands: not yet
                return None
            return detail if detail["job"]["state"] in states else None

        return wait_until(reached, timeout, f"job {job_id} to be {' or '.join(states)}")

    # -- agents ----------------------------------------------------------------------------

    def start_agent(self, name: str, slots: int = 2) -> Child:
        state = self.folder / "agents" / name
        staging = self.folder / "staging" / name
        staging.mkdir(parents=True, exist_ok=True)
        token_file = next(iter(self.leaders.values())).data / "agent.token"
        args = ["agent", "--leader", self.urls]
        args += ["--token-file", str(token_file), "--name", name, "--slots", str(slots)]
        args += ["--staging", str(staging), "--state", str(state)]
        child = spawn_farm(name, args, self.folder / f"agent-{name}.log")
        self.agents[name] = child
        return child

    def wait_online(self, *names: str, timeout: float = 30.0) -> None:
        def online() -> bool:
            try:
                states = {node.name: node.state for node in self.client.nodes()}
            except Exception:  # a leader changing hands: not yet
                return False
            return all(states.get(name) == "online" for name in names)

        wait_until(online, timeout, f"nodes {', '.join(names)} online")
