"""The leader at farm scale (issue 10): throughput, latency and stalls under load.

A real leader subprocess (``python -m farmtui leader``) on a free loopback
port, loaded from other processes so that its own CPU is measured alone:

- simulated agents (``tests/helpers/sim_agents.py``): N agents × K slots as
  real WebSocket clients speaking the real protocol, in ONE separate process,
  each finishing its chunk at once;
- a ``/healthz`` probe and a resource sampler in this process (a third
  place): probe latency p50/p99/max, the leader's CPU (psutil, per cent of one
  core), RSS, the store's size (``farm.db`` + WAL), and loop stalls as the
  leader logs them ("stalled" lines of a watchdog, "blocked for" of the tick);
- the loop's lag below what is logged: the watchdog's beat-lag histogram
  (``/metrics``) scraped before and after the simulated agents' run, as beats
  late past 50 ms and the worst lag (for a, b, c1, c2, ar, br);
- for (e), 200 readers in a process of their own.

Scenarios (``--scenarios a,b,c1,c2,d,e,f,g``; sizes times ``--scale``):

  a   1 job × 100,000 one-frame chunks, --agents (10) × 4 slots
  b   1,000 jobs × 100 one-frame chunks, --agents (10) × 4 slots
  c1  as a with --many-agents (300) × 4 slots
  c2  as b with --many-agents (300) × 4 slots
  d   1,000 × /bin/true through 1 REAL agent × 2 slots, and xargs -P2 in the same run
  e   200 concurrent readers of GET /api/jobs + 1 submitter of 1,000 jobs of 100 chunks
  f   one POST of a 1,000,000-frame job: time to acknowledge, loop stall during it,
      GET of the job and ``farm show`` (time, size), store size, leader RSS
  g   kill -9 of the leader with that job in the store, restart: time to first dispatch
  ar  as a (2 jobs × 50,000) with the scheduling rules at work on every chunk: a GPU
      each, a unit of a limit each, the second job after the first frame by frame
  br  as b with the same rules (every second job after the one before it)

Each scenario run has a time cap (``--cap``): a slow leader gives "did not
finish: N of M in T s" rather than a hung bench. Medians over ``--runs``.
Prints a table like the issue's and writes ``bench/results/scale.json``.

    python bench/scale.py                                  # everything, full size
    python bench/scale.py --scenarios a,c1 --cap 60 --runs 3
    python bench/scale.py --scale 0.01 --cap 10 --runs 1   # a smoke run
    python bench/scale.py --scenarios a --profile          # + py-spy of the leader
    python bench/scale.py --scenarios a,ar,b,br            # the rules' cost (issue 13)
    python bench/scale.py --scenarios c1 --sync-root-in /dev/shm   # logs cost no disk
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
import msgspec  # noqa: E402
import psutil  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from farmtui.client import FarmClient  # noqa: E402
from farmtui.errors import FarmError  # noqa: E402
from farmtui.localfarm import Child, LocalFarm, free_port, stop_processes  # noqa: E402
from farmtui.protocol import JobSpec  # noqa: E402
from tests.helpers.sim_agents import SimReport, Swarm, quantile  # noqa: E402

sys.path.insert(0, str(HERE))
from disk_settle import create_cost_us, settle  # noqa: E402

Record = dict[str, Any]

SLOTS = 4
TRUE = "/bin/true"
# The limit the "ar" and "br" runs ask a unit of.
RULES_LIMIT = "bench-licence"
PROBE_EVERY = 0.05
SAMPLE_EVERY = 0.25
# Targets from issue 10 (for the verdict lines; the table carries the figures).
TARGET_RATE = 10_000.0
TARGET_HEALTHZ_P99 = 0.050
TARGET_LOOP_LAG = 0.050
TARGET_TRUE_RATE = 1_000.0
TARGET_ACK = 1.0
TARGET_STORE_MB = 50.0
TARGET_RSS_MB = 300.0
TARGET_SHOW = 0.2
TARGET_RESTART = 2.0
TARGET_READS = 2_000.0
TARGET_READ_P99 = 0.100


def say(text: str) -> None:
    print(text, flush=True)


def load_env() -> dict[str, str]:
    """The environment for child processes: this checkout first on PYTHONPATH."""
    env = dict(os.environ)
    paths = [str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# --- a leader under measurement ---------------------------------------------------------


@dataclass
class Sample:
    at: float
    leader_cpu: float
    leader_rss: int
    others_cpu: dict[int, float]
    # The whole machine's CPU seconds: busy, and in all (every core).
    machine_busy: float = 0.0
    machine_total: float = 0.0


@dataclass
class Monitor:
    """Probes ``/healthz`` and samples the leader's CPU, RSS and other pids, in threads."""

    host: str
    port: int
    pid: int
    probes: list[tuple[float, float, bool]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    others: set[int] = field(default_factory=set)
    # When the probe now waiting for an answer was sent (None: none waiting).
    inflight: float | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Monitor:
        for target in (self._probe, self._sample):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=70)

    def wait_answer(self, after: float, within: float) -> None:
        """Return once a probe sent at ``after`` or later was answered (or ``within`` s)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if any(at >= after and ok for at, _, ok in self.probes[-5:]):
                return
            time.sleep(0.01)

    def follow(self, pid: int) -> None:
        """A new leader process (after a restart)."""
        with self._lock:
            self.pid = pid

    def _probe(self) -> None:
        """GET /healthz on a keep-alive connection, one at a time, every PROBE_EVERY s."""
        connection: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            started = time.time()
            began = time.perf_counter()
            ok = True
            self.inflight = started
            try:
                if connection is None:
                    connection = http.client.HTTPConnection(self.host, self.port, timeout=60)
                connection.request("GET", "/healthz")
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                ok = False
                if connection is not None:
                    connection.close()
                connection = None
            latency = time.perf_counter() - began
            self.probes.append((started, latency, ok))
            self.inflight = None
            if not ok:
                self._stop.wait(0.01)  # a leader restarting: do not spin
            self._stop.wait(PROBE_EVERY)
        if connection is not None:
            connection.close()

    def _sample(self) -> None:
        processes: dict[int, psutil.Process] = {}

        def cpu(pid: int) -> float | None:
            try:
                process = processes.get(pid) or processes.setdefault(pid, psutil.Process(pid))
                times = process.cpu_times()
                return float(times.user + times.system)
            except psutil.Error:
                return None

        while not self._stop.is_set():
            with self._lock:
                pid = self.pid
                others = list(self.others)
            at = time.time()
            leader = cpu(pid)
            try:
                rss = processes[pid].memory_info().rss if leader is not None else 0
            except psutil.Error:
                rss = 0
            seen = {other: value for other in others if (value := cpu(other)) is not None}
            machine = psutil.cpu_times()
            total = sum(machine)
            idle = machine.idle + getattr(machine, "iowait", 0.0)
            if leader is not None:
                self.samples.append(Sample(at, leader, rss, seen, total - idle, total))
            self._stop.wait(SAMPLE_EVERY)

    def window(self, start: float, end: float, other: int | None = None) -> Record:
        """The probe's latencies and the processes' CPU between ``start`` and ``end``.

        A probe counts when it was waiting at any moment of the window; one still
        waiting counts with the time it has waited so far (a stalled leader
        answers no probe at all).
        """
        probes = list(self.probes)
        inflight = self.inflight
        if inflight is not None and inflight <= end:
            probes.append((inflight, time.time() - inflight, True))
        overlapping = [(at, lat, ok) for at, lat, ok in probes if at <= end and at + lat >= start]
        latencies = [lat for _, lat, ok in overlapping if ok]
        failed = sum(1 for _, _, ok in overlapping if not ok)
        inside = [s for s in self.samples if start <= s.at <= end]
        record: Record = {
            "healthz_n": len(latencies),
            "healthz_failed": failed,
            "healthz_p50": quantile(latencies, 0.5),
            "healthz_p99": quantile(latencies, 0.99),
            "healthz_max": max(latencies, default=None),
            "leader_cpu": None,
            "leader_rss_max_mb": max((s.leader_rss for s in inside), default=0) / 2**20 or None,
            "other_cpu": None,
            "machine_busy": None,
        }
        if len(inside) >= 2 and inside[-1].at > inside[0].at:
            first, last = inside[0], inside[-1]
            span = last.at - first.at
            record["leader_cpu"] = (last.leader_cpu - first.leader_cpu) / span
            if last.machine_total > first.machine_total:
                record["machine_busy"] = (last.machine_busy - first.machine_busy) / (
                    last.machine_total - first.machine_total
                )
            if other is not None:
                mine = [s for s in inside if other in s.others_cpu]
                if len(mine) >= 2 and mine[-1].at > mine[0].at:
                    record["other_cpu"] = (
                        mine[-1].others_cpu[other] - mine[0].others_cpu[other]
                    ) / (mine[-1].at - mine[0].at)
        return record


# Where each farm's sync root goes (``--sync-root-in``); None: beside its data folder.
SYNC_ROOT_IN: Path | None = None
# Wait for the disk to settle before each run (``disk_settle``); --no-settle: not.
SETTLE = True


def disk_ready(tmp: Path) -> float:
    """µs of CPU a new file costs where the sync root goes, once settled (``disk_settle``)."""
    if SYNC_ROOT_IN is not None:  # a tmpfs: nothing to wait for, and its probe is removed
        with tempfile.TemporaryDirectory(dir=SYNC_ROOT_IN) as probe:
            return create_cost_us(Path(probe))
    return settle(tmp, say) if SETTLE else create_cost_us(tmp)


class BenchFarm:
    """A leader subprocess on a fresh data folder, with its monitor; a context manager."""

    def __init__(self, folder: Path, toml: str) -> None:
        self.folder = folder
        # The sync root elsewhere (``--sync-root-in``): a tmpfs, to tell the leader's own
        # cost from what the disk charges for a chunk log (a new file every attempt).
        self.elsewhere = None if SYNC_ROOT_IN is None else Path(tempfile.mkdtemp(dir=SYNC_ROOT_IN))
        root = folder / "root" if self.elsewhere is None else self.elsewhere / "root"
        self.local = LocalFarm(folder / "data", root, port=free_port())
        self.local.data.mkdir(parents=True, exist_ok=True)
        if toml:
            (self.local.data / "leader.toml").write_text(toml, encoding="utf-8")
        self.monitor: Monitor | None = None
        self.env = load_env()
        self.env.update(
            FARM_LEADER=self.local.url,
            XDG_CONFIG_HOME=str(folder / "config"),
        )
        self.env.pop("FARM_TOKEN_FILE", None)

    @property
    def url(self) -> str:
        return self.local.url

    @property
    def log(self) -> Path:
        return self.local.logs / "leader.log"

    @property
    def pid(self) -> int:
        assert self.local.leader is not None
        return self.local.leader.process.pid

    def spawn_leader(self) -> float:
        """Start the leader without waiting; the moment it was started."""
        local = self.local
        args = [sys.executable, "-m", "farmtui", "leader", "--data", str(local.data)]
        args += ["--root", str(local.root), "--host", local.host, "--port", str(local.port)]
        local.logs.mkdir(parents=True, exist_ok=True)
        at = time.time()
        with open(self.log, "ab") as out:
            process = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        local.leader = Child("leader", process, self.log)
        if self.monitor is not None:
            self.monitor.follow(process.pid)
        return at

    def start(self) -> None:
        self.spawn_leader()
        self.local.wait_healthy(timeout=120)
        self.env["FARM_TOKEN"] = self.local.admin_token()
        self.monitor = Monitor(self.local.host, self.local.port, self.pid).__enter__()

    def kill9(self) -> float:
        leader = self.local.leader
        assert leader is not None
        at = time.time()
        leader.process.send_signal(signal.SIGKILL)
        leader.process.wait()
        return at

    def client(self, timeout: float = 120.0) -> FarmClient:
        return FarmClient(self.url, self.local.admin_token(), timeout=timeout)

    def beat_lags(self) -> BeatLags | None:
        """The leader's loop-lag histogram (``/metrics``) now; None if it did not answer."""
        try:
            response = httpx.get(
                f"{self.url}/metrics",
                headers={"Authorization": f"Bearer {self.local.admin_token()}"},
                timeout=60,
            )
            response.raise_for_status()
        except httpx.HTTPError as exc:
            say(f"  (/metrics did not answer: {exc})")
            return None
        return BeatLags.parse(response.text)

    def store_mb(self) -> float:
        data = self.local.data
        names = ("farm.db", "farm.db-wal", "farm.db-shm")
        return sum((data / n).stat().st_size for n in names if (data / n).exists()) / 2**20

    def log_offset(self) -> int:
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        with open(self.log, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", errors="replace")

    def __enter__(self) -> BenchFarm:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.monitor is not None:
            self.monitor.__exit__()
        self.local.stop(grace=15)
        if self.elsewhere is not None:
            shutil.rmtree(self.elsewhere, ignore_errors=True)


@dataclass(frozen=True)
class BeatLags:
    """The leader watchdog's beats by lateness: ``{upper bound: beats}`` (cumulative)."""

    buckets: dict[float, float]
    longest: float

    NAME = "farmtui_event_loop_beat_lag_seconds"

    @classmethod
    def parse(cls, text: str) -> BeatLags:
        buckets: dict[float, float] = {}
        longest = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == cls.NAME + "_bucket":
                    buckets[float(sample.labels["le"])] = sample.value
                elif sample.name == "farmtui_event_loop_longest_beat_lag_seconds":
                    longest = sample.value
        return cls(buckets, longest)

    def since(self, before: BeatLags) -> Record:
        """The loop's lag between two scrapes: beats late past 50 ms, and the worst.

        The worst is exact when it set the leader's record (its longest lag grew);
        otherwise the upper bound of the latest bucket any beat fell in.
        """
        grew = {
            bound: self.buckets[bound] - before.buckets.get(bound, 0.0) for bound in self.buckets
        }
        beats = grew.get(math.inf, 0.0)
        exact = self.longest > before.longest
        # Cumulative counts: the first bound that holds every beat bounds the worst.
        bound = next((b for b in sorted(grew) if grew[b] == beats), None)
        return {
            "beats": beats,
            "beats_late_over_50ms": beats - grew.get(TARGET_LOOP_LAG, 0.0),
            "loop_lag_max": self.longest if exact else bound,
            "loop_lag_max_exact": exact,
        }


LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ")


def stalls(log_text: str, start: float = 0.0, end: float = float("inf")) -> dict[str, Any]:
    """Loop stalls the leader logged that overlap ``start``-``end`` (``time.time()``).

    A watchdog's "stalled" lines and the tick's "blocked for N s": each is
    logged once the stall is over, so the stall is the N seconds before the
    line's time.
    """
    seconds: list[float] = []
    stack: list[str] = []
    lines = log_text.splitlines()
    for number, line in enumerate(lines):
        if not any(word in line for word in ("stalled", "blocked for", "paused the leader")):
            continue
        found = [
            float(value) / (1000.0 if unit == "ms" else 1.0)
            for value, unit in re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s)\b", line)
        ]
        if not found:
            continue
        stall = max(found)
        stamp = LOG_TIME.match(line)
        if stamp is not None:
            logged = time.mktime(time.strptime(stamp[1], "%Y-%m-%d %H:%M:%S")) + int(stamp[2]) / 1e3
            if logged < start or logged - stall > end:
                continue
        if stall > max(seconds, default=0.0):
            # The watchdog's stack of the longest stall: the indented lines after it.
            stack = [line]
            for after in lines[number + 1 : number + 40]:
                if not after.startswith(" "):
                    break
                stack.append(after)
        seconds.append(stall)
    return {
        "stall_lines": len(seconds),
        "stall_max_logged": max(seconds, default=None),
        "stall_max_stack": stack,
    }


