"""One job cannot wedge another through the logs in the sync root (issue 9, item 2).

Renderers may share the sync root with the leader, so a user's job can plant
anything under ``jobs/``. Through the real leader: the leader never writes
through what was planted, and a chunk's report changes its state whatever
happens to its log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import msgspec
import pytest

from farmtui.protocol import (
    AgentLog,
    AssignChunk,
    ChunkFinished,
    ChunkOutput,
    ChunkStarted,
    FramesWritten,
)
from server.joblogs import JobLogs
from server.nodelogs import NodeLogs
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, wait_for

PRECIOUS = "another user's file\n"


async def submit(leader: InProcessLeader, name: str = "victim") -> str:
    async with leader.http() as http:
        response = await http.post(
            "/api/jobs", json={"name": name, "frames": "1", "argv": ["render"]}
        )
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    written(leader)
    return job_id


def written(leader: InProcessLeader) -> None:
    """Wait until the leader's log thread has written everything asked so far."""
    leader.leader.logwriter.wait(10.0)


async def render_one_chunk(leader: InProcessLeader, job_id: str) -> AssignChunk:
    """A node renders the job's only chunk and reports every step of it."""
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        assign = await agent.expect(AssignChunk)
        assert assign.job_id == job_id
        chunk, attempt = assign.chunk, assign.attempt
        started = ChunkStarted(
            job_id=job_id, chunk=chunk, attempt=attempt, pid=1, command=["render"], seq=1
        )
        await agent.send(started)
        await agent.send(
            ChunkOutput(
                job_id=job_id, chunk=chunk, attempt=attempt, lines=["rendering frame 1"], seq=2
            )
        )
        await agent.send(
            FramesWritten(
                job_id=job_id, chunk=chunk, attempt=attempt, frames=[1], staged=False, seq=3
            )
        )
        await agent.send(
            ChunkFinished(
                job_id=job_id, chunk=chunk, attempt=attempt, outcome="done", exit_status="0", seq=4
            )
        )
        await agent.send(AgentLog(lines=["node1 says hello"], seq=5))
        await agent.expect_ack(5)
    return assign


def state(leader: InProcessLeader, job_id: str) -> str:
    return leader.leader.scheduler.job_view(job_id).state


def precious_file(tmp_path: Path) -> Path:
    target = tmp_path / "precious.txt"
    target.write_text(PRECIOUS)
    return target


async def test_the_log_folder_exists_from_submission_as_the_leaders_own(
    leader: InProcessLeader,
) -> None:
    job_id = await submit(leader)
    folder = leader.root / "jobs" / job_id
    # Written on the log thread, moments after the submit returns.
    await wait_for(lambda: (folder / "events.log").is_file(), 10.0, "the job's events.log")
    assert folder.is_dir()
    assert not folder.is_symlink()


async def test_a_symlink_planted_at_a_chunk_log_is_never_written_through(
    leader: InProcessLeader, tmp_path: Path
) -> None:
    job_id = await submit(leader)
    target = precious_file(tmp_path)
    planted = leader.root / "jobs" / job_id / "chunk-0000.attempt-1.log"
    planted.symlink_to(target)

    assign = await render_one_chunk(leader, job_id)

    assert assign.log_path == f"jobs/{job_id}/chunk-0000.attempt-1.log"
    await wait_for(lambda: state(leader, job_id) == "done", 10.0, "the victim job to be done")
    written(leader)
    assert target.read_text() == PRECIOUS
    assert not planted.is_symlink()
    log = planted.read_text()
    assert "# node: node1" in log
    assert "rendering frame 1" in log
    assert "# outcome: done" in log


