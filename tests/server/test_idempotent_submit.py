"""``POST /api/jobs`` with an ``Idempotency-Key``: sending it again never makes a second job."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from farmtui.client import FarmClient
from farmtui.protocol import JobSpec
from server.submission import _set_fields, request_digest
from tests.helpers.leader import InProcessLeader, leader_in_process

SPEC: dict[str, Any] = {
    "name": "shot",
    "frames": "1-4",
    "chunk": 2,
    "renderer": "generic",
    "argv": ["render"],
}


async def post(http: httpx.AsyncClient, key: str | None) -> httpx.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return await http.post("/api/jobs", json=SPEC, headers=headers)


async def job_ids(http: httpx.AsyncClient) -> list[str]:
    return [job["id"] for job in (await http.get("/api/jobs")).json()]


async def test_the_same_key_twice_is_one_job(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        first = await post(http, "a1b2c3")
        assert first.status_code == 201
        again = await post(http, "a1b2c3")
        assert again.status_code == 200
        assert again.json() == first.json()
        assert await job_ids(http) == [first.json()["id"]]


async def test_the_same_key_sent_many_times_at_once_is_one_job(leader: InProcessLeader) -> None:
    """A client retrying before its first answer came: the submits all wait together
    (preparing in a thread, then in the group commit), and only the first makes a job."""
    async with leader.http() as http:
        answers = await asyncio.gather(*(post(http, "burst") for _ in range(8)))
        assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
        assert len({a.json()["id"] for a in answers}) == 1
        assert await job_ids(http) == [answers[0].json()["id"]]


async def test_different_keys_or_none_are_different_jobs(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        answers = [await post(http, key) for key in ("one", "two", None, None)]
        assert [a.status_code for a in answers] == [201] * 4
        assert sorted(await job_ids(http)) == sorted(a.json()["id"] for a in answers)
        assert len(set(await job_ids(http))) == 4


async def test_keys_belong_to_their_owner(leader: InProcessLeader) -> None:
    alice, bob = leader.token("user", "alice"), leader.token("user", "bob")
    async with leader.http(alice) as as_alice, leader.http(bob) as as_bob:
        mine = await post(as_alice, "shared-key")
        theirs = await post(as_bob, "shared-key")
        assert (mine.status_code, theirs.status_code) == (201, 201)
        assert mine.json()["id"] != theirs.json()["id"]


async def test_a_deleted_job_frees_its_key(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        first = (await post(http, "k")).json()["id"]
        deleted = await http.post("/api/jobs/actions", json={"action": "delete", "ids": [first]})
        assert deleted.status_code == 200
        again = await post(http, "k")
        assert again.status_code == 201
        assert again.json()["id"] != first


async def test_a_key_reused_for_another_spec_is_refused(leader: InProcessLeader) -> None:
    """A script that reuses its key for its next job must hear so, not get the first job
    back as if the second were made: its second shot would never render."""
    async with leader.http() as http:
        first = await post(http, "nightly")
        other = await http.post(
            "/api/jobs", json={**SPEC, "name": "shot2"}, headers={"Idempotency-Key": "nightly"}
        )
        assert other.status_code == 422
        error = other.json()["error"]
        assert "Idempotency-Key 'nightly' was used for another submit" in error
        assert first.json()["id"] in error
        assert "\n" not in error
        assert await job_ids(http) == [first.json()["id"]]


async def test_the_same_spec_in_another_key_order_is_a_retry(leader: InProcessLeader) -> None:
    """A retry from another client library may order the keys otherwise."""
    body = dict(reversed(list({**SPEC, "env": {"A": "1", "B": "2"}}.items())))
    body_again = {**SPEC, "env": {"B": "2", "A": "1"}}
    async with leader.http() as http:
        first = await http.post("/api/jobs", json=body, headers={"Idempotency-Key": "k2"})
        again = await http.post("/api/jobs", json=body_again, headers={"Idempotency-Key": "k2"})
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"]


async def test_a_retry_that_writes_defaults_out_is_still_a_retry(
    leader: InProcessLeader,
) -> None:
    """A client that builds its request again may write out what it left out before:
    the renderer's default, its own name as owner, a default float."""
    alice = leader.token("user", "alice")
    spec = {"frames": "1-4", "argv": ["render"]}
    spelled_out = {
        **spec,
        "renderer": "generic",
        "owner": "alice",
        "timeouts": {"auto_multiplier": 2.0},
        "chunk": 1,
    }
    async with leader.http(alice) as http:
        first = await http.post("/api/jobs", json=spec, headers={"Idempotency-Key": "k3"})
        again = await http.post("/api/jobs", json=spelled_out, headers={"Idempotency-Key": "k3"})
        assert (first.status_code, again.status_code) == (201, 200), again.text
        assert again.json()["id"] == first.json()["id"]


class _SpecBefore(msgspec.Struct, omit_defaults=True):
    frames: str
    chunk: int = 1


