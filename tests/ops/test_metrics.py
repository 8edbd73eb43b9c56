"""``GET /metrics`` scraped from a real leader and read back with prometheus_client's parser."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from farmtui.protocol import AssignChunk, ChunkFinished, ChunkStarted, FramesWritten, Heartbeat
from server.config import LeaderConfig, check_config
from server.errors import ConfigError
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, leader_in_process, wait_for

METRICS_TOKEN = "prometheus-scrapes-this-farm-0123"
CONFIG = LeaderConfig(tick_interval=0.05, metrics_token=METRICS_TOKEN)
SPEC = {"name": "shot", "frames": "1-4", "chunk": 2, "renderer": "generic", "argv": ["render"]}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    """Every sample as {(name, sorted labels): value}, via prometheus_client's own parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


async def scrape(farm: InProcessLeader, token: str | None = "admin") -> Samples:
    async with farm.http(token) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def submit(farm: InProcessLeader, **changes: object) -> str:
    async with farm.http() as http:
        response = await http.post("/api/jobs", json={**SPEC, **changes})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


async def finish(agent: FakeAgent, assign: AssignChunk) -> None:
    ref = {"job_id": assign.job_id, "chunk": assign.chunk, "attempt": assign.attempt}
    began = time.time()
    await agent.send(ChunkStarted(**ref, pid=4242, command=["render"], seq=agent.next_seq()))
    await agent.send(
        FramesWritten(**ref, frames=list(assign.frames), staged=False, seq=agent.next_seq())
    )
    seq = agent.next_seq()
    await agent.send(
        ChunkFinished(
            **ref, outcome="done", exit_status="0", started=began, finished=time.time(), seq=seq
        )
    )
    await agent.expect_ack(seq)


async def test_a_scrape_shows_the_farm_as_a_user_would_check_it(tmp_path: Path) -> None:
    async with leader_in_process(tmp_path, CONFIG) as farm:
        empty = await scrape(farm)
        assert value(empty, "farmtui_nodes", state="online") == 0
        assert value(empty, "farmtui_jobs", state="rendering") == 0
        assert value(empty, "farmtui_chunks_completed_total") == 0

        job_id = await submit(farm)
        async with FakeAgent.connect(farm.ws_url, farm.agent_token, "node1", slots=1) as agent:
            first = await agent.expect(AssignChunk)
            await agent.send(Heartbeat(cpu_percent=42.5, memory_percent=10.0, beat=1))
            await wait_for(
                lambda: farm.leader.scheduler.nodes["node1"].cpu_percent == 42.5,
                what="the heartbeat",
            )
            rendering = await scrape(farm)
            assert value(rendering, "farmtui_jobs", state="rendering") == 1
            assert value(rendering, "farmtui_nodes", state="online") == 1
            assert value(rendering, "farmtui_nodes", state="offline") == 0
            assert value(rendering, "farmtui_chunks_running") == 1
            assert value(rendering, "farmtui_chunks_queued") == 1
            assert value(rendering, "farmtui_chunks", state="assigned") == 1
            assert value(rendering, "farmtui_chunks_dispatched_total") == 1
            assert value(rendering, "farmtui_node_slots", node="node1") == 1
            assert value(rendering, "farmtui_node_slots_used", node="node1") == 1
            assert value(rendering, "farmtui_node_cpu_percent", node="node1") == 42.5
            assert value(rendering, "farmtui_node_online", node="node1") == 1
            assert value(rendering, "farmtui_agents_connected") == 1
            assert value(rendering, "farmtui_chunks_completed_total") == 0

            await finish(agent, first)
            after_one = await scrape(farm)
            # The counter moves once the chunk's end is committed (acknowledged above).
            assert value(after_one, "farmtui_chunks_completed_total") == 1
            second = await agent.expect(AssignChunk)
            assert value(after_one, "farmtui_chunks_dispatched_total") == 2
            await finish(agent, second)
            await wait_for(
                lambda: farm.leader.scheduler.jobs[job_id].state == "done", what="the job done"
            )
            done = await scrape(farm)
        assert value(done, "farmtui_chunks_completed_total") == 2
        assert value(done, "farmtui_jobs", state="done") == 1
        assert value(done, "farmtui_jobs", state="rendering") == 0
        assert value(done, "farmtui_chunks", state="done") == 2
        assert value(done, "farmtui_frames", state="done") == 4
        assert value(done, "farmtui_commits_total") > 0
        assert value(done, "farmtui_commit_seconds_total") > 0
        assert value(done, "farmtui_events_total", level="info") > 0
        assert value(done, "farmtui_event_loop_lag_seconds") >= 0
        assert ("farmtui_event_loop_stalls_total", ()) in done
        assert value(done, "farmtui_event_loop_beat_lag_seconds_count") > 0
        assert value(done, "farmtui_gc_seconds_total") >= 0
        assert value(done, "farmtui_event_loop_beat_lag_seconds_bucket", le="+Inf") == value(
            done, "farmtui_event_loop_beat_lag_seconds_count"
        )

        # Requeue: the done chunks are done no more; the counter of completions keeps its count.
        async with farm.http() as http:
            response = await http.post(
                "/api/jobs/actions", json={"action": "requeue", "ids": [job_id]}
            )
        assert response.status_code == 200, response.text
        requeued = await scrape(farm)
        assert value(requeued, "farmtui_chunks", state="done") == 0
        assert value(requeued, "farmtui_chunks_completed_total") == 2

    # A restarted leader counts from zero: what was done before is not "completed" again.
    async with leader_in_process(tmp_path, CONFIG) as farm:
        restarted = await scrape(farm)
        assert value(restarted, "farmtui_chunks_completed_total") == 0
        assert value(restarted, "farmtui_nodes", state="offline") == 1
        assert value(restarted, "farmtui_node_online", node="node1") == 0


