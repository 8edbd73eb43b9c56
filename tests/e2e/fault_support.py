"""Fault injection on a real farm: a tallying renderer, a watcher of its runs, a farm to break.

Used by ``tests/e2e/test_faults.py`` and ``bench/faults.py`` (so: no pytest here).

The renderer (``TALLY_SCRIPT``, written into a temporary folder) renders the
frames of its chunk one by one, each for ``--sleep`` seconds, and keeps one
file per run and frame, ``<tally>/frame-<n>.<pid>``, rewritten atomically
(fsync, rename) as the run goes::

    {"frame": n, "pid": p, "start": t0, "end": t1 | null, "term": t | null,
     "pids": [[pid, starttime], ...], "alive_at_start": [pid, ...]}

``end`` is written only once the frame is rendered to the end; ``term`` when
SIGTERM reached it; ``pids`` are every process of the run (the renderer and
its optional helper, each with its kernel start time so a reused pid is not
taken for it); ``alive_at_start`` lists the processes of earlier runs of the
same frame still alive when this run started: the renderer checks that
itself, after writing its own file, so two runs starting together see each
other too. An overlap is seen at the exact moment it matters.

:class:`Tally` adds what the renderer cannot record (a SIGKILL leaves no
trace): a thread polls every run's processes and keeps the last time it saw
one of them alive and the first time it saw all of them gone. From these it
finds the faults the farm must never make: a frame rendered to the end more
than once (or never), and two runs of one frame alive at the same moment.
Every overlap it reports is certain (it compares times at which a process
was seen alive), so a slow poll can hide nothing that ``alive_at_start``
would not catch, and never invents one.

:class:`FaultFarm` is a leader and agents as subprocesses (``LocalFarm``)
with the faults: ``kill -9`` and restart of the leader on the same data
folder, ``kill -9`` and restart of an agent with its ``--state``, SIGSTOP
and SIGCONT of an agent.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import msgspec

from agent.outbox import read_outbox
from farmtui.client import FarmClient
from farmtui.errors import LeaderDown
from farmtui.localfarm import Child, LocalFarm, free_port, stop_processes

T = TypeVar("T")
Json = dict[str, Any]

POLL = 0.02
# Outcomes of attempts the farm ended through no fault of the job: never "failed".
FARM_FAULT_OUTCOMES = {"lost", "killed", "preempted"}

TALLY_SCRIPT = r'''
"""Tallying renderer: tally.py START END --tally DIR [--sleep S] [--helper]
[--term-delay S] [--stubborn-helper]. See tests/e2e/fault_support.py."""
import json
import os
import signal
import sys
import time

args = sys.argv[1:]
first, last = int(args.pop(0)), int(args.pop(0))
opts = {}
while args:
    key = args.pop(0)
    opts[key] = args.pop(0) if args and not args[0].startswith("--") else "1"
folder = opts["--tally"]
pause = float(opts.get("--sleep", "0"))
term_delay = float(opts.get("--term-delay", "0"))
me = os.getpid()


def stat_of(pid):
    """(state letter, start time in clock ticks), or None when the pid does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0], int(fields[19])


def alive(pid, started):
    seen = stat_of(pid)
    return seen is not None and seen[0] not in (b"Z", b"X", b"x") and seen[1] == started


def save(record):
    name = os.path.join(folder, f"frame-{record['frame']}.{me}")
    temporary = os.path.join(folder, f".tmp-{me}")
    with open(temporary, "w") as f:
        json.dump(record, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, name)


def others_alive(frame):
    """Processes of other runs of ``frame`` alive now."""
    found = []
    for name in os.listdir(folder):
        if not name.startswith(f"frame-{frame}.") or name.endswith(f".{me}"):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                other = json.load(f)
        except (OSError, ValueError):
            continue
        found += [pid for pid, started in other["pids"] if alive(pid, started)]
    return found


record = None
helper = None


def on_term(signum, frame):
    if record is not None:
        record["term"] = time.time()
        save(record)
    time.sleep(term_delay)  # a renderer that takes a while to clean up
    os._exit(128 + signum)


signal.signal(signal.SIGTERM, on_term)
pids = [[me, stat_of(me)[1]]]


def begin(frame):
    """Record the frame's start, then look for other runs of it still alive."""
    global record
    record = {"frame": frame, "pid": me, "start": time.time(), "end": None, "term": None,
              "pids": pids, "alive_at_start": [],
              "gpus": os.environ.get("CUDA_VISIBLE_DEVICES")}
    save(record)
    record["alive_at_start"] = others_alive(frame)
    if record["alive_at_start"]:
        save(record)


