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

import hashlib
import logging
import os
import re
from collections.abc import Container
from pathlib import Path
from typing import Any, NamedTuple

import msgspec

from farmtui.frames import parse_frames
from farmtui.jobfields import JobFieldError, check_job, check_patch, check_scene, command_for
from farmtui.jobfields import repair_spec as _repair_spec
from farmtui.protocol import JobPatch, JobSpec
from farmtui.protocol.limits import DEFAULT_PRIORITY
from server.errors import cut
from server.model import CUT, ChunkLayout, ChunkList, Job, chunks_decoded
from server.scheduler_config import SchedulerError

log = logging.getLogger("farmtui.leader.store")


class Prepared(NamedTuple):
    """A job cut into chunks, ready for ``Scheduler.submit``: all a spec alone decides."""

    spec: JobSpec  # with its command filled in (``with_command``)
    frames: int
    chunks: ChunkList


def prepare(job_id: str, spec: JobSpec) -> Prepared:
    """Check a spec and cut it into chunks; SchedulerError for a bad one.

    Needs nothing but the spec, so the leader runs it in a thread: a
    million-frame list takes a while to read, and the farm must not wait.
    """
    try:
        frames = check_job(spec)
    except JobFieldError as exc:
        raise SchedulerError(str(exc)) from None
    spec = with_command(spec)
    return Prepared(spec, len(frames), build_chunks(job_id, spec, frames))


_sorted = msgspec.json.Encoder(order="sorted")


def request_digest(spec: JobSpec, owner: str) -> str:
    """What a submit asked for, however it was written: its idempotency key's twin.

    A client retrying sends the same spec; one that sends another under the same key
    has mixed up its keys, and is told so rather than handed the first job. A retry
    that writes a default out, names its own owner or orders its keys otherwise is
    the same request; so is one read by a leader whose specs gained a field since.
    """
    # No priority and the default one are the same request: before a spec's priority could
    # be left for the leader to fill in, 50 was its default and left out of the digest, so a
    # retry across that change must hash alike (break round 33d).
    priority = None if spec.priority == DEFAULT_PRIORITY else spec.priority
    asked = _set_fields(msgspec.structs.replace(spec, owner=owner, priority=priority))
    return hashlib.sha256(_sorted.encode(asked)).hexdigest()


def _set_fields(value: object) -> object:
    # Not the spec's own encoding: it leaves a field out only when it holds the default
    # object itself, so the same request hashed differently from process to process.
    if isinstance(value, msgspec.Struct):
        return {
            field.name: _set_fields(getattr(value, field.name))
            for field in msgspec.structs.fields(value)
            if getattr(value, field.name) != _default(field)
        }
    if isinstance(value, dict):
        return {key: _set_fields(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_set_fields(item) for item in value]
    return value


def _default(field: msgspec.structs.FieldInfo) -> object:
    if field.default is not msgspec.NODEFAULT:
        return field.default
    if field.default_factory is not msgspec.NODEFAULT:
        return field.default_factory()
    return msgspec.NODEFAULT  # a required field: always hashed


def validate(job_id: str, spec: JobSpec, known_jobs: Container[str]) -> None:
    """Refuse what the farm's other jobs make wrong with a one-line SchedulerError."""
    if not job_id:
        raise SchedulerError("job id is empty")
    if job_id in known_jobs:
        raise SchedulerError(f"job {job_id} already exists")
    for dep in spec.after:
        if dep == job_id:
            raise SchedulerError(f"job {job_id} cannot wait for itself")
        if dep not in known_jobs:
            raise SchedulerError(f"unknown job {cut(dep)} in after")


def check_paths(spec: JobSpec, root: Path) -> str | None:
    """The job's scene stays in the sync root (SPEC.md, Security); SchedulerError otherwise.

    Apart from ``validate`` because the scheduler does not know the sync root:
    it judges relative paths there; an absolute one only the leader can judge.
    File system calls (a run in a thread): the sync root may be a slow share.

    Returns a warning when the scene is not there (yet): not a refusal, since a
    pre-job script or a job this one waits for may make it, but its chunks fail
    on every node unless something does.
    """
    try:
        check_scene(spec.scene, root)
    except JobFieldError as exc:
        raise SchedulerError(str(exc)) from None
    if spec.scene is None or spec.renderer.lower() == "generic":
        return None  # a generic command's {scene} may be anything it reads
    try:
        if (root / spec.scene).is_file() or sequence_present(spec.scene, root):
            return None
    except OSError:
        return None  # it cannot be told from here; the nodes will say
    return (
        f"scene {spec.scene} is not in the sync root: its chunks fail on every node "
        "unless something makes it first (a pre-job script, a job this one waits for)"
    )


def sequence_present(scene: str, root: Path) -> bool:
    """Whether a file of the image sequence ``scene`` (``plates/p_####.png``) is in its
    folder (False for a single file's name). Stops at the first one found."""
    from farmtui.renderers import is_image_sequence

    if not is_image_sequence(scene):
        return False
    path = root / scene
    head, _, tail = re.split(r"(#+|%0?\d*d)", path.name, maxsplit=1)
    named = re.compile(re.escape(head) + r"-?\d+" + re.escape(tail))
    try:
        with os.scandir(path.parent) as entries:
            return any(named.fullmatch(entry.name) for entry in entries)
    except (FileNotFoundError, NotADirectoryError):
        return False


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
    job = msgspec.convert(raw, Job, dec_hook=chunks_decoded)
    for note in notes:
        log.warning("job %s from an older leader: %s", job.id, note)
    return job


def build_chunks(job_id: str, spec: JobSpec, frames: list[int], cut: int = CUT) -> ChunkList:
    """Pre-job, scout chunks, render chunks, post-job, indexed in that order (made lazily).

    ``cut``: how a stored job was cut (``model.CUTS``), so its chunks keep their indices.
    """
    scouts = set(parse_frames(spec.scout)) if spec.scout is not None else set()
    return ChunkList(job_id, ChunkLayout.cut(spec, frames, scouts, cut))
