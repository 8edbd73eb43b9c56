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

from farmtui.frames import frame_path
from farmtui.protocol import AssignChunk, ChunkTimeouts
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
    spec = job.spec
    if chunk.kind == "pre":
        argv, renderer = list(spec.pre_job or []), "generic"
    elif chunk.kind == "post":
        argv, renderer = list(spec.post_job or []), "generic"
    else:
        argv, renderer = list(spec.argv), spec.renderer
    scripted = chunk.kind != "render"
    message = AssignChunk(
        job_id=job.id,
        chunk=chunk.index,
        attempt=chunk.attempt,
        kind=chunk.kind,
        renderer=renderer,
        argv=argv,
        frames=list(chunk.frames),
        outputs=expected_outputs(job, chunk),
        outdir="" if scripted else output_dir(job),
        staging=False if scripted else spec.staging,
        env=dict(spec.env),
        timeouts=timeouts,
        log_path=chunk_log_path(job.id, chunk.index, chunk.attempt),
        output="" if scripted else (spec.output or ""),
        scene=spec.scene or "",
        sync_from=sync_from,
        gpus=gpus,
    )
    return map_assignment(message, path_map, node_os)