def lost_nodes(log_text: str) -> int:
    return len(re.findall(r"node \S+ lost", log_text))


def dropped_log_writes(log_text: str) -> int:
    """Job and node log writes the leader dropped (its writer was behind its bounds):
    a rate bought by not writing the chunks' logs is not the farm's rate."""
    found = re.findall(r"(\d+) log writes dropped so far", log_text)
    return max(map(int, found), default=0)


def leader_events(log_text: str) -> dict[str, Any]:
    """The leader's own count of events and mean cost, logged when it stops."""
    found = re.findall(r"leader stopped \((\d+) events, mean ([\d.]+) ms\)", log_text)
    if not found:
        return {}
    events, mean = found[-1]
    return {"leader_events": int(events), "leader_event_mean_ms": float(mean)}


# --- py-spy -----------------------------------------------------------------------------


def profile_leader(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    """Start ``py-spy record`` of the leader (raw collapsed stacks); None without py-spy."""
    spy = shutil.which("py-spy")
    if spy is None:
        say("  (py-spy not found: pip install py-spy)")
        return None
    args = [spy, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--rate", "200"]
    args += ["--format", "raw", "--output", str(out), "--nonblocking", "--threads"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def top_functions(collapsed: Path, count: int = 15) -> Record:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    # The main (event loop) thread alone, by its name in py-spy's ``--threads``
    # stacks: the others (log writers, the watchdog) only share its GIL, and
    # their idle waits would read as the loop's.
    loop_own: Counter[str] = Counter()
    total = loop_total = 0
    for line in collapsed.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        frames = [_frame_name(frame) for frame in stack.split(";")]
        frames = [f for f in frames if f]
        if not frames:
            continue
        own[frames[-1]] += samples
        for name in set(frames):
            inclusive[name] += samples
        if stack.startswith("thread") and "MainThread" in stack.split(";", 1)[0]:
            loop_total += samples
            loop_own[frames[-1]] += samples
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "loop_share": round(100 * loop_total / total, 1),
        "loop_self": [
            (name, round(100 * n / max(1, loop_total), 1))
            for name, n in loop_own.most_common(count)
        ],
        "self": [(name, round(100 * n / total, 1)) for name, n in own.most_common(count)],
        # The leader's own functions only (the loop and the framework hold everything).
        "inclusive": [
            (name, round(100 * n / total, 1))
            for name, n in inclusive.most_common()
            if "(server/" in name
        ][:count],
    }


def _frame_name(frame: str) -> str:
    """``func (path/to/server/x.py:12)`` -> ``func (server/x.py)``."""
    match = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", frame.strip())
    if match is None:
        return frame.strip()
    name, path = match.groups()
    parts = Path(path).parts
    for anchor in ("server", "farmtui", "agent", "site-packages", "python3.11"):
        if anchor in parts:
            parts = parts[parts.index(anchor) + (anchor in ("site-packages",)) :]
            break
    else:
        parts = parts[-2:]
    return f"{name} ({'/'.join(parts)})"


# --- (a) (b) (c): dispatch and completion with simulated agents ------------------------


@dataclass(frozen=True)
class Shape:
    key: str
    jobs: int
    chunks: int
    agents: int
    slots: int = SLOTS
    # The simulated agents send and read batches, as the real agent does.
    batches: bool = True
    # Chunks each simulated agent takes ahead of its slots (None: as many as its
    # slots, the real agent's default; 0: none, as before agents took any).
    prefetch: int | None = None
    # The scheduling rules at work on every chunk (issue 13): each asks for a GPU
    # (every slot has one) and a unit of a limit (one per slot: counted, never
    # short), and every second job follows the one before it frame by frame.
    rules: bool = False

    def label(self) -> str:
        job = f"{self.jobs:,} job" + ("s" if self.jobs != 1 else "")
        rules = ", with GPUs, a limit and frame-by-frame dependencies" if self.rules else ""
        return (
            f"{job} × {self.chunks:,} one-frame chunks, {self.agents} agents × {self.slots} slots"
            f"{rules}"
        )


def submit_load(farm: BenchFarm, shape: Shape, cap: float) -> tuple[list[str], float, int]:
    """Submit the jobs one after another; their ids, the time taken, the chunks submitted."""
    ids: list[str] = []
    began = time.perf_counter()
    with farm.client(timeout=max(cap, 30.0)) as client:
        if shape.rules:
            client.set_limit(RULES_LIMIT, shape.agents * shape.slots)
        for index in range(shape.jobs):
            if time.perf_counter() - began > cap:
                break
            rules: dict[str, Any] = {}
            if shape.rules:
                rules = {"gpus": 1, "limits": [RULES_LIMIT]}
                if index % 2:
                    rules.update(after=[ids[-1]], after_frames=True)
            spec = JobSpec(
                name=f"scale-{shape.key}-{index}",
                frames=f"1-{shape.chunks}",
                chunk=1,
                renderer="generic",
                argv=[TRUE],
                staging=False,
                **rules,
            )
            ids.append(client.submit(spec).id)
    return ids, time.perf_counter() - began, len(ids) * shape.chunks


def leader_done(farm: BenchFarm, ids: list[str], timeout: float) -> int | None:
    """Chunks done across ``ids`` as the leader's job list says (None: no answer in time)."""
    wanted = set(ids)
    try:
        with farm.client(timeout=timeout) as client:
            return sum(j.stats.chunks_done for j in client.jobs(True) if j.id in wanted)
    except (FarmError, httpx.HTTPError) as exc:  # a stalled leader must not lose the figures
        say(f"  (the leader's job list did not answer: {exc})")
        return None


def run_sim(
    farm: BenchFarm, shape: Shape, expect: int, cap: float, out: Path
) -> tuple[SimReport, int]:
    """Simulated agents in their own process until ``expect`` completions or ``cap`` s."""
    assert farm.monitor is not None
    args = [sys.executable, "-m", "tests.helpers.sim_agents", "--leader", farm.url]
    args += ["--token-file", str(farm.local.agent_token_file), "--agents", str(shape.agents)]
    args += ["--slots", str(shape.slots), "--expect", str(expect), "--cap", str(cap)]
    args += ["--out", str(out)] + ([] if shape.batches else ["--no-batches"])
    if shape.prefetch is not None:
        args += ["--prefetch", str(shape.prefetch)]
    if shape.rules:
        args += ["--gpus", str(shape.slots)]
    process = subprocess.Popen(args, cwd=REPO, env=load_env(), start_new_session=True)
    farm.monitor.others.add(process.pid)
    try:
        process.wait(timeout=cap + 120)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    finally:
        stop_processes([process], grace=5)
        farm.monitor.others.discard(process.pid)
    return msgspec.json.decode(out.read_bytes(), type=SimReport), process.pid


def dispatch_run(
    shape: Shape, cap: float, run: int, tmp: Path, toml: str, profile: Path | None = None
) -> Record:
    create_us = disk_ready(tmp)
    with BenchFarm(tmp / f"{shape.key}-{run}", toml) as farm:
        farm.start()
        ids, submit_s, total = submit_load(farm, shape, cap)
        assert farm.monitor is not None
        # The submit may have stalled the leader: start once it answers again.
        farm.monitor.wait_answer(time.time(), cap)
        offset = farm.log_offset()
        spy = profile_leader(farm.pid, min(cap, 30), profile) if profile is not None else None
        lags_before = farm.beat_lags()
        report, pid = run_sim(farm, shape, total, cap, tmp / "sim.json")
        lags_after = farm.beat_lags()
        if spy is not None:
            spy.wait(timeout=120)
        done = leader_done(farm, ids, timeout=max(cap, 30.0))
        # Now, so that a probe that waited through the end of the run has its answer.
        start = report.first_assign or report.started
        end = (report.last_completion if report.finished else None) or report.stopped
        window = farm.monitor.window(start, end, other=pid)
        store = farm.store_mb()
    text = farm.log_since(offset)  # the leader has stopped: its "leader stopped" line too
    record: Record = {
        "jobs_submitted": len(ids),
        "chunks": total,
        "submit_s": submit_s,
        "completions": report.completions,
        "rate": report.rate,
        "finished": report.finished,
        "elapsed_s": ((report.last_completion if report.finished else None) or report.stopped)
        - (report.first_assign or report.started),
        "leader_chunks_done": done,
        "harness_cpu": window.pop("other_cpu"),
        "create_us": create_us,
        "store_mb": store,
        "lost_in_log": lost_nodes(text),
        "log_writes_dropped": dropped_log_writes(text),
        **window,
        **stalls(text, report.first_assign or report.started, report.stopped),
        **(lags_after.since(lags_before) if lags_before and lags_after else {}),
        **leader_events(text),
        "gc_pauses": [line for line in text.splitlines() if "garbage collector" in line][:20],
        "sim": {k: v for k, v in msgspec.structs.asdict(report).items() if k != "per_second"},
        "per_second": report.per_second,
    }
    return record


# --- (d): /bin/true through one real agent, against xargs -P2 --------------------------


def run_xargs(commands: int) -> float:
    lines = "".join(f"{i}\n" for i in range(commands)).encode()
    began = time.perf_counter()
    subprocess.run(["xargs", "-P2", "-I{}", TRUE], input=lines, check=True)
    return time.perf_counter() - began


def run_true_job(client: FarmClient, commands: int, cap: float, name: str) -> Record:
    """Submit → finish (the leader's clock), polling the job list every 250 ms."""
    spec = JobSpec(
        name=name, frames=f"1-{commands}", chunk=1, renderer="generic", argv=[TRUE], staging=False
    )
    began = time.time()
    job = client.submit(spec)
    deadline = time.monotonic() + cap
    view = job
    while view.state not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.25)
        view = next((j for j in client.jobs(True) if j.id == job.id), view)
    finished = view.state == "done" and view.finished is not None
    elapsed = (view.finished - began) if finished and view.finished else time.time() - began
    return {
        "finished": finished,
        "done": view.stats.chunks_done,
        "seconds": elapsed,
        "leader_seconds": (view.finished - view.created) if view.finished else None,
        "rate": view.stats.chunks_done / elapsed if elapsed > 0 else None,
        "job_id": job.id,
    }


def true_runs(commands: int, runs: int, cap: float, tmp: Path, toml: str) -> list[Record]:
    records: list[Record] = []
    with BenchFarm(tmp / "d", toml) as farm:
        farm.start()
        agent = farm.local.start_agent(1, slots=2, name="bench-agent")
        farm.local.wait_nodes_online([agent.name], timeout=60)
        assert farm.monitor is not None
        farm.monitor.others.add(agent.process.pid)
        with farm.client() as client:
            run_xargs(10)  # warm-up, not counted
            run_true_job(client, 10, cap, "warm-up")
            for run in range(1, runs + 1):
                create_us = disk_ready(tmp)
                xargs_s = run_xargs(commands)
                offset = farm.log_offset()
                began = time.time()
                record = run_true_job(client, commands, cap, f"true-{run}")
                window = farm.monitor.window(began, time.time(), other=agent.process.pid)
                record.update(
                    xargs_s=xargs_s,
                    xargs_rate=commands / xargs_s,
                    commands=commands,
                    agent_cpu=window.pop("other_cpu"),
                    create_us=create_us,
                    **window,
                    **stalls(farm.log_since(offset), began, time.time()),
                )
                # The job is kept, not deleted: its thousand chunk logs deleted would make
                # every new file dearer for minutes (``disk_settle``), the next run's too.
                records.append(record)
                say(
                    f"  run {run}: farm {_num(record['rate'])}/s "
                    f"({record['done']}/{commands} in {record['seconds']:.2f} s), "
                    f"xargs -P2 {_num(record['xargs_rate'])}/s, a new file {create_us:.0f} µs"
                )
    return records


# --- (e): 200 readers of the job list and one submitter ----------------------------------


async def _read_forever(
    host: str,
    port: int,
    request: bytes,
    samples: list[tuple[float, float, int]],
    ready: set[int],
    index: int,
) -> None:
    """One keep-alive connection reading GET /api/jobs in a loop (a minimal HTTP/1.1 client)."""
    while True:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        try:
            while True:
                began = time.perf_counter()
                writer.write(request)
                await writer.drain()
                status = int((await reader.readline()).split()[1])
                length, chunked = 0, False
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    key, _, value = line.partition(b":")
                    key = key.strip().lower()
                    if key == b"content-length":
                        length = int(value)
                    elif key == b"transfer-encoding" and b"chunked" in value.lower():
                        chunked = True
                size = 0
                if chunked:
                    while (piece := int((await reader.readline()).split(b";")[0], 16)) > 0:
                        size += len(await reader.readexactly(piece + 2)) - 2
                    await reader.readline()
                else:
                    size = len(await reader.readexactly(length))
                samples.append((time.time(), time.perf_counter() - began, status))
                ready.add(index)
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            samples.append((time.time(), 0.0, 0))
        finally:
            writer.close()


async def _readers(args: argparse.Namespace, token: str) -> list[tuple[float, float, int]]:
    """Read until SIGTERM or ``args.seconds``; touch ``args.ready`` once every reader has read."""
    request = (
        f"GET /api/jobs HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        f"Authorization: Bearer {token}\r\nAccept: application/json\r\n\r\n"
    ).encode()
    samples: list[tuple[float, float, int]] = []
    ready: set[int] = set()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tasks = [
        asyncio.create_task(_read_forever(args.host, args.port, request, samples, ready, i))
        for i in range(args.count)
    ]
    deadline = loop.time() + args.seconds
    told = False
    while not stop.is_set() and loop.time() < deadline:
        if len(ready) == args.count and not told:
            told = True
            await asyncio.to_thread(Path(args.ready).write_text, "ready", encoding="utf-8")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return samples


def readers_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="scale.py _readers")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--token-file", required=True)
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--ready", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    token = Path(args.token_file).read_text(encoding="utf-8").strip()
    samples = asyncio.run(_readers(args, token))
    Path(args.out).write_text(json.dumps(samples), encoding="utf-8")
    return 0


