"""A seeded fuzzer for a live leader: REST, the console WebSocket and the agent WebSocket.

It sends valid requests bent out of shape (wrong types, out-of-range numbers,
control characters and markup, traversal, unknown keys, broken JSON, oversized
bodies, every role's token) and checks what an attacker or a careless user
would notice:

- no answer is a 5xx, and the leader keeps serving;
- every refusal is one line of JSON that shows no secret and no server path;
- a refused input changes nothing that the leader reports (jobs, their chunks,
  nodes);
- (after the run) the leader's log holds no traceback and no token.

``tests/server/test_fuzz.py`` runs a few thousand inputs with a fixed seed;
``bench/fuzz.py`` runs the full-size campaign and reports its figures.
"""

from __future__ import annotations

import collections
import copy
import json
import random
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import msgspec
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from farmtui.protocol import PROTOCOL_VERSION

# Values that have broken parsers somewhere: the palette every mutation draws from.
WEIRD: list[Any] = [
    None, True, False, 0, -1, 1, 7, 101, 2**31, 2**63, -(2**63), 2**64, 10**30,
    1e308, -1e308, 0.5, 1.5, -0.0, "", " ", "0", "1.5", "-1", "nan", "inf", "1e9999",
    "x" * 70, "x" * 5000, "\x00", "\x1b[31mred", "a\nb", "tab\there", "\x7f", "\u0085",
    "[/oops]", "[@click=app.quit]x[/]", "[b]bold[/b]", "../../etc/passwd", "/etc/passwd",
    "..", "%2e%2e/x", "jobs/x/events.log", "1-10x0", "1-10x0.5", "1.5-3", "10-1x-1",
    "1-99999999", "1-100000000000", "ünïcødé", "\u202egnp.exe", "😀", "\ud800",
    [], {}, [None], [1, "a"], {"a": 1}, [[[[[]]]]],
]  # fmt: skip
ROLES = ("admin", "alice", "bob", "viewer", "agent", "bogus", "none", "query")
ROLE_WEIGHTS = (30, 25, 8, 10, 12, 5, 5, 5)


@dataclass
class Target:
    """The leader under test and the secrets and paths it must never show."""

    url: str
    tokens: dict[str, str]  # admin, alice, bob, viewer, agent
    log: Path
    private_paths: list[str]

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def secrets(self) -> list[str]:
        return list(self.tokens.values())


@dataclass(frozen=True)
class State:
    """What the leader reports, as bytes to compare: jobs, nodes, the focused jobs' details."""

    jobs: bytes
    nodes: bytes
    details: bytes


@dataclass
class Finding:
    kind: str
    input: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail} <- {self.input[:300]}"


@dataclass
class Tally:
    """What the campaign sent and what came back."""

    inputs: collections.Counter[str] = field(default_factory=collections.Counter)
    answers: collections.Counter[str] = field(default_factory=collections.Counter)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.inputs.values())


# --- mutation ----------------------------------------------------------------------


def weird(rng: random.Random) -> Any:
    """A fresh copy of a palette value (mutations must never change the palette)."""
    return copy.deepcopy(rng.choice(WEIRD))


def mutate(rng: random.Random, value: Any, rounds: int) -> Any:
    """``value`` (JSON-like) with ``rounds`` random changes."""
    for _ in range(rounds):
        value = _mutate_once(rng, value)
    return value


def _mutate_once(rng: random.Random, value: Any) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return weird(rng)
    if roll < 0.08:
        nested: Any = weird(rng)
        for _ in range(rng.choice((50, 200, 2000))):
            nested = [nested]
        return nested
    containers = list(_containers(value))
    if not containers:
        return weird(rng)
    holder = rng.choice(containers)
    if isinstance(holder, dict):
        keys = list(holder)
        action = rng.random()
        if keys and action < 0.55:
            holder[rng.choice(keys)] = weird(rng)
        elif keys and action < 0.75:
            del holder[rng.choice(keys)]
        elif keys and action < 0.85:
            key = rng.choice(keys)
            holder[key[:-1] + "x" if len(key) > 1 else "x"] = holder.pop(key)  # a typo
        else:
            holder[rng.choice(("unknown", "prority", "type", "__proto__", ""))] = weird(rng)
    elif holder:
        index = rng.randrange(len(holder))
        if rng.random() < 0.7:
            holder[index] = weird(rng)
        else:
            holder.extend([weird(rng)] * rng.choice((1, 100, 20000)))
    else:
        holder.append(weird(rng))
    return value