async def test_who_may_scrape(tmp_path: Path) -> None:
    async with leader_in_process(tmp_path, CONFIG) as farm:
        await scrape(farm, METRICS_TOKEN)  # Prometheus, with no user's token
        await scrape(farm, farm.token("viewer", "grafana"))
        await scrape(farm)  # admin
        async with farm.http(None) as http:
            assert (await http.get("/metrics")).status_code == 401
        async with farm.http("not-the-metrics-token-at-all") as http:
            assert (await http.get("/metrics")).status_code == 401
        async with farm.http(farm.agent_token) as http:
            refused = await http.get("/metrics")
        assert refused.status_code == 403
        assert METRICS_TOKEN not in refused.text


async def test_without_a_metrics_token_only_reading_tokens_scrape(tmp_path: Path) -> None:
    async with leader_in_process(tmp_path, LeaderConfig()) as farm:
        async with farm.http(None) as http:
            assert (await http.get("/metrics")).status_code == 401
        async with farm.http(METRICS_TOKEN) as http:  # not configured: just an unknown token
            assert (await http.get("/metrics")).status_code == 401
        await scrape(farm, farm.token("viewer", "grafana"))


async def test_a_scrape_of_a_million_chunk_job_does_not_walk_its_chunks(tmp_path: Path) -> None:
    async with leader_in_process(tmp_path, CONFIG) as farm:
        await submit(farm, frames="1-1000000", chunk=1)
        await scrape(farm)  # the first read may build the job's counters once
        began = time.perf_counter()
        samples = await scrape(farm)
        took = time.perf_counter() - began
        assert value(samples, "farmtui_chunks", state="queued") == 1_000_000
        assert value(samples, "farmtui_frames", state="unassigned") == 1_000_000
        # Walking a million chunks takes seconds; the counters take microseconds.
        assert took < 0.5, f"a scrape took {took:.3f} s"


def test_a_weak_or_odd_metrics_token_is_refused_without_being_repeated() -> None:
    for token in ("short", "a token with spaces in it", "ünicode-token-0123456789"):
        with pytest.raises(ConfigError) as refused:
            check_config(LeaderConfig(metrics_token=token))
        assert token not in str(refused.value)
    check_config(LeaderConfig(metrics_token=METRICS_TOKEN))


async def test_every_family_has_help_and_type_as_prometheus_reads_them(tmp_path: Path) -> None:
    async with leader_in_process(tmp_path, CONFIG) as farm, farm.http(METRICS_TOKEN) as http:
        text = (await http.get("/metrics")).text
    families = list(text_string_to_metric_families(text))
    assert {f.name for f in families} >= {
        "farmtui_jobs",
        "farmtui_chunks",
        "farmtui_nodes",
        "farmtui_chunks_dispatched",
        "farmtui_chunks_completed",
        "farmtui_event_loop_lag_seconds",
        "farmtui_commit_seconds",
        "farmtui_node_slots",
        "farmtui_node_cpu_percent",
    }
    for family in families:
        assert f"# HELP {family.name}" in text
        assert f"# TYPE {family.name}" in text


def test_the_first_commit_after_the_load_counts_its_completed_chunks() -> None:
    from server.metrics import ChangeCounters
    from tests.scheduler.paper_farm import Farm

    farm = Farm()
    farm.node("n1", slots=2)
    job = farm.submit("j", frames="1-2")
    farm.dispatch()
    counters = ChangeCounters()
    counters.observe(farm.finish(job, 0), farm.scheduler.jobs)  # before start: the load
    assert counters.completed == 0
    counters.start(farm.scheduler.jobs)
    counters.observe(farm.finish(job, 1), farm.scheduler.jobs)
    assert counters.completed == 1


def block_the_loop_on_purpose(seconds: float) -> None:
    time.sleep(seconds)  # the lag under test, not a wait for something


async def test_a_lag_too_short_to_log_shows_in_the_beat_lag_histogram(tmp_path: Path) -> None:
    """How an operator (or bench/scale.py) sees the loop lag 50-100 ms: no log line, but
    the beats late past 50 ms go up, and the longest lag says by how much."""
    async with leader_in_process(tmp_path, CONFIG) as farm:
        watchdog = farm.leader.watchdog
        await wait_for(lambda: sum(watchdog.lag_counts) >= 3, what="the watchdog's beats")
        before = await scrape(farm)
        beats = sum(watchdog.lag_counts)
        block_the_loop_on_purpose(0.08)
        await wait_for(lambda: sum(watchdog.lag_counts) > beats, what="the next beat")
        after = await scrape(farm)

    def late_past_50ms(samples: Samples) -> float:
        total = value(samples, "farmtui_event_loop_beat_lag_seconds_count")
        return total - value(samples, "farmtui_event_loop_beat_lag_seconds_bucket", le="0.05")

    assert late_past_50ms(after) >= late_past_50ms(before) + 1
    assert 0.05 < value(after, "farmtui_event_loop_longest_beat_lag_seconds") < 5
