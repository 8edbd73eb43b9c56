"""Webhooks reach only what the leader's admin allows (issue 9, item 5).

A non-admin's job webhook must be within ``webhook_allow``; the leader-wide
webhook and admins are unrestricted; no redirect is ever followed.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from websockets.asyncio.client import connect

from farmtui.protocol import ConsoleHello, encode
from server.config import LeaderConfig, check_config
from server.errors import BadRequest, ConfigError, Forbidden
from server.url_origin import origin_only
from server.webhooks import check_job_webhook, webhook_allowed
from tests.helpers.leader import InProcessLeader, leader_in_process, wait_for

ALLOW = ["https://hooks.example.com/farm", "http://127.0.0.1:9000/"]


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://hooks.example.com/farm", True),
        ("https://hooks.example.com/farm/job1", True),
        ("https://HOOKS.example.com:443/farm/x", True),
        ("https://hooks.example.com/farmer", False),
        ("https://hooks.example.com/", False),
        ("https://hooks.example.com.evil.net/farm", False),
        ("https://evil.net/https://hooks.example.com/farm", False),
        ("https://hooks.example.com@evil.net/farm", False),
        ("https://hooks.example.com\\@evil.net/farm", False),
        ("https://hooks.example.com:8443/farm", False),
        ("http://hooks.example.com/farm", False),
        ("https://hooks.example.com/farm/../admin", False),
        ("https://hooks.example.com/farm/%2e%2e/admin", False),
        ("https://hooks.example.com/farm/..%2Fadmin", False),
        ("http://127.0.0.1:9000/anything", True),
        ("http://127.0.0.1:9001/anything", False),
        ("http://127.0.0.1/x", False),
        ("http://169.254.169.254/latest/meta-data", False),
        ("ftp://hooks.example.com/farm", False),
        ("not a url", False),
    ],
)
def test_a_webhook_is_allowed_only_within_a_prefix(url: str, allowed: bool) -> None:
    assert webhook_allowed(url, ALLOW) is allowed


def test_with_nothing_allowed_only_admins_set_job_webhooks() -> None:
    with pytest.raises(Forbidden, match="webhook_allow is empty"):
        check_job_webhook("https://hooks.example.com/farm", [], unrestricted=False)
    check_job_webhook("http://127.0.0.1:1/x", [], unrestricted=True)
    check_job_webhook(None, [], unrestricted=False)
    with pytest.raises(BadRequest, match="http:// or https://"):
        check_job_webhook("file:///etc/passwd", [], unrestricted=True)


def test_refusals_never_show_a_webhooks_path() -> None:
    secret = "https://hooks.slack.com/services/T0/B0/SECRET"
    with pytest.raises(Forbidden) as refused:
        check_job_webhook(secret, ALLOW, unrestricted=False)
    assert "SECRET" not in str(refused.value)
    assert origin_only(secret) == "https://hooks.slack.com/…"


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://hookuser:pa/ss@hooks.example.com/x", "is not a URL"),
        ("http://127.0.0.1:99999/x", "has a port that is not 1-65535"),
    ],
)
def test_a_webhook_that_is_no_url_is_refused_without_quoting_it(url: str, why: str) -> None:
    """httpx's own words quoted the part it could not read: there, half a password."""
    with pytest.raises(BadRequest) as refused:
        check_job_webhook(url, [], unrestricted=True)
    assert str(refused.value) == f"webhook (not a URL) {why}"


@pytest.mark.parametrize(
    "entry",
    ["hooks.example.com", "ftp://hooks.example.com/", "https://h.example/x?y=1", "https://u@h/"],
)
def test_a_bad_webhook_allow_entry_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError, match="webhook_allow"):
        check_config(LeaderConfig(webhook_allow=[entry]))


def test_webhook_allow_defaults_to_nothing() -> None:
    assert LeaderConfig().webhook_allow == []


class Endpoint:
    """A loopback HTTP server that records POSTs, or answers each with a redirect."""

    def __init__(self, redirect_to: str | None = None) -> None:
        self.redirect_to = redirect_to
        self.hits: list[str] = []
        self.url = ""

    async def hook(self, request: Request) -> Response:
        self.hits.append(request.url.path)
        if self.redirect_to is not None:
            return Response(status_code=302, headers={"location": self.redirect_to})
        return Response(status_code=204)


@asynccontextmanager
async def serving(endpoint: Endpoint) -> AsyncIterator[Endpoint]:
    app = Starlette(routes=[Route("/{path:path}", endpoint.hook, methods=["POST", "GET"])])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    endpoint.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await wait_for(lambda: server.started, 10.0, "a webhook endpoint")
        yield endpoint
    finally:
        server.should_exit = True
        await task
        sock.close()


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    async with serving(Endpoint()) as running:
        yield running


async def post_job(farm: InProcessLeader, token: str, webhook: str) -> httpx.Response:
    async with farm.http(token) as http:
        return await http.post(
            "/api/jobs", json={"frames": "1", "argv": ["render"], "webhook": webhook}
        )