def readers_run(readers: int, submits: int, cap: float, run: int, tmp: Path, toml: str) -> Record:
    folder = tmp / f"e-{run}"
    with BenchFarm(folder, toml) as farm:
        farm.start()
        assert farm.monitor is not None
        ready, out = folder / "readers.ready", folder / "readers.json"
        args = [sys.executable, str(Path(__file__).resolve()), "_readers"]
        args += ["--host", farm.local.host, "--port", str(farm.local.port)]
        args += ["--token-file", str(farm.local.admin_token_file), "--count", str(readers)]
        args += ["--seconds", str(cap + 120), "--ready", str(ready), "--out", str(out)]
        process = subprocess.Popen(args, cwd=REPO, env=load_env(), start_new_session=True)
        farm.monitor.others.add(process.pid)
        offset = farm.log_offset()
        latencies: list[float] = []
        began = ended = time.time()
        try:
            deadline = time.monotonic() + 60
            while not ready.exists() and time.monotonic() < deadline and process.poll() is None:
                time.sleep(0.05)
            began = time.time()
            with farm.client(timeout=max(cap, 30.0)) as client:
                for index in range(submits):
                    if time.time() - began > cap:
                        break
                    t0 = time.perf_counter()
                    spec = JobSpec(
                        name=f"scale-e-{index}", frames="1-100", chunk=1, argv=[TRUE],
                        staging=False,
                    )  # fmt: skip
                    client.submit(spec)
                    latencies.append(time.perf_counter() - t0)
            ended = time.time()
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                stop_processes([process], grace=1)
        window = farm.monitor.window(began, ended, other=process.pid)
        samples = json.loads(out.read_text(encoding="utf-8")) if out.exists() else []
        text = farm.log_since(offset)
    reads = [lat for at, lat, status in samples if began <= at <= ended and status == 200]
    errors = sum(1 for at, _, status in samples if began <= at <= ended and status != 200)
    span = ended - began
    return {
        "readers": readers,
        "submits_target": submits,
        "submits": len(latencies),
        "finished": len(latencies) == submits,
        "elapsed_s": span,
        "submits_per_s": len(latencies) / span if span > 0 else None,
        "submit_p50": quantile(latencies, 0.5),
        "submit_p99": quantile(latencies, 0.99),
        "reads": len(reads),
        "read_errors": errors,
        "reads_per_s": len(reads) / span if span > 0 else None,
        "read_p50": quantile(reads, 0.5),
        "read_p99": quantile(reads, 0.99),
        "readers_cpu": window.pop("other_cpu"),
        **window,
        **stalls(text, began, ended),
    }


