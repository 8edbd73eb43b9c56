"""The leader as one Starlette app: REST, ``/ws/agent``, ``/ws/console``, ``/healthz``.

``create_app`` is all a test needs to run a leader in-process; ``server.main``
serves it with uvicorn (``ws="websockets-sansio"``), one port for everything.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from farmtui.protocol import ROLE_HEADER
from server.agent_link import agent_endpoint
from server.api import routes
from server.api_requests import error_response
from server.config import LeaderSettings
from server.console_link import console_endpoint
from server.errors import LeaderError, RequestError
from server.leader import Leader
from server.store_wait import StoreUnreachable

log = logging.getLogger("farmtui.leader")


async def request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return error_response(exc.status, str(exc))


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.status_code, exc.detail or "error")


async def internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    # The details are in the leader's log: they may name server paths.
    return error_response(500, f"leader error: {type(exc).__name__} (see the leader's log)")


class InternalErrors:
    """A bug in a request: one 500 to the client, its traceback once in the log.

    Not a Starlette exception handler for ``Exception``: Starlette raises the
    exception again after its handler answered, and uvicorn logged the traceback a
    second time ("Exception in ASGI application"), each bad request two of them.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:
            if started:  # half an answer out: nothing to do but let the server close it
                raise
            response = await internal_error(Request(scope), exc)
            await response(scope, receive, send)


# What a standby answers itself; everything else is refused (``StandbyGate``).
STANDBY_PATHS = frozenset({"/healthz", "/api/openapi.json"})


class StandbyGate:
    """A standby refuses every HTTP request but ``/healthz``: 503 naming the active leader.

    Reads too: a standby has not loaded the farm, so it has nothing true to
    say about it. The ``X-Farm-Role: standby`` header tells a client with
    several leader URLs to try the next. WebSockets are refused by their
    endpoints, in their own protocols (``Refused`` for agents, 503 for consoles).
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in STANDBY_PATHS:
            leader: Leader | None = getattr(scope["app"].state, "leader", None)
            why = None if leader is None else leader.refusal()
            if why is not None:
                response = error_response(503, why)
                response.headers[ROLE_HEADER] = "standby"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class OneLineStartFailure:
    """A start-up that failed on its store or its sync root leaves no traceback in the log.

    Starlette sends uvicorn the failed lifespan's traceback, which uvicorn logs
    whole: a PostgreSQL database that came and went as the leader started again
    left one a try (``server.main.run_leader`` says why in one line, and stands
    in). A bug's traceback is still logged.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_quietly(message: Message) -> None:
            said = getattr(scope["app"].state, "start_failure_said", False)
            if message["type"] == "lifespan.startup.failed" and said:
                message = {**message, "message": ""}  # uvicorn logs an empty one not at all
            await send(message)

        await self.app(scope, receive, send_quietly)


def create_app(settings: LeaderSettings, stand_in: StoreUnreachable | None = None) -> Starlette:
    """The leader app; the leader itself opens at start-up and closes at shutdown.

    ``stand_in``: no leader, only its answers while the store is unreachable
    (``server.store_wait``).
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if stand_in is not None:
            app.state.leader = stand_in
            yield
            return
        leader: Leader | None = None
        try:
            leader = Leader(settings)  # (it closes what it opened if it fails)
            await leader.start()
        except BaseException as exc:
            # Said in one line by run_leader (not the error itself: kept here, its
            # traceback would keep the failed leader, and its store, alive).
            app.state.start_failure_said = isinstance(exc, LeaderError)
            if settings.on_start_failed is not None:
                settings.on_start_failed(exc)
            if leader is not None:
                try:
                    await leader.abandon_start()
                except Exception:  # the start's own failure is the one to report
                    log.exception("closing a leader that failed to start")
            raise
        app.state.leader = leader
        try:
            yield
        finally:
            await leader.stop()

    app = Starlette(
        routes=[
            *routes,
            WebSocketRoute("/ws/agent", agent_endpoint),
            WebSocketRoute("/ws/console", console_endpoint),
        ],
        exception_handlers={
            RequestError: request_error,
            HTTPException: http_error,
        },
        middleware=[
            Middleware(OneLineStartFailure),
            Middleware(StandbyGate),
            Middleware(InternalErrors),
        ],
        lifespan=lifespan,
    )
    # A path no route takes is a 404 in one line: Starlette's default redirect to the
    # path without its last slash sent ``PUT /api/limits/..%2f`` elsewhere (307).
    app.router.redirect_slashes = False
    return app
