"""The farm as table rows, for every store: what a ``Changes`` writes, and how rows load.

Jobs, chunks and nodes are stored one row each as msgspec JSON of the model
records, so a field added to the model with a default needs no migration.

A chunk row holds only what a chunk's life changes (``StoredChunk``: state,
attempts, output seen ...), without the defaults: its frames, kind and index
follow from the job's spec (``build_chunks``), and a chunk that never left
its first state has no row at all. So submitting a job of a million frames
writes one job row, and a finished chunk rewrites one small row. A job row is
written only when one of its own fields changed, not for every chunk event
(``WrittenRows`` remembers what each row on disk says). Rows an older leader
wrote (whole chunks) still load.

Both stores (``server.store`` for SQLite, ``server.store_postgres``) take
their rows from here, so they write and read exactly the same farm.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import NamedTuple, TypeVar

import msgspec

from farmtui.jobfields import JobFieldError, check_job
from farmtui.protocol import ChunkState
from server.model import (
    Attempt,
    Changes,
    Chunk,
    ChunkLayout,
    ChunkList,
    Job,
    Node,
    chunks_decoded,
    chunks_encoded,
)
from server.scheduler import Scheduler
from server.scheduler_config import SchedulerError
from server.submission import build_chunks, upgrade_stored_job


class StoredChunk(msgspec.Struct, omit_defaults=True):
    """What a chunk's life changes; the rest of the chunk comes from ``build_chunks``."""

    state: ChunkState = "queued"
    node: str | None = None
    attempt: int = 0
    errors: int = 0
    retry_at: float | None = None
    started: float | None = None
    finished: float | None = None
    render_time: float | None = None
    staged: frozenset[int] = frozenset()
    done: tuple[int, ...] = ()
    attempts: tuple[Attempt, ...] = ()
    stopping_node: str | None = None
    stopping_attempt: int = 0
    staged_on: str | None = None
    staged_attempt: int = 0


_STORED_FIELDS = StoredChunk.__struct_fields__

_encoder = msgspec.json.Encoder()
_job_encoder = msgspec.json.Encoder(enc_hook=chunks_encoded)
_job_decoder = msgspec.json.Decoder(Job, dec_hook=chunks_decoded)
_chunk_decoder = msgspec.json.Decoder(Chunk)
_stored_chunk_decoder = msgspec.json.Decoder(StoredChunk)
_node_decoder = msgspec.json.Decoder(Node)


class TokenRow(NamedTuple):
    hash: str
    name: str
    role: str
    created: float


class FarmRows(NamedTuple):
    """Every row of a farm as stored, for ``farm migrate`` (copied as is, never decoded)."""

    jobs: list[tuple[str, str]]
    chunks: list[tuple[str, int, str]]
    nodes: list[tuple[str, str]]
    tokens: list[TokenRow]
    settings: list[tuple[str, str]]

    def counts(self) -> dict[str, int]:
        return {
            "jobs": len(self.jobs),
            "chunks": len(self.chunks),
            "nodes": len(self.nodes),
            "tokens": len(self.tokens),
            "settings": len(self.settings),
        }


def decode_job(data: str) -> Job:
    """A job row; one that today's field limits refuse (an older leader's) is upgraded."""
    try:
        return _job_decoder.decode(data)
    except msgspec.ValidationError:
        return upgrade_stored_job(data)


def encode_job(job: Job) -> str:
    """The job without its chunks (they have their own rows)."""
    return _job_encoder.encode(dataclasses.replace(job, tally=None)).decode()


def encode_chunk(chunk: Chunk) -> str:
    """The chunk's row: its fields that ``build_chunks`` does not give, without defaults."""
    # Field by field rather than a dict of getattr: a row per finished chunk.
    stored = StoredChunk(
        state=chunk.state,
        node=chunk.node,
        attempt=chunk.attempt,
        errors=chunk.errors,
        retry_at=chunk.retry_at,
        started=chunk.started,
        finished=chunk.finished,
        render_time=chunk.render_time,
        staged=chunk.staged,
        done=chunk.done,
        attempts=chunk.attempts,
        stopping_node=chunk.stopping_node,
        stopping_attempt=chunk.stopping_attempt,
        staged_on=chunk.staged_on,
        staged_attempt=chunk.staged_attempt,
    )
    return _encoder.encode(stored).decode()


def encode_node(node: Node) -> str:
    # Online state is the live link's business, not the disk's. The attempts
    # holding its slots are kept: a restarted leader must still fence them.
    # Not ``dataclasses.replace``: a copy of the node for every row was most of its cost.
    # A node not heard since the leader started keeps its true last contact on disk, not
    # the silence clock's ``last_seen``, which a restart counts from the start.
    online, node.online = node.online, False
    last_seen = node.last_seen
    node.last_seen = node.seen_before_start or last_seen
    try:
        return _encoder.encode(node).decode()
    finally:
        node.online = online
        node.last_seen = last_seen


