"""Building the ``AssignChunk`` message for one attempt of one chunk.

The argv template goes out unexpanded: the agent knows its staging folder and
fills in ``{start}``, ``{outdir}`` and the other tokens itself. Paths here are
relative to the sync root. Absolute paths (the scene, argv tokens, env values)
are mapped for the node's OS by the leader's ``[[path_map]]`` rules
(``server.path_mapping``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import PurePosixPath

import msgspec

from farmtui.frames import frame_path
from farmtui.protocol import AssignChunk, ChunkKind, ChunkTimeouts
from server.frame_states import tally_of
from server.joblogs import chunk_log_path
from server.model import Chunk, Job
from server.path_mapping import PathRule, map_assignment


def expected_outputs(job: Job, chunk: Chunk) -> list[str]:
    pattern = job.spec.output
    if pattern is None or chunk.kind != "render":
        return []
    return [frame_path(pattern, frame) for frame in chunk.frames]


def output_dir(job: Job) -> str:
    """The output pattern's folder ("" when the job names no output, or it is the root)."""
    if job.spec.output is None:
        return ""
    parent = str(PurePosixPath(job.spec.output).parent)
    return "" if parent == "." else parent


def build_assignment(
    job: Job,
    chunk: Chunk,
    timeouts: ChunkTimeouts,
    *,
    path_map: Sequence[PathRule] = (),
    node_os: str = "",
    gpus: list[int] | None = None,
    sync_from: int = 0,
) -> AssignChunk:
    """The message for the chunk's current attempt, its paths as a ``node_os`` node sees them.

    ``node_os`` is what the node's hello said ("" from an old agent: the leader's OS);
    ``gpus`` the node's GPUs the chunk has to itself (None: the node has none we know);
    ``sync_from`` the attempt whose staged output it copies instead of rendering.
    """
    alike = _alike(job, chunk.kind)
    # The job's part made once (``_alike``), this chunk's put into a copy: an
    # AssignChunk of 17 fields made afresh for every chunk was 2.2 us, this 0.9.
    message = msgspec.structs.replace(
        alike,
        chunk=chunk.index,
        attempt=chunk.attempt,
        argv=list(alike.argv),  # each message its own, as before
        frames=list(chunk.frames),
        outputs=expected_outputs(job, chunk),
        env=dict(alike.env),
        timeouts=timeouts,
        log_path=chunk_log_path(job.id, chunk.index, chunk.attempt),
        sync_from=sync_from,
        gpus=gpus,
    )
    return map_assignment(message, path_map, node_os)


def _alike(job: Job, kind: ChunkKind) -> AssignChunk:
    """What every assignment of the job's chunks of ``kind`` says alike, kept with its
    counters while the job keeps its spec (a changed spec is a new object: specs are
    replaced, never changed in place)."""
    tally = tally_of(job)
    kept = tally.alike
    if not isinstance(kept, tuple) or kept[0] is not job.spec:
        kept = tally.alike = (job.spec, {})
    by_kind: dict[str, AssignChunk] = kept[1]
    alike = by_kind.get(kind)
    if alike is None:
        alike = by_kind[kind] = _made_alike(job, kind)
    return alike


def _made_alike(job: Job, kind: ChunkKind) -> AssignChunk:
    spec = job.spec
    if kind == "pre":
        argv, renderer = list(spec.pre_job or []), "generic"
    elif kind == "post":
        argv, renderer = list(spec.post_job or []), "generic"
    else:
        argv, renderer = list(spec.argv), spec.renderer
    scripted = kind != "render"
    return AssignChunk(
        job_id=job.id,
        chunk=0,
        attempt=0,
        kind=kind,
        renderer=renderer,
        argv=argv,
        frames=[],
        outdir="" if scripted else output_dir(job),
        staging=False if scripted else spec.staging,
        env=dict(spec.env),
        output="" if scripted else (spec.output or ""),
        scene=spec.scene or "",
    )