def _containers(value: Any, depth: int = 0) -> Iterator[Any]:
    if depth > 6:
        return
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from _containers(item, depth + 1)
    elif isinstance(value, list):
        yield value
        for item in value[:20]:
            yield from _containers(item, depth + 1)


def encode(rng: random.Random, value: Any) -> bytes:
    """JSON for ``value``, sometimes broken on purpose."""
    try:
        body = json.dumps(value, allow_nan=True).encode("utf-8", "surrogatepass")
    except (RecursionError, ValueError):
        body = b"[" * 100_000
    roll = rng.random()
    if roll < 0.03:
        return body[: rng.randrange(max(1, len(body)))]  # truncated
    if roll < 0.05:
        return b"\xff\xfe" + body
    if roll < 0.06:
        return b"{" * 5000
    if roll < 0.065:
        return b" " * (5 * 1024 * 1024)  # over every size limit
    return body


# --- the leader's state as its users see it ----------------------------------------------


def overview(http: httpx.Client, admin: str) -> tuple[list[Any], list[Any]]:
    """Every job's summary (state, priority, order, chunk counts) and the nodes' enabled flags."""
    headers = {"Authorization": f"Bearer {admin}"}
    jobs = http.get("/api/jobs", params={"all": "1"}, headers=headers).json()
    nodes = [
        (node["name"], node["state"] == "disabled")
        for node in http.get("/api/nodes", headers=headers).json()
    ]
    return [_without_clock(job) for job in jobs], nodes


def _without_clock(value: Any) -> Any:
    """Drop what changes with time alone (ages, estimates), keep what an input could change.

    ``position`` goes too: another job's move shifts it, and the job list's order
    already shows the queue.
    """
    if isinstance(value, dict):
        return {
            key: _without_clock(item)
            for key, item in value.items()
            if key
            not in {"elapsed", "eta", "remaining", "age", "last_seen", "blocked_nodes", "position"}
        }
    if isinstance(value, list):
        return [_without_clock(item) for item in value]
    return value


# --- the campaign ------------------------------------------------------------------------


