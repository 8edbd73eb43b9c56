"""Who may do what: every cell of the README's table, tried against a real leader.

The expectations are read from the README's "Who may do what" table, and
that table must be the one the leader enforces (``server.rights``), so the
README, the code and this test cannot drift apart. Each cell is tried over
REST and, where its row has one, the console WebSocket (the agent WebSocket
for "connect as a node"). A refused try must get 401/403 (or the WebSocket's
refusal) and change nothing: not the database, not the scheduler's views, not
a file under the sync root.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from agent.staging import Fence, UploadToLeader
from farmtui.protocol import (
    LEADER_PATHS,
    ROOT_ID_FILE,
    AgentHello,
    AssignChunk,
    BlockNode,
    ConsoleHello,
    ConsoleMessage,
    FetchNodeLog,
    FetchTaskOutput,
    JobPatch,
    MoveJob,
    PatchJob,
    Refused,
    Reply,
    RunChunkAction,
    RunJobAction,
    SetNodeEnabled,
    SetPriority,
    ShowArchived,
    WatchJob,
    Welcome,
    agent_tag,
    encode,
    leader_to_agent,
    leader_to_console,
)
from server import rights
from server.config import LeaderConfig
from server.joblogs import events_path
from server.rights import ACTIONS, COLUMNS, RIGHTS, WHO, Action, Who
from tests.helpers.fake_agent import FakeAgent
from tests.helpers.leader import InProcessLeader, wait_for

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "## Who may do what"

SPEC: dict[str, Any] = {
    "frames": "1-2",
    "chunk": 1,
    "renderer": "generic",
    "argv": ["render"],
    "output": "renders/shot/f_####.png",
}


@pytest.fixture
def leader_config() -> LeaderConfig:
    # Nodes without heartbeats must not be lost while the matrix runs.
    return LeaderConfig(tick_interval=0.05, console_updates_per_second=100.0, node_timeout=600.0)


# --- the README's table ------------------------------------------------------------


def readme_table() -> str:
    """The markdown table under "Who may do what" in the README."""
    text = README.read_text(encoding="utf-8")
    assert f"\n{SECTION}\n" in text, f"the README has no {SECTION!r} section"
    section = text.split(f"\n{SECTION}\n", 1)[1].split("\n## ", 1)[0]
    return "".join(line + "\n" for line in section.splitlines() if line.startswith("|"))


def readme_expectations() -> dict[tuple[Action, Who], bool]:
    """(action, column) -> allowed, as the README's table says."""
    header, _, *rows = readme_table().splitlines()

    def cells(line: str) -> list[str]:
        return [cell.strip() for cell in line.strip().strip("|").split(" | ")]

    columns = cells(header)
    by_label = {right.label: action for action, right in RIGHTS.items()}
    expected: dict[tuple[Action, Who], bool] = {}
    for row in rows:
        values = dict(zip(columns, cells(row), strict=True))
        action = by_label[values["action"]]
        for who, heading in COLUMNS.items():
            value = values[heading]
            assert value == "no" or value == "yes" or value.startswith("yes: "), value
            expected[action, who] = value != "no"
    return expected


def test_the_readme_table_is_the_table_the_leader_enforces() -> None:
    assert readme_table() == rights.markdown_table(), (
        "README.md's 'Who may do what' table differs from server/rights.py: "
        "paste the output of `python -m server.rights`"
    )
    assert {action for action, _ in readme_expectations()} == set(ACTIONS)


# --- the principals and what they act on --------------------------------------------


State = tuple[str, bytes, dict[str, bytes]]