def one_line(response: httpx.Response) -> str:
    error: str = response.json()["error"]
    assert "\n" not in error
    return error


async def test_a_users_job_webhook_to_loopback_is_refused_and_nothing_changes(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    async with leader_in_process(tmp_path, LeaderConfig()) as farm:
        alice = farm.token("user", "alice")
        for target in (f"{endpoint.url}/job", "http://169.254.169.254/latest/meta-data"):
            response = await post_job(farm, alice, target)
            assert response.status_code == 403, response.text
            assert "webhook" in one_line(response)
        assert farm.leader.scheduler.jobs == {}
        # Not by a later PATCH either (REST; the console's edit runs the same check).
        async with farm.http(alice) as http:
            job = (await http.post("/api/jobs", json={"frames": "1", "argv": ["r"]})).json()
            response = await http.patch(
                f"/api/jobs/{job['id']}", json={"webhook": f"{endpoint.url}/job"}
            )
        assert response.status_code == 403, response.text
        assert farm.leader.job(job["id"]).spec.webhook is None  # type: ignore[union-attr]


async def test_a_users_job_webhook_within_webhook_allow_is_accepted_and_posted(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    config = LeaderConfig(webhook_allow=[f"{endpoint.url}/hooks"])
    async with leader_in_process(tmp_path, config) as farm:
        alice = farm.token("user", "alice")
        refused = await post_job(farm, alice, f"{endpoint.url}/hookshot")
        assert refused.status_code == 403, refused.text
        response = await post_job(farm, alice, f"{endpoint.url}/hooks/alice")
        assert response.status_code == 201, response.text
        job_id = response.json()["id"]
        async with farm.http() as http:
            await http.post("/api/jobs/actions", json={"action": "complete", "ids": [job_id]})
        await wait_for(lambda: endpoint.hits == ["/hooks/alice"], 10.0, "the job's webhook")


async def test_readers_see_a_job_webhook_by_its_origin_only(
    tmp_path: Path, endpoint: Endpoint
) -> None:
    """A webhook's path is often its key (Slack's is): no reader reads it back, not over
    REST, not in a console, not the owner; the leader still POSTs to all of it."""
    secret = f"{endpoint.url}/hooks/T0/B0/SECRET"
    config = LeaderConfig(webhook_allow=[f"{endpoint.url}/hooks"])
    async with leader_in_process(tmp_path, config) as farm:
        alice, viewer = farm.token("user", "alice"), farm.token("viewer", "watcher")
        job_id = (await post_job(farm, alice, secret)).json()["id"]
        for token in (viewer, alice, farm.admin_token):
            async with farm.http(token) as http:
                for url in ("/api/jobs", f"/api/jobs/{job_id}", "/api/jobs?limit=5"):
                    read = await http.get(url)
                    assert read.status_code == 200
                    assert "SECRET" not in read.text
                    assert f"{endpoint.url}/…" in read.text
            headers = {"Authorization": f"Bearer {token}"}
            async with connect(f"{farm.ws_url}/ws/console", additional_headers=headers) as ws:
                await ws.send(encode(ConsoleHello()).decode())
                async with asyncio.timeout(10):
                    while job_id not in (frame := await ws.recv()):
                        pass
                assert "SECRET" not in frame
        async with farm.http() as http:
            await http.post("/api/jobs/actions", json={"action": "complete", "ids": [job_id]})
        await wait_for(lambda: endpoint.hits == ["/hooks/T0/B0/SECRET"], 10.0, "the webhook")


async def test_admins_set_any_job_webhook(tmp_path: Path, endpoint: Endpoint) -> None:
    async with leader_in_process(tmp_path, LeaderConfig()) as farm:
        response = await post_job(farm, farm.admin_token, f"{endpoint.url}/job")
        assert response.status_code == 201, response.text
        async with farm.http() as http:
            response = await http.patch(
                f"/api/jobs/{response.json()['id']}", json={"webhook": f"{endpoint.url}/other"}
            )
        assert response.status_code == 200, response.text


async def test_a_redirect_to_another_host_is_never_followed(
    tmp_path: Path, endpoint: Endpoint, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="farmtui.leader.webhooks")
    async with serving(Endpoint(redirect_to=f"{endpoint.url}/stolen")) as redirecting:
        config = LeaderConfig(webhook=f"{redirecting.url}/farm/SECRET")
        async with leader_in_process(tmp_path, config) as farm:
            async with farm.http() as http:
                job = (await http.post("/api/jobs", json={"frames": "1", "argv": ["r"]})).json()
                await http.post(
                    "/api/jobs/actions", json={"action": "complete", "ids": [job["id"]]}
                )
            hooks = farm.leader.webhooks
            await wait_for(lambda: hooks.failed >= 1, 10.0, "the redirected POST to fail")
    assert redirecting.hits == ["/farm/SECRET"]
    assert endpoint.hits == [], "the redirect's target got nothing"
    assert hooks.sent == 0
    messages = [r.getMessage() for r in caplog.records]
    assert any("redirects are not followed" in m for m in messages), messages
    assert not [m for m in messages if "SECRET" in m], "a webhook's path is never logged"
