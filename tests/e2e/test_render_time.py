"""Render time management and self-healing, end to end: a real leader, real agents, real renderers.

Every test starts a leader subprocess (with its own ``leader.toml`` where the
test needs one) and agent subprocesses on loopback, submits with ``farm
submit`` and checks what a user would see: ``farm show --json``, ``farm jobs
--json``, the job's event log, webhook POSTs, and the renderer processes
themselves. Limits are fractions of a second; nothing sleeps to wait for
something, every wait polls a condition with a deadline.

The renderer is a small Python script (``RENDERER`` below) whose behaviour the
job's argv chooses: hang with a child and a detached helper, stay silent at
start, fail its first runs, fail on one node, write time stamps.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from farmtui.client import FarmClient
from farmtui.localfarm import Child, LocalFarm, free_port
from tests.helpers.farm import LiveLeader, needs_agent

pytestmark = needs_agent

T = TypeVar("T")
Json = dict[str, Any]

POLL = 0.02

RENDERER = r'''
"""Test renderer: python renderer.py FRAME [options]; see test_render_time.py."""
import os
import subprocess
import sys
import time
from pathlib import Path

args = sys.argv[1:]
frame = int(args.pop(0))
opts = {}
while args:
    key = args.pop(0)
    opts[key] = args.pop(0) if args and not args[0].startswith("--") else "1"


def note_pid(pid):
    if "--pids" in opts:
        with open(opts["--pids"], "a") as f:
            f.write(f"{pid}\n")


started = time.time()
note_pid(os.getpid())
if "--silent-start" in opts:
    time.sleep(float(opts["--silent-start"]))
print(f"render frame {frame}", flush=True)
if "--counter" in opts:
    counter = Path(opts["--counter"])
    runs = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(runs))
    if runs <= int(opts.get("--fail-runs", "0")):
        print(f"run {runs}: failing on purpose", flush=True)
        sys.exit(1)
if "--fail-if-marker" in opts:
    here = Path(opts["--outdir"]).resolve()
    if any((folder / opts["--fail-if-marker"]).exists() for folder in (here, *here.parents)):
        print("this node is bad for this job", flush=True)
        sys.exit(1)
if "--hang" in opts or opts.get("--hang-on") == str(frame):
    forever = "import time\nwhile True: time.sleep(1)"
    child = subprocess.Popen([sys.executable, "-c", forever])
    helper = subprocess.Popen([sys.executable, "-c", forever], start_new_session=True)
    note_pid(child.pid)
    note_pid(helper.pid)
    print("hanging", flush=True)
    while True:
        time.sleep(1)
time.sleep(float(opts.get("--sleep", "0")))
if "--stamp" in opts:
    Path(opts["--stamp"]).write_text(f"{started} {time.time()}")
print(f"frame {frame} done", flush=True)
'''

SCRIPT = r'''
"""Pre/post-job script: python script.py STAMP [hang PIDS]."""
import os
import sys
import time
from pathlib import Path

started = time.time()
if len(sys.argv) > 2 and sys.argv[2] == "hang":
    Path(sys.argv[3]).write_text(str(os.getpid()))
    print("hanging", flush=True)
    while True:
        time.sleep(1)
Path(sys.argv[1]).write_text(f"{started} {time.time()}")
'''


# --- helpers --------------------------------------------------------------------


def poll(condition: Callable[[], T | None], deadline: float, what: str) -> T:
    """Call ``condition`` until it returns something truthy; fail after ``deadline`` s."""
    end = time.monotonic() + deadline
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"gave up after {deadline} s waiting for {what}")
        time.sleep(POLL)


class Farm:
    """A leader subprocess (``leader.toml`` written first) and its agents."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.local: LocalFarm | None = None
        self.live: LiveLeader | None = None
        self.renderer = tmp_path / "renderer.py"
        self.renderer.write_text(RENDERER)
        self.script = tmp_path / "script.py"
        self.script.write_text(SCRIPT)
        self._client: FarmClient | None = None

    def start(self, toml: str = "") -> Farm:
        local = LocalFarm(self.tmp_path / "data", self.tmp_path / "root", port=free_port())
        local.data.mkdir(parents=True, exist_ok=True)
        if toml:
            (local.data / "leader.toml").write_text(toml)
        self.local = local
        local.start_leader()
        self.live = LiveLeader(local, self.tmp_path / "config")
        self._client = self.live.client()
        return self

    @property
    def leader(self) -> LiveLeader:
        assert self.live is not None
        return self.live

    def agents(self, *names: str, slots: int = 1) -> list[Child]:
        assert self.local is not None
        first = len(self.local.agents) + 1
        started = [
            self.local.start_agent(index, slots, name=name)
            for index, name in enumerate(names, start=first)
        ]
        self.local.wait_nodes_online(list(names))
        return started

    def agent(self, name: str) -> Child:
        assert self.local is not None
        return next(child for child in self.local.agents if child.name == name)

    def staging(self, name: str) -> Path:
        """The staging folder of the agent called ``name`` (LocalFarm: staging/agent<N>)."""
        assert self.local is not None
        index = [child.name for child in self.local.agents].index(name) + 1
        return self.local.data / "staging" / f"agent{index}"

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
        if self.local is not None:
            self.local.stop(grace=5.0)

    # -- what a user runs -----------------------------------------------------------

    def farm(self, *args: str) -> str:
        done = self.leader.cli(*args)
        assert done.returncode == 0, f"farm {' '.join(args)}: {done.stderr}"
        return done.stdout

    def submit(self, *args: str, argv: list[str] | None = None) -> str:
        command = argv or self.render()
        job: Json = json.loads(self.farm("submit", "--json", *args, "--", *command))
        job_id: str = job["id"]
        return job_id

    def render(self, *options: str) -> list[str]:
        """argv template running the test renderer on the chunk's first frame."""
        return [sys.executable, str(self.renderer), "{start}", *options]

    def show_cli(self, job_id: str) -> Json:
        """``farm show JOB --json``."""
        detail: Json = json.loads(self.farm("show", job_id, "--json"))
        return detail

    def show(self, job_id: str) -> Json:
        """The same document over REST, cheap enough to poll."""
        assert self._client is not None
        detail: Json = self._client.request("GET", f"/api/jobs/{job_id}").json()
        return detail

    def events(self, job_id: str) -> str:
        """The job's event log, as ``farm logs JOB`` prints it (REST: no CLI start-up)."""
        assert self._client is not None
        return self._client.events(job_id)

    def events_cli(self, job_id: str) -> str:
        return self.farm("logs", job_id)

    def wait_state(self, job_id: str, *states: str, deadline: float = 15.0) -> Json:
        def reached() -> Json | None:
            detail = self.show(job_id)
            return detail if detail["job"]["state"] in states else None

        return poll(reached, deadline, f"job {job_id} to be {' or '.join(states)}")