class _SpecAfter(msgspec.Struct, omit_defaults=True):
    frames: str
    chunk: int = 1
    gpus: int = 0  # a field a later leader added


def test_a_retry_across_an_upgrade_that_added_a_field_is_still_a_retry() -> None:
    """A submit answered by one leader and retried at a newer one (a rolling upgrade,
    a failover to an upgraded standby) hashes the same when the new field is unset."""
    before = _set_fields(_SpecBefore(frames="1-4", chunk=2))
    assert _set_fields(_SpecAfter(frames="1-4", chunk=2)) == before
    assert _set_fields(_SpecAfter(frames="1-4", chunk=2, gpus=1)) != before


def test_no_priority_and_the_default_one_are_the_same_request() -> None:
    """A spec's priority became "none: the leader fills it in" where it had been 50 by
    default: a submit made before and retried after hashes alike (break round 33d)."""
    unnamed = request_digest(JobSpec(frames="1-4", argv=["render"]), "alice")
    assert request_digest(JobSpec(frames="1-4", argv=["render"], priority=50), "alice") == unnamed
    assert request_digest(JobSpec(frames="1-4", argv=["render"], priority=60), "alice") != unnamed


async def test_a_retry_after_the_priority_range_changed_is_still_a_retry(tmp_path: Path) -> None:
    """The job's priority is filled in from user_priority_min; the request stays the one asked."""
    async with leader_in_process(tmp_path) as leader:
        alice = leader.token("user", "alice")
        async with leader.http(alice) as http:
            first = await http.post("/api/jobs", json=SPEC, headers={"Idempotency-Key": "k9"})
            assert first.status_code == 201
            leader.leader.config = msgspec.structs.replace(
                leader.leader.config, user_priority_min=60
            )
            again = await http.post("/api/jobs", json=SPEC, headers={"Idempotency-Key": "k9"})
            assert again.status_code == 200, again.text
            assert again.json()["id"] == first.json()["id"]
            assert again.json()["priority"] == 50


@pytest.mark.parametrize("key", ["", "x" * 129, "has space", "slash/no", "é".encode()])
async def test_a_malformed_key_is_400(leader: InProcessLeader, key: str | bytes) -> None:
    async with leader.http() as http:
        refused = await http.post("/api/jobs", json=SPEC, headers={"Idempotency-Key": key})
        assert refused.status_code == 400
        assert "Idempotency-Key must be 1-128 characters" in refused.json()["error"]
        assert await job_ids(http) == []


async def test_the_longest_key_and_every_allowed_character(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        for key in ("k" * 128, "Az09_.:-"):
            assert (await post(http, key)).status_code == 201
            assert (await post(http, key)).status_code == 200
        assert len(await job_ids(http)) == 2


async def test_a_key_survives_a_restart(tmp_path: Path) -> None:
    async with leader_in_process(tmp_path) as farm, farm.http() as http:
        first = await post(http, "survivor")
        assert first.status_code == 201
    async with leader_in_process(tmp_path) as farm, farm.http() as http:
        again = await post(http, "survivor")
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert await job_ids(http) == [first.json()["id"]]
        other = await http.post(
            "/api/jobs", json={**SPEC, "frames": "1-8"}, headers={"Idempotency-Key": "survivor"}
        )
        assert other.status_code == 422


# --- the client retries through a connection that loses the answer -------------------


@dataclass
class LossyProxy:
    """TCP on loopback to the leader; the first connection's answer never reaches the client."""

    upstream_port: int
    connections: int = 0
    dropped: int = 0
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        lose_answer = self.connections == 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        forward = asyncio.create_task(pump(reader, up_writer))
        try:
            if lose_answer:
                # The leader has handled the request once it starts answering; drop it all.
                await up_reader.read(1)
                self.dropped += 1
                writer.transport.abort()
            else:
                await pump(up_reader, writer)
        finally:
            forward.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forward
            up_writer.close()
            writer.close()


async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


@asynccontextmanager
async def lossy_proxy(leader: InProcessLeader) -> AsyncIterator[LossyProxy]:
    upstream = httpx.URL(leader.url).port
    assert upstream is not None
    proxy = LossyProxy(upstream)
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy.port = server.sockets[0].getsockname()[1]
    async with server:
        yield proxy


async def test_the_client_retries_a_lost_answer_without_a_second_job(
    leader: InProcessLeader,
) -> None:
    spec = JobSpec(name="shot", frames="1-4", chunk=2, argv=["render"])
    async with lossy_proxy(leader) as proxy:
        client = FarmClient(
            f"http://127.0.0.1:{proxy.port}", leader.admin_token, submit_retry_delays=(0.05,) * 4
        )
        with client:
            # The client is synchronous; the leader and the proxy run on this event loop.
            job = await asyncio.to_thread(client.submit, spec)
    assert proxy.dropped == 1
    assert proxy.connections == 2
    assert list(leader.leader.scheduler.jobs) == [job.id]
