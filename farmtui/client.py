"""The Python client for a farmtui leader: a public API for pipeline scripts (and the CLI).

Connect, submit, watch, act::

    from farmtui.client import connect
    from farmtui.protocol import JobSpec

    with connect() as farm:  # like `farm`: FARM_LEADER/FARM_TOKEN/FARM_CA, or `farm up`'s config
        job = farm.submit(JobSpec(name="shot", frames="1-10", argv=["sleep", "1"]))
        for seen in farm.watch(job.id):  # each change of state or progress, until it ends
            print(seen.state, seen.stats.frames_done, "/", seen.stats.frames_total)
        farm.action("archive", [job.id])

- ``connect(leader, token, token_file=, ca=)`` finds what it is not given as
  the ``farm`` command does; ``FarmClient(url, token, verify=CA_FILE)`` takes
  everything explicitly. ``url`` may list several leaders (``URL1,URL2``:
  leaders sharing PostgreSQL, one active): the first request asks them all
  at once which is active (``ROLE_PROBE_TIMEOUT``), a request goes to the one
  that answered last, and moves on to the next when a leader is down, a
  standby (503 "this leader is a standby ..."), or not a farmtui leader at
  all (a web server's 404), as long as that cannot do it twice.
  One kept-alive connection per client; safe to share between threads (one
  request at a time).
- Records are ``farmtui.protocol``'s msgspec Structs, the leader's own
  types: ``JobSpec`` in; ``JobView``, ``JobDetail``, ``NodeView``,
  ``FailureView`` out. ``msgspec.json.encode``/``msgspec.to_builtins`` turn
  them into JSON or dicts.
- Reads: ``jobs``, ``show``/``show_all``, ``nodes``, ``failures``,
  ``events``, ``logs``, ``node_log``, ``limits``, ``whoami``, ``healthz``.
- Acts: ``action`` (pause, resume, retry-failed, requeue, archive, cancel,
  delete, hold, unhold, complete, review), ``chunk_action``, ``patch``,
  ``priority``, ``move``, ``block_node``, ``set_node_enabled``, ``set_limit``,
  ``delete_limit``, ``create_token``.
- Waits: ``watch`` (a generator of ``JobView``) and ``wait`` (the final one).
- Errors: the ``farmtui.errors`` tree, each with a one-line message:
  ``ConfigError`` (no leader or token found, unreadable CA file),
  ``LeaderDown`` (unreachable, or an untrusted TLS certificate),
  ``AuthError`` (401), ``PermissionDenied`` (403), ``NotFound`` (404),
  ``BadRequest`` (400/409/413/422: refused, nothing changed),
  ``ServerError`` (5xx); all are ``FarmError``.

``submit`` is safe to retry: it sends an ``Idempotency-Key`` and, when the
connection fails (reset, timeout, a leader restarting), sends the same request
with the same key again a few times, so a lost answer never makes two jobs.
The REST API itself is described at ``GET /api/openapi.json`` (OpenAPI 3.1).

Requests go out on one kept-alive connection of the standard library's
``http.client`` (``farmtui.http_connection``, where the reason is).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import msgspec

from farmtui import config, errors
from farmtui.http_connection import (
    EXCHANGE_TIMEOUTS,
    IDEMPOTENT_METHODS,
    TRANSPORT_ERRORS,
    Connection,
    Transport,
    untrusted_certificate,
)
from farmtui.protocol import (
    IDEMPOTENCY_KEY,
    STANDBY_REFUSAL,
    ChunkAction,
    EventView,
    FailureView,
    JobAction,
    JobDetail,
    JobPatch,
    JobSpec,
    JobView,
    Level,
    LimitSpec,
    LimitView,
    MoveWhere,
    NodeView,
    Role,
    TokenView,
)

T = TypeVar("T")

FINAL_STATES = frozenset({"done", "failed", "cancelled"})

# Pauses between the tries of a submit whose connection failed: five tries in
# about ten seconds, long enough for a leader to restart.
SUBMIT_RETRY_DELAYS = (0.5, 1.0, 2.0, 4.0)
# No try starts later than this after the first (a timed-out try already took long).
SUBMIT_RETRY_WINDOW = 10.0

# Several leaders: how long the first request waits for them to say which is active.
# A frozen leader (its port open, nothing answering) then costs this, not the timeout.
ROLE_PROBE_TIMEOUT = 1.0


@dataclass(frozen=True)
class Response:
    """The leader's answer to one request (named like httpx's, which the client once returned)."""

    status_code: int
    reason_phrase: str
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        return json.loads(self.content)


class ActionResult(msgspec.Struct, kw_only=True):
    """Answer of ``POST /api/jobs/actions``: the jobs as they are now, and the ids deleted."""

    jobs: list[JobView] = []
    removed: list[str] = []


class TokenInfo(msgspec.Struct, kw_only=True):
    """A token made by ``POST /api/tokens``; the secret is shown only this once."""

    token: str
    role: Role
    name: str = ""
    # What ``revoke_token`` takes.
    id: str = ""


class WhoAmI(msgspec.Struct, kw_only=True):
    name: str
    role: Role


class FarmClient:
    """Synchronous REST client; one keep-alive connection per instance."""

    def __init__(
        self,
        leader: str,
        token: str,
        *,
        timeout: float = 15.0,
        transport: Transport | None = None,
        verify: bool | str = True,
        submit_retry_delays: Sequence[float] = SUBMIT_RETRY_DELAYS,
    ) -> None:
        """``timeout`` bounds connecting and each read; ``verify`` (https only) is True for
        the system's CAs, a CA file's path, or False for no certificate checks.
        ``leader``: one URL, or several separated by commas (one leader is active)."""
        self.leaders = [url.strip().rstrip("/") for url in leader.split(",") if url.strip()]
        if transport is not None:
            self.leaders = self.leaders[:1]  # a test's fake leader is one leader
        self.submit_retry_delays = tuple(submit_retry_delays)
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": "farmtui-client"}
        self._timeout = timeout
        self._verify = verify
        self._connection: Connection | None = None
        self._transport = transport
        self._send: Transport
        self._use(0)
        # Several leaders: the first request asks them all which one is active.
        self._probe = len(self.leaders) > 1 and transport is None
        # Leaders that did not answer that question in time (frozen, a machine off):
        # tried last, since each costs the whole timeout.
        self._silent: set[int] = set()

    def _use(self, index: int) -> None:
        """Talk to leader number ``index`` from now on."""
        self._index = index
        self.leader = self.leaders[index]
        # A leader behind a proxy's path (https://host/farm) gets it before every request path.
        url = urlsplit(self.leader)
        self._prefix = url.path
        # The leader as messages show it: never a user:password@ a script put in the URL.
        self._shown = url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()
        if self._connection is not None:
            self._connection.close()
        if self._transport is not None:
            self._send = self._transport
        else:
            self._send = self._connection = Connection(self.leader, self._timeout, self._verify)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- plumbing -------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        body: object = None,
        content: bytes | None = None,
        params: dict[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
        retry_delays: Sequence[float] = (),
    ) -> Response:
        """Send one request; map transport failures and error statuses to FarmErrors.

        With ``retry_delays``, a request whose connection fails is sent again
        after each delay in turn (within ``SUBMIT_RETRY_WINDOW``): only for
        requests that are safe to repeat.
        """
        if self._probe:
            self._probe = False
            self._use_active_leader()
        headers = {**self._headers, **(headers or {})}
        if body is not None:
            content = msgspec.json.encode(body)
            headers["Content-Type"] = "application/json"
        query = "?" + urlencode(params) if params else ""
        first = time.monotonic()
        # Several leaders: the others are tried in turn before a retry delay is used.
        others = len(self.leaders) - 1
        resend = method in IDEMPOTENT_METHODS or IDEMPOTENCY_KEY in headers
        if others and resend and not retry_delays:
            # Every leader a standby: a failover is under way (a few seconds). A request
            # that is safe to repeat waits for it rather than fail in the middle of it.
            retry_delays = SUBMIT_RETRY_DELAYS
        delays = iter(retry_delays)
        while True:
            try:
                status, reason, answer = self._send(
                    method, self._prefix + path + query, headers, content
                )
            except TRANSPORT_ERRORS as exc:
                # Not sent (refused, unknown host), or safe to send twice: the next leader,
                # the active one if one says so by now (the one that failed may be frozen).
                if others > 0 and (resend or isinstance(exc, _NOT_SENT)):
                    others -= 1
                    self._silent.add(self._index)
                    failed = self._index
                    if not self._use_active_leader() or self._index == failed:
                        self._use(self._next_leader(after=failed))
                    continue
                # An untrusted certificate stays untrusted: no point in trying again.
                delay = (
                    None if isinstance(exc, ssl.SSLCertVerificationError) else next(delays, None)
                )
                if delay is None or time.monotonic() + delay - first > SUBMIT_RETRY_WINDOW:
                    raise self._leader_down(exc) from None
                others = len(self.leaders) - 1
                time.sleep(delay)
                continue
            response = Response(status, reason, answer)
            # A web server, a proxy's page or nothing at all at that URL: it did not reach
            # a farm, unless a proxy passed it on (then only a repeatable one moves on).
            if (
                status >= 400
                and others > 0
                and (resend or status in (404, 405))
                and _not_a_leader(response)
            ):
                others -= 1
                self._use(self._next_leader())
                continue
            if status == 503 and _is_standby(response):
                if others > 0:
                    others -= 1  # it changed nothing: ask the next leader
                    self._use(self._next_leader())
                    continue
                delay = next(delays, None) if resend else None
                if delay is not None and time.monotonic() + delay - first <= SUBMIT_RETRY_WINDOW:
                    others = len(self.leaders) - 1  # all standing by: try them all again
                    time.sleep(delay)
                    # A failover under way: ask again which leader is active by now.
                    if not self._use_active_leader():
                        self._use(self._next_leader())
                    continue
            break
        if status >= 400:
            raise _error_for(response, self._shown)
        return response

    def _next_leader(self, after: int | None = None) -> int:
        """The leader to try after ``after`` (the current one): the next that answered the
        role probe; else ``after`` itself if it answered (a standby: ask it again after
        a pause), else simply the next."""
        count = len(self.leaders)
        start = self._index if after is None else after
        order = [(start + step) % count for step in range(1, count)] or [start]
        answering = [index for index in order if index not in self._silent]
        if answering:
            return answering[0]
        return start if start not in self._silent else order[0]

    def _use_active_leader(self) -> bool:
        """Ask every leader's ``/healthz`` at once; talk to the one that says it is active.

        Without this a leader that is frozen, or a machine that is off, would
        hold each command for the whole timeout before the next URL is tried.
        None says it is active (a failover under way): the first that answered
        at all, and those that did not are tried last. True: one is active.
        """
        roles: list[str | None] = [None] * len(self.leaders)
        answered = [False] * len(self.leaders)

        def ask(index: int) -> None:
            url = self.leaders[index]
            link = Connection(url, ROLE_PROBE_TIMEOUT, self._verify)
            try:
                target = urlsplit(url).path + "/healthz"
                status, _, body = link("GET", target, {"User-Agent": "farmtui-client"}, None)
                health: Any = json.loads(body) if status == 200 else None
                if isinstance(health, dict) and isinstance(health.get("role"), str):
                    roles[index] = health["role"]
            except (*TRANSPORT_ERRORS, ValueError):
                pass
            finally:
                link.close()
                answered[index] = True

        askers = [
            threading.Thread(target=ask, args=(index,), daemon=True)
            for index in range(len(self.leaders))
        ]
        for asker in askers:
            asker.start()
        deadline = time.monotonic() + EXCHANGE_TIMEOUTS * ROLE_PROBE_TIMEOUT
        for asker in askers:
            asker.join(max(0.0, deadline - time.monotonic()))
            if "active" in roles:
                break
        # Silent: asked to the end without a leader's answer. Those still being asked when
        # one said it is active are not known to be silent (a busy standby may be slow).
        self._silent = {
            index for index, role in enumerate(roles) if role is None and answered[index]
        } | ({i for i, done in enumerate(answered) if not done} if "active" not in roles else set())
        if "active" in roles:
            self._use(roles.index("active"))
            return True
        if self._index in self._silent and len(self._silent) < len(roles):
            self._use(self._next_leader())
        return False

    def _leader_down(self, exc: Exception) -> errors.LeaderDown:
        if isinstance(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif isinstance(exc, socket.gaierror):
            reason = "unknown host"
        elif isinstance(exc, TimeoutError):
            reason = "no answer in time"
        elif isinstance(exc, ssl.SSLCertVerificationError):
            reason = untrusted_certificate(exc, self._verify)
        elif isinstance(exc, http.client.BadStatusLine | http.client.LineTooLong) and not (
            isinstance(exc, http.client.RemoteDisconnected)
        ):
            # Whatever it sent is no HTTP: not worth a line of someone else's bytes.
            reason = "its answer is not HTTP (is that the leader's URL?)"
        else:
            reason = str(exc) or type(exc).__name__
        return errors.LeaderDown(f"cannot reach the leader at {self._shown}: {reason}")

    def _get(self, path: str, kind: type[T], params: dict[str, str | int] | None = None) -> T:
        return _decode(self.request("GET", path, params=params), kind)

    def _post(self, path: str, body: object, kind: type[T]) -> T:
        return _decode(self.request("POST", path, body=body), kind)

    # --- the API --------------------------------------------------------------

    def healthz(self) -> bool:
        """True when the leader answers ``/healthz`` (no token needed); LeaderDown otherwise."""
        return self.request("GET", "/healthz").status_code == 200

    def whoami(self) -> WhoAmI:
        return self._get("/api/whoami", WhoAmI)

    def submit(self, spec: JobSpec, *, key: str | None = None) -> JobView:
        """Submit a job; retried on a failed connection without ever making two.

        ``key`` (default: a new random one) identifies this submit to the
        leader: a request with a key it has seen answers the job it made then
        (a LeaderError, 422, if that submit's spec was another).
        """
        response = self.request(
            "POST",
            "/api/jobs",
            body=spec,
            headers={IDEMPOTENCY_KEY: key or uuid.uuid4().hex},
            retry_delays=self.submit_retry_delays,
        )
        return _decode(response, JobView)

    def jobs(
        self, include_archived: bool = False, limit: int | None = None, after: str | None = None
    ) -> list[JobView]:
        """Jobs in dispatch order; archived ones too with ``include_archived``.

        With ``limit``, one page: at most that many, those after the job ``after``.
        """
        params: dict[str, str | int] = {"all": 1} if include_archived else {}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        return self._get("/api/jobs", list[JobView], params)

    def show(self, job_id: str, limit: int | None = None, after: int | None = None) -> JobDetail:
        """The job and one page of its chunks (the leader's largest page by default)."""
        params: dict[str, str | int] = {}
        if limit is not None:
            params["limit"] = limit
        if after is not None:
            params["after"] = after
        return self._get(f"/api/jobs/{_seg(job_id)}", JobDetail, params)

    def show_all(self, job_id: str) -> JobDetail:
        """The job with every chunk and frame state, read page by page."""
        detail = self.show(job_id)
        while detail.next_after is not None:
            page = self.show(job_id, after=detail.next_after)
            detail.chunks.extend(page.chunks)
            detail.frame_states.update(page.frame_states)
            detail.next_after = page.next_after
            detail.job, detail.frame_runs = page.job, page.frame_runs
        return detail

    def patch(self, job_id: str, patch: JobPatch) -> JobView:
        return _decode(self.request("PATCH", f"/api/jobs/{_seg(job_id)}", body=patch), JobView)

    def action(self, action: JobAction, job_ids: Iterable[str]) -> ActionResult:
        body = {"action": action, "ids": list(job_ids)}
        return self._post("/api/jobs/actions", body, ActionResult)

    def priority(self, job_id: str, priority: int) -> JobView:
        return self._post(f"/api/jobs/{_seg(job_id)}/priority", {"priority": priority}, JobView)

    def move(
        self, job_id: str, where: MoveWhere | None = None, before: str | None = None
    ) -> list[JobView]:
        """Move within the priority group: ``where`` up/down/top/bottom, or ``before`` a job."""
        body: dict[str, str] = {"before": before} if before else {"where": where or "bottom"}
        return self._post(f"/api/jobs/{_seg(job_id)}/move", body, list[JobView])

    def chunk_action(self, job_id: str, action: ChunkAction, chunks: Iterable[int]) -> JobDetail:
        body = {"action": action, "chunks": list(chunks)}
        return self._post(f"/api/jobs/{_seg(job_id)}/chunks/actions", body, JobDetail)

    def events(self, job_id: str) -> str:
        """The job's event log (every state change and who caused it) as text."""
        return self.request("GET", f"/api/jobs/{_seg(job_id)}/events").text

    def farm_events(
        self, limit: int, job_id: str | None = None, level: Level = "info"
    ) -> list[EventView]:
        """The farm's latest ``limit`` events of ``level`` and above, every job's and the
        nodes', oldest first; ``job_id``: only that job's."""
        params: dict[str, str | int] = {"limit": limit, "level": level}
        if job_id is not None:
            params["job"] = job_id
        return self._get("/api/events", list[EventView], params)

    def logs(self, job_id: str, chunk: int, attempt: int | None = None) -> str:
        """A chunk attempt's raw output (the latest attempt by default) as text."""
        params: dict[str, str | int] = {"chunk": chunk}
        if attempt is not None:
            params["attempt"] = attempt
        return self.request("GET", f"/api/jobs/{_seg(job_id)}/logs", params=params).text

    def nodes(self) -> list[NodeView]:
        return self._get("/api/nodes", list[NodeView])

    def failures(self, limit: int) -> list[FailureView]:
        return self._get(f"/api/failures?limit={limit}", list[FailureView])

    def limits(self) -> list[LimitView]:
        return self._get("/api/limits", list[LimitView])

    def set_limit(self, name: str, units: int, per_node: int = 0) -> list[LimitView]:
        body = LimitSpec(units=units, per_node=per_node)
        return _decode(self.request("PUT", f"/api/limits/{_seg(name)}", body=body), list[LimitView])

    def delete_limit(self, name: str) -> list[LimitView]:
        return _decode(self.request("DELETE", f"/api/limits/{_seg(name)}"), list[LimitView])

    def set_node_enabled(self, name: str, enabled: bool) -> NodeView:
        verb = "enable" if enabled else "disable"
        return _decode(self.request("POST", f"/api/nodes/{_seg(name)}/{verb}"), NodeView)

    def block_node(self, job_id: str, node: str, blocked: bool) -> JobView:
        verb = "block" if blocked else "unblock"
        path = f"/api/jobs/{_seg(job_id)}/nodes/{_seg(node)}/{verb}"
        return _decode(self.request("POST", path), JobView)

    def node_log(self, name: str, tail: int = 500) -> str:
        return self.request("GET", f"/api/nodes/{_seg(name)}/log", params={"tail": tail}).text

    def create_token(self, role: Role, name: str = "") -> TokenInfo:
        return self._post("/api/tokens", {"role": role, "name": name}, TokenInfo)

    def tokens(self) -> list[TokenView]:
        return self._get("/api/tokens", list[TokenView])

    def revoke_token(self, token_id: str) -> TokenView:
        return _decode(self.request("DELETE", f"/api/tokens/{_seg(token_id)}"), TokenView)

    def upload(self, path: str, data: bytes) -> None:
        """Put a file into the sync root (agents that cannot see it); ``path`` is relative."""
        self.request("PUT", "/api/files/" + quote(path.lstrip("/")), content=data)

    # --- helpers for humans and scripts ---------------------------------------

    def resolve_job(self, ref: str, jobs: list[JobView] | None = None) -> str:
        """The full id of the job ``ref`` names: an id, a unique id prefix, or a unique name."""
        return self.resolve_jobs([ref], jobs)[0]

    def resolve_jobs(self, refs: Iterable[str], jobs: list[JobView] | None = None) -> list[str]:
        """Full ids for several refs with one listing of the farm's jobs."""
        known = self.jobs(include_archived=True) if jobs is None else jobs
        return [match_job(ref, known) for ref in refs]

    def watch(
        self, job_id: str, timeout: float | None = None, interval: float = 0.5
    ) -> Iterator[JobView]:
        """Yield the job now, then each time its state or progress changes, until it ends.

        The last one yielded is done, failed or cancelled. Polls every
        ``interval`` s (one small request: the job without its chunks);
        TimeoutError after ``timeout`` s.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        seen: tuple[object, ...] | None = None
        while True:
            job = self.show(job_id, limit=1).job
            stats = job.stats
            now = (job.state, stats.frames_done, stats.frames_failed, stats.chunks_running)
            if now != seen:
                seen = now
                yield job
            if job.state in FINAL_STATES:
                return
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} is still {job.state} after {timeout} s")
            time.sleep(interval)

    def wait(self, job_id: str, timeout: float | None = None, interval: float = 0.2) -> JobView:
        """Poll until the job is done, failed or cancelled; TimeoutError after ``timeout`` s."""
        for job in self.watch(job_id, timeout, interval):
            if job.state in FINAL_STATES:
                return job
        raise AssertionError("watch ends with a job in a final state")


def connect(
    leader: str | None = None,
    token: str | None = None,
    *,
    token_file: str | None = None,
    ca: str | None = None,
    timeout: float = 15.0,
) -> FarmClient:
    """A client for the leader the ``farm`` command would use.

    What is not given is found as ``farm`` finds it: ``FARM_LEADER``,
    ``FARM_TOKEN`` / ``FARM_TOKEN_FILE``, ``FARM_CA``, then the config file
    ``farm up`` writes (``farmtui.config``). ``ca`` is a PEM file of the CA
    that signed an https:// leader's certificate. Raises ``ConfigError`` when
    no leader or token is found; nothing is sent until the first call.
    """
    conn = config.resolve(leader, token, token_file, ca=ca)
    return FarmClient(conn.leader, conn.token, timeout=timeout, verify=conn.ca or True)


def match_job(ref: str, jobs: list[JobView]) -> str:
    """Resolve one ref against a job list: exact id, then unique id prefix, then unique name."""
    ref = ref.strip()
    if not ref:
        raise errors.InputError("empty job id")
    for job in jobs:
        if job.id == ref:
            return job.id
    by_prefix = [job for job in jobs if job.id.startswith(ref)]
    if len(by_prefix) == 1:
        return by_prefix[0].id
    if len(by_prefix) > 1:
        shown = ", ".join(job.id for job in by_prefix[:4])
        raise errors.AmbiguousJob(f"job id prefix {ref!r} matches {len(by_prefix)} jobs: {shown}")
    by_name = [job for job in jobs if job.name == ref]
    if len(by_name) == 1:
        return by_name[0].id
    if len(by_name) > 1:
        shown = ", ".join(job.id for job in by_name[:4])
        raise errors.AmbiguousJob(f"{len(by_name)} jobs are named {ref!r}: {shown}; use an id")
    raise errors.NotFound(f"no job {ref!r} on the farm", 404)


def _seg(value: str) -> str:
    return quote(value, safe="")


def _decode(response: Response, kind: type[T]) -> T:
    try:
        return msgspec.json.decode(response.content, type=kind)
    except msgspec.DecodeError as exc:
        raise errors.ServerError(
            f"the leader sent an answer this client cannot read: {exc}", response.status_code
        ) from None


# Errors of a request that never reached the leader: safe to send to the next one.
_NOT_SENT = (ConnectionRefusedError, socket.gaierror)


def _is_standby(response: Response) -> bool:
    """A standby's refusal: it changed nothing, and another leader is the active one."""
    try:
        payload: Any = json.loads(response.content)
    except ValueError:
        return False
    error = payload.get("error") if isinstance(payload, dict) else None
    return isinstance(error, str) and error.startswith(STANDBY_REFUSAL)


def _not_a_leader(response: Response) -> bool:
    """An error answer a farmtui leader never gives: every one of its own is ``{"error": ...}``."""
    try:
        payload: Any = json.loads(response.content)
    except ValueError:
        return True
    return not (isinstance(payload, dict) and isinstance(payload.get("error"), str))


def _error_for(response: Response, shown: str = "") -> errors.LeaderError:
    status = response.status_code
    if status == 401:
        return errors.AuthError("the leader refused the token", status)
    message = ""
    try:
        payload: Any = json.loads(response.content)
        if isinstance(payload, dict) and isinstance(payload.get("error"), str):
            message = payload["error"]
    except ValueError:
        message = response.text.strip()
        # A web page (a proxy's, another server's) is no message for a terminal.
        if message.startswith("<") or len(message) > 200:
            message = (
                f"HTTP {status} {response.reason_phrase} from {shown or 'the leader'}, "
                "not a farmtui leader's answer: is that the leader's URL?"
            )
    message = " ".join(message.split()) or f"HTTP {status} {response.reason_phrase}"
    if status == 403:
        message = f"not allowed: {message}"
    return errors.for_status(status, message)