@dataclass
class Matrix:
    farm: InProcessLeader
    stack: AsyncExitStack
    tokens: dict[str, str] = field(default_factory=dict)
    count: int = 0
    node7: FakeAgent | None = None

    def token(self, who: Who) -> str:
        match who:
            case "viewer":
                return self.tokens["val"]
            case "user_own" | "user_others":
                return self.tokens["alice"]
            case "admin":
                return self.farm.admin_token
            case "agent_shared":
                return self.farm.agent_token
            case "agent_node":
                return self.tokens["node7"]

    @staticmethod
    def owner(who: Who) -> str:
        """The owner of the job ``who`` acts on: alice's own, else bob's."""
        return "alice" if who == "user_own" else "bob"

    def fresh(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    async def job(self, owner: str, **changes: Any) -> str:
        """A new job of ``owner``, submitted by an admin."""
        body = {**SPEC, "name": self.fresh("job"), "owner": owner, **changes}
        async with self.farm.http() as http:
            response = await http.post("/api/jobs", json=body)
        assert response.status_code == 201, response.text
        job_id: str = response.json()["id"]
        return job_id

    def node(self, name: str) -> None:
        """A node the scheduler knows (no link): it takes chunks submitted after it."""
        hello = AgentHello(name=name, slots=100, agent_id=name)
        scheduler = self.farm.leader.scheduler
        self.farm.leader.run(lambda now: scheduler.node_connected(hello, now)[0])

    async def connect_node7(self) -> None:
        """node7, connected over the agent WebSocket with its own token."""
        if self.node7 is None:
            self.node7 = await self.stack.enter_async_context(
                FakeAgent.connect(self.farm.ws_url, self.tokens["node7"], "node7", slots=100)
            )

    def state(self) -> State:
        """Everything a request could change: the database, the views, the files."""
        leader = self.farm.leader
        with leader.store._using:  # not in the middle of a commit on the commits' thread
            database = "\n".join(leader.store.db.iterdump())
        # last_seen moves with the clock (the tick forgives a stalled loop, and writes the
        # nodes' last contacts now and then: ``CONTACTS_EVERY``), not with requests.
        database = _LAST_SEEN.sub('"last_seen":0', database)
        nodes = [msgspec.structs.replace(n, last_seen=0.0) for n in leader.scheduler.node_views()]
        views = msgspec.json.encode([leader.scheduler.job_views(True), nodes])
        root = self.farm.root
        leader.logwriter.wait()  # the logs written so far are on disk
        files = {
            str(path.relative_to(root)): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file()
        }
        return database, views, files


_LAST_SEEN = re.compile(r'"last_seen":[0-9.e+-]+')


def difference(before: State, after: State) -> str:
    """The first thing that differs between two states, for a readable failure."""
    database, views, files = before
    if database != after[0]:
        changed = set(after[0].splitlines()) ^ set(database.splitlines())
        return f"database rows {sorted(changed)[:4]}"
    if views != after[1]:
        old, new = msgspec.json.decode(views), msgspec.json.decode(after[1])
        return f"views {_first_difference(old, new)}"
    return f"files {sorted(set(files.items()) ^ set(after[2].items()))[:4]}"


def _first_difference(old: Any, new: Any, path: str = "") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}")
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{path}[{index}]")
    return f"{path}: {old!r} -> {new!r}"


# --- trying one cell: REST, console, agent ------------------------------------------

Act = Callable[[], Awaitable[bool]]
# Sets up what a try needs, then returns the try itself: True allowed, False refused.
Probe = Callable[[Matrix, Who], Awaitable[Act]]


async def rest(m: Matrix, who: Who, method: str, url: str, **kwargs: Any) -> bool:
    async with m.farm.http(m.token(who)) as http:
        response = await http.request(method, url, **kwargs)
    if response.status_code < 300:
        return True
    assert response.status_code in (401, 403), f"{method} {url}: {response.text}"
    body = response.json()
    assert set(body) == {"error"}, body
    assert "\n" not in body["error"], body
    return False


async def rest_all(m: Matrix, who: Who, urls: list[str]) -> bool:
    """GET each URL: all allowed, or all refused."""
    results = {url: await rest(m, who, "GET", url) for url in urls}
    assert len(set(results.values())) == 1, results
    return next(iter(results.values()))


async def console(m: Matrix, who: Who, requests: list[ConsoleMessage]) -> bool:
    """Open a console and send ``requests``: all answered ok, or all refused."""
    headers = {"Authorization": f"Bearer {m.token(who)}"}
    try:
        async with connect(f"{m.farm.ws_url}/ws/console", additional_headers=headers) as ws:
            await ws.send(encode(ConsoleHello()).decode())
            replies: dict[int, Reply] = {}
            for number, request in enumerate(requests, 1):
                request.request_id = number
                await ws.send(encode(request).decode())
            async with asyncio.timeout(10):
                while len(replies) < len(requests):
                    message = leader_to_console.decode(await ws.recv(decode=False))
                    if isinstance(message, Reply) and message.request_id:
                        replies[message.request_id] = message
                    else:
                        assert not isinstance(message, Reply), message
    except InvalidStatus as exc:
        refused = exc.response.status_code
    else:
        refused = 0
    if refused:
        assert refused in (401, 403)
        return False
    oks = {reply.ok for reply in replies.values()}
    assert len(oks) == 1, replies
    for reply in replies.values():
        assert reply.ok or (reply.error and "\n" not in reply.error), reply
    return oks.pop()