# --- (f) and (g): a 1,000,000-frame job --------------------------------------------------


def big_job_run(
    frames: int, cap: float, run: int, tmp: Path, toml: str, f: bool, g: bool
) -> Record:
    folder = tmp / f"fg-{run}"
    record: Record = {"frames": frames}
    with BenchFarm(folder, toml) as farm:
        farm.start()
        assert farm.monitor is not None
        time.sleep(1.0)  # a second of quiet probes before the POST: the baseline latency
        offset = farm.log_offset()
        spec = JobSpec(name="scale-big", frames=f"1-{frames}", chunk=1, argv=[TRUE], staging=False)
        began = time.time()
        try:
            answer = httpx.post(
                f"{farm.url}/api/jobs",
                content=msgspec.json.encode(spec),
                headers={
                    "Authorization": f"Bearer {farm.local.admin_token()}",
                    "Content-Type": "application/json",
                },
                timeout=cap,
            )
            answer.raise_for_status()
            job_id = answer.json()["id"]
        except httpx.HTTPError as exc:
            record.update(finished=False, error=f"POST: {exc}", ack_s=time.time() - began)
            return record
        acked = time.time()
        # The probe that waited through the POST has its answer once the leader is back.
        farm.monitor.wait_answer(acked, cap)
        window = farm.monitor.window(began, acked)
        record.update(
            finished=True,
            ack_s=acked - began,
            stall_probe_max=window["healthz_max"],
            post_healthz_p99=window["healthz_p99"],
            post_leader_cpu=window["leader_cpu"],
        )
        # Let the leader settle (commit, background work) before measuring it at rest.
        farm.monitor.probes.clear()
        time.sleep(1.0)
        if f:
            record.update(show_job(farm, job_id, cap))
            record["store_mb"] = farm.store_mb()
            record["rss_mb"] = psutil.Process(farm.pid).memory_info().rss / 2**20
        logged = stalls(farm.log_since(offset), began, acked)
        record.update({f"post_{k}": v for k, v in logged.items()})
        if g:
            record.update(restart(farm, cap))
    return record


