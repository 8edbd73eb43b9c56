"""Checking a submitted ``JobSpec`` or ``JobPatch``, and cutting a job into chunks.

The rules on a job's fields are not written here: each value's limits are on
the Structs (``farmtui.protocol``), the rules between them in
``farmtui.jobfields.check_job`` / ``check_patch``, the same ones the CLI, the
job file reader and the console run. This module adds what only the leader
knows: the other jobs (``after``), and its sync root (``check_paths``).

Every refusal is a one-line ``SchedulerError`` raised before anything
changes. Chunk indices are positions in ``job.chunks`` and follow the order
the chunks run in: the pre-job script (if any), the scout chunks, the other
render chunks, the post-job script (if any).
"""

from __future__ import annotations

import logging
from collections.abc import Container
from pathlib import Path
from typing import Any

import msgspec

from farmtui.frames import chunk_frames, parse_frames
from farmtui.jobfields import JobFieldError, check_job, check_patch, check_scene, command_for
from farmtui.jobfields import repair_spec as _repair_spec
from farmtui.protocol import ChunkKind, JobPatch, JobSpec
from server.model import Chunk, Job
from server.scheduler_config import SchedulerError

log = logging.getLogger("farmtui.leader.store")


def validate(job_id: str, spec: JobSpec, known_jobs: Container[str]) -> list[int]:
    """Refuse a bad spec with a one-line SchedulerError; the job's frames when it is good."""
    if not job_id:
        raise SchedulerError("job id is empty")
    if job_id in known_jobs:
        raise SchedulerError(f"job {job_id} already exists")
    try:
        frames = check_job(spec)
    except JobFieldError as exc:
        raise SchedulerError(str(exc)) from None
    for dep in spec.after:
        if dep == job_id:
            raise SchedulerError(f"job {job_id} cannot wait for itself")
        if dep not in known_jobs:
            raise SchedulerError(f"unknown job {dep} in after")
    return frames


def check_paths(spec: JobSpec, root: Path) -> None:
    """The job's scene stays in the sync root (SPEC.md, Security); SchedulerError otherwise.

    Apart from ``validate`` because the scheduler does not know the sync root:
    it judges relative paths there; an absolute one only the leader can judge.
    """
    try:
        check_scene(spec.scene, root)
    except JobFieldError as exc:
        raise SchedulerError(str(exc)) from None


def with_command(spec: JobSpec) -> JobSpec:
    """The spec with its argv template filled from the renderer's adapter when empty.

    Every ``{token}`` in it must be known and have a value for this job, so a
    typo is refused at submission instead of failing every chunk on the nodes.
    """
    try:
        argv = command_for(spec)
    except JobFieldError as exc:
        raise SchedulerError(str(exc)) from None
    return spec if argv == spec.argv else msgspec.structs.replace(spec, argv=argv)


def validate_patch(patch: JobPatch, spec: JobSpec) -> dict[str, Any]:
    """The spec fields a patch sets (those not None), or SchedulerError.

    Checked on the job's ``spec`` with the patch applied, so a minimum render
    time above the job's existing maximum is refused like one given with it.
    """
    try:
        check_patch(spec, patch)
    except JobFieldError as exc:
        raise SchedulerError(str(exc)) from None
    return {
        name: getattr(patch, name)
        for name in patch.__struct_fields__
        if getattr(patch, name) is not None
    }


def upgrade_stored_job(data: str | bytes) -> Job:
    """A job row that today's limits refuse (written by an older leader), made valid.

    Its spec keeps what is still valid: a name loses its control characters,
    any other value out of bounds goes back to its default. Each change is logged.
    """
    raw = msgspec.json.decode(data)
    if not isinstance(raw, dict):
        raise SchedulerError("a stored job is not an object")
    try:
        spec, notes = _repair_spec(raw.get("spec", {}))
    except JobFieldError as exc:
        raise SchedulerError(f"stored job {raw.get('id')}: {exc}") from None
    raw["spec"] = msgspec.to_builtins(spec)
    job = msgspec.convert(raw, Job)
    for note in notes:
        log.warning("job %s from an older leader: %s", job.id, note)
    return job


def build_chunks(job_id: str, spec: JobSpec, frames: list[int]) -> list[Chunk]:
    """Pre-job, scout chunks, render chunks, post-job, indexed in that order."""
    scouts = set(parse_frames(spec.scout)) if spec.scout is not None else set()
    scout_frames = [f for f in frames if f in scouts]
    rest = [f for f in frames if f not in scouts]
    chunks: list[Chunk] = []

    def add(frame_list: list[int], kind: ChunkKind, scout: bool = False) -> None:
        chunks.append(
            Chunk(job_id=job_id, index=len(chunks), frames=frame_list, kind=kind, scout=scout)
        )

    if spec.pre_job is not None:
        add([], "pre")
    for run in chunk_frames(scout_frames, spec.chunk) if scout_frames else []:
        add(run, "render", scout=True)
    for run in chunk_frames(rest, spec.chunk) if rest else []:
        add(run, "render")
    if spec.post_job is not None:
        add([], "post")
    return chunks
