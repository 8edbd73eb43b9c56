"""The failures view's data and the event history, over the real console link and REST."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from farmtui.protocol import (
    AssignChunk,
    ChunkFinished,
    ChunkOutput,
    ChunkStarted,
    EventsFetched,
    EventView,
    Failures,
    FetchEvents,
    FetchFailures,
    JobSpec,
    Snapshot,
)
from server.failures import last_error_line
from server.history import History, parse_event_line
from server.joblogs import event_line
from server.model import Changes, Job
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, hung_log_writer, leader_in_process
from tests.server.test_console_link import console, submit


async def fail_first_chunk(leader: InProcessLeader, agent: FakeAgent, lines: list[str]) -> str:
    job_id = await submit(leader, name="explosion", frames="1-4", chunk=2, retries=3)
    assign = await agent.expect(AssignChunk)
    ref: dict[str, Any] = {"job_id": job_id, "chunk": assign.chunk, "attempt": assign.attempt}
    await agent.send(ChunkStarted(**ref, pid=1, command=["render"], seq=agent.next_seq()))
    await agent.send(ChunkOutput(**ref, lines=lines, seq=agent.next_seq()))
    seq = agent.next_seq()
    finished = ChunkFinished(
        **ref,
        outcome="failed",
        exit_status="1",
        reason="exit status 1",
        started=time.time() - 2,
        finished=time.time(),
        seq=seq,
    )
    await agent.send(finished)
    await agent.expect_ack(seq)
    return job_id


async def test_a_failed_attempt_is_listed_with_its_last_error_line(
    leader: InProcessLeader,
) -> None:
    output = ["Fra:1 Mem:12M", "ERROR: texture tex/wall.png not found", "Blender quit"]
    async with (
        console(leader) as c,
        FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent,
    ):
        await c.expect(Snapshot)
        job_id = await fail_first_chunk(leader, agent, output)
        assert (await c.request(FetchFailures(limit=10))).ok
        failures = (await c.expect(Failures)).failures
    assert len(failures) == 1
    failure = failures[0]
    assert (failure.job_id, failure.job_name, failure.chunk) == (job_id, "explosion", 0)
    assert (failure.frames, failure.node, failure.attempt) == ("1-2", "node1", 1)
    assert failure.outcome == "failed"
    assert failure.reason == "exit status 1"
    assert failure.error_line == "ERROR: texture tex/wall.png not found"
    assert failure.chunk_state in ("waiting-retry", "assigned")
    async with leader.http() as http:
        listed = (await http.get("/api/failures", params={"limit": 5})).json()
        refused = await http.get("/api/failures", params={"limit": 0})
    assert [(f["job_id"], f["attempt"]) for f in listed] == [(job_id, 1)]
    assert refused.status_code == 400
    assert "limit=0 is not between 1 and" in refused.json()["error"]


async def test_failures_before_a_restart_are_found_after_it(tmp_path: Path) -> None:
    async with (
        leader_in_process(tmp_path) as leader,
        FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent,
    ):
        job_id = await fail_first_chunk(leader, agent, ["segmentation fault"])
    async with leader_in_process(tmp_path) as leader, leader.http() as http:
        listed = (await http.get("/api/failures")).json()
        events = (await http.get("/api/events", params={"limit": 100})).json()
    assert [(f["job_id"], f["error_line"]) for f in listed] == [(job_id, "segmentation fault")]
    # The Monitor Log of a console opened after the restart starts with what happened before.
    texts = [e["text"] for e in events if e["job_id"] == job_id]
    assert any("submitted" in text for text in texts)
    assert any("attempt 1 -> node1" in text for text in texts)


async def test_the_farms_events_of_one_job_or_level_are_asked_of_the_leader(
    leader: InProcessLeader,
) -> None:
    """``farm events --job``/``--level`` filtered the farm's latest N events on the client:
    a job's events older than those, however many, were not found (break round 36b)."""
    first = await submit(leader, name="one")
    for n in range(30):
        await submit(leader, name=f"later {n}")
    async with leader.http() as http:
        latest = (await http.get("/api/events", params={"limit": 10})).json()
        mine = (await http.get("/api/events", params={"limit": 10, "job": first})).json()
        warned = (await http.get("/api/events", params={"limit": 100, "level": "warn"})).json()
        unknown = await http.get("/api/events", params={"job": "j-nosuch"})
        odd = await http.get("/api/events", params={"level": "loud"})
    assert all(e["job_id"] != first for e in latest)
    assert mine, "its own events, from its log"
    assert {e["job_id"] for e in mine} == {first}
    assert any("submitted" in e["text"] for e in mine)
    assert all(e["level"] in ("warn", "error") for e in warned)
    assert unknown.status_code == 404
    assert odd.status_code == 400
    assert odd.json()["error"] == "level='loud' is not one of info, warn, error"