@pytest.fixture
def farm(tmp_path: Path) -> Iterator[Farm]:
    f = Farm(tmp_path)
    try:
        yield f
    finally:
        f.stop()


def render_chunks(detail: Json) -> list[Json]:
    return [c for c in detail["chunks"] if c["kind"] == "render"]


def only_chunk(detail: Json) -> Json:
    (chunk,) = render_chunks(detail)
    return chunk


def duration(attempt: Json) -> float:
    return float(attempt["finished"]) - float(attempt["started"])


def pids_in(path: Path) -> list[int]:
    try:
        return [int(line) for line in path.read_text().split()]
    except FileNotFoundError:
        return []


def renderer_tree(path: Path) -> list[int] | None:
    """The pids a hanging renderer wrote: itself, its child and its detached helper."""
    pids = pids_in(path)
    return pids if len(pids) == 3 else None


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], deadline: float = 10.0) -> None:
    poll(
        lambda: all(gone(pid) for pid in pids),
        deadline,
        f"processes {[p for p in pids if not gone(p)]} to be gone",
    )


def kill_leftovers(pids: list[int]) -> None:
    """Safety net for renderers orphaned by a killed agent (their pids were recorded)."""
    for pid in pids:
        if not gone(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


class Receiver:
    """A webhook endpoint on loopback that keeps every JSON body it is sent, by path."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, Json]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length))
                with receiver.lock:
                    receiver.bodies.append((self.path, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def kinds(self, path: str, job_id: str) -> list[str]:
        with self.lock:
            return [b["kind"] for p, b in self.bodies if p == path and b["job_id"] == job_id]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    try:
        yield r
    finally:
        r.close()


# --- timeouts -------------------------------------------------------------------


def test_hung_renderer_is_stopped_at_max_render_time_and_not_retried(
    farm: Farm, tmp_path: Path
) -> None:
    farm.start().agents("node1")
    pids = tmp_path / "pids"
    job = farm.submit(
        "--name", "hung", "--timeout-max", "1s", "--on-timeout", "fail", "--retries", "3",
        argv=farm.render("--hang", "--pids", str(pids)),
    )  # fmt: skip
    # The renderer, its child and a helper that detached into its own session.
    tree = poll(lambda: renderer_tree(pids), 10.0, "the renderer tree")
    assert not any(gone(pid) for pid in tree)

    farm.wait_state(job, "failed")
    detail = farm.show_cli(job)
    assert detail["job"]["state"] == "failed"
    chunk = only_chunk(detail)
    assert chunk["state"] == "failed"
    assert chunk["errors"] == 1
    (attempt,) = chunk["attempts"]  # on timeout: fail means no retry, whatever --retries says
    assert attempt["outcome"] == "timeout"
    assert "max_render" in attempt["reason"]
    assert 1.0 <= duration(attempt) < 6.0
    wait_gone(tree)
    assert "max render timeout, on timeout: fail" in farm.events_cli(job)


def test_a_maximum_set_on_a_rendering_job_stops_its_hung_chunk(farm: Farm, tmp_path: Path) -> None:
    """``farm set --timeout-max`` applied only to chunks dispatched later: a wrangler
    lowering the limit of a job whose frame hung had to kill it by hand."""
    farm.start().agents("node1")
    pids = tmp_path / "pids"
    job = farm.submit(
        "--name", "hung", "--on-timeout", "fail",
        argv=farm.render("--hang", "--pids", str(pids)),
    )  # fmt: skip
    tree = poll(lambda: renderer_tree(pids), 10.0, "the renderer tree")
    farm.farm("set", job, "--timeout-max", "1s", "--on-timeout", "fail")
    farm.wait_state(job, "failed")  # by this attempt: with no retry, there is no next
    (attempt,) = only_chunk(farm.show_cli(job))["attempts"]
    assert attempt["outcome"] == "timeout"
    assert "max_render" in attempt["reason"]
    wait_gone(tree)


def test_renderer_that_quits_before_min_render_time_is_an_error(farm: Farm) -> None:
    farm.start().agents("node1")
    job = farm.submit(
        "--name", "quick", "--timeout-min", "2s", "--retries", "1", "--retry-delay", "0",
    )  # fmt: skip
    detail = farm.wait_state(job, "failed")
    chunk = only_chunk(detail)
    # Exit 0 twice, both too soon: each attempt is a timeout that counts as an error.
    assert chunk["state"] == "failed"
    assert chunk["errors"] == 2
    assert [a["outcome"] for a in chunk["attempts"]] == ["timeout", "timeout"]
    assert [a["number"] for a in chunk["attempts"]] == [1, 2]
    for attempt in chunk["attempts"]:
        assert "min_render" in attempt["reason"]
        assert attempt["exit_status"] == "0"
        assert duration(attempt) < 2.0
    assert "min render timeout" in farm.events(job)


def test_on_timeout_requeue_counts_no_error(farm: Farm, tmp_path: Path) -> None:
    farm.start().agents("node1")
    # The built-in demo renderer, hanging; --retries 0, so one counted error would fail it.
    demo = [sys.executable, "-m", "farmtui.demo_render", "--frames", "{frames}"]
    demo += ["--output", "{output}", "--hang"]
    job = farm.submit(
        "--name", "requeue", "--output", "renders/requeue/f_####.png", "--retries", "0",
        "--timeout-max", "0.3s", "--on-timeout", "requeue",
        argv=demo,
    )  # fmt: skip

    def three_attempts() -> Json | None:
        chunk = only_chunk(farm.show(job))
        return chunk if len(chunk["attempts"]) >= 3 else None

    chunk = poll(three_attempts, 15.0, "three attempts")
    assert chunk["errors"] == 0
    assert chunk["state"] in ("queued", "assigned")
    finished = [a for a in chunk["attempts"] if a["finished"] is not None]
    assert [a["number"] for a in chunk["attempts"]][:3] == [1, 2, 3]
    assert [a["outcome"] for a in finished[:2]] == ["timeout", "timeout"]
    detail = farm.show(job)
    assert detail["job"]["state"] == "rendering"
    assert only_chunk(detail)["errors"] == 0
    farm.farm("cancel", job, "--yes")
    farm.wait_state(job, "cancelled")


def test_on_timeout_notify_lets_it_run_and_tells_the_owner(farm: Farm, receiver: Receiver) -> None:
    farm.start().agents("node1")
    job = farm.submit(
        "--name", "notify", "--timeout-max", "0.3s", "--on-timeout", "notify",
        "--webhook", receiver.url("/job"),
        argv=farm.render("--sleep", "1.2"),
    )  # fmt: skip
    poll(lambda: "timeout" in receiver.kinds("/job", job), 10.0, "the timeout notification")
    # Told while the renderer still runs ...
    assert only_chunk(farm.show(job))["state"] == "assigned"
    detail = farm.wait_state(job, "done")
    # ... and it finished on its first attempt.
    chunk = only_chunk(detail)
    assert chunk["state"] == "done"
    assert chunk["errors"] == 0
    (attempt,) = chunk["attempts"]
    assert attempt["outcome"] == "done"
    assert duration(attempt) >= 1.2
    poll(lambda: "done" in receiver.kinds("/job", job), 10.0, "the done notification")
    events = farm.events(job)
    assert "notification timeout" in events
    assert "keeps running" in events


def test_on_timeout_complete_counts_as_done_and_releases_dependants(
    farm: Farm, tmp_path: Path
) -> None:
    farm.start().agents("node1", "node2")
    pids, stamp = tmp_path / "pids", tmp_path / "after.stamp"
    # Long enough for the next `farm submit` to land while it runs, on a loaded machine too.
    sim = farm.submit(
        "--name", "sim", "--timeout-max", "3s", "--on-timeout", "complete",
        argv=farm.render("--hang", "--pids", str(pids)),
    )  # fmt: skip
    after = farm.submit(
        "--name", "after-sim", "--after", sim, argv=farm.render("--stamp", str(stamp))
    )
    tree = poll(lambda: renderer_tree(pids), 10.0, "the renderer tree")
    # It waits for the simulation even though a node is free (seen while the
    # simulation still runs: a loaded machine may get here after its timeout).
    sim_state = farm.show(sim)["job"]["state"]
    after_state = farm.show(after)["job"]["state"]
    if sim_state == "rendering":
        assert after_state == "queued"

    sim_detail = farm.wait_state(sim, "done")
    chunk = only_chunk(sim_detail)
    assert chunk["state"] == "done"
    assert chunk["errors"] == 0
    (attempt,) = chunk["attempts"]
    assert attempt["outcome"] == "timeout"
    wait_gone(tree)

    after_detail = farm.wait_state(after, "done")
    assert only_chunk(after_detail)["attempts"][0]["started"] >= sim_detail["job"]["finished"]
    started, _ = map(float, stamp.read_text().split())
    assert started >= attempt["finished"]  # leader and renderer share this machine's clock


def test_silent_start_is_a_max_start_timeout(farm: Farm) -> None:
    farm.start().agents("node1", "node2")
    silent = farm.submit(
        "--name", "silent", "--timeout-start", "1s", "--on-timeout", "fail",
        argv=farm.render("--silent-start", "5"),
    )  # fmt: skip
    # Same limit, but the renderer talks at once and then works for longer than it: fine.
    talkative = farm.submit(
        "--name", "talkative", "--timeout-start", "1s", "--on-timeout", "fail",
        argv=farm.render("--sleep", "1.2"),
    )  # fmt: skip
    detail = farm.wait_state(silent, "failed")
    (attempt,) = only_chunk(detail)["attempts"]
    assert attempt["outcome"] == "timeout"
    assert "max_start" in attempt["reason"]
    assert 1.0 <= duration(attempt) < 5.0
    assert "max start timeout" in farm.events(silent)

    detail = farm.wait_state(talkative, "done")
    (attempt,) = only_chunk(detail)["attempts"]
    assert attempt["outcome"] == "done"
    assert duration(attempt) >= 1.2


def test_auto_timeout_stops_a_chunk_far_slower_than_the_others(farm: Farm) -> None:
    farm.start().agents("node1")
    job = farm.submit(
        "--name", "auto", "--frames", "1-4", "--chunk", "1", "--on-timeout", "fail",
        "--auto-timeout", "--auto-timeout-chunks", "3", "--auto-timeout-multiplier", "2",
        argv=farm.render("--sleep", "0.2", "--hang-on", "4"),
    )  # fmt: skip
    detail = farm.wait_state(job, "failed", deadline=20.0)
    chunks = render_chunks(detail)
    assert [c["state"] for c in chunks] == ["done", "done", "done", "failed"]
    mean = detail["job"]["stats"]["mean_render"]
    assert 0.2 <= mean < 2.0
    (attempt,) = chunks[3]["attempts"]
    assert attempt["outcome"] == "timeout"
    assert "max_render" in attempt["reason"]
    # Stopped at about mean x 2: not before, and long before anything a person would set.
    assert 2 * mean * 0.9 <= duration(attempt) < 2 * mean + 3.0
    # The job's event log says when the auto timeout took over, and at what limit.
    line = r"auto timeout: maximum render time now ([\d.]+)s per chunk"
    found = re.search(line, farm.events(job))
    assert found is not None
    assert float(found.group(1)) == pytest.approx(2 * mean, abs=0.01)


# --- self-healing ---------------------------------------------------------------


def test_retries_back_off_exponentially_until_success(farm: Farm, tmp_path: Path) -> None:
    farm.start().agents("node1")
    counter = tmp_path / "runs"
    job = farm.submit(
        "--name", "flaky", "--retries", "3", "--retry-delay", "0.2s",
        argv=farm.render("--counter", str(counter), "--fail-runs", "2"),
    )  # fmt: skip

    def backing_off() -> Json | None:
        chunk = only_chunk(farm.show(job))
        return chunk if chunk["state"] == "waiting-retry" else None

    waiting = poll(backing_off, 10.0, "the chunk to wait for its retry")
    assert waiting["retry_at"] is not None
    backoff = waiting["retry_at"] - waiting["attempts"][-1]["finished"]
    assert backoff == pytest.approx(0.2 * len(waiting["attempts"]))  # 0.2 s, then 0.4 s

    detail = farm.wait_state(job, "done")
    chunk = only_chunk(farm.show_cli(job))
    assert chunk["state"] == "done"
    assert chunk["retry_at"] is None
    assert chunk["errors"] == 2
    first, second, third = chunk["attempts"]
    assert [first["outcome"], second["outcome"], third["outcome"]] == ["failed", "failed", "done"]
    assert counter.read_text() == "3"
    gap1 = second["started"] - first["finished"]
    gap2 = third["started"] - second["finished"]
    assert gap1 >= 0.2
    assert gap2 >= 0.4
    assert gap2 > gap1
    assert detail["job"]["state"] == "done"


LOST_NODE_TOML = """
node_timeout = 2.0
heartbeat_interval = 0.2
tick_interval = 0.1
"""


def test_lost_node_requeues_its_chunk_without_using_a_retry(farm: Farm, tmp_path: Path) -> None:
    farm.start(LOST_NODE_TOML).agents("node1", "node2")
    pids = tmp_path / "pids"
    job = farm.submit(
        "--name", "lost", "--retries", "0",
        argv=farm.render("--sleep", "1", "--pids", str(pids)),
    )  # fmt: skip
    try:

        def rendering() -> Json | None:
            chunk = only_chunk(farm.show(job))
            return chunk if chunk["state"] == "assigned" and pids_in(pids) else None

        first_node = poll(rendering, 10.0, "the chunk to start")["node"]
        farm.agent(first_node).process.send_signal(signal.SIGKILL)

        detail = farm.wait_state(job, "done", deadline=20.0)
        chunk = only_chunk(farm.show_cli(job))
        assert chunk["state"] == "done"
        assert chunk["errors"] == 0
        lost, finished = chunk["attempts"]
        assert lost["node"] == first_node
        assert lost["outcome"] == "lost"
        assert finished["node"] != first_node
        assert finished["outcome"] == "done"
        assert detail["job"]["state"] == "done"
        assert "preempted" in farm.events(job)
        # The orphaned renderer of the dead agent finishes its sleep and exits.
        wait_gone(pids_in(pids))
    finally:
        kill_leftovers(pids_in(pids))


def test_node_failing_a_job_is_blocked_for_it(farm: Farm) -> None:
    farm.start("block_after = 2\n").agents("bad", "good")
    (farm.staging("bad") / "BAD-NODE").write_text("this node fails the job\n")
    job = farm.submit(
        "--name", "picky", "--frames", "1-4", "--chunk", "1", "--retries", "5",
        "--retry-delay", "0",
        argv=farm.render("--fail-if-marker", "BAD-NODE", "--outdir", "{outdir}", "--sleep", "0.1"),
    )  # fmt: skip
    farm.wait_state(job, "done", deadline=20.0)
    detail = farm.show_cli(job)
    assert detail["job"]["state"] == "done"
    assert list(detail["blocked_nodes"]) == ["bad"]
    assert detail["blocked_nodes"]["bad"] > time.time() + 60
    attempts = [a for c in render_chunks(detail) for a in c["attempts"]]
    on_bad = [a for a in attempts if a["node"] == "bad"]
    assert [a["outcome"] for a in on_bad] == ["failed", "failed"]
    for chunk in render_chunks(detail):
        assert chunk["state"] == "done"
        assert chunk["attempts"][-1]["node"] == "good"
    assert "node bad blocked for this job" in farm.events(job)


# --- notifications --------------------------------------------------------------


def test_webhooks_from_leader_toml_and_per_job(
    farm: Farm, receiver: Receiver, tmp_path: Path
) -> None:
    farm.start(f'webhook = "{receiver.url("/farm")}"\n').agents("node1", "node2")
    ok = farm.submit(
        "--name", "ok", "--timeout-max", "0.2s", "--on-timeout", "notify",
        "--webhook", receiver.url("/job"),
        argv=farm.render("--sleep", "0.6"),
    )  # fmt: skip
    bad = farm.submit(
        "--name", "bad", "--retries", "0",
        argv=farm.render("--counter", str(tmp_path / "runs"), "--fail-runs", "1"),
    )  # fmt: skip
    farm.wait_state(ok, "done")
    farm.wait_state(bad, "failed")

    def heard(path: str, job: str, kinds: set[str]) -> bool:
        return kinds <= set(receiver.kinds(path, job))

    poll(lambda: heard("/farm", ok, {"timeout", "done"}), 10.0, "the farm webhook on ok")
    poll(lambda: heard("/farm", bad, {"failed"}), 10.0, "the farm webhook on bad")
    poll(lambda: heard("/job", ok, {"timeout", "done"}), 10.0, "the job webhook")
    with receiver.lock:
        bodies = list(receiver.bodies)
    # The job's own webhook hears only about its job.
    assert {b["job_id"] for p, b in bodies if p == "/job"} == {ok}
    for _, body in bodies:
        assert {"job_id", "kind", "text"} <= set(body)
        assert body["job"]["id"] == body["job_id"]
    failed = next(b for p, b in bodies if p == "/farm" and b["kind"] == "failed")
    assert failed["job"]["state"] == "failed"


# --- pre-job and post-job scripts ------------------------------------------------


def test_pre_and_post_job_scripts_run_around_the_frames(farm: Farm, tmp_path: Path) -> None:
    farm.start().agents("node1", "node2")
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    script = [sys.executable, str(farm.script)]
    pre = shlex.join([*script, str(stamps / "pre")])
    post = shlex.join([*script, str(stamps / "post")])
    job = farm.submit(
        "--name", "scripted", "--frames", "1-4", "--chunk", "1",
        "--pre-job", pre, "--post-job", post, "--script-timeout", "5s",
        argv=farm.render("--sleep", "0.1", "--stamp", str(stamps / "frame-{start}")),
    )  # fmt: skip
    detail = farm.wait_state(job, "done")
    kinds = [c["kind"] for c in detail["chunks"]]
    assert kinds == ["pre", "render", "render", "render", "render", "post"]
    assert all(c["state"] == "done" for c in detail["chunks"])

    def times(name: str) -> tuple[float, float]:
        start, end = map(float, (stamps / name).read_text().split())
        return start, end

    frames = [times(f"frame-{n}") for n in range(1, 5)]
    assert times("pre")[1] <= min(start for start, _ in frames)
    assert times("post")[0] >= max(end for _, end in frames)


def test_hung_post_job_script_is_stopped_at_its_timeout(farm: Farm, tmp_path: Path) -> None:
    farm.start().agents("node1")
    pid_file = tmp_path / "post.pid"
    post = shlex.join([sys.executable, str(farm.script), "-", "hang", str(pid_file)])
    job = farm.submit(
        "--name", "stuck-post", "--post-job", post, "--script-timeout", "0.5s",
        "--retries", "0",
        argv=farm.render(),
    )  # fmt: skip
    pid = int(poll(lambda: pid_file.read_text() if pid_file.exists() else None, 10.0, "the script"))
    detail = farm.wait_state(job, "failed")
    post_chunk = detail["chunks"][-1]
    assert post_chunk["kind"] == "post"
    assert post_chunk["state"] == "failed"
    (attempt,) = post_chunk["attempts"]
    assert attempt["outcome"] == "timeout"
    assert 0.5 <= duration(attempt) < 5.0
    assert only_chunk(detail)["state"] == "done"
    wait_gone([pid])


# --- estimates ------------------------------------------------------------------


def test_estimates_appear_and_shrink_as_chunks_finish(farm: Farm) -> None:
    farm.start().agents("node1")
    job = farm.submit(
        "--name", "estimated", "--frames", "1-6", "--chunk", "1",
        argv=farm.render("--sleep", "0.3"),
    )  # fmt: skip
    etr: dict[int, tuple[float, float]] = {}

    def finished() -> bool:
        stats = farm.show(job)["job"]["stats"]
        if stats["chunks_done"] and stats["chunks_done"] not in etr:
            assert stats["mean_render"] is not None
            assert stats["p90_render"] is not None
            etr[stats["chunks_done"]] = (stats["etr"], stats["mean_render"])
        return bool(stats["chunks_done"] == 6)

    poll(finished, 20.0, "all six chunks")
    assert len(etr) >= 4, etr
    # The estimate is what is left times the mean render time so far, on the one
    # slot: it shrinks as chunks finish unless a slow chunk raises the mean (a
    # loaded machine), so check the rule itself.
    for done, (estimate, mean) in etr.items():
        left = 6 - done
        assert estimate == pytest.approx(left * mean, rel=0.01, abs=0.01), etr
    assert etr[max(etr)][0] == 0.0
    assert etr[min(etr)][0] > 0.3

    (listed,) = [j for j in json.loads(farm.farm("jobs", "--json")) if j["id"] == job]
    stats = listed["stats"]
    assert 0.3 <= stats["mean_render"] < 3.0
    assert stats["mean_render"] <= stats["p90_render"] < 3.0
    assert stats["etr"] == 0.0
    assert stats["chunks_done"] == stats["chunks_total"] == 6
