"""The Python client: error mapping and job references, against the fake leader."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from farmtui import errors
from farmtui.client import FarmClient, match_job
from farmtui.protocol import JobPatch, JobSpec, Timeouts
from tests.cli.fake_leader import GOOD_TOKEN, FakeLeader


def client(fake: FakeLeader, token: str = GOOD_TOKEN) -> FarmClient:
    return FarmClient("http://fake", token, transport=fake.transport())


def spec(name: str = "shot", frames: str = "1-10") -> JobSpec:
    return JobSpec(name=name, frames=frames, chunk=2, argv=["true"])


def test_submit_and_read_back_records() -> None:
    fake = FakeLeader()
    with client(fake) as farm:
        job = farm.submit(spec())
        assert [j.id for j in farm.jobs()] == [job.id]
        detail = farm.show(job.id)
    assert detail.job.name == "shot"
    assert len(detail.chunks) == 5
    assert detail.frame_states["1"] == "unassigned"
    sent = fake.requests[0]
    assert sent.method == "POST"
    assert sent.url.path == "/api/jobs"
    assert sent.headers["Authorization"] == f"Bearer {GOOD_TOKEN}"
    assert sent.headers["Content-Type"] == "application/json"


def test_a_wrong_token_is_an_auth_error() -> None:
    with client(FakeLeader(), token="wrong") as farm, pytest.raises(errors.AuthError) as caught:
        farm.jobs()
    assert str(caught.value) == "the leader refused the token"
    assert caught.value.status == 401
    assert caught.value.exit_code == 1


def test_the_leaders_error_message_is_kept() -> None:
    with client(FakeLeader()) as farm, pytest.raises(errors.NotFound, match="no job nope"):
        farm.show("nope")


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (400, b'{"error": "frames: bad"}', errors.BadRequest, "frames: bad"),
        (403, b'{"error": "admins only"}', errors.PermissionDenied, "not allowed: admins only"),
        (413, b'{"error": "too big"}', errors.BadRequest, "too big"),
        (500, b"Internal Server Error", errors.ServerError, "Internal Server Error"),
        (502, b"", errors.ServerError, "HTTP 502 Bad Gateway"),
        (
            404,
            b"<html><body><h1>404 Not Found</h1>nginx</body></html>",
            errors.NotFound,
            "HTTP 404 Not Found from http://fake, not a farmtui leader's answer: "
            "is that the leader's URL?",
        ),
    ],
)
def test_error_statuses_map_to_the_tree(
    status: int, body: bytes, kind: type[errors.LeaderError], message: str
) -> None:
    def answer(
        method: str, target: str, headers: dict[str, str], content: bytes | None
    ) -> tuple[int, str, bytes]:
        return status, HTTPStatus(status).phrase, body

    with FarmClient("http://fake", "t", transport=answer) as farm, pytest.raises(kind) as caught:
        farm.nodes()
    assert str(caught.value) == message
    assert caught.value.status == status


def test_an_unreadable_answer_is_a_server_error() -> None:
    def unreadable(
        method: str, target: str, headers: dict[str, str], content: bytes | None
    ) -> tuple[int, str, bytes]:
        return 200, "OK", b'{"x": 1}'

    with (
        FarmClient("http://fake", "t", transport=unreadable) as farm,
        pytest.raises(errors.ServerError, match="cannot read"),
    ):
        farm.jobs()


def test_a_leader_that_is_down() -> None:
    def refuse(
        method: str, target: str, headers: dict[str, str], content: bytes | None
    ) -> tuple[int, str, bytes]:
        raise ConnectionRefusedError(111, "Connection refused")

    with (
        FarmClient("http://farm:7878", "t", transport=refuse) as farm,
        pytest.raises(errors.LeaderDown) as caught,
    ):
        farm.jobs()
    assert str(caught.value) == "cannot reach the leader at http://farm:7878: connection refused"


def test_job_references_resolve_by_id_prefix_or_name() -> None:
    fake = FakeLeader()
    a = fake.add(spec("alpha"), job_id="abc111")
    b = fake.add(spec("beta"), job_id="abc222")
    c = fake.add(spec("beta"), job_id="def333")
    jobs = [a, b, c]
    assert match_job("abc111", jobs) == "abc111"
    assert match_job("abc2", jobs) == "abc222"
    assert match_job("alpha", jobs) == "abc111"
    with pytest.raises(errors.AmbiguousJob, match="prefix 'abc' matches 2 jobs"):
        match_job("abc", jobs)
    with pytest.raises(errors.AmbiguousJob, match="2 jobs are named 'beta'"):
        match_job("beta", jobs)
    with pytest.raises(errors.NotFound, match="no job 'zzz'"):
        match_job("zzz", jobs)


def test_actions_patch_and_chunk_actions_send_the_documented_bodies() -> None:
    fake = FakeLeader()
    with client(fake) as farm:
        job = farm.submit(spec())
        result = farm.action("pause", [job.id])
        assert [j.state for j in result.jobs] == ["paused"]
        farm.patch(job.id, JobPatch(timeouts=Timeouts(max_render=60.0)))
        detail = farm.chunk_action(job.id, "hold", [0, 1])
        assert [c.state for c in detail.chunks[:3]] == ["held", "held", "queued"]
        assert farm.create_token("viewer", "ops").token == "new-secret"
        assert "created" in farm.events(job.id)
        assert farm.logs(job.id, 3) == "chunk 3 output\n"
    bodies = {r.url.path: r.content for r in fake.requests if r.method in ("POST", "PATCH")}
    assert bodies["/api/jobs/actions"] == b'{"action":"pause","ids":["%s"]}' % job.id.encode()
    assert bodies[f"/api/jobs/{job.id}/chunks/actions"] == b'{"action":"hold","chunks":[0,1]}'