async def agent_hello(m: Matrix, who: Who, name: str) -> bool:
    headers = {"Authorization": f"Bearer {m.token(who)}"}
    async with connect(f"{m.farm.ws_url}/ws/agent", additional_headers=headers) as ws:
        hello = AgentHello(name=name, slots=1, agent_id=m.fresh("agent-id-"))
        await ws.send(encode(hello).decode())
        first = leader_to_agent.decode(await ws.recv(decode=False))
        if isinstance(first, Welcome):
            await ws.close()
        else:
            assert isinstance(first, Refused), first
            await ws.wait_closed()
            assert ws.close_code == 1008, (ws.close_code, first.error)
            return False
    # Let the leader see the link close, so nothing changes during the next try.
    await wait_for(lambda: name not in m.farm.leader.agents, what=f"{name}'s link to close")
    return True


# --- one probe per row and way in -------------------------------------------------


async def whoami(m: Matrix, who: Who) -> Act:
    return lambda: rest(m, who, "GET", "/api/whoami")


async def _job_with_a_log(m: Matrix, who: Who) -> str:
    if "reader" not in m.farm.leader.scheduler.nodes:
        m.node("reader")
    job = await m.job(m.owner(who))
    chunk = m.farm.leader.chunk(job, 0)
    assert chunk is not None
    assert chunk.attempt == 1
    m.farm.leader.output((job, 0, 1), ["rendering frame 1"])
    m.farm.leader.joblogs.flush()
    return job


async def read_rest(m: Matrix, who: Who) -> Act:
    job = await _job_with_a_log(m, who)
    urls = [
        "/api/jobs",
        f"/api/jobs/{job}",
        f"/api/jobs/{job}/events",
        f"/api/jobs/{job}/logs?chunk=0",
        "/api/nodes",
        "/api/nodes/reader/log",
        "/api/limits",
    ]
    return lambda: rest_all(m, who, urls)


async def read_console(m: Matrix, who: Who) -> Act:
    job = await _job_with_a_log(m, who)
    requests: list[ConsoleMessage] = [
        WatchJob(job_id=job),
        FetchTaskOutput(job_id=job, chunk=0, follow=False),
        FetchNodeLog(node="reader"),
        ShowArchived(enabled=True),
    ]
    return lambda: console(m, who, requests)


async def submit(m: Matrix, who: Who) -> Act:
    body = {**SPEC, "name": m.fresh("job"), "owner": m.owner(who)}
    return lambda: rest(m, who, "POST", "/api/jobs", json=body)


async def submit_urgent(m: Matrix, who: Who) -> Act:
    body = {**SPEC, "name": m.fresh("job"), "owner": m.owner(who), "priority": 0}
    return lambda: rest(m, who, "POST", "/api/jobs", json=body)


async def webhook_any(m: Matrix, who: Who) -> Act:
    # webhook_allow is empty: only an admin's job may have a webhook at all.
    body = {**SPEC, "name": m.fresh("job"), "owner": m.owner(who), "webhook": "http://127.0.0.1:9/"}
    return lambda: rest(m, who, "POST", "/api/jobs", json=body)