def show_job(farm: BenchFarm, job_id: str, cap: float) -> Record:
    """GET /api/jobs/{id} and ``farm show`` of the big job: time and size."""
    record: Record = {}
    began = time.perf_counter()
    try:
        answer = httpx.get(
            f"{farm.url}/api/jobs/{job_id}",
            headers={"Authorization": f"Bearer {farm.local.admin_token()}"},
            timeout=cap,
        )
        record["get_s"] = time.perf_counter() - began
        record["get_mb"] = len(answer.content) / 2**20
    except httpx.HTTPError as exc:
        record["get_error"] = str(exc)
    # The CLI's own start-up and one small request, to tell apart from the show itself.
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "farmtui", "whoami"],
        capture_output=True, env=farm.env, timeout=cap, check=False,
    )  # fmt: skip
    record["cli_floor_s"] = time.perf_counter() - began
    with tempfile.TemporaryFile() as out:
        began = time.perf_counter()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "farmtui", "show", job_id],
                stdout=out,
                stderr=subprocess.PIPE,
                env=farm.env,
                timeout=cap,
                check=False,
            )
            record["show_s"] = time.perf_counter() - began
            record["show_mb"] = out.tell() / 2**20
            if done.returncode != 0:
                record["show_error"] = done.stderr.decode(errors="replace").strip()[-300:]
        except subprocess.TimeoutExpired:
            record["show_s"] = None
            record["show_error"] = f"did not finish in {cap:g} s"
    return record


