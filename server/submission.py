"""Checking a submitted ``JobSpec`` and cutting it into chunks.

Every refusal is a one-line ``SchedulerError`` raised before anything
changes. Chunk indices are positions in ``job.chunks`` and follow the order
the chunks run in: the pre-job script (if any), the scout chunks, the other
render chunks, the post-job script (if any).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

import msgspec

from farmtui.frames import (
    FrameListError,
    OutputPatternError,
    check_output_pattern,
    chunk_frames,
    parse_frames,
)
from farmtui.protocol import ChunkKind, JobPatch, JobSpec, Timeouts
from farmtui.renderers import TOKENS, RendererError, build_argv, expand
from server.model import Chunk
from server.scheduler_config import SchedulerError


def _non_negative(value: float | None, what: str) -> None:
    if value is not None and value < 0:
        raise SchedulerError(f"{what} must not be negative, not {value}")


def validate(job_id: str, spec: JobSpec, known_jobs: Container[str]) -> list[int]:
    """Refuse a bad spec with a one-line SchedulerError; the job's frames when it is good."""
    if not job_id:
        raise SchedulerError("job id is empty")
    if job_id in known_jobs:
        raise SchedulerError(f"job {job_id} already exists")
    try:
        frames = parse_frames(spec.frames)
    except FrameListError as exc:
        raise SchedulerError(str(exc)) from None
    if spec.chunk < 1:
        raise SchedulerError(f"chunk size must be at least 1, not {spec.chunk}")
    if not 0 <= spec.priority <= 100:
        raise SchedulerError(f"priority must be 0-100 (lower renders sooner), not {spec.priority}")
    if not spec.renderer.strip():
        raise SchedulerError("renderer name is empty")
    if spec.renderer == "generic" and not spec.argv:
        raise SchedulerError("the generic renderer needs a command (argv after --)")
    if spec.output is not None:
        try:
            check_output_pattern(spec.output)
        except OutputPatternError as exc:
            raise SchedulerError(str(exc)) from None
    for dep in spec.after:
        if dep == job_id:
            raise SchedulerError(f"job {job_id} cannot wait for itself")
        if dep not in known_jobs:
            raise SchedulerError(f"unknown job {dep} in after")
    if spec.scout is not None:
        try:
            scouts = set(parse_frames(spec.scout))
        except FrameListError as exc:
            raise SchedulerError(f"scout frames: {exc}") from None
        if not scouts.intersection(frames):
            raise SchedulerError(f"scout frames {spec.scout!r} are not among the job's frames")
    for name, script in (("pre-job", spec.pre_job), ("post-job", spec.post_job)):
        if script is not None and not script:
            raise SchedulerError(f"{name} command is empty")
    if spec.max_running < 0:
        raise SchedulerError(f"max running must not be negative, not {spec.max_running}")
    if spec.retries is not None and spec.retries < 0:
        raise SchedulerError(f"retries must not be negative, not {spec.retries}")
    _non_negative(spec.retry_delay, "retry delay")
    _non_negative(spec.retry_cap, "retry cap")
    check_timeouts(spec.timeouts)
    return frames


def with_command(spec: JobSpec) -> JobSpec:
    """The spec with its argv template filled from the renderer's adapter when empty.

    Every ``{token}`` in it must be known and have a value for this job, so a
    typo is refused at submission instead of failing every chunk on the nodes.
    """
    try:
        argv = build_argv(spec)
        expand(argv, dict.fromkeys(TOKENS, ""))
    except RendererError as exc:
        raise SchedulerError(str(exc)) from None
    for token, value, what in (
        ("output", spec.output, "output pattern"),
        ("scene", spec.scene, "scene"),
    ):
        if not value:
            try:
                expand(argv, dict.fromkeys(TOKENS - {token}, ""))
            except RendererError:
                raise SchedulerError(
                    f"the command uses {{{token}}} but the job has no {what}"
                ) from None
    return spec if argv == spec.argv else msgspec.structs.replace(spec, argv=argv)


def check_timeouts(t: Timeouts) -> None:
    _non_negative(t.min_render, "minimum render time")
    _non_negative(t.max_render, "maximum render time")
    _non_negative(t.max_start, "maximum start time")
    _non_negative(t.script_timeout, "script timeout")
    _non_negative(t.auto_min_percent, "auto timeout percent")
    if t.auto_min_chunks is not None and t.auto_min_chunks < 0:
        raise SchedulerError("auto timeout chunk count must not be negative")
    if t.auto_multiplier <= 0:
        raise SchedulerError(f"auto timeout multiplier must be positive, not {t.auto_multiplier}")


def validate_patch(patch: JobPatch) -> dict[str, Any]:
    """The spec fields a patch sets (those not None), or SchedulerError on a bad value."""
    fields = {
        name: getattr(patch, name)
        for name in patch.__struct_fields__
        if getattr(patch, name) is not None
    }
    if patch.max_running is not None and patch.max_running < 0:
        raise SchedulerError(f"max running must not be negative, not {patch.max_running}")
    if patch.retries is not None and patch.retries < 0:
        raise SchedulerError(f"retries must not be negative, not {patch.retries}")
    _non_negative(patch.retry_delay, "retry delay")
    _non_negative(patch.retry_cap, "retry cap")
    if patch.timeouts is not None:
        check_timeouts(patch.timeouts)
    return fields


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
