"""Notifications POSTed to the leader's webhook and the job's own.

Fire-and-forget: each POST is a task with a timeout; failures are logged and
never slow the farm. The body is ``{"job_id", "kind", "text", "job": JobView}``.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import msgspec

from farmtui.protocol import JobView

log = logging.getLogger("farmtui.leader.webhooks")

# More pending POSTs than this and new ones are dropped (a dead endpoint must not pile up tasks).
MAX_PENDING = 256


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
                log.warning("webhook %s dropped: %d POSTs still pending", url, len(self.tasks))
                continue
            task = asyncio.get_running_loop().create_task(self._post(url, payload))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _post(self, url: str, payload: bytes) -> None:
        try:
            response = await self._client().post(
                url, content=payload, headers={"content-type": "application/json"}
            )
            if response.status_code >= 400:
                raise httpx.HTTPStatusError(
                    f"status {response.status_code}", request=response.request, response=response
                )
            self.sent += 1
        except (httpx.HTTPError, OSError, ValueError) as exc:
            self.failed += 1
            log.warning("webhook %s failed: %s", url, exc or type(exc).__name__)

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
