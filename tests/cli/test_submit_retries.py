"""Submits carry an Idempotency-Key and are retried with it when the connection fails."""

from __future__ import annotations

import http.client
import re
from dataclasses import dataclass, field

import pytest

from farmtui import cli, errors
from farmtui.client import FarmClient
from farmtui.protocol import JobSpec
from tests.cli.fake_leader import GOOD_TOKEN, FakeLeader

SPEC = JobSpec(name="shot", frames="1-4", chunk=2, argv=["true"])


@dataclass
class Flaky:
    """A FarmClient transport: the fake leader behind a connection that fails with each of
    ``failures`` first, the way the client's own connection raises them."""

    fake: FakeLeader
    failures: list[Exception]
    sent: list[tuple[str, str, dict[str, str], bytes | None]] = field(default_factory=list)

    def __call__(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, bytes]:
        self.sent.append((method, target, headers, body))
        if self.failures:
            raise self.failures.pop(0)
        return self.fake.transport()(method, target, headers, body)


def refused() -> ConnectionRefusedError:
    return ConnectionRefusedError(111, "Connection refused")


def test_submit_retries_with_the_same_key() -> None:
    fake = FakeLeader()
    transport = Flaky(
        fake,
        [
            refused(),
            http.client.RemoteDisconnected("Remote end closed connection without response"),
            TimeoutError("timed out"),
        ],
    )
    with FarmClient(
        "http://fake", GOOD_TOKEN, transport=transport, submit_retry_delays=(0, 0, 0, 0)
    ) as farm:
        job = farm.submit(SPEC)
    assert len(transport.sent) == 4
    keys = {headers["Idempotency-Key"] for _, _, headers, _ in transport.sent}
    assert len(keys) == 1
    assert re.fullmatch(r"[0-9a-f]{32}", keys.pop())
    assert {body for _, _, _, body in transport.sent} == {transport.sent[0][3]}
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
    transport = Flaky(FakeLeader(), [refused() for _ in range(10)])
    with (
        FarmClient(
            "http://farm:7878", GOOD_TOKEN, transport=transport, submit_retry_delays=(0, 0, 0, 0)
        ) as farm,
        pytest.raises(errors.LeaderDown) as caught,
    ):
        farm.submit(SPEC)
    assert str(caught.value) == "cannot reach the leader at http://farm:7878: connection refused"
    assert len(transport.sent) == 5


def test_only_submits_are_retried_and_errors_from_the_leader_are_not() -> None:
    transport = Flaky(FakeLeader(), [refused()])
    with FarmClient("http://farm:7878", GOOD_TOKEN, transport=transport) as farm:
        with pytest.raises(errors.LeaderDown):
            farm.action("pause", ["abc"])
        assert len(transport.sent) == 1

    answered: list[str] = []

    def full(
        method: str, target: str, headers: dict[str, str], body: bytes | None
    ) -> tuple[int, str, bytes]:
        answered.append(target)
        return (
            503,
            "Service Unavailable",
            b'{"error": "the leader\'s disk is full: nothing was changed"}',
        )

    with (
        FarmClient("http://farm:7878", GOOD_TOKEN, transport=full) as farm,
        pytest.raises(errors.ServerError) as caught,
    ):
        farm.submit(SPEC)
    assert str(caught.value) == "the leader's disk is full: nothing was changed"
    assert caught.value.status == 503
    assert answered == ["/api/jobs"]


def test_farm_submit_sends_an_idempotency_key(
    fake_leader: FakeLeader, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["submit", "--leader", "http://fake", "--token", GOOD_TOKEN, "--frames", "1-4"]
    assert cli.main([*argv, "--", "true"]) == 0
    job_id = capsys.readouterr().out.strip()
    assert list(fake_leader.jobs) == [job_id]
    (request,) = [r for r in fake_leader.requests if r.method == "POST"]
    assert re.fullmatch(r"[0-9a-f]{32}", request.headers["Idempotency-Key"])
