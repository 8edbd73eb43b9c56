"""Submits carry an Idempotency-Key and are retried with it when the connection fails."""

from __future__ import annotations

import re

import httpx
import pytest

from farmtui import cli, errors
from farmtui.client import FarmClient
from farmtui.protocol import JobSpec
from tests.cli.fake_leader import GOOD_TOKEN, FakeLeader

SPEC = JobSpec(name="shot", frames="1-4", chunk=2, argv=["true"])


def flaky(fake: FakeLeader, failures: list[httpx.TransportError]) -> httpx.MockTransport:
    """The fake leader behind a connection that fails with each of ``failures`` first."""
    sent: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        if failures:
            raise failures.pop(0)
        return fake.handle(request)

    transport = httpx.MockTransport(handle)
    transport.sent = sent  # type: ignore[attr-defined]
    return transport


def test_submit_retries_with_the_same_key() -> None:
    fake = FakeLeader()
    transport = flaky(
        fake,
        [
            httpx.ConnectError("[Errno 111] Connection refused"),
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            httpx.ReadTimeout("timed out"),
        ],
    )
    with FarmClient(
        "http://fake", GOOD_TOKEN, transport=transport, submit_retry_delays=(0, 0, 0, 0)
    ) as farm:
        job = farm.submit(SPEC)
    sent: list[httpx.Request] = transport.sent  # type: ignore[attr-defined]
    assert len(sent) == 4
    keys = {request.headers["Idempotency-Key"] for request in sent}
    assert len(keys) == 1
    assert re.fullmatch(r"[0-9a-f]{32}", keys.pop())
    assert {request.content for request in sent} == {sent[0].content}
    assert list(fake.jobs) == [job.id]


def test_each_submit_has_its_own_key() -> None:
    fake = FakeLeader()
    with FarmClient("http://fake", GOOD_TOKEN, transport=fake.transport()) as farm:
        farm.submit(SPEC)
        farm.submit(SPEC)
        farm.submit(SPEC, key="chosen-by-the-script")
    keys = [request.headers["Idempotency-Key"] for request in fake.requests]
    assert len(set(keys)) == 3
    assert keys[2] == "chosen-by-the-script"


def test_retries_are_bounded_then_the_usual_leader_down_error() -> None:
    failures = [httpx.ConnectError("[Errno 111] Connection refused") for _ in range(10)]
    transport = flaky(FakeLeader(), failures)
    with (
        FarmClient(
            "http://farm:7878", GOOD_TOKEN, transport=transport, submit_retry_delays=(0, 0, 0, 0)
        ) as farm,
        pytest.raises(errors.LeaderDown) as caught,
    ):
        farm.submit(SPEC)
    assert str(caught.value) == "cannot reach the leader at http://farm:7878: connection refused"
    assert len(transport.sent) == 5  # type: ignore[attr-defined]


def test_only_submits_are_retried_and_errors_from_the_leader_are_not() -> None:
    transport = flaky(FakeLeader(), [httpx.ConnectError("[Errno 111] Connection refused")])
    with FarmClient("http://farm:7878", GOOD_TOKEN, transport=transport) as farm:
        with pytest.raises(errors.LeaderDown):
            farm.action("pause", ["abc"])
        assert len(transport.sent) == 1  # type: ignore[attr-defined]

    full = httpx.MockTransport(
        lambda request: httpx.Response(
            503, json={"error": "the leader's disk is full: nothing was changed"}
        )
    )
    with (
        FarmClient("http://farm:7878", GOOD_TOKEN, transport=full) as farm,
        pytest.raises(errors.ServerError) as caught,
    ):
        farm.submit(SPEC)
    assert str(caught.value) == "the leader's disk is full: nothing was changed"
    assert caught.value.status == 503


def test_farm_submit_sends_an_idempotency_key(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "--leader", "http://fake", "--token", GOOD_TOKEN, "--frames", "1-4"]
    assert cli.main([*argv, "--", "true"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert list(fake_leader.jobs) == [job_id]
    (request,) = [r for r in fake_leader.requests if r.method == "POST"]
    assert re.fullmatch(r"[0-9a-f]{32}", request.headers["Idempotency-Key"])