begin(first)
if "--helper" in opts or "--stubborn-helper" in opts:
    import subprocess

    code = "import os, signal, time\n"
    if "--stubborn-helper" in opts:
        code += "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    code += "os.write(1, b'ready\\n')\nos.close(1)\nwhile True: time.sleep(1)\n"
    # Detached: its own session, like a license or cache helper; the shim must find it.
    helper = subprocess.Popen(
        [sys.executable, "-c", code], start_new_session=True, stdout=subprocess.PIPE
    )
    helper.stdout.readline()  # it ignores SIGTERM from now on
    helper.stdout.close()
    pids.append([helper.pid, stat_of(helper.pid)[1]])
    save(record)
for frame in range(first, last + 1):
    if frame != first:
        begin(frame)
    print(f"frame {frame} started", flush=True)
    time.sleep(pause)
    if frame == last and helper is not None:
        helper.kill()
        helper.wait()
    record["end"] = time.time()
    save(record)
    print(f"frame {frame} done", flush=True)
'''


def write_tally_script(folder: Path) -> Path:
    path = folder / "tally.py"
    path.write_text(TALLY_SCRIPT)
    return path


# --- waiting -------------------------------------------------------------------------


def wait_until(
    condition: Callable[[], T | None], timeout: float, what: str, every: float = POLL
) -> T:
    """Poll ``condition`` until it returns something truthy; AssertionError after ``timeout`` s.

    A leader that is down (restarting) counts as "not yet".
    """
    end = time.monotonic() + timeout
    while True:
        try:
            value = condition()
        except LeaderDown:
            value = None
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"gave up after {timeout:g} s waiting for {what}")
        time.sleep(every)


# --- the tally -------------------------------------------------------------------------


def _process_alive(pid: int, started: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return False
    fields = data[data.rfind(b")") + 2 :].split()
    return fields[0] not in (b"Z", b"X", b"x") and int(fields[19]) == started


@dataclass
class Run:
    """One run of the renderer on one frame, as its file and the watcher know it."""

    frame: int
    pid: int
    start: float
    end: float | None = None
    term: float | None = None
    pids: list[tuple[int, int]] = field(default_factory=list)
    alive_at_start: list[int] = field(default_factory=list)
    # CUDA_VISIBLE_DEVICES as the run saw it (None: not set).
    gpus: str | None = None
    # From the watcher: a time at which a process of the run was seen alive (the
    # latest), and the first time all of them were seen gone.
    seen_alive: float = 0.0
    seen_dead: float | None = None

    @property
    def alive_until(self) -> float:
        """The latest moment this run is known to have been alive."""
        return max(self.start, self.end or 0.0, self.term or 0.0, self.seen_alive)

    def describe(self) -> str:
        parts = [f"pid {self.pid} start {self.start:.3f}"]
        if self.end is not None:
            parts.append(f"end {self.end:.3f}")
        if self.term is not None:
            parts.append(f"SIGTERM {self.term:.3f}")
        parts.append(f"seen alive {self.seen_alive:.3f}")
        if self.seen_dead is not None:
            parts.append(f"seen dead {self.seen_dead:.3f}")
        return ", ".join(parts)


class Tally:
    """The runs the tallying renderer recorded in ``folder``, watched while they live."""

    def __init__(self, folder: Path, every: float = 0.005) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.every = every
        self._runs: dict[tuple[int, int], Run] = {}
        self._stamps: dict[str, tuple[int, int]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Tally:
        self._thread = threading.Thread(target=self._watch, name="tally watcher", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.scan()

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self.scan()

    def scan(self) -> None:
        """Read new or changed run files; look at every process not yet seen gone."""
        with self._lock:
            try:
                entries = list(os.scandir(self.folder))
            except OSError:
                return
            for entry in entries:
                if not entry.name.startswith("frame-"):
                    continue
                try:
                    info = entry.stat()
                except OSError:
                    continue
                stamp = (info.st_mtime_ns, info.st_size)
                if self._stamps.get(entry.name) == stamp:
                    continue
                try:
                    data = json.loads(Path(entry.path).read_text())
                except (OSError, ValueError):
                    continue  # replaced under us: the next scan reads it
                self._stamps[entry.name] = stamp
                key = (data["frame"], data["pid"])
                run = self._runs.get(key)
                if run is None:
                    run = self._runs[key] = Run(frame=data["frame"], pid=data["pid"], start=0.0)
                run.start = data["start"]
                run.end = data["end"]
                run.term = data["term"]
                run.pids = [(pid, started) for pid, started in data["pids"]]
                run.alive_at_start = list(data["alive_at_start"])
                run.gpus = data.get("gpus")
            for run in self._runs.values():
                if run.seen_dead is not None:
                    continue
                before = time.time()
                if any(_process_alive(pid, started) for pid, started in run.pids):
                    run.seen_alive = max(run.seen_alive, before)
                else:
                    run.seen_dead = time.time()

    def runs(self) -> dict[int, list[Run]]:
        """Frame -> its runs, in order of start."""
        self.scan()
        with self._lock:
            by_frame: dict[int, list[Run]] = {}
            for run in self._runs.values():
                by_frame.setdefault(run.frame, []).append(run)
        for runs in by_frame.values():
            runs.sort(key=lambda r: r.start)
        return by_frame

    def all_runs(self) -> list[Run]:
        return sorted((r for runs in self.runs().values() for r in runs), key=lambda r: r.start)

    def with_helper(self, frame: int) -> Run | None:
        """The frame's only run, once it has recorded its helper (None before)."""
        runs = self.runs().get(frame, [])
        return runs[0] if len(runs) == 1 and len(runs[0].pids) == 2 else None

    def nth_run(self, frame: int, n: int) -> Run | None:
        """The frame's ``n``-th run (from 0) in order of start, once it started."""
        runs = self.runs().get(frame, [])
        return runs[n] if len(runs) > n else None

    def ended(self) -> dict[int, int]:
        """Frame -> how many runs rendered it to the end."""
        return {frame: sum(r.end is not None for r in runs) for frame, runs in self.runs().items()}

    def running(self) -> list[Run]:
        """Runs started and not ended (nor seen gone)."""
        return [r for r in self.all_runs() if r.end is None and r.seen_dead is None]

    def duplicates(self, frames: Iterable[int]) -> dict[int, int]:
        """Frames not rendered to the end exactly once -> how many times they were."""
        ended = self.ended()
        return {f: ended.get(f, 0) for f in frames if ended.get(f, 0) != 1}

    def overlaps(self, frames: Iterable[int] | None = None) -> list[str]:
        """Every certain moment two runs of one frame were alive together, described."""
        found = []
        wanted = None if frames is None else set(frames)
        for frame, runs in sorted(self.runs().items()):
            if wanted is not None and frame not in wanted:
                continue
            for index, later in enumerate(runs):
                if later.alive_at_start:
                    found.append(
                        f"frame {frame}: run {later.pid} started while {later.alive_at_start} "
                        "of an earlier run were alive"
                    )
                for earlier in runs[:index]:
                    if earlier.alive_until > later.start:
                        found.append(
                            f"frame {frame}: run {earlier.describe()} was alive "
                            f"{earlier.alive_until - later.start:.3f} s after run "
                            f"{later.describe()} started"
                        )
        return found

    def problems(self, frames: Iterable[int]) -> list[str]:
        """Duplicates, frames never rendered, and overlaps: empty when the farm kept its word."""
        frames = list(frames)
        wrong = [
            f"frame {frame} rendered to the end {count} times"
            for frame, count in sorted(self.duplicates(frames).items())
        ]
        return wrong + self.overlaps(frames)

    def kill_leftovers(self) -> list[int]:
        """Safety net: SIGKILL every process of a run still alive; the pids it had to kill."""
        self.scan()
        killed = []
        with self._lock:
            for run in self._runs.values():
                for pid, started in run.pids:
                    if _process_alive(pid, started):
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)
                        killed.append(pid)
        return killed


# --- job details ---------------------------------------------------------------------------


def render_chunks(detail: Json) -> list[Json]:
    return [c for c in detail["chunks"] if c["kind"] == "render"]


def farm_fault_problems(detail: Json) -> list[str]:
    """Retries used or failures recorded where only the farm was at fault."""
    found = []
    for chunk in render_chunks(detail):
        if chunk["errors"]:
            found.append(f"chunk {chunk['index']}: errors {chunk['errors']}")
        for attempt in chunk["attempts"]:
            outcome = attempt["outcome"]
            if outcome not in FARM_FAULT_OUTCOMES | {"done", "running"}:
                found.append(
                    f"chunk {chunk['index']} attempt {attempt['number']} on {attempt['node']}: "
                    f"{outcome} ({attempt.get('reason')})"
                )
    return found


def attempt_summary(detail: Json) -> str:
    """One line per chunk: its state and each attempt's node and outcome (for messages)."""
    lines = []
    for chunk in render_chunks(detail):
        attempts = ", ".join(
            f"#{a['number']} {a['node']} {a['outcome']}"
            + (f" ({a['reason']})" if a.get("reason") else "")
            for a in chunk["attempts"]
        )
        lines.append(
            f"chunk {chunk['index']} {chunk['state']} errors {chunk['errors']}: {attempts}"
        )
    return "\n".join(lines)


# --- the farm ----------------------------------------------------------------------------


def fault_toml(node_timeout: float, heartbeat: float = 0.2, tick: float = 0.1) -> str:
    return (
        f"node_timeout = {node_timeout}\nheartbeat_interval = {heartbeat}\ntick_interval = {tick}\n"
    )


class FaultFarm:
    """A leader and agents on loopback that tests break on purpose.

    Everything lives under ``folder``: the leader's data (with ``leader.toml``),
    the sync root, the agents' state, the tally and its renderer.
    """

    def __init__(self, folder: Path, toml: str) -> None:
        self.folder = folder
        self.local = LocalFarm(folder / "data", folder / "root", port=free_port())
        self.local.data.mkdir(parents=True, exist_ok=True)
        (self.local.data / "leader.toml").write_text(toml)
        self.tally = Tally(folder / "tally")
        self.script = write_tally_script(folder)
        self.config_home = folder / "config"
        self._client: FarmClient | None = None
        self._indexes: dict[str, int] = {}
        self._frozen: set[str] = set()
        # When each leader start answered /healthz (time.time()).
        self.healthy_at: list[float] = []

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> FaultFarm:
        self.tally.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for name in list(self._frozen):
            self.thaw(name)
        if self._client is not None:
            self._client.close()
            self._client = None
        self.local.stop(grace=5.0)
        self.tally.__exit__()
        self.tally.kill_leftovers()

    # -- the leader ---------------------------------------------------------------------

    def start_leader(self, timeout: float = 30.0) -> float:
        """Start the leader (again) on the same data folder; when /healthz first answered.

        Polls /healthz itself every 10 ms so that moment is known closely.
        """
        local = self.local
        args = [sys.executable, "-m", "farmtui", "leader", "--data", str(local.data)]
        args += ["--root", str(local.root), "--host", local.host, "--port", str(local.port)]
        local.logs.mkdir(parents=True, exist_ok=True)
        log = local.logs / "leader.log"
        with open(log, "ab") as out:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        child = local.leader = Child("leader", process, log)

        def healthy() -> float | None:
            if process.poll() is not None:
                raise AssertionError(
                    f"the leader exited with {process.returncode}: {child.log_tail(20)}"
                )
            try:
                answer = httpx.get(local.url + "/healthz", timeout=1.0)
            except httpx.HTTPError:
                return None
            ok = answer.status_code == 200 and local.admin_token_file.exists()
            return time.time() if ok else None

        end = time.monotonic() + timeout
        while (at := healthy()) is None:
            if time.monotonic() > end:
                raise AssertionError(f"the leader did not answer /healthz within {timeout} s")
            time.sleep(0.01)
        self.healthy_at.append(at)
        if self._client is not None:
            self._client.close()
        self._client = FarmClient(local.url, local.admin_token())
        return at

    def kill_leader(self, signum: int = signal.SIGKILL) -> float:
        """``kill -9`` the leader (or send it ``signum``); the moment of the signal.
        Returns once it is reaped."""
        leader = self.local.leader
        assert leader is not None
        at = time.time()
        leader.process.send_signal(signum)
        leader.process.wait()
        return at

    @property
    def client(self) -> FarmClient:
        assert self._client is not None
        return self._client

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["FARM_LEADER"] = self.local.url
        env["FARM_TOKEN"] = self.local.admin_token()
        env.pop("FARM_TOKEN_FILE", None)
        env["XDG_CONFIG_HOME"] = str(self.config_home)
        return env

    def cli(self, *args: str) -> str:
        """``farm ARGS`` as a user runs it; AssertionError when it fails."""
        done = subprocess.run(
            [sys.executable, "-m", "farmtui", *args],
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, f"farm {' '.join(args)}: {done.stderr.strip()}"
        return done.stdout

    def submit(self, argv: Sequence[str], *options: str) -> str:
        """``farm submit --json OPTIONS -- ARGV``; the job id once the submit returned."""
        job: Json = json.loads(self.cli("submit", "--json", *options, "--", *argv))
        job_id: str = job["id"]
        return job_id

    def show(self, job_id: str) -> Json:
        """``GET /api/jobs/ID`` (what ``farm show --json`` prints), cheap enough to poll."""
        detail: Json = self.client.request("GET", f"/api/jobs/{job_id}").json()
        return detail

    def show_cli(self, job_id: str) -> Json:
        detail: Json = json.loads(self.cli("show", job_id, "--json"))
        return detail

    def wait_job(self, job_id: str, *states: str, timeout: float = 30.0) -> Json:
        def reached() -> Json | None:
            detail = self.show(job_id)
            return detail if detail["job"]["state"] in states else None

        try:
            return wait_until(reached, timeout, f"job {job_id} to be {' or '.join(states)}")
        except AssertionError as exc:
            with contextlib.suppress(LeaderDown, httpx.HTTPError):
                exc.add_note(attempt_summary(self.show(job_id)))
            raise

    def chunk_node(self, job_id: str, index: int = 0) -> str | None:
        """The node the job's ``index``-th render chunk is assigned to, if it is."""
        chunk = render_chunks(self.show(job_id))[index]
        node: str | None = chunk["node"] if chunk["state"] == "assigned" else None
        return node

    def node_states(self) -> dict[str, str]:
        return {node.name: node.state for node in self.client.nodes()}

    def wait_online(self, names: Iterable[str], timeout: float = 30.0) -> None:
        wanted = list(names)

        def online() -> bool:
            states = self.node_states()
            return all(states.get(name) == "online" for name in wanted)

        wait_until(online, timeout, f"nodes {', '.join(wanted)} to be online")

    # -- agents ---------------------------------------------------------------------------

    def tally_argv(self, sleep: float, *options: str) -> list[str]:
        """The job's command: the tallying renderer on the chunk's frames."""
        return [
            sys.executable, str(self.script), "{start}", "{end}",
            "--tally", str(self.tally.folder), "--sleep", str(sleep), *options,
        ]  # fmt: skip

    def start_agents(
        self,
        *names: str,
        slots: int = 1,
        wait: bool = True,
        extra: Sequence[str] = (),
        env: dict[str, str] | None = None,
    ) -> list[Child]:
        started = []
        for name in names:
            index = self._indexes.setdefault(name, len(self._indexes) + 1)
            started.append(self.local.start_agent(index, slots, name=name, extra=extra, env=env))
        if wait:
            self.wait_online(names)
        return started

    def agent(self, name: str) -> Child:
        return next(c for c in reversed(self.local.agents) if c.name == name)

    def kill_agent(self, name: str) -> float:
        """``kill -9`` the agent alone (not its shims: they must notice); the moment of it."""
        child = self.agent(name)
        at = time.time()
        child.process.send_signal(signal.SIGKILL)
        child.process.wait()
        return at

    def restart_agent(
        self, name: str, slots: int = 1, wait: bool = True, extra: Sequence[str] = ()
    ) -> Child:
        """Start the agent again with the same name, staging and ``--state`` (its outbox)."""
        old = self.agent(name)
        if old.alive():
            stop_processes([old.process], grace=5.0)
        self.local.agents.remove(old)
        (child,) = self.start_agents(name, slots=slots, wait=wait, extra=extra)
        return child

    def freeze(self, name: str) -> float:
        """SIGSTOP the agent (only the agent: its shims keep running); the moment of it."""
        self._frozen.add(name)
        at = time.time()
        self.agent(name).process.send_signal(signal.SIGSTOP)
        return at

    def thaw(self, name: str) -> float:
        at = time.time()
        with contextlib.suppress(ProcessLookupError):
            self.agent(name).process.send_signal(signal.SIGCONT)
        self._frozen.discard(name)
        return at

    def outbox(self, name: str) -> list[Json]:
        """The agent's unacknowledged messages, read from its ``--state`` folder."""
        _, pending = read_outbox(self.local.data / "agents" / name / "outbox.jsonl")
        return [msgspec.to_builtins(message) for message in pending]

    def agent_log(self, name: str) -> str:
        return self.agent(name).log.read_text(errors="replace")

    def leader_log(self) -> str:
        return (self.local.logs / "leader.log").read_text(errors="replace")


def first_attempt_after(detail: Json, moment: float) -> float | None:
    """The earliest assignment (attempt start, the leader's clock) after ``moment``."""
    times = [
        a["started"]
        for chunk in render_chunks(detail)
        for a in chunk["attempts"]
        if a["started"] > moment
    ]
    return min(times) if times else None


def first_run_assigned_after(
    detail: Json, runs: dict[int, list[Run]], moment: float
) -> float | None:
    """When the first run of an attempt assigned after ``moment`` started (one-frame chunks).

    Runs of attempts assigned before ``moment`` may start later (a slow renderer
    start-up): they do not count.
    """
    starts = []
    for chunk in render_chunks(detail):
        assigned = [a["started"] for a in chunk["attempts"] if a["started"] > moment]
        if not assigned:
            continue
        frame = chunk["frames"][0]
        starts += [r.start for r in runs.get(frame, []) if r.start >= min(assigned)]
    return min(starts) if starts else None