def pristine(chunk: Chunk) -> bool:
    """Never touched since ``build_chunks``: a fresh job's chunk like this needs no row."""
    return chunk.attempt == 0 and chunk.state == "queued" and not chunk.attempts


def find_chunk(job: Job, index: int) -> Chunk | None:
    """The chunk with this index, to read (an untouched one is not kept), or None."""
    chunks = job.chunks
    return chunks.look(index) if 0 <= index < len(chunks) else None


def _job_fingerprint(job: Job) -> tuple[object, ...]:
    """Every stored field of a job (chunks and counters apart), cheap to compare."""
    return (
        job.spec,
        job.owner,
        job.state,
        job.priority,
        job.queue_key,
        job.created,
        job.archived,
        job.reviewed,
        job.started,
        job.finished,
        tuple(job.blocked.items()),
        tuple(job.node_errors.items()),
        job.scout_released,
        job.paused_under_hold,
        job.submit_key,
        job.submit_digest,
        job.chunks.untouched,
    )


def _base_chunks(job: Job) -> ChunkList | None:
    """The job's chunks as submitted, from its spec and the cut in its row.

    None if the spec no longer cuts.
    """
    try:
        frames = check_job(job.spec)
        return build_chunks(job.id, job.spec, frames, job.chunks.layout.cut_version)
    except (JobFieldError, SchedulerError):
        return None


def _overlay(chunks: ChunkList, index: int, data: str) -> None:
    """Put one stored row onto the chunk it describes."""
    if not 0 <= index < len(chunks):
        return  # a row the spec no longer has a chunk for
    if data.startswith('{"job_id"'):
        # A whole chunk, as an older leader stored it.
        chunk = chunks[index] = _chunk_decoder.decode(data)
    else:
        stored = _stored_chunk_decoder.decode(data)
        chunk = chunks[index]
        for name in _STORED_FIELDS:
            setattr(chunk, name, getattr(stored, name))
    if chunk.done:
        chunk.done = _in_frame_order(chunk.done, chunk.frames)


def _in_frame_order(done: tuple[int, ...], frames: tuple[int, ...]) -> tuple[int, ...]:
    """``done`` as the chunk keeps it: in frame order, and ``frames`` itself when all are.

    One tuple, not two (see ``Chunk.done``); and a leader before it was a tuple
    stored it as a set, in the set's order.
    """
    if done == frames:
        return frames
    written = set(done)
    if len(written) == len(frames) and written.issuperset(frames):
        return frames
    return tuple(frame for frame in frames if frame in written)


def farm_from_rows(
    job_rows: Iterable[str],
    chunk_rows: Iterable[tuple[str, int, str]],
    node_rows: Iterable[str],
) -> tuple[list[Job], list[Node]]:
    """Every job with its chunks (rows in index order per job), and every node."""
    jobs: dict[str, Job] = {}
    for data in job_rows:
        job = decode_job(data)
        # The untouched chunks' state and the cut: all of its chunks in the row.
        untouched, cut = job.chunks.untouched, job.chunks.layout.cut_version
        job.chunks = _base_chunks(job) or ChunkList(job.id, ChunkLayout([], cut))
        job.chunks.untouched = untouched
        jobs[job.id] = job
    for job_id, index, data in chunk_rows:
        owner = jobs.get(job_id)
        if owner is not None:
            _overlay(owner.chunks, index, data)
    nodes = [_node_decoder.decode(data) for data in node_rows]
    return list(jobs.values()), nodes


@dataclass(slots=True)
class Rows:
    """What one commit writes: upserts, and the jobs deleted with their chunks."""

    deleted: set[str]
    jobs: list[tuple[str, str]]
    chunks: list[tuple[str, int, str]]
    nodes: list[tuple[str, str]]
    fingerprints: dict[str, tuple[object, ...]] = field(default_factory=dict)