async def test_a_job_folder_replaced_by_a_symlink_is_not_written_through(
    leader: InProcessLeader, tmp_path: Path
) -> None:
    job_id = await submit(leader)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder = leader.root / "jobs" / job_id
    folder.rename(tmp_path / "moved-away")
    folder.symlink_to(elsewhere, target_is_directory=True)

    await render_one_chunk(leader, job_id)

    await wait_for(lambda: state(leader, job_id) == "done", 10.0, "the victim job to be done")

    written(leader)
    assert list(elsewhere.iterdir()) == []
    assert folder.is_dir()
    assert not folder.is_symlink()
    assert "# outcome: done" in (folder / "chunk-0000.attempt-1.log").read_text()


async def test_a_fifo_at_a_chunk_log_does_not_block_the_leader(
    leader: InProcessLeader,
) -> None:
    job_id = await submit(leader)
    fifo = leader.root / "jobs" / job_id / "chunk-0000.attempt-1.log"
    os.mkfifo(fifo)

    await render_one_chunk(leader, job_id)

    await wait_for(lambda: state(leader, job_id) == "done", 10.0, "the victim job to be done")

    written(leader)
    assert fifo.is_file()


async def test_a_log_that_cannot_be_written_is_reported_once_and_the_chunk_still_finishes(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    job_id = await submit(leader)
    # A folder where the chunk's log goes: nothing the leader may delete or write.
    (leader.root / "jobs" / job_id / "chunk-0000.attempt-1.log").mkdir()
    caplog.set_level(logging.ERROR, logger="farmtui.leader")

    await render_one_chunk(leader, job_id)

    await wait_for(lambda: state(leader, job_id) == "done", 10.0, "the victim job to be done")

    written(leader)
    failures = [r for r in caplog.records if "cannot write the log" in r.getMessage()]
    assert len(failures) == 1, [r.getMessage() for r in failures]
    assert f"jobs/{job_id}/chunk-0000.attempt-1.log" in failures[0].getMessage()
    assert str(leader.root) not in failures[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "nothing escaped to a traceback"


async def test_a_planted_node_log_symlink_is_not_written_through(
    leader: InProcessLeader, tmp_path: Path
) -> None:
    target = precious_file(tmp_path)
    (leader.root / "nodes").mkdir(exist_ok=True)
    planted = leader.root / "nodes" / "node1.log"
    planted.symlink_to(target)
    job_id = await submit(leader)

    await render_one_chunk(leader, job_id)
    written(leader)

    assert target.read_text() == PRECIOUS
    assert "node1 says hello" in planted.read_text()
    assert not planted.is_symlink()


async def test_deleting_a_job_whose_folder_is_a_symlink_deletes_only_the_link(
    leader: InProcessLeader,
) -> None:
    victim = await submit(leader, "victim")
    attacker = await submit(leader, "attacker")
    victim_folder = leader.root / "jobs" / victim
    attacker_folder = leader.root / "jobs" / attacker
    (victim_folder / "keep.txt").write_text(PRECIOUS)
    for entry in attacker_folder.iterdir():
        entry.unlink()
    attacker_folder.rmdir()
    attacker_folder.symlink_to(victim_folder, target_is_directory=True)

    async with leader.http() as http:
        response = await http.post(
            "/api/jobs/actions", json={"action": "delete", "ids": [attacker]}
        )
    assert response.status_code == 200, response.text
    await wait_for(lambda: not attacker_folder.is_symlink(), 10.0, "the link to be removed")
    assert (victim_folder / "keep.txt").read_text() == PRECIOUS
    assert (victim_folder / "events.log").is_file()


def test_reading_a_log_never_follows_a_symlink_nor_opens_a_fifo(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "jobs" / "abc").mkdir(parents=True)
    target = precious_file(tmp_path)
    (root / "jobs" / "abc" / "chunk-0000.attempt-1.log").symlink_to(target)
    os.mkfifo(root / "jobs" / "abc" / "chunk-0001.attempt-1.log")
    logs = JobLogs(root)

    async def read_them() -> None:
        assert await logs.tail("jobs/abc/chunk-0000.attempt-1.log") is None
        assert await logs.read("jobs/abc/chunk-0000.attempt-1.log") is None
        assert await logs.tail("jobs/abc/chunk-0001.attempt-1.log") is None

    asyncio.run(read_them())
    logs.close()
    nodes = NodeLogs(root)
    (root / "nodes").mkdir()
    (root / "nodes" / "n1.log").symlink_to(target)
    assert asyncio.run(nodes.tail("n1", 10)) == []
    nodes.close()


def test_a_hard_link_at_a_log_path_is_replaced_not_appended_to(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "jobs" / "abc").mkdir(parents=True)
    target = precious_file(tmp_path)
    os.link(target, root / "jobs" / "abc" / "events.log")
    logs = JobLogs(root)
    logs.chunk_output("abc", 0, 1, ["x"])
    logs._write("jobs/abc/events.log", "an event\n")
    logs.close()
    assert target.read_text() == PRECIOUS
    assert (root / "jobs" / "abc" / "events.log").read_text() == "an event\n"


def test_a_hard_link_at_a_log_path_is_never_read(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "jobs" / "abc").mkdir(parents=True)
    target = precious_file(tmp_path)
    os.link(target, root / "jobs" / "abc" / "chunk-0000.attempt-1.log")
    logs = JobLogs(root)

    async def read_it() -> bytes | None:
        return await logs.read("jobs/abc/chunk-0000.attempt-1.log")

    assert asyncio.run(read_it()) is None  # not the outside file
    logs.close()


def test_a_log_replaced_while_open_is_started_anew(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    logs = JobLogs(root)
    logs._write("jobs/abc/events.log", "first\n")
    logs.flush()
    events = root / "jobs" / "abc" / "events.log"
    events.unlink()  # a renderer removes the open log (or renames something over it)
    logs._write("jobs/abc/events.log", "lost to the old file\n")
    logs.flush()
    logs._write("jobs/abc/events.log", "second\n")
    logs.close()
    assert events.read_text() == "second\n"


async def test_reports_about_an_attempt_that_ended_add_nothing_to_its_log(
    leader: InProcessLeader,
) -> None:
    """Sent again after a link closed before its Ack, or simply late: not the attempt's."""
    job_id = await submit(leader)
    assign = await render_one_chunk(leader, job_id)
    chunk, attempt = assign.chunk, assign.attempt
    async with FakeAgent.connect(leader.ws_url, leader.agent_token, "node1") as agent:
        for seq, report in enumerate(
            [
                ChunkFinished(
                    job_id=job_id, chunk=chunk, attempt=attempt, outcome="failed", exit_status="1"
                ),
                ChunkStarted(job_id=job_id, chunk=chunk, attempt=attempt, pid=2, command=["x"]),
                ChunkOutput(job_id=job_id, chunk=chunk, attempt=attempt, lines=["too late"]),
            ],
            start=1,
        ):
            await agent.send(msgspec.structs.replace(report, seq=seq))
        await agent.expect_ack(3)
    written(leader)
    text = (leader.root / "jobs" / job_id / "chunk-0000.attempt-1.log").read_text()
    assert text.count("# outcome:") == 1
    assert "# outcome: done" in text
    assert text.count("# farmtui: job") == 1
    assert "too late" not in text
    assert state(leader, job_id) == "done"


def test_a_path_whose_folder_is_swapped_as_it_is_checked_is_a_one_line_refusal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Break round 26c (N7): a folder flipping between a symlink and a folder made
    ``realpath`` fail with EINVAL, and a submit answered with a traceback's 500."""
    from server.errors import BadRequest
    from server.paths import confine

    realpath = os.path.realpath

    def flipped(path: str, *args: Any, **kwargs: Any) -> str:
        if "shots" in str(path):  # not the sync root itself
            raise OSError(22, "Invalid argument")
        return realpath(path, *args, **kwargs)

    monkeypatch.setattr(os.path, "realpath", flipped)
    with pytest.raises(BadRequest) as refused:
        confine(tmp_path, "shots/a/scene.blend")
    assert str(refused.value) == (
        "path 'shots/a/scene.blend' could not be followed (Invalid argument); try again"
    )
