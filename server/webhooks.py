"""Notifications POSTed to the leader's webhook and the job's own.

Fire-and-forget: each POST is a task with a timeout; failures are logged and
never slow the farm. The body is ``{"job_id", "kind", "text", "job": JobView}``.

The leader POSTs from inside the farm's network, so a job's webhook is a way
to reach what users cannot: a non-admin's job webhook must match a prefix in
``webhook_allow`` (leader.toml; none by default), compared as parsed URLs
(:func:`webhook_allowed`), and no redirect is ever followed. URLs are logged
by their origin only: a webhook's path often carries its secret.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from urllib.parse import unquote

import httpx
import msgspec

from farmtui.protocol import JobView
from server.errors import BadRequest, Forbidden
from server.url_origin import origin_only

log = logging.getLogger("farmtui.leader.webhooks")

# More pending POSTs than this and new ones are dropped (a dead endpoint must not pile up tasks).
MAX_PENDING = 256


_DEFAULT_PORTS = {"http": 80, "https": 443}


class WebhookURL(msgspec.Struct, frozen=True):
    """The parts of a webhook URL that say where a POST goes."""

    scheme: str
    host: str
    port: int
    path: str


def parse_webhook(url: str) -> WebhookURL:
    """``url`` as httpx will send to it; ValueError unless it is a plain http(s) URL.

    The path is compared decoded, and one with ``.`` or ``..`` segments or a
    backslash is refused: a server may normalise it to a path out of the prefix.
    """
    if not url.isprintable() or any(c.isspace() for c in url):
        raise ValueError("has spaces or control characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        # Not httpx's words: they quote the part it could not read, which may be a password.
        raise ValueError("is not a URL") from None
    if parsed.scheme not in _DEFAULT_PORTS:
        raise ValueError("must be an http:// or https:// URL")
    if not parsed.host:
        raise ValueError("has no host")
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise ValueError("has a port that is not 1-65535")
    path = unquote(parsed.raw_path.split(b"?", 1)[0].decode("ascii"))
    if "\\" in path or any(part in (".", "..") for part in path.split("/")):
        raise ValueError("has '.', '..' or a backslash in its path")
    return WebhookURL(
        scheme=parsed.scheme,
        host=parsed.host.lower().rstrip("."),
        port=parsed.port or _DEFAULT_PORTS[parsed.scheme],
        path=path or "/",
    )


def within(url: WebhookURL, prefix: WebhookURL) -> bool:
    """Same scheme, host and port, and the path at or below the prefix's (whole segments).

    ``https://hooks.example.com/farm`` covers ``/farm`` and ``/farm/x``, not
    ``/farmer``, and no host but ``hooks.example.com`` (``hooks.example.com.evil.net``).
    """
    if (url.scheme, url.host, url.port) != (prefix.scheme, prefix.host, prefix.port):
        return False
    folder = prefix.path if prefix.path.endswith("/") else prefix.path + "/"
    return url.path == prefix.path or url.path.startswith(folder)


def webhook_allowed(url: str, allow: Sequence[str]) -> bool:
    """Whether ``url`` is within one of the ``allow`` prefixes (False when it is no URL)."""
    try:
        parsed = parse_webhook(url)
    except ValueError:
        return False
    for prefix in allow:
        try:
            if within(parsed, parse_webhook(prefix)):
                return True
        except ValueError:
            continue  # check_config refuses these; never a match
    return False


def check_job_webhook(url: str | None, allow: Sequence[str], *, unrestricted: bool) -> None:
    """Refuse a job webhook its submitter may not set: BadRequest (400) or Forbidden (403).

    ``unrestricted``: an admin's (any http(s) URL). Anyone else's must be within
    ``allow`` (``webhook_allow`` in leader.toml); with none there, they may set none.
    """
    if url is None:
        return
    try:
        parse_webhook(url)
    except ValueError as exc:
        raise BadRequest(f"webhook {origin_only(url)} {exc}") from None
    if unrestricted or webhook_allowed(url, allow):
        return
    if not allow:
        raise Forbidden("job webhooks need an admin: this leader's webhook_allow is empty")
    raise Forbidden(
        f"webhook {origin_only(url)} is not allowed: a job webhook must start with one of "
        "this leader's webhook_allow prefixes"
    )


class WebhookBody(msgspec.Struct, kw_only=True):
    job_id: str
    kind: str
    text: str
    job: JobView | None = None


class Webhooks:
    def __init__(self, leader_url: str | None, timeout: float) -> None:
        self.leader_url = leader_url
        self.timeout = timeout
        self.client: httpx.AsyncClient | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.failed = 0

    def _client(self) -> httpx.AsyncClient:
        if self.client is None:
            self.client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
        return self.client

    def notify(self, body: WebhookBody, job_url: str | None) -> None:
        """POST ``body`` to the leader's webhook and to ``job_url``, in the background."""
        urls = [url for url in (self.leader_url, job_url) if url]
        if not urls:
            return
        payload = msgspec.json.encode(body)
        for url in dict.fromkeys(urls):
            if len(self.tasks) >= MAX_PENDING:
                log.warning(
                    "webhook %s dropped: %d POSTs still pending", origin_only(url), len(self.tasks)
                )
                continue
            task = asyncio.get_running_loop().create_task(self._post(url, payload))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _post(self, url: str, payload: bytes) -> None:
        try:
            # Never follow a redirect: it may lead anywhere the leader can reach.
            response = await self._client().post(
                url,
                content=payload,
                headers={"content-type": "application/json"},
                follow_redirects=False,
            )
            if response.is_redirect:
                raise httpx.HTTPStatusError(
                    f"redirected (status {response.status_code}); redirects are not followed",
                    request=response.request,
                    response=response,
                )
            if response.status_code >= 400:
                raise httpx.HTTPStatusError(
                    f"status {response.status_code}", request=response.request, response=response
                )
            self.sent += 1
        except (httpx.HTTPError, OSError, ValueError) as exc:
            self.failed += 1
            why = str(exc).replace(url, origin_only(url)) or type(exc).__name__
            log.warning("webhook %s failed: %s", origin_only(url), why)

    async def aclose(self) -> None:
        """Give pending POSTs a moment, then stop them."""
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=min(self.timeout, 2.0))
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if self.client is not None:
            await self.client.aclose()