class WrittenRows:
    """What the rows on disk say, so a commit writes only the rows that changed.

    ``rows`` builds a commit's rows; ``committed`` records them once the commit
    returned (a failed commit changes nothing here either); ``loaded`` starts
    again from what a load read.
    """

    def __init__(self, persisted: Iterable[str]) -> None:
        # Jobs already on disk: a job seen for the first time gets all its chunks written.
        self._persisted: set[str] = set(persisted)
        # What each job row on disk says (``_job_fingerprint``): an unchanged job is not rewritten.
        self._written: dict[str, tuple[object, ...]] = {}

    def loaded(self, jobs: Iterable[Job]) -> None:
        self._persisted = set()
        self._written = {}
        for job in jobs:
            self._persisted.add(job.id)
            self._written[job.id] = _job_fingerprint(job)

    def rows(self, changes: Changes, scheduler: Scheduler) -> Rows | None:
        """The rows ``changes`` names, or None when there is nothing to write."""
        if not (
            changes.jobs or changes.chunks or changes.nodes or changes.contacts or changes.removed
        ):
            return None
        jobs = scheduler.jobs
        rows = Rows(deleted=set(changes.removed), jobs=[], chunks=[], nodes=[])
        fresh_ids: set[str] = set()
        for job_id in changes.jobs:
            job = jobs.get(job_id)
            if job is None:
                rows.deleted.add(job_id)
                continue
            fingerprint = _job_fingerprint(job)
            if job_id in self._persisted and self._written.get(job_id) == fingerprint:
                continue  # only its chunks changed
            rows.fingerprints[job_id] = fingerprint
            rows.jobs.append((job_id, encode_job(job)))
            if job_id not in self._persisted:
                fresh_ids.add(job_id)
        for job_id, index in changes.chunks:
            if job_id in rows.deleted:
                continue
            job = jobs.get(job_id)
            if job is None:
                continue
            chunk = find_chunk(job, index)
            if chunk is None or (job_id in fresh_ids and pristine(chunk)):
                continue  # a fresh job's untouched chunk: load rebuilds it from the spec
            rows.chunks.append((job_id, index, encode_chunk(chunk)))
        names = changes.nodes | changes.contacts if changes.contacts else changes.nodes
        if scheduler.unsaved_contacts:  # they go with a commit made anyway
            names = names | scheduler.unsaved_contacts
            scheduler.unsaved_contacts.clear()
        rows.nodes = [
            (name, encode_node(scheduler.nodes[name])) for name in names if name in scheduler.nodes
        ]
        return rows

    def queued(self, changes: Changes, scheduler: Scheduler) -> Rows | None:
        """``rows``, counted as written at once: for commits that wait on a thread.

        The next group's rows are built before this one's commit returns, and must
        be built against what the disk will say then: a job row changed here and
        changed back next would otherwise look unchanged to the next group and
        never be written back. When a queued commit fails, the leader reloads
        the store (``loaded``), which is the truth again.
        """
        rows = self.rows(changes, scheduler)
        if rows is not None:
            self.committed(rows)
        return rows

    def committed(self, rows: Rows) -> None:
        self._persisted -= rows.deleted
        self._persisted.update(job_id for job_id, _ in rows.jobs)
        for job_id in rows.deleted:
            self._written.pop(job_id, None)
        self._written.update(rows.fingerprints)


class SavesChanges:
    """``save`` for both stores, from their ``written`` rows and their ``write``."""

    written: WrittenRows

    def write(self, batches: Sequence[Rows]) -> None:
        raise NotImplementedError

    def save(self, changes: Changes, scheduler: Scheduler) -> None:
        """Persist every job, chunk and node ``changes`` names, and the removals, in one
        commit, now, on this thread (scripts, tests; the leader queues its commits on a
        thread of their own: ``server.commit_line``).

        StoreError (and nothing written; with PostgreSQL, unless the link broke
        mid-commit) when the commit fails.
        """
        rows = self.written.rows(changes, scheduler)
        if rows is None:
            return
        self.write([rows])
        self.written.committed(rows)


_Row = TypeVar("_Row", bound=tuple[object, ...])


def merge_rows(waiting: list[Rows], later: Rows) -> None:
    """Add ``later`` to the rows that will be written together, in order, in one commit.

    Merged into the last, where a later row of the same key replaces an earlier
    one and a deletion drops the earlier rows of its job; unless ``later``
    writes a job the last deletes (an id freed and used again): written after
    it then, so that the deletion does not take the new job's rows with it.
    """
    if not waiting or not waiting[-1].deleted.isdisjoint(job_id for job_id, _ in later.jobs):
        waiting.append(later)
        return
    last = waiting[-1]
    gone = later.deleted
    last.deleted |= gone
    last.jobs = _merged(last.jobs, later.jobs, gone)
    last.chunks = _merged(last.chunks, later.chunks, gone)
    last.nodes = _merged(last.nodes, later.nodes, frozenset())
    last.fingerprints.update(later.fingerprints)


def _merged(first: list[_Row], later: list[_Row], gone: AbstractSet[str]) -> list[_Row]:
    """One row a key (all but the row's last field, its data), the later one winning."""
    if not later and not gone:
        return first
    rows = {row[:-1]: row for row in first if row[0] not in gone}
    for row in later:
        rows[row[:-1]] = row
    return list(rows.values())