async def webhook_any_patch(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    body = {"webhook": "http://169.254.169.254/latest"}
    return lambda: rest(m, who, "PATCH", f"/api/jobs/{job}", json=body)


async def job_action_rest(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    body = {"action": "pause", "ids": [job]}
    return lambda: rest(m, who, "POST", "/api/jobs/actions", json=body)


async def job_action_console(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    return lambda: console(m, who, [RunJobAction(action="pause", job_ids=[job])])


async def chunk_action_rest(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    body = {"action": "hold", "chunks": [0]}
    return lambda: rest(m, who, "POST", f"/api/jobs/{job}/chunks/actions", json=body)


async def chunk_action_console(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    return lambda: console(m, who, [RunChunkAction(action="hold", job_id=job, chunks=[0])])


async def patch_rest(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    return lambda: rest(m, who, "PATCH", f"/api/jobs/{job}", json={"name": "renamed"})


async def patch_console(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    return lambda: console(m, who, [PatchJob(job_id=job, patch=JobPatch(name="renamed"))])


async def block_node_rest(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    name = m.fresh("host")
    m.node(name)
    return lambda: rest(m, who, "POST", f"/api/jobs/{job}/nodes/{name}/block")


async def block_node_console(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    name = m.fresh("host")
    m.node(name)
    return lambda: console(m, who, [BlockNode(job_id=job, node=name)])


async def move_rest(m: Matrix, who: Who) -> Act:
    await m.job(m.owner(who))
    second = await m.job(m.owner(who))  # moving it up passes only the first
    return lambda: rest(m, who, "POST", f"/api/jobs/{second}/move", json={"where": "up"})


async def move_console(m: Matrix, who: Who) -> Act:
    await m.job(m.owner(who))
    second = await m.job(m.owner(who))
    return lambda: console(m, who, [MoveJob(job_id=second, where="up")])


async def set_priority_rest(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    return lambda: rest(m, who, "POST", f"/api/jobs/{job}/priority", json={"priority": 60})


async def set_priority_console(m: Matrix, who: Who) -> Act:
    job = await m.job(m.owner(who))
    return lambda: console(m, who, [SetPriority(job_id=job, priority=60)])


async def set_node_enabled_rest(m: Matrix, who: Who) -> Act:
    name = m.fresh("host")
    m.node(name)
    return lambda: rest(m, who, "POST", f"/api/nodes/{name}/disable")


async def set_node_enabled_console(m: Matrix, who: Who) -> Act:
    name = m.fresh("host")
    m.node(name)
    return lambda: console(m, who, [SetNodeEnabled(node=name, enabled=False)])


async def set_limit_rest(m: Matrix, who: Who) -> Act:
    name = m.fresh("licence")
    return lambda: rest(m, who, "PUT", f"/api/limits/{name}", json={"units": 2})


async def delete_limit_rest(m: Matrix, who: Who) -> Act:
    name = m.fresh("licence")
    assert await rest(m, "admin", "PUT", f"/api/limits/{name}", json={"units": 2})
    return lambda: rest(m, who, "DELETE", f"/api/limits/{name}")


async def create_token(m: Matrix, who: Who) -> Act:
    body = {"role": "viewer", "name": m.fresh("newcomer")}
    return lambda: rest(m, who, "POST", "/api/tokens", json=body)


async def list_tokens(m: Matrix, who: Who) -> Act:
    return lambda: rest(m, who, "GET", "/api/tokens")


async def revoke_token(m: Matrix, who: Who) -> Act:
    secret = m.farm.token("viewer", m.fresh("leaver"))
    token_id = hashlib.sha256(secret.encode()).hexdigest()[:12]
    return lambda: rest(m, who, "DELETE", f"/api/tokens/{token_id}")


async def agent_link(m: Matrix, who: Who) -> Act:
    # A per-node token says its own name; anyone else a name nobody holds.
    name = "node7" if who == "agent_node" else m.fresh("host")
    return lambda: agent_hello(m, who, name)


async def upload_output(m: Matrix, who: Who) -> Act:
    await m.connect_node7()
    folder = m.fresh("shot")
    job = await m.job(m.owner(who), frames="1", output=f"out/{folder}/f_####.png")
    chunk = m.farm.leader.chunk(job, 0)
    assert chunk is not None
    assert chunk.state == "assigned"
    assert chunk.attempts[-1].node == "node7"
    params = {"job": job, "chunk": 0, "attempt": 1}
    url = f"/api/files/out/{folder}/f_0001.png"
    return lambda: rest(m, who, "PUT", url, params=params, content=b"frame")


async def upload_any(m: Matrix, who: Who) -> Act:
    url = f"/api/files/anything/{m.fresh('file')}.bin"
    return lambda: rest(m, who, "PUT", url, content=b"data")


PROBES: dict[Action, list[Probe]] = {
    "whoami": [whoami],
    "read": [read_rest, read_console],
    "submit": [submit],
    "submit_urgent": [submit_urgent],
    "webhook_any": [webhook_any, webhook_any_patch],
    "job_action": [job_action_rest, job_action_console],
    "chunk_action": [chunk_action_rest, chunk_action_console],
    "patch": [patch_rest, patch_console],
    "block_node": [block_node_rest, block_node_console],
    "move": [move_rest, move_console],
    "set_priority": [set_priority_rest, set_priority_console],
    "set_node_enabled": [set_node_enabled_rest, set_node_enabled_console],
    "set_limit": [set_limit_rest, delete_limit_rest],
    "manage_tokens": [create_token, list_tokens, revoke_token],
    "agent_link": [agent_link],
    "upload_output": [upload_output],
    "upload_any": [upload_any],
}


@pytest.fixture
async def matrix(leader: InProcessLeader) -> AsyncIterator[Matrix]:
    async with AsyncExitStack() as stack:
        m = Matrix(leader, stack)
        m.tokens = {
            "val": leader.token("viewer", "val"),
            "alice": leader.token("user", "alice"),
            "node7": leader.token("agent", "node7"),
        }
        yield m


@pytest.mark.parametrize("action", ACTIONS)
async def test_who_may_do_what(matrix: Matrix, action: Action) -> None:
    """Every column of one row, every way in: as the README says, and a refusal changes nothing."""
    expected = readme_expectations()
    assert PROBES.keys() == set(ACTIONS)
    for who in WHO:
        for probe in PROBES[action]:
            act = await probe(matrix, who)
            before = matrix.state()
            allowed = await act()
            where = f"{action} by {COLUMNS[who]} ({probe.__name__})"
            assert allowed == expected[action, who], (
                f"{where}: {'allowed' if allowed else 'refused'}, the README says otherwise"
            )
            if not allowed:
                after = matrix.state()
                changed = difference(before, after)
                assert after == before, f"{where} was refused but changed: {changed}"


# --- regressions ------------------------------------------------------------------


async def _hello(
    farm: InProcessLeader, token: str, name: str, agent_id: str
) -> tuple[Refused | Welcome, int | None]:
    headers = {"Authorization": f"Bearer {token}"}
    async with connect(f"{farm.ws_url}/ws/agent", additional_headers=headers) as ws:
        await ws.send(encode(AgentHello(name=name, slots=1, agent_id=agent_id)).decode())
        first = leader_to_agent.decode(await ws.recv(decode=False))
        assert isinstance(first, Refused | Welcome)
        await ws.wait_closed()
        return first, ws.close_code


async def test_a_node_token_is_only_its_node_and_never_drops_the_real_one(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    node7, node8 = leader.token("agent", "node7"), leader.token("agent", "node8")
    headers = {"Authorization": f"Bearer {node7}"}
    async with connect(f"{leader.ws_url}/ws/agent", additional_headers=headers) as ws:
        real = FakeAgent(ws, "node7")
        await real.send(AgentHello(name="node7", slots=1, agent_id="secret-agent-id-7"))
        await real.expect(Welcome)
        link = leader.leader.agents["node7"]
        # Another node's token claiming node7: refused for good (no retry), node7 untouched.
        refused, code = await _hello(leader, node8, "node7", "secret-agent-id-7")
        assert isinstance(refused, Refused)
        assert not refused.retry
        assert code == 1008
        assert refused.error == (
            "forbidden: this agent token is for node node8; it may not connect as node7"
        )
        # node7's token claiming another name: refused too.
        refused, code = await _hello(leader, node7, "node8", "secret-agent-id-7")
        assert isinstance(refused, Refused)
        assert code == 1008
        assert "this agent token is for node node7; it may not connect as node8" in refused.error
        # The shared token, from another agent: the name is held; the holder's id is not told.
        refused, _ = await _hello(leader, leader.agent_token, "node7", "intruder")
        assert isinstance(refused, Refused)
        assert refused.retry
        assert "node name node7 is held by another agent" in refused.error
        assert "secret-agent-id-7" not in refused.error
        # Nor in the leader's log, which logged it whole (break round 34b).
        # A tag the real node7's agent logs at its start (agent/main.py), to trace it.
        holder, newcomer = agent_tag("secret-agent-id-7"), agent_tag("intruder")
        assert f"held by another agent ({holder}; this one is {newcomer})" in caplog.text
        assert "secret-agent-id-7" not in caplog.text
        assert leader.leader.agents["node7"] is link
        assert "node8" not in leader.leader.scheduler.nodes
        # The real node7 still gets work over its link.
        async with leader.http() as http:
            job = (await http.post("/api/jobs", json={**SPEC, "name": "after"})).json()["id"]
        assert (await real.expect(AssignChunk)).job_id == job


async def test_agent_tokens_are_made_for_one_node(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        for body, reason in [
            ({"role": "agent"}, "an agent token is for one node"),
            ({"role": "agent", "name": "agent"}, "reserved for the leader's shared agent.token"),
            ({"role": "agent", "name": "node@7"}, "an agent token is named for its node"),
            ({"role": "agent", "name": "node7\n"}, "an agent token is named for its node"),
        ]:
            response = await http.post("/api/tokens", json=body)
            assert response.status_code == 400, body
            assert reason in response.json()["error"]
        made = await http.post("/api/tokens", json={"role": "agent", "name": "node7"})
        assert made.status_code == 201
    async with leader.http(made.json()["token"]) as http:
        assert (await http.get("/api/whoami")).json() == {"name": "node7", "role": "agent"}


async def _assigned_to_node7(farm: InProcessLeader, node7: FakeAgent, output: str) -> str:
    async with farm.http() as http:
        response = await http.post(
            "/api/jobs", json={**SPEC, "name": "mine", "frames": "1", "output": output}
        )
    assert response.status_code == 201, response.text
    job: str = response.json()["id"]
    assert (await node7.expect(AssignChunk)).job_id == job
    return job


async def test_a_name_has_one_role(leader: InProcessLeader) -> None:
    """Jobs belong to a name: a user token named ``admin`` owned (and could cancel)
    every job the admin submitted. Another token of the same name and role is
    fine: a new one is made before the old is revoked."""
    async with leader.http() as http:
        refused = await http.post("/api/tokens", json={"role": "user", "name": "admin"})
        assert refused.status_code == 409
        assert refused.json()["error"] == (
            "the name 'admin' is taken by a token of role admin: "
            "jobs belong to a name, so each name has one role"
        )
        first = await http.post("/api/tokens", json={"role": "user", "name": "alice"})
        second = await http.post("/api/tokens", json={"role": "user", "name": "alice"})
        assert (first.status_code, second.status_code) == (201, 201)
        viewer = await http.post("/api/tokens", json={"role": "viewer", "name": "alice"})
        assert viewer.status_code == 409
        long = await http.post("/api/tokens", json={"role": "user", "name": "x" * 5000})
        assert long.status_code == 400
        assert len(long.json()["error"]) < 200, "the whole name echoed"
    roles = {p.role for p in leader.leader.tokens.by_hash.values() if p.name in ("admin", "alice")}
    assert roles == {"admin", "user"}


async def test_no_token_is_made_while_the_disk_is_short(
    leader: InProcessLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every other change is refused below the disk's reserve; a token was still
    saved (and worked after a restart)."""
    monkeypatch.setattr(leader.leader, "room_refusal", lambda: "the leader's disk is nearly full")
    before = dict(leader.leader.tokens.by_hash)
    async with leader.http() as http:
        response = await http.post("/api/tokens", json={"role": "user", "name": "bob"})
    assert response.status_code == 503
    assert response.json()["error"] == "the leader's disk is nearly full"
    assert leader.leader.tokens.by_hash == before
    assert "bob" not in {row.name for row in leader.leader.store.tokens()}


async def test_agents_upload_only_the_output_of_their_own_current_attempt(
    leader: InProcessLeader,
) -> None:
    node7, node8 = leader.token("agent", "node7"), leader.token("agent", "node8")
    async with FakeAgent.connect(leader.ws_url, node7, "node7") as agent:
        job = await _assigned_to_node7(leader, agent, "renders/mine/f_####.png")
        events = leader.root / f"jobs/{job}/events.log"
        leader.leader.logwriter.wait()
        log_before = events.read_bytes()
        fence: dict[str, Any] = {"job": job, "chunk": 0, "attempt": 1}
        tries: list[tuple[str, str, dict[str, Any], int, str]] = [
            # Another job's (or its own job's) event log: the leader's own, for everyone.
            (node7, f"jobs/{job}/events.log", fence, 403, "is the leader's own"),
            (leader.agent_token, f"jobs/{job}/events.log", fence, 403, "is the leader's own"),
            (leader.agent_token, f"jobs/{job}/events.log", {}, 403, "is the leader's own"),
            ("admin", f"jobs/{job}/events.log", {}, 403, "is the leader's own"),
            ("admin", "JOBS/x.log", {}, 403, "is the leader's own"),
            ("admin", "nodes/node7.log", {}, 403, "is the leader's own"),
            ("admin", ".farmtui-root", {}, 403, "is the leader's own"),
            # Not an output file of the attempt, or no attempt named.
            (node7, "renders/mine/f_0002.png", fence, 403, "is not an output file of attempt 1"),
            (node7, "renders/other.png", fence, 403, "is not an output file of attempt 1"),
            (node7, "renders/mine/f_0001.png", {}, 403, "name it with ?job=&chunk=&attempt="),
            (leader.agent_token, "renders/x.png", {}, 403, "name it with ?job=&chunk=&attempt="),
            # Another node's attempt; an attempt that is not current.
            (node8, "renders/mine/f_0001.png", fence, 403, "runs on node node7, not node8"),
            (node7, "renders/mine/f_0001.png", {**fence, "attempt": 2}, 409, "is not current"),
        ]
        for token, path, params, status, reason in tries:
            async with leader.http(token) as http:
                response = await http.put(f"/api/files/{path}", params=params, content=b"evil")
            assert response.status_code == status, (path, response.text)
            assert reason in response.json()["error"], (path, response.text)
        leader.leader.logwriter.wait()
        assert events.read_bytes() == log_before
        assert not (leader.root / "renders").exists()
        # Its own output, with its own token and with the shared one.
        for token in (node7, leader.agent_token):
            async with leader.http(token) as http:
                response = await http.put(
                    "/api/files/renders/mine/f_0001.png", params=fence, content=b"frame"
                )
            assert response.status_code == 204, response.text
    assert (leader.root / "renders/mine/f_0001.png").read_bytes() == b"frame"


async def test_the_agents_own_upload_code_passes_for_its_attempt_only(
    leader: InProcessLeader, tmp_path: Path
) -> None:
    """``agent.staging.UploadToLeader`` (nodes without the share) against the real checks."""
    node7 = leader.token("agent", "node7")
    source = tmp_path / "frame.png"
    source.write_bytes(b"\x89PNG frame")
    async with FakeAgent.connect(leader.ws_url, node7, "node7") as agent:
        async with leader.http() as http:
            body = {**SPEC, "name": "odd names", "frames": "1-2", "chunk": 2}
            body["output"] = "renders/shot 1/f ü_####.png"
            assert (await http.post("/api/jobs", json=body)).status_code == 201
        assign = await agent.expect(AssignChunk)
        fence = Fence(assign.job_id, assign.chunk, assign.attempt, lambda: None)
        for token in (node7, leader.agent_token):
            upload = UploadToLeader(leader.url, token)
            for relative in assign.outputs:
                await upload.deliver(relative, source, fence)
            with pytest.raises(OSError, match="HTTP 403"):
                await upload.deliver("renders/shot 1/extra.png", source, fence)
    for relative in assign.outputs:
        assert (leader.root / relative).read_bytes() == b"\x89PNG frame"
    assert not (leader.root / "renders/shot 1/extra.png").exists()


async def test_no_output_pattern_points_into_the_leaders_folders(leader: InProcessLeader) -> None:
    async with leader.http() as http:
        for output in ("jobs/victim/chunk-####.attempt-1.log", "./nodes/n_####.log"):
            response = await http.post("/api/jobs", json={**SPEC, "output": output})
            assert response.status_code == 400, output
            assert "which only the leader writes" in response.json()["error"]
        assert (await http.get("/api/jobs")).json() == []


async def test_no_output_pattern_reaches_the_leaders_folders_through_a_symlink(
    leader: InProcessLeader, tmp_path: Path
) -> None:
    """A renderer can leave symlinks in a shared sync root: a user's job then wrote
    another job's chunk log through ``links/jobs -> ../jobs``, or wrote outside."""
    links = leader.root / "links"
    links.mkdir()
    (links / "jobs").symlink_to("../jobs")
    (links / "out").symlink_to(tmp_path)
    (leader.root / "shots").mkdir()
    (links / "shots").symlink_to("../shots")
    async with leader.http() as http:
        for output, where in [
            ("links/jobs/victim/chunk-####.attempt-1.log", "into jobs/"),
            ("links/out/f_####.png", "outside the sync root"),
        ]:
            response = await http.post("/api/jobs", json={**SPEC, "output": output})
            assert response.status_code == 400, output
            assert response.json()["error"] == (
                f"output pattern {output!r} leads {where} through a symlink; refused"
            )
        # One that stays inside is refused too, at once: nodes write through no symlink,
        # and every chunk would have failed at its end (break round 26e, N5).
        output = "links/shots/a/f_####.png"
        response = await http.post("/api/jobs", json={**SPEC, "output": output})
        assert response.status_code == 400
        assert response.json()["error"] == (
            f"output pattern {output!r} goes through a symlink in the sync root; nodes "
            "write through none: use the folder it leads to (shots/a/)"
        )
        assert (await http.get("/api/jobs")).json() == []


def _leftovers(folder: Path) -> list[str]:
    return [path.name for path in folder.rglob("*") if path.name.endswith(".upload")]


async def test_upload_errors_are_one_line_4xx_without_server_paths(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    long_name = "f" * 300 + ".png"
    async with leader.http() as http:
        assert (await http.put("/api/files/renders/a.png", content=b"x")).status_code == 204
        for path, reason in [
            (f"renders/{long_name}", "has a name longer than 232 bytes"),
            (f"renders/{long_name}/x.png", "has a name longer than 232 bytes"),
            ("renders/a.png/b.png", "cannot write 'renders/a.png/b.png'"),
        ]:
            response = await http.put(f"/api/files/{path}", content=b"x")
            assert response.status_code == 400, response.text
            error = response.json()["error"]
            assert reason in error
            assert "\n" not in error
            assert len(error) < 200
            assert str(leader.root) not in error
            assert str(leader.data) not in error
    # A job whose output names are too long is refused before any node renders it.
    async with leader.http() as http:
        response = await http.post(
            "/api/jobs", json={**SPEC, "name": "long", "output": f"long/{'g' * 300}_####.png"}
        )
    assert response.status_code == 400, response.text
    assert "has a name longer than 232 bytes" in response.json()["error"]
    assert _leftovers(leader.root) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_an_upload_cut_off_midway_leaves_nothing_and_no_error(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    port = urlsplit(leader.url).port
    assert port is not None
    folder = leader.root / "renders"
    reader, writer = await asyncio.open_connection("127.0.0.1", port, family=socket.AF_INET)
    writer.write(
        b"PUT /api/files/renders/cut.png HTTP/1.1\r\nHost: farm\r\n"
        + f"Authorization: Bearer {leader.admin_token}\r\n".encode()
        + b"Content-Length: 1000000\r\n\r\n"
        + b"x" * 5000
    )
    await writer.drain()
    await wait_for(lambda: folder.is_dir() and bool(_leftovers(folder)), what="the upload")
    writer.close()
    await writer.wait_closed()
    await wait_for(lambda: not _leftovers(folder), what="the temporary file to go")
    assert not (folder / "cut.png").exists()
    # The leader is fine, and logged no error (a 500 would have).
    async with leader.http() as http:
        assert (await http.get("/healthz")).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    del reader


async def test_a_refused_console_request_says_why_in_one_line(
    leader: InProcessLeader, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    alice = leader.token("user", "alice")
    async with leader.http() as http:
        job = (await http.post("/api/jobs", json={**SPEC, "name": "bobs", "owner": "bob"})).json()
    headers = {"Authorization": f"Bearer {alice}"}
    async with connect(f"{leader.ws_url}/ws/console", additional_headers=headers) as ws:
        await ws.send(encode(ConsoleHello()).decode())
        pause = RunJobAction(action="pause", job_ids=[job["id"]], request_id=1)
        await ws.send(encode(pause).decode())
        await ws.send(encode(SetPriority(job_id=job["id"], priority=0, request_id=2)).decode())
        replies: dict[int, Reply] = {}
        async with asyncio.timeout(10):
            while len(replies) < 2:
                message = leader_to_console.decode(await ws.recv(decode=False))
                if isinstance(message, Reply):
                    replies[message.request_id] = message
    assert replies[1].error == f"job {job['id']} belongs to bob; users control only their own jobs"
    assert replies[2].error == "only admins may change priority"
    for token, status, reason in [
        (leader.agent_token, 403, "the shared agent token may not read jobs, nodes or logs"),
        ("nonsense", 401, "missing, unknown or revoked token"),
    ]:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(
                f"{leader.ws_url}/ws/console",
                additional_headers={"Authorization": f"Bearer {token}"},
            ):
                pass
        assert refused.value.response.status_code == status
        assert reason in refused.value.response.body.decode()
    # A turned-away console is no error in the leader's log (uvicorn logs one otherwise).
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "connection rejected (401 Unauthorized)" in caplog.text


def test_every_refusal_names_the_rule() -> None:
    agent = rights.Principal("node7", "agent")
    shared = rights.Principal(rights.SHARED_AGENT, "agent")
    alice = rights.Principal("alice", "user")
    assert agent.node == "node7"
    assert shared.node is None
    assert rights.refusal(alice, "patch", "bob", "j1") == (
        "job j1 belongs to bob; users control only their own jobs"
    )
    assert rights.refusal(alice, "submit", "bob") == (
        "the job would belong to bob; users submit only as themselves"
    )
    assert rights.refusal(alice, "set_priority", "alice") == "only admins may change priority"
    assert rights.refusal(shared, "submit") == "the shared agent token may not submit jobs"
    assert rights.refusal(agent, "read") == (
        "the agent token of node node7 may not read jobs, nodes or logs"
    )
    assert rights.node_refusal(agent, "node7") is None
    assert rights.node_refusal(shared, "anything") is None
    # The leader's own names, as the leader spells them.
    assert ROOT_ID_FILE in LEADER_PATHS
    assert events_path("j1").split("/")[0] in LEADER_PATHS
