"""Tokens listed and revoked: a leaked token stops working at once, its links with it."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed

from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader
from tests.server.test_console_link import console


def token_id(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()[:12]


async def closed_with(ws: object) -> int | None:
    """The close code once the leader closes ``ws`` (websockets' client connection)."""
    try:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    except ConnectionClosed as exc:
        return exc.rcvd.code if exc.rcvd is not None else None


async def test_the_list_names_every_token_and_shows_no_secret(leader: InProcessLeader) -> None:
    alice = leader.token("user", "alice")
    async with leader.http() as http:
        answer = await http.get("/api/tokens")
    assert answer.status_code == 200, answer.text
    listed = {(t["name"], t["role"]): t for t in answer.json()}
    assert listed[("alice", "user")]["id"] == token_id(alice)
    assert listed[("admin", "admin")]["leaders"] is True
    assert listed[("agent", "agent")]["leaders"] is True
    assert listed[("alice", "user")]["leaders"] is False
    for secret in (alice, leader.admin_token, leader.agent_token):
        assert secret not in answer.text
        assert hashlib.sha256(secret.encode()).hexdigest() not in answer.text


async def test_a_revoked_token_is_refused_and_the_links_it_opened_are_closed(
    leader: InProcessLeader,
) -> None:
    viewer = leader.token("viewer", "val")
    node = leader.token("agent", "node7")
    async with (
        console(leader, viewer) as seen,
        FakeAgent.connect(leader.ws_url, node, "node7") as agent,
    ):
        assert "node7" in leader.leader.agents
        async with leader.http() as http:
            for secret in (viewer, node):
                answer = await http.delete(f"/api/tokens/{token_id(secret)}")
                assert answer.status_code == 200, answer.text
                assert answer.json()["id"] == token_id(secret)
        assert await closed_with(seen.ws) == 1008
        assert await closed_with(agent.ws) == 1008
    async with leader.http(viewer) as http:
        assert (await http.get("/api/jobs")).status_code == 401
    async with leader.http() as http:
        names = {t["name"] for t in (await http.get("/api/tokens")).json()}
        assert "val" not in names
        assert "node7" not in names
        again = await http.delete(f"/api/tokens/{token_id(viewer)}")
        assert again.status_code == 404
        assert "no token with the id" in again.json()["error"]
    # Revoked in the store too: a restarted leader refuses it as well.
    assert leader.leader.store.tokens()
    assert all(row.name not in ("val", "node7") for row in leader.leader.store.tokens())


async def test_the_leaders_own_tokens_are_not_revoked(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        for secret in (leader.admin_token, leader.agent_token):
            answer = await http.delete(f"/api/tokens/{token_id(secret)}")
            assert answer.status_code == 409, answer.text
            assert "replace the file" in answer.json()["error"]
        assert (await http.get("/api/whoami")).status_code == 200


async def test_a_console_that_says_hello_after_its_token_was_revoked_is_closed(
    leader: InProcessLeader,
) -> None:
    """A console opened with a token and holding its hello back was let in after the
    token was revoked: an admin's, with every right, on a link nothing would close."""
    from websockets.asyncio.client import connect

    from farmtui.protocol import ConsoleHello, encode

    mallory = leader.token("admin", "mallory")
    headers = {"Authorization": f"Bearer {mallory}"}
    async with connect(f"{leader.ws_url}/ws/console", additional_headers=headers) as ws:
        async with leader.http() as http:
            answer = await http.delete(f"/api/tokens/{token_id(mallory)}")
            assert answer.status_code == 200, answer.text
        await ws.send(encode(ConsoleHello()).decode())
        assert await closed_with(ws) == 1008
    assert not leader.leader.consoles


async def test_an_agent_whose_hello_waited_while_its_token_was_revoked_is_refused(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hello checked, then waiting for the group commit, when the token is revoked:
    it must not register (``Leader.revoked`` closes only links registered)."""
    from websockets.asyncio.client import connect

    from farmtui.protocol import AgentHello, encode

    farm = leader.leader
    node = leader.token("agent", "node9")
    waiting = farm.hello_waiting

    @contextlib.contextmanager
    def revoked_meanwhile(name: str, agent_id: str) -> Iterator[None]:
        farm.tokens.forget(hashlib.sha256(node.encode()).hexdigest())
        with waiting(name, agent_id):
            yield

    monkeypatch.setattr(farm, "hello_waiting", revoked_meanwhile)
    headers = {"Authorization": f"Bearer {node}"}
    async with connect(f"{leader.ws_url}/ws/agent", additional_headers=headers) as ws:
        await ws.send(encode(AgentHello(name="node9", slots=1)).decode())
        assert await closed_with(ws) == 1008
    assert "node9" not in farm.agents
    assert "node9" not in farm.scheduler.nodes or not farm.scheduler.nodes["node9"].online