def restart(farm: BenchFarm, cap: float) -> Record:
    """kill -9, restart at once; kill → /healthz, and → the first assignment to an agent."""
    killed = farm.kill9()
    spawned = farm.spawn_leader()
    healthy: float | None = None
    token = farm.local.agent_token_file.read_text(encoding="utf-8").strip()

    async def measure() -> float | None:
        nonlocal healthy

        async def poll_health() -> None:
            nonlocal healthy
            # Refused while nobody listens: try again in 10 ms; once it listens, wait.
            async with httpx.AsyncClient(timeout=httpx.Timeout(cap, connect=1.0)) as http:
                while True:
                    with contextlib.suppress(httpx.HTTPError):
                        if (await http.get(f"{farm.url}/healthz")).status_code == 200:
                            healthy = time.time()
                            return
                    await asyncio.sleep(0.01)

        # A node that reconnects as soon as the leader listens (backoff of 50 ms at most).
        swarm = Swarm(farm.url, token, 1, 1, prefix="restart", reconnect_max=0.05)
        async with swarm:
            health = asyncio.create_task(poll_health())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(cap):
                    await swarm.wait_completions(1, within=cap)
                    await health
            health.cancel()
        return swarm.tally.first_assign

    assigned = asyncio.run(measure())
    rss = psutil.Process(farm.pid).memory_info().rss / 2**20 if farm.local.leader else None
    return {
        "restart_finished": assigned is not None,
        "kill_to_healthz_s": None if healthy is None else healthy - killed,
        "healthz_to_dispatch_s": None if healthy is None or assigned is None
        else assigned - healthy,
        "kill_to_dispatch_s": None if assigned is None else assigned - killed,
        "spawn_to_dispatch_s": None if assigned is None else assigned - spawned,
        "restart_rss_mb": rss,
    }  # fmt: skip


# --- figures ---------------------------------------------------------------------------


def median(records: list[Record], key: str) -> float | None:
    values = [r[key] for r in records if isinstance(r.get(key), int | float)]
    return statistics.median(values) if values else None


def span(records: list[Record], key: str) -> tuple[float, float] | None:
    values = [r[key] for r in records if isinstance(r.get(key), int | float)]
    return (min(values), max(values)) if values else None


def summarize(records: list[Record]) -> Record:
    """Medians of every number, and the min-max of a few."""
    keys = dict.fromkeys(k for r in records for k, v in r.items() if isinstance(v, int | float))
    summary: Record = {"runs": len(records)}
    for key in keys:
        if isinstance(records[0].get(key), bool):
            summary[key] = sum(bool(r.get(key)) for r in records)
        else:
            summary[key] = median(records, key)
            summary[f"{key}_range"] = span(records, key)
    return summary


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def _ms(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value * 1000:,.0f} ms" if value < 1 else f"{value:.2f} s"


def _mb(value: float | None) -> str:
    return "–" if value is None else f"{value:,.1f} MB"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.0f}%"


def _range(summary: Record, key: str, fmt: Callable[[float | None], str]) -> str:
    middle = fmt(summary.get(key))
    bounds = summary.get(f"{key}_range")
    if summary["runs"] > 1 and bounds and bounds[0] != bounds[1]:
        return f"{middle} ({fmt(bounds[0])}–{fmt(bounds[1])})"
    return middle


def unfinished(
    summary: Record, done: str, total: str, what: str = "", elapsed: str = "elapsed_s"
) -> str:
    """Nothing when every run finished; else "; did not finish: N of M in T s" (medians)."""
    if summary.get("finished") == summary["runs"]:
        return ""
    return (
        f"; did not finish: {_num(summary.get(done))} of {_num(summary.get(total))}{what} "
        f"in {_num(summary.get(elapsed))} s"
    )


def rows(results: Record) -> list[tuple[str, str, str, str, str]]:
    """(load, result, /healthz p50 / p99, leader CPU, stalls / lost / doubles) per scenario."""
    table = []
    for key in ("a", "b", "c1", "c2", "ar", "br"):
        if key not in results:
            continue
        s = results[key]["summary"]
        result = _range(s, "rate", _num) + " chunks/s" + unfinished(s, "completions", "chunks")
        if s.get("harness_cpu") and s["harness_cpu"] > 0.9:
            result += f" (harness at {_pct(s['harness_cpu'])} of a core)"
        health = f"{_ms(s.get('healthz_p50'))} / {_ms(s.get('healthz_p99'))}"
        faults = sum(
            int(s.get(k) or 0)
            for k in ("lost_in_log", "told_lost", "attempt_on_two_agents", "rerendered")
        )
        notes = (
            f"probe max {_ms(s.get('healthz_max'))}; loop lag max {_ms(s.get('loop_lag_max'))} "
            f"({_num(s.get('beats_late_over_50ms'))} beats late > 50 ms); "
            f"logged {_ms(s.get('stall_max_logged'))}; "
            f"lost/doubles {faults}; lease lapses {_num(s.get('lease_lapses'))}; "
            f"log writes dropped {_num(s.get('log_writes_dropped'))}; "
            f"machine busy {_pct(s.get('machine_busy'))}"
        )
        table.append((results[key]["label"], result, health, _range(s, "leader_cpu", _pct), notes))
    if "d" in results:
        s = results["d"]["summary"]
        result = (
            f"{_range(s, 'rate', _num)} tasks/s (xargs -P2: {_num(s.get('xargs_rate'))}/s)"
            + unfinished(s, "done", "commands", " tasks", "seconds")
        )
        health = f"{_ms(s.get('healthz_p50'))} / {_ms(s.get('healthz_p99'))}"
        table.append(
            (results["d"]["label"], result, health, _pct(s.get("leader_cpu")),
             f"agent CPU {_pct(s.get('agent_cpu'))}; machine busy {_pct(s.get('machine_busy'))}")
        )  # fmt: skip
    if "e" in results:
        s = results["e"]["summary"]
        result = (
            f"{_range(s, 'reads_per_s', _num)} reads/s, read p50 {_ms(s.get('read_p50'))} / "
            f"p99 {_ms(s.get('read_p99'))}; {_num(s.get('submits'))} of "
            f"{_num(s.get('submits_target'))} submits in {_num(s.get('elapsed_s'))} s"
        )
        health = f"{_ms(s.get('healthz_p50'))} / {_ms(s.get('healthz_p99'))}"
        table.append(
            (results["e"]["label"], result, health, _pct(s.get("leader_cpu")),
             f"readers CPU {_pct(s.get('readers_cpu'))}; "
             f"machine busy {_pct(s.get('machine_busy'))}")
        )  # fmt: skip
    if "f" in results:
        s = results["f"]["summary"]
        result = (
            f"acknowledged in {_ms(s.get('ack_s'))}; loop stalled {_ms(s.get('stall_probe_max'))}; "
            f"GET of it {_num(s.get('get_mb'), 1)} MB in {_ms(s.get('get_s'))}; `farm show` "
            f"{_num(s.get('show_mb'), 1)} MB in {_ms(s.get('show_s'))} "
            f"(`farm whoami`: {_ms(s.get('cli_floor_s'))}); "
            f"RSS {_num(s.get('rss_mb'))} MB; store {_num(s.get('store_mb'), 1)} MB"
        )
        if s.get("finished") != s["runs"]:
            result += f"; POST did not finish in {_num(s.get('ack_s'))} s"
        table.append(
            (results["f"]["label"], result, "", _pct(s.get("post_leader_cpu")),
             f"logged {_ms(s.get('post_stall_max_logged'))}")
        )  # fmt: skip
    if "g" in results:
        s = results["g"]["summary"]
        result = (
            f"kill → dispatching {_range(s, 'kill_to_dispatch_s', _ms)} "
            f"(kill → /healthz {_ms(s.get('kill_to_healthz_s'))}, /healthz → first assignment "
            f"{_ms(s.get('healthz_to_dispatch_s'))}); RSS after restart "
            f"{_num(s.get('restart_rss_mb'))} MB"
        )
        if s.get("restart_finished") != s["runs"]:
            result += f"; no dispatch within the cap in {s['runs'] - s['restart_finished']} run(s)"
        table.append((results["g"]["label"], result, "", "", ""))
    return table