async def test_a_jobs_event_log_and_the_farms_latest_events(leader: InProcessLeader) -> None:
    first = await submit(leader, name="one")
    async with console(leader) as c:
        await c.expect(Snapshot)
        assert (await c.request(FetchEvents(job_id=first, limit=50))).ok
        of_job = await c.expect(EventsFetched)
        assert of_job.job_id == first
        assert any("submitted" in e.text for e in of_job.events)
        assert all(e.job_id == first for e in of_job.events)
        assert (await c.request(FetchEvents(limit=50))).ok
        farm = await c.expect(EventsFetched, lambda m: m.job_id is None)
        assert any(e.job_id == first for e in farm.events)
        unknown = await c.request(FetchEvents(job_id="nope"))
        assert not unknown.ok


def test_event_lines_read_back_as_the_events_they_were() -> None:
    for event in (
        EventView(time=1764620587.318, level="warn", text="node n1 lost", job_id="j", actor=None),
        EventView(time=1764620587.5, level="error", text="a: b: c", job_id="j", actor="alice"),
    ):
        assert parse_event_line(event_line(event).rstrip("\n"), "j") == event
    assert parse_event_line("not an event", "j") is None


async def test_an_event_in_memory_and_in_its_log_is_shown_once() -> None:
    """The farm's events are filled in from the jobs' logs at the first read: one logged
    at .4008 s (its log says .400) was kept twice, and the Monitor Log showed it twice."""
    job = Job(id="j", spec=JobSpec(), owner="o", state="queued", priority=50, queue_key=0.0,
              created=1764620587.0)  # fmt: skip
    event = EventView(time=1764620587.4008, level="warn", text="x", job_id="j", actor=None)

    class Logs:
        async def tail(self, path: object, size: int) -> list[str]:
            return [event_line(event).rstrip("\n")]

    history = History(lambda: {"j": job}, Logs())  # type: ignore[arg-type]
    history.observe(Changes(events=[event]))
    assert [e.text for e in await history.latest(10)] == ["x"]


def test_the_last_error_line_skips_the_leaders_footer() -> None:
    lines = ["# farmtui: job j", "rendering", "Error: out of memory", "done?", "# outcome: failed"]
    assert last_error_line(lines) == "Error: out of memory"
    assert last_error_line(["just output", "# finished: x"]) == "just output"
    assert last_error_line([]) == ""


def test_the_last_error_line_of_ffmpeg_names_the_file_it_could_not_open() -> None:
    """ffmpeg ends with "Conversion failed!", which says nothing of why."""
    lines = [
        "frame=    1 fps=0.0 q=0.0 size=N/A time=00:00:00.00 bitrate=N/A speed=   0x",
        "[concat @ 0x5567dcc01a00] Impossible to open '/plates/p_1004.png'",
        "/staging/j/3.1/.farmtui/inputs.ffconcat: No such file or directory",
        "Conversion failed!",
        "# finished: failed (exited with 1)",
    ]
    assert last_error_line(lines) == lines[1]
    lines = [
        "[image2 @ 0x561a75b4ad00] Could not open file : /plates/100%done/p_0009.png",
        "/staging/j/3.1/.farmtui/inputs.ffconcat: Input/output error",
        "Conversion failed!",
    ]
    assert last_error_line(lines) == lines[0]


async def test_the_job_list_in_pages(leader: InProcessLeader) -> None:
    ids = [await submit(leader, name=f"job{n}") for n in range(5)]
    async with leader.http() as http:
        first = (await http.get("/api/jobs", params={"limit": 2})).json()
        rest = (await http.get("/api/jobs", params={"limit": 10, "after": first[-1]["id"]})).json()
        whole = (await http.get("/api/jobs")).json()
        unknown = await http.get("/api/jobs", params={"limit": 2, "after": "nope"})
        too_many = await http.get("/api/jobs", params={"limit": 100_000})
    assert [j["id"] for j in first + rest] == [j["id"] for j in whole] == ids
    assert len(first) == 2
    assert unknown.status_code == 404
    assert too_many.status_code == 400
    assert "limit=100000 is not between 1 and 1000" in too_many.json()["error"]


async def test_a_console_cannot_queue_up_the_log_thread(leader: InProcessLeader) -> None:
    job_id = await submit(leader)
    # A filer that stopped answering: the logs' writer waits until the test lets it go.
    writer = leader.leader.logwriter
    await asyncio.to_thread(writer.started)
    async with console(leader) as c:
        await c.expect(Snapshot)
        with hung_log_writer(writer):
            replies = [await c.request(FetchEvents(job_id=job_id, limit=10)) for _ in range(6)]
            assert [r.ok for r in replies] == [True] * 4 + [False] * 2
            assert replies[-1].error is not None
            assert "4 reads are already under way" in replies[-1].error
        for _ in range(4):
            fetched = await c.expect(EventsFetched)
            assert any("submitted" in e.text for e in fetched.events)
        assert (await c.request(FetchEvents(job_id=job_id, limit=10))).ok