class Fuzzer:
    def __init__(self, target: Target, seed: int) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.tally = Tally()
        # Bent requests go on one connection, the checker's reads on another: a
        # refused oversized body makes the server close the first (its next
        # request may then meet a reset, which ``send`` retries once).
        self.http = httpx.Client(base_url=target.url, timeout=30.0)
        self.reader = httpx.Client(base_url=target.url, timeout=30.0)
        # The state after the last input: the "before" of the next one. Nothing else
        # changes it (no agent runs anything), so one fingerprint per input suffices.
        self.last: tuple[bytes, bytes] | None = None
        self.known: list[str] = []
        self.details: dict[str, Any] = {}

    def close(self) -> None:
        self.http.close()
        self.reader.close()

    # -- helpers

    def state(self, focus: list[str] | None = None) -> State:
        """The overview, plus the full detail (chunks, frames) of the jobs in ``focus``."""
        admin = {"Authorization": f"Bearer {self.target.tokens['admin']}"}
        jobs, nodes = overview(self.reader, self.target.tokens["admin"])
        self.known = [job["id"] for job in jobs]
        encoded = msgspec.json.encode(jobs)
        if self.last is not None and encoded != self.last[0]:
            self.details.clear()  # something changed: fetch the details afresh when next needed
        for job_id in focus or []:
            detail = self.reader.get(f"/api/jobs/{job_id}", headers=admin)
            self.details[job_id] = _without_clock(detail.json()) if detail.is_success else None
        self.last = (encoded, msgspec.json.encode(nodes))
        return self._with_details(self.last, focus or [])

    def before(self, focus: list[str]) -> State:
        """What ``state(focus)`` was after the last input (fetching only what is not known)."""
        if self.last is None or any(job_id not in self.details for job_id in focus):
            return self.state(focus)
        return self._with_details(self.last, focus)

    def _with_details(self, last: tuple[bytes, bytes], focus: list[str]) -> State:
        details = msgspec.json.encode([self.details.get(job_id) for job_id in focus])
        return State(jobs=last[0], nodes=last[1], details=details)

    def focus(self, shown: str) -> list[str]:
        """The jobs an input names: their chunks and frames are compared in full."""
        return [job_id for job_id in self.known if job_id in shown][:2]

    def job_ids(self) -> list[str]:
        admin = {"Authorization": f"Bearer {self.target.tokens['admin']}"}
        return [job["id"] for job in self.reader.get("/api/jobs", headers=admin).json()]

    def find(self, kind: str, shown: str, detail: str) -> None:
        self.tally.findings.append(Finding(kind, shown, detail))

    def check_body(self, shown: str, status: int, body: bytes) -> None:
        text = body.decode("utf-8", "replace")
        for secret in self.target.secrets:
            if secret in text:
                self.find("secret", shown, f"a token in a {status} body")
        if status >= 400:
            for path in self.target.private_paths:
                if path in text:
                    self.find("path", shown, f"server path {path} in a {status} body: {text[:200]}")
            try:
                error = msgspec.json.decode(body)["error"]
            except (msgspec.DecodeError, KeyError, TypeError):
                self.find(
                    "error-shape", shown, f"{status} body is not {{'error': ...}}: {text[:200]}"
                )
                return
            if not isinstance(error, str) or "\n" in error:
                self.find("error-shape", shown, f"{status} error is not one line: {error!r}")

    def credentials(self) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query parameters for a random role (or none, or a wrong token)."""
        role = self.rng.choices(ROLES, ROLE_WEIGHTS)[0]
        tokens = self.target.tokens
        if role == "none":
            return {}, {}
        if role == "bogus":
            return {"Authorization": "Bearer " + self.rng.choice(["x", "Bearer", "a" * 5000])}, {}
        if role == "query":
            return {}, {"token": tokens[self.rng.choice(list(tokens))]}
        return {"Authorization": f"Bearer {tokens[role]}"}, {}

    # -- REST

    def send(self, method: str, path: str, **request: Any) -> httpx.Response:
        """One request; once more on a fresh connection if the kept-alive one was reset."""
        try:
            return self.http.request(method, path, **request)
        except (httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError):
            self.http.close()
            self.http = httpx.Client(base_url=self.target.url, timeout=30.0)
            return self.http.request(method, path, **request)

    def rest_templates(self, jobs: list[str]) -> list[tuple[str, str, dict[str, str], Any]]:
        job = self.rng.choice(jobs) if jobs else "0" * 14
        other = self.rng.choice(jobs) if jobs else job
        spec = {
            "name": "fuzz",
            "frames": "1-4",
            "chunk": 2,
            "priority": 60,
            "renderer": "generic",
            "argv": ["true"],
            "timeouts": {"max_render": 60.0},
            "retries": 1,
        }
        return [
            ("POST", "/api/jobs", {}, spec),
            ("GET", "/api/jobs", {"all": "1"}, None),
            ("GET", f"/api/jobs/{job}", {}, None),
            ("PATCH", f"/api/jobs/{job}", {}, {"retries": 2, "timeouts": {"min_render": 1.0}}),
            ("POST", "/api/jobs/actions", {}, {"action": "pause", "ids": [job]}),
            ("POST", "/api/jobs/actions", {}, {"action": "resume", "ids": [job]}),
            ("POST", f"/api/jobs/{job}/priority", {}, {"priority": 40}),
            ("POST", f"/api/jobs/{job}/move", {}, {"before": other}),
            ("POST", f"/api/jobs/{job}/move", {}, {"where": "top"}),
            ("POST", f"/api/jobs/{job}/chunks/actions", {}, {"action": "hold", "chunks": [0]}),
            ("GET", f"/api/jobs/{job}/events", {}, None),
            ("GET", f"/api/jobs/{job}/logs", {"chunk": "0", "attempt": "1"}, None),
            ("GET", "/api/nodes", {}, None),
            ("POST", "/api/nodes/fuzz-node/disable", {}, None),
            ("GET", "/api/nodes/fuzz-node/log", {"tail": "10"}, None),
            ("POST", "/api/tokens", {}, {"role": "viewer", "name": "fuzzed"}),
            ("GET", "/api/whoami", {}, None),
            ("PUT", "/api/files/renders/f_0001.png", {"job": job, "chunk": "0", "attempt": "1"},
             b"png"),
        ]  # fmt: skip

    def rest_once(self, jobs: list[str]) -> None:
        rng = self.rng
        method, path, query, body = rng.choice(self.rest_templates(jobs))
        headers, token_query = self.credentials()
        query = {**query, **token_query}
        if rng.random() < 0.15:  # bend the path: traversal, controls, huge ids
            parts = path.split("/")
            index = rng.randrange(2, len(parts)) if len(parts) > 2 else 1
            raw = str(weird(rng)).encode("utf-8", "surrogatepass")
            parts[index] = urllib.parse.quote(raw[:3000], safe="")
            path = "/".join(parts)
        if rng.random() < 0.15:
            key = rng.choice([*query, "chunk", "attempt", "tail", "all", "job"])
            query[key] = str(weird(rng)).encode("utf-8", "replace").decode()[:5000]
        if rng.random() < 0.05:
            headers["Idempotency-Key"] = rng.choice(["k", "x" * 5000, "ключ"]).encode().hex()
        content: bytes | None = None
        if isinstance(body, bytes):
            content = body if rng.random() < 0.7 else encode(rng, weird(rng))
        elif body is not None or rng.random() < 0.1:
            content = encode(rng, mutate(rng, body, rng.choice((0, 1, 1, 2, 3))))
        if content is not None and rng.random() < 0.8:
            headers["Content-Type"] = "application/json"
        mutating = method != "GET"
        shown = f"{method} {path} {query} {(content or b'')[:200]!r}"
        focus = self.focus(shown)
        before = self.before(focus) if mutating else None
        self.tally.inputs["rest"] += 1
        try:
            answer = self.send(method, path, params=query, headers=headers, content=content)
        except httpx.LocalProtocolError:
            return  # the client refused to send it (an illegal header): not an input
        except httpx.HTTPError as exc:
            self.find("transport", shown, f"{type(exc).__name__}: {exc}")
            return
        self.tally.answers[f"rest {answer.status_code}"] += 1
        if answer.status_code >= 500:
            self.find("5xx", shown, f"{answer.status_code} {answer.text[:200]}")
        self.check_body(shown, answer.status_code, answer.content)
        after = self.state(focus) if mutating else None
        refused = answer.status_code >= 400
        if refused and before is not None and after is not None and after != before:
            self.find(
                "changed", shown, f"refused with {answer.status_code}: {difference(before, after)}"
            )

    # -- console WebSocket

    def console_templates(self, jobs: list[str]) -> list[dict[str, Any]]:
        job = self.rng.choice(jobs) if jobs else "0" * 14
        return [
            {"type": "watch_job", "job_id": job},
            {"type": "job_action", "action": "pause", "job_ids": [job]},
            {"type": "chunk_action", "action": "hold", "job_id": job, "chunks": [0, 1]},
            {"type": "set_priority", "job_id": job, "priority": 30},
            {"type": "move_job", "job_id": job, "where": "bottom"},
            {"type": "patch_job", "job_id": job, "patch": {"name": "renamed", "retries": 3}},
            {"type": "set_node_enabled", "node": "fuzz-node", "enabled": False},
            {"type": "fetch_task_output", "job_id": job, "chunk": 0, "attempt": 1},
            {"type": "fetch_node_log", "node": "fuzz-node", "tail": 50},
            {"type": "show_archived", "enabled": True},
        ]

    def console_session(self, jobs: list[str], messages: int) -> None:
        role = self.rng.choice(("admin", "alice", "bob", "viewer", "agent"))
        token = self.target.tokens[role]
        try:
            ws = connect(
                self.target.ws_url + "/ws/console",
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=None,
                open_timeout=10,
            )
        except InvalidStatus as exc:
            self.tally.answers[f"console refused {exc.response.status_code}"] += 1
            if exc.response.status_code >= 500:
                self.find("5xx", f"console as {role}", str(exc))
            return
        with ws:
            ws.send(msgspec.json.encode({"type": "hello", "protocol": PROTOCOL_VERSION}))
            for number in range(1, messages + 1):
                message = mutate(self.rng, self.rng.choice(self.console_templates(jobs)), 1)
                if isinstance(message, dict):
                    message["request_id"] = number
                raw = encode(self.rng, message)
                shown = f"console {role}: {raw[:200]!r}"
                focus = self.focus(shown)
                before = self.before(focus)
                self.tally.inputs["console"] += 1
                try:
                    ws.send(raw)
                    reply = _await_reply(ws)
                except (ConnectionClosed, TimeoutError) as exc:
                    self.tally.answers[f"console closed {_close_code(exc)}"] += 1
                    if _close_code(exc) == 1011:
                        self.find("crash", shown, "the leader closed the console with 1011")
                    return
                self.tally.answers[f"console {'ok' if reply.get('ok') else 'refused'}"] += 1
                error = reply.get("error") or ""
                for secret in self.target.secrets:
                    if secret in error:
                        self.find("secret", shown, "a token in a console reply")
                for path in self.target.private_paths:
                    if path in error:
                        self.find("path", shown, f"server path in a console reply: {error[:200]}")
                after = self.state(focus)
                if after != before and not reply.get("ok"):
                    self.find(
                        "changed", shown, f"refused on the console: {difference(before, after)}"
                    )

    # -- agent WebSocket

    def agent_templates(self, jobs: list[str]) -> list[dict[str, Any]]:
        job = self.rng.choice(jobs) if jobs else "0" * 14
        ref = {"job_id": job, "chunk": 0, "attempt": 1}
        return [
            {"type": "heartbeat", "beat": 1, "cpu_percent": 5.0},
            {"type": "chunk_started", "seq": 1, **ref, "pid": 4242, "command": ["x"]},
            {"type": "chunk_output", "seq": 2, **ref, "lines": ["Fra:1 [/oops]"]},
            {"type": "chunk_progress", "seq": 3, **ref, "frame": 1, "fraction": 0.5},
            {"type": "frames_written", "seq": 4, **ref, "frames": [1, 2], "staged": False},
            {"type": "chunk_timed_out", "seq": 5, **ref, "kind": "max_render", "elapsed": 9.0},
            {"type": "chunk_finished", "seq": 6, **ref, "outcome": "done", "exit_status": "0"},
            {"type": "agent_log", "seq": 7, "lines": ["\x1b[31m hello"]},
        ]

    def agent_session(self, jobs: list[str], messages: int) -> None:
        """A hello (sometimes bent), then reports about attempts this node was never given."""
        role = self.rng.choice(("agent", "agent", "agent", "admin", "alice", "viewer"))
        token = self.target.tokens[role]
        hello: dict[str, Any] = {
            "type": "hello",
            "protocol": PROTOCOL_VERSION,
            "name": "fuzz-node",
            "slots": 0,  # no work is dispatched here: every report below is about nothing
            "agent_id": "fuzz-agent",
        }
        if self.rng.random() < 0.5:
            ref = {"job_id": self.rng.choice(jobs) if jobs else "x", "chunk": 0, "attempt": 1}
            hello[self.rng.choice(("running", "finished"))] = [ref]
        if self.rng.random() < 0.4:
            hello = mutate(self.rng, hello, 1)
            if isinstance(hello, dict) and hello.get("slots") not in (0, None):
                hello["slots"] = 0
        raw = encode(self.rng, hello)
        shown = f"agent {role} hello {raw[:200]!r}"
        focus = self.focus(shown)
        before = self.before(focus)
        self.tally.inputs["agent"] += 1
        try:
            ws = connect(
                self.target.ws_url + "/ws/agent",
                additional_headers={"Authorization": f"Bearer {token}"},
                max_size=None,
                open_timeout=10,
            )
        except InvalidStatus as exc:
            self.tally.answers[f"agent refused {exc.response.status_code}"] += 1
            return
        with ws:
            try:
                ws.send(raw)
                first = msgspec.json.decode(ws.recv(timeout=10))
            except (ConnectionClosed, TimeoutError) as exc:
                self.tally.answers[f"agent hello closed {_close_code(exc)}"] += 1
                if _close_code(exc) == 1011:
                    self.find("crash", shown, "the leader closed the agent link with 1011")
                if _jobs_of(self.state(focus)) != _jobs_of(before):
                    self.find("changed", shown, "a refused hello changed the jobs")
                return
            self.tally.answers[f"agent hello {first.get('type')}"] += 1
            if first.get("type") != "welcome":
                return
            for beat in range(2, messages + 2):
                message = mutate(self.rng, self.rng.choice(self.agent_templates(jobs)), 1)
                raw = encode(self.rng, message)
                shown = f"agent {role}: {raw[:200]!r}"
                focus = self.focus(shown)
                before = self.before(focus)
                self.tally.inputs["agent"] += 1
                try:
                    ws.send(raw)
                    # A heartbeat after it is answered once everything before it is handled.
                    ws.send(msgspec.json.encode({"type": "heartbeat", "beat": beat * 1000}))
                    _await_lease(ws, beat * 1000)
                except (ConnectionClosed, TimeoutError) as exc:
                    self.tally.answers[f"agent closed {_close_code(exc)}"] += 1
                    if _close_code(exc) == 1011:
                        self.find("crash", shown, "the leader closed the agent link with 1011")
                    return
                self.tally.answers["agent handled"] += 1
                if _jobs_of(self.state(focus)) != _jobs_of(before):
                    self.find(
                        "changed", shown, "a report about no attempt of this node changed jobs"
                    )

    # -- the whole campaign

    def run(
        self, rest: int, console: int, agent: int, progress: Callable[[str], None] | None = None
    ) -> Tally:
        started = time.monotonic()
        sent = 0
        while self.tally.inputs["rest"] < rest:
            if sent % 50 == 0:
                jobs = self.job_ids()
            self.rest_once(jobs)
            sent += 1
        if progress:
            progress(f"rest: {self.tally.inputs['rest']} inputs")
        while self.tally.inputs["console"] < console:
            self.console_session(self.job_ids(), min(40, console - self.tally.inputs["console"]))
        if progress:
            progress(f"console: {self.tally.inputs['console']} inputs")
        self.pause_everything()
        while self.tally.inputs["agent"] < agent:
            self.agent_session(self.job_ids(), min(40, agent - self.tally.inputs["agent"]))
        self.tally.seconds = time.monotonic() - started
        return self.tally

    def pause_everything(self) -> None:
        """Nothing dispatches during the agent phase, so every report there is about nothing."""
        admin = {"Authorization": f"Bearer {self.target.tokens['admin']}"}
        ids = self.job_ids()
        if ids:
            self.reader.post(
                "/api/jobs/actions", json={"action": "pause", "ids": ids}, headers=admin
            )
        self.state()


def _await_reply(ws: ClientConnection) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        message = msgspec.json.decode(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message.get("type") == "reply":
            result: dict[str, Any] = message
            return result


def _await_lease(ws: ClientConnection, beat: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        message = msgspec.json.decode(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if message.get("type") == "lease_renewed" and message.get("beat") == beat:
            return
        if message.get("type") == "refused":
            raise ConnectionClosed(None, None)


def _close_code(exc: Exception) -> int | None:
    if isinstance(exc, ConnectionClosed) and exc.rcvd is not None:
        return exc.rcvd.code
    return None


def difference(before: State, after: State) -> str:
    """The first place two states differ, for the report."""
    for name in ("jobs", "nodes", "details"):
        old, new = getattr(before, name), getattr(after, name)
        if old != new:
            at = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), 0)
            around = slice(max(0, at - 80), at + 80)
            return f"{name} changed at ...{old[around]!r} -> {new[around]!r}"
    return "no difference"


def _jobs_of(state: State) -> tuple[bytes, bytes]:
    """The state without the nodes (an accepted hello adds one)."""
    return state.jobs, state.details


def log_findings(target: Target) -> list[Finding]:
    """Tracebacks and secrets in the leader's log."""
    text = target.log.read_text(encoding="utf-8", errors="replace")
    found = []
    if "Traceback" in text or "Exception in ASGI" in text:
        start = text.find("Traceback")
        found.append(Finding("traceback", "leader log", text[start : start + 1500]))
    for secret in target.secrets:
        if secret in text:
            found.append(Finding("secret", "leader log", "a token in the leader's log"))
    return found