def markdown(table: list[tuple[str, str, str, str, str]]) -> str:
    lines = [
        "| load | result | GET /healthz p50 / p99 during it | leader CPU | stalls, faults |",
        "|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table]
    return "\n".join(lines)


def targets(results: Record) -> list[str]:
    """One verdict line per target of issue 10 that this run measured."""
    lines = []

    def verdict(ok: bool) -> str:
        return "pass" if ok else "FAIL"

    for key in ("c1", "c2"):
        if key in results:
            s = results[key]["summary"]
            rate, p99 = s.get("rate") or 0.0, s.get("healthz_p99")
            lines.append(
                f"{key}: >= {TARGET_RATE:,.0f} chunks/s with 300 agents: {_num(rate)}: "
                f"{verdict(rate >= TARGET_RATE)}; /healthz p99 <= 50 ms: {_ms(p99)}: "
                f"{verdict(p99 is not None and p99 <= TARGET_HEALTHZ_P99)}"
            )
            worst = (s.get("loop_lag_max_range") or (None, None))[1]
            lines.append(
                f"{key}: no loop lag over 50 ms (the watchdog's beats, worst run): {_ms(worst)}: "
                f"{verdict(worst is not None and worst <= TARGET_LOOP_LAG)}"
            )
    for key in ("a", "b", "c1", "c2", "ar", "br"):
        if key in results:
            s = results[key]["summary"]
            faults = sum(
                int(s.get(k) or 0)
                for k in ("lost_in_log", "told_lost", "attempt_on_two_agents", "rerendered")
            )
            lines.append(f"{key}: no node lost, no attempt on two agents: {verdict(faults == 0)}")
            dropped = int(s.get("log_writes_dropped") or 0)
            lines.append(
                f"{key}: every chunk's log written ({dropped} dropped): {verdict(not dropped)}"
            )
    if "d" in results:
        rate = results["d"]["summary"].get("rate") or 0.0
        lines.append(
            f"d: >= {TARGET_TRUE_RATE:,.0f} tasks/s through 1 agent × 2 slots: {_num(rate)}: "
            f"{verdict(rate >= TARGET_TRUE_RATE)}"
        )
    if "e" in results:
        s = results["e"]["summary"]
        reads, p99 = s.get("reads_per_s") or 0.0, s.get("read_p99")
        ok = reads >= TARGET_READS and p99 is not None and p99 <= TARGET_READ_P99
        lines.append(
            f"e: >= {TARGET_READS:,.0f} reads/s with p99 <= 100 ms: {_num(reads)}/s, "
            f"{_ms(p99)}: {verdict(ok)}"
        )
    if "f" in results:
        s = results["f"]["summary"]
        checks = [
            ("acknowledged <= 1 s", s.get("ack_s"), TARGET_ACK, _ms),
            ("store <= 50 MB", s.get("store_mb"), TARGET_STORE_MB, _mb),
            ("RSS <= 300 MB", s.get("rss_mb"), TARGET_RSS_MB, _mb),
            ("farm show <= 0.2 s", s.get("show_s"), TARGET_SHOW, _ms),
        ]
        for what, value, limit, fmt in checks:
            ok = value is not None and value <= limit
            lines.append(f"f: {what}: {fmt(value)}: {verdict(ok)}")
    if "g" in results:
        value = results["g"]["summary"].get("kill_to_dispatch_s")
        ok = value is not None and value <= TARGET_RESTART
        lines.append(f"g: kill -9 → dispatching <= 2 s: {_ms(value)}: {verdict(ok)}")
    return lines


# --- main ------------------------------------------------------------------------------

SCENARIOS = ("a", "b", "c1", "c2", "d", "e", "f", "g", "ar", "br")


def git_commit() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def leader_code() -> str:
    """Where a child started as the leader is imports ``server`` from (this checkout?)."""
    done = subprocess.run(
        [sys.executable, "-c", "import server; print(server.__file__)"],
        capture_output=True, text=True, env=load_env(), check=False,
    )  # fmt: skip
    return done.stdout.strip() or done.stderr.strip()[-200:]


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_readers":
        return readers_main(sys.argv[2:])
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cap", type=float, default=120.0, help="seconds per scenario run")
    parser.add_argument(
        "--big-cap", type=float, default=180.0, help="seconds per step of f and g (one POST ...)"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every size")
    parser.add_argument("--agents", type=int, default=10, help="agents for a and b")
    parser.add_argument("--many-agents", type=int, default=300, help="agents for c1 and c2")
    parser.add_argument("--heartbeat", type=float, help="leader.toml heartbeat_interval")
    parser.add_argument("--node-timeout", type=float, help="leader.toml node_timeout")
    parser.add_argument("--profile", action="store_true", help="py-spy the leader in one extra run")
    parser.add_argument(
        "--no-batches",
        action="store_true",
        help="simulated agents send one message a frame, compressed (the protocol before batches)",
    )
    parser.add_argument(
        "--prefetch",
        type=int,
        help="chunks each simulated agent takes ahead (default: the real agent's)",
    )
    parser.add_argument(
        "--sync-root-in",
        type=Path,
        help="make each farm's sync root in this folder (a tmpfs: no disk cost for its logs)",
    )
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="do not wait for new files to be cheap on the disk again (disk_settle.py)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="leave the farms' folder in place (printed) rather than delete it at the end: "
        "deleted, its files make the next minutes' new files dearer (disk_settle.py)",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scale.json")
    parser.add_argument(
        "--merge", action="store_true", help="keep the other scenarios already in --out"
    )
    args = parser.parse_args()
    global SYNC_ROOT_IN, SETTLE
    SYNC_ROOT_IN = args.sync_root_in
    SETTLE = not args.no_settle
    # Every child (leader, agents, farm show, the harness) runs this checkout's code.
    os.environ["PYTHONPATH"] = load_env()["PYTHONPATH"]
    code = leader_code()
    load_before = os.getloadavg()
    say(f"commit {git_commit()}; the leader runs {code}")
    chosen = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {', '.join(sorted(unknown))}; known: {SCENARIOS}")

    scale: float = args.scale

    def sized(count: int) -> int:
        return max(1, round(count * scale))

    toml = ""
    if args.heartbeat is not None:
        toml += f"heartbeat_interval = {args.heartbeat}\n"
    if args.node_timeout is not None:
        toml += f"node_timeout = {args.node_timeout}\n"
    sim = {"batches": not args.no_batches, "prefetch": args.prefetch}
    shapes = {
        "a": Shape("a", 1, sized(100_000), args.agents, **sim),
        "b": Shape("b", sized(1_000), 100, args.agents, **sim),
        "c1": Shape("c1", 1, sized(100_000), args.many_agents, **sim),
        "c2": Shape("c2", sized(1_000), 100, args.many_agents, **sim),
        # a and b again, under the rules: their rate beside a's and b's.
        "ar": Shape("ar", 2, sized(50_000), args.agents, rules=True, **sim),
        "br": Shape("br", sized(1_000), 100, args.agents, rules=True, **sim),
    }
    commands, submits, frames = sized(1_000), sized(1_000), sized(1_000_000)
    results: Record = {}
    profile: Record | None = None
    with contextlib.ExitStack() as stack:
        if args.keep:
            folder = tempfile.mkdtemp(prefix="farm-scale-")
            say(f"the farms are kept in {folder}")
        else:
            folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="farm-scale-"))
        tmp = Path(folder)
        for key in [k for k in chosen if k in shapes]:
            shape = shapes[key]
            say(f"{key}: {shape.label()}, cap {args.cap:g} s")
            records = []
            for run in range(1, args.runs + 1):
                record = dispatch_run(shape, args.cap, run, tmp, toml)
                records.append(record)
                say(
                    f"  run {run}: {_num(record['rate'])} chunks/s, "
                    f"{record['completions']:,}/{record['chunks']:,} in "
                    f"{record['elapsed_s']:.1f} s (submit {record['submit_s']:.1f} s), "
                    f"/healthz p50 {_ms(record['healthz_p50'])} p99 {_ms(record['healthz_p99'])}, "
                    f"leader CPU {_pct(record['leader_cpu'])}, "
                    f"harness CPU {_pct(record['harness_cpu'])}, "
                    f"machine busy {_pct(record['machine_busy'])}, "
                    f"problems {record['sim']['problems'][:3]}, "
                    f"log writes dropped {record['log_writes_dropped']:,}, "
                    f"a new file {record['create_us']:.0f} µs"
                )
                for line in [*record.get("stall_max_stack", [])[:25], *record["gc_pauses"][:5]]:
                    say(f"    | {line}")
            results[key] = {"label": shape.label(), "shape": shape.__dict__, "runs": records}
            results[key]["summary"] = summarize([_flat(r) for r in records])
            if args.profile and profile is None:
                say(f"  profiling the leader with py-spy during an extra run of {key}")
                raw = tmp / "profile.txt"
                dispatch_run(shape, min(args.cap, 30.0), 0, tmp, toml, profile=raw)
                profile = {"scenario": key, **(top_functions(raw) if raw.exists() else {})}
                if raw.exists():  # py-spy's collapsed stacks, for a flame graph or a closer look
                    kept = args.out.parent / f"profile-{key}.txt"
                    kept.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(raw, kept)
                    say(f"  the stacks: {kept}")
                for name, share in profile.get("self", [])[:15]:
                    say(f"    {share:5.1f}% self  {name}")
                say(f"  the event loop's thread: {profile.get('loop_share', 0)}% of the samples")
                for name, share in profile.get("loop_self", [])[:15]:
                    say(f"    {share:5.1f}% of the loop's  {name}")
        if "d" in chosen:
            label = f"{commands:,} × `/bin/true` through 1 real agent × 2 slots"
            say(f"d: {label}, cap {args.cap:g} s")
            records = true_runs(commands, args.runs, args.cap, tmp, toml)
            results["d"] = {"label": label, "runs": records, "summary": summarize(records)}
        if "e" in chosen:
            label = f"200 readers of the job list + 1 submitter ({submits:,} jobs of 100 chunks)"
            say(f"e: {label}, cap {args.cap:g} s")
            records = []
            for run in range(1, args.runs + 1):
                record = readers_run(200, submits, args.cap, run, tmp, toml)
                records.append(record)
                say(
                    f"  run {run}: {_num(record['reads_per_s'])} reads/s "
                    f"(p99 {_ms(record['read_p99'])}), {record['submits']}/{submits} submits "
                    f"in {record['elapsed_s']:.1f} s, /healthz p99 {_ms(record['healthz_p99'])}"
                )
            results["e"] = {"label": label, "runs": records, "summary": summarize(records)}
        if "f" in chosen or "g" in chosen:
            say(f"f/g: one POST of --frames 1-{frames}, cap {args.big_cap:g} s a step")
            records = []
            for run in range(1, args.runs + 1):
                record = big_job_run(
                    frames, args.big_cap, run, tmp, toml, "f" in chosen, "g" in chosen
                )
                records.append(record)
                say(f"  run {run}: {json.dumps(_rounded(record))}")
            summary = summarize(records)
            if "f" in chosen:
                label = f"one `POST /api/jobs` of `--frames 1-{frames}`"
                results["f"] = {"label": label, "runs": records, "summary": summary}
            if "g" in chosen:
                label = f"leader kill -9 → restart → dispatching, {frames:,} frames in the store"
                results["g"] = {"label": label, "runs": records, "summary": summary}

    for key, result in results.items():
        result.update(
            commit=git_commit(),
            cap_s=args.big_cap if key in ("f", "g") else args.cap,
            scale=args.scale,
            when=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        )
    if args.merge and args.out.exists():
        before = json.loads(args.out.read_text(encoding="utf-8"))
        earlier = before.get("results", {})
        results = {**{k: v for k, v in earlier.items() if k not in results}, **results}
        profile = profile or before.get("profile")
        results = {k: results[k] for k in SCENARIOS if k in results}
    table = rows(results)
    say("")
    say(markdown(table))
    verdicts = targets(results)
    say("")
    for line in verdicts:
        say(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "benchmark": "scale",
        "commit": git_commit(),
        "leader_code": code,
        "runs": args.runs,
        "cap_s": args.cap,
        "big_cap_s": args.big_cap,
        "scale": args.scale,
        "leader_toml": toml,
        "results": results,
        "table": markdown(table),
        "targets": verdicts,
        "profile": profile,
        "machine": {
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg(),
        },
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    args.out.write_text(json.dumps(_rounded(document), indent=1) + "\n", encoding="utf-8")
    say(f"wrote {args.out}")
    return 0


def _flat(record: Record) -> Record:
    """A dispatch run's record with the harness's counts beside the leader's figures."""
    sim = record["sim"]
    flat = {k: v for k, v in record.items() if k not in ("sim", "per_second")}
    for key in (
        "attempt_on_two_agents", "chunk_on_two_agents", "rerendered", "told_lost",
        "stale_in_welcome", "lease_lapses", "disconnects", "renewal_p99", "renewal_max",
        "ack_p50", "ack_p99",
    ):  # fmt: skip
        flat[key] = sim.get(key)
    flat["refused"] = len(sim.get("refused", []))
    return flat


def _rounded(value: Any) -> Any:
    """Floats to 4 decimals, all the way down (for the JSON and the run lines)."""
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


if __name__ == "__main__":
    raise SystemExit(main())
