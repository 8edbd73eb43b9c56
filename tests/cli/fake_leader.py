"""An in-memory stand-in for the leader's REST API, behind the client's ``Transport`` seam.

Just enough of docs/architecture.md's REST table for the CLI's and the
client's behaviour to be tested without processes: tokens, error bodies,
the shapes of the answers. Real behaviour is tested in test_cli_live.py.

Requests and answers are httpx's models, used here only as records that parse
a URL and its query (the client itself does not use httpx).
"""

from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec

from farmtui.frames import chunk_frames, parse_frames
from farmtui.http_connection import Transport
from farmtui.protocol import ChunkView, JobDetail, JobPatch, JobSpec, JobStats, JobView, NodeView

GOOD_TOKEN = "good-token"


@dataclass
class FakeLeader:
    jobs: dict[str, JobDetail] = field(default_factory=dict)
    nodes: list[NodeView] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    next_id: int = 0

    def transport(self) -> Transport:
        """A FarmClient transport answered by ``handle`` (looked up per request: tests swap it)."""

        def send(
            method: str, target: str, headers: dict[str, str], body: bytes | None
        ) -> tuple[int, str, bytes]:
            request = httpx.Request(method, "http://fake" + target, headers=headers, content=body)
            response = self.handle(request)
            return response.status_code, response.reason_phrase, response.read()

        return send

    def add(self, spec: JobSpec, job_id: str | None = None, state: str = "queued") -> JobView:
        self.next_id += 1
        job_id = job_id or f"{self.next_id:04d}abcdef{self.next_id:04d}"
        frames = parse_frames(spec.frames)
        chunks = [
            ChunkView(index=i, frames=run) for i, run in enumerate(chunk_frames(frames, spec.chunk))
        ]
        view = JobView(
            id=job_id,
            name=spec.name,
            owner="tester",
            state=state,  # type: ignore[arg-type]
            priority=50 if spec.priority is None else spec.priority,
            position=len(self.jobs),
            frames=spec.frames,
            chunk=spec.chunk,
            renderer=spec.renderer,
            stats=JobStats(frames_total=len(frames), chunks_total=len(chunks)),
            spec=spec,
        )
        self.jobs[job_id] = JobDetail(
            job=view, chunks=chunks, frame_states={str(f): "unassigned" for f in frames}
        )
        return view

    # --- HTTP ---------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/healthz":
            return _json({"ok": True})
        if request.headers.get("Authorization") != f"Bearer {GOOD_TOKEN}":
            return _json({"error": "unknown token"}, 401)
        body: Any = json.loads(request.content) if request.content else None
        method = request.method
        if path == "/api/jobs" and method == "POST":
            return _json(self.add(msgspec.convert(body, JobSpec)), 201)
        if path == "/api/jobs" and method == "GET":
            archived = request.url.params.get("all") == "1"
            views = [d.job for d in self.jobs.values() if archived or not d.job.archived]
            return _json(views)
        if path == "/api/jobs/actions":
            return self._action(body)
        if path == "/api/nodes":
            return _json(self.nodes)
        if path == "/api/tokens":
            return _json({"token": "new-secret", "role": body["role"], "name": body["name"]})
        if path == "/api/whoami":
            return _json({"name": "tester", "role": "admin"})
        match = re.fullmatch(r"/api/jobs/([^/]+)(/.*)?", path)
        if match is None:
            return _json({"error": f"no route {path}"}, 404)
        detail = self.jobs.get(match.group(1))
        if detail is None:
            return _json({"error": f"no job {match.group(1)}"}, 404)
        rest = match.group(2) or ""
        if rest == "" and method == "GET":
            return _json(detail)
        if rest == "" and method == "PATCH":
            patch = msgspec.convert(body, JobPatch)
            if patch.timeouts is not None:
                detail.job.spec.timeouts = patch.timeouts
            if patch.retries is not None:
                detail.job.spec.retries = patch.retries
            return _json(detail.job)
        if rest == "/priority":
            if not 0 <= body["priority"] <= 100:
                return _json({"error": "priority must be 0-100"}, 400)
            detail.job.priority = body["priority"]
            return _json(detail.job)
        if rest == "/move":
            return _json([d.job for d in self.jobs.values()])
        if rest == "/chunks/actions":
            for chunk in detail.chunks:
                if chunk.index in body["chunks"]:
                    chunk.state = "held" if body["action"] == "hold" else chunk.state
            return _json(detail)
        if rest == "/events":
            return httpx.Response(200, text=f"created {detail.job.id}\n")
        if rest == "/logs":
            return httpx.Response(200, text=f"chunk {request.url.params.get('chunk')} output\n")
        return _json({"error": f"no route {path}"}, 404)

    def _action(self, body: dict[str, Any]) -> httpx.Response:
        unknown = [i for i in body["ids"] if i not in self.jobs]
        if unknown:
            return _json({"error": f"no job {unknown[0]}"}, 404)
        if body["action"] == "delete":
            for job_id in body["ids"]:
                del self.jobs[job_id]
            return _json({"jobs": [], "removed": body["ids"]})
        states = {"pause": "paused", "cancel": "cancelled", "hold": "holding", "resume": "queued"}
        for job_id in body["ids"]:
            job = self.jobs[job_id].job
            job.state = states.get(body["action"], job.state)  # type: ignore[assignment]
        return _json({"jobs": [self.jobs[i].job for i in body["ids"]], "removed": []})


def _json(value: object, status: int = 200) -> httpx.Response:
    return httpx.Response(
        status, content=msgspec.json.encode(value), headers={"Content-Type": "application/json"}
    )


def was_contacted(server: socket.socket) -> bool:
    """True if a client connected to the (non-blocking, listening) ``server`` socket."""
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True
