"""Where a chunk writes, which files it must leave, and how they reach the sync root.

A renderer never writes into place. With staging on, a chunk renders into
``<staging>/<job>/<chunk>.<attempt>/<outdir>`` and its files are copied to
the sync root only when the whole chunk has succeeded (each copy goes to a
temporary name in the destination folder, then ``os.replace``, so a reader
never sees half a frame). With staging off it renders into a per-attempt
folder inside the output folder, ``<outdir>/.farmtui-<job>.<chunk>.<attempt>``,
and its files are renamed into place. A node that cannot see the sync root
uploads with ``PUT /api/files/{path}`` instead.

Every copy, rename and upload is fenced by its attempt (:class:`Fence`): it
lands only while that attempt is still current, so a stale attempt's files
never replace a current one's. Paths come from jobs, so each one is confined
to its root: traversal is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import ssl
import stat
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Protocol
from urllib.parse import quote

import httpx

from agent.copy_records import CopyRecords, temporary_name
from agent.errors import (
    ChunkSetupError,
    CopyGivenUp,
    DestinationBlocked,
    FenceError,
    LeaderAway,
    OutputRefused,
    PathEscapeError,
    UploadCut,
)
from agent.no_follow import copy_data, open_folder, take_back
from farmtui.frames import frame_path
from farmtui.printable import utf8_text
from farmtui.protocol import ROLE_HEADER, ROOT_ID_FILE, AssignChunk, leader_owned

# Prefix of the per-attempt folders renderers write into when staging is off.
PARTIAL_PREFIX = ".farmtui-"
_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_UPLOAD_BLOCK = 1024 * 1024


def check_relative(relative: str, what: str) -> PurePosixPath:
    """A job's path as a relative path, refusing absolute paths, ``..``, ``~``, NUL, backslash."""
    rel = PurePosixPath(relative)
    if (
        relative.startswith(("/", "~"))
        or rel.is_absolute()
        or ".." in rel.parts
        or "\x00" in relative
        or "\\" in relative
    ):
        raise PathEscapeError(f"{what} {relative!r} escapes its root; refused")
    return rel


def confine(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` for a job's path, also refusing symlinks that lead out of ``root``."""
    return _confined(root, relative, what)[0]


def _confined(root: Path, relative: str, what: str) -> tuple[Path, PurePosixPath]:
    """``confine``'s path, and where it really leads, relative to the real ``root``."""
    rel = check_relative(relative, what)
    if not rel.parts:
        # The root itself (a chunk with no output folder, in staging): nothing to follow.
        # Two realpaths of the same path, for every short chunk, were a few % of an agent.
        return root, PurePosixPath(".")
    path = root.joinpath(*rel.parts)
    try:
        real_root = os.path.realpath(root)
        real = os.path.realpath(path)
    except OSError as exc:  # a folder on its way swapped for a symlink as it was looked at
        raise PathEscapeError(
            f"{what} {relative!r} could not be followed ({exc.strerror}); refused"
        ) from None
    if real != real_root and not real.startswith(real_root + os.sep):
        raise PathEscapeError(f"{what} {relative!r} leads outside {root} (symlink?); refused")
    return path, PurePosixPath(os.path.relpath(real, real_root))


def confine_output(root: Path, relative: str, what: str) -> Path:
    """``confine`` for where a job's output lands in the sync root: never, through a
    symlink a renderer left there (``links/jobs -> ../jobs``), in the leader's own
    folders, where it would replace another job's log."""
    path, real = _confined(root, relative, what)
    if real.parts and leader_owned(real):
        raise PathEscapeError(
            f"{what} {relative!r} leads into {real.parts[0]}, which only the leader writes "
            "(symlink?); refused"
        )
    return path


def sync_root_visible(sync_root: str | None, root_id: str) -> Path | None:
    """The sync root if this node shares the leader's storage, else None (upload instead)."""
    if not sync_root or not root_id:
        return None
    root = Path(sync_root)
    try:
        found = (root / ROOT_ID_FILE).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return root if found == root_id.strip() else None


def infer_pattern(output: str, frame: int) -> str | None:
    """Guess a ``#`` pattern from one expected file name and its frame (7, ``f_0007.png``)."""
    path = PurePosixPath(output)
    candidates = [m for m in re.finditer(r"-?\d+", path.name) if int(m.group()) == frame]
    if not candidates:
        return None
    last = candidates[-1]
    name = path.name[: last.start()] + "#" * len(last.group()) + path.name[last.end() :]
    return str(path.with_name(name))


@dataclass(slots=True)
class ChunkFiles:
    """Where one chunk attempt writes and which file each frame must leave.

    ``expected`` maps a frame to (path relative to the sync root, where the
    renderer writes it: in staging or directly in the sync root).
    """

    outdir: Path
    write_root: Path
    staged: bool
    expected: dict[int, tuple[str, Path]] = field(default_factory=dict)
    # Expected files that belong to no frame (pre/post scripts, odd layouts).
    extra: list[tuple[str, Path]] = field(default_factory=list)

    def present(self, path: Path) -> bool:
        try:
            return path.stat().st_size > 0
        except OSError:
            return False

    def frames_present(self) -> list[int]:
        return [frame for frame, (_, path) in self.expected.items() if self.present(path)]

    def missing(self) -> tuple[list[int], list[str]]:
        """Frames and frame-less files that do not exist or are empty."""
        frames = [f for f, (_, path) in self.expected.items() if not self.present(path)]
        others = [rel for rel, path in self.extra if not self.present(path)]
        return frames, others

    def files(self) -> list[tuple[str, Path]]:
        return [*self.expected.values(), *self.extra]

    def unexpected(self, most: int = 3) -> list[str]:
        """Up to ``most`` names of files in the attempt's own output folder that no frame
        expects (``f_0001.png`` for ``f_####.jpg``); none when it writes into the shared
        sync root, where other chunks' files lie."""
        if not self.staged:
            return []
        wanted = {path.name for _, path in self.files()}
        try:
            with os.scandir(self.outdir) as entries:
                names = sorted(
                    utf8_text(e.name) for e in entries if e.is_file() and e.name not in wanted
                )
        except OSError:
            return []
        return names[:most] + ([f"{len(names) - most} more"] if len(names) > most else [])


def plan_files(
    *,
    write_root: Path,
    staged: bool,
    outdir: str,
    outputs: Sequence[str],
    frames: Sequence[int],
    pattern: str,
    inside_outdir: bool = False,
) -> ChunkFiles:
    """Confine and map a chunk's outdir and expected outputs into ``write_root``.

    ``inside_outdir``: ``write_root`` stands for the output folder itself
    (staging off: a per-attempt folder inside it), so paths are taken
    relative to ``outdir``.
    """
    base = check_relative(outdir, "output folder") if inside_outdir else PurePosixPath()
    files = ChunkFiles(
        outdir=write_root if inside_outdir else confine(write_root, outdir, "output folder"),
        write_root=write_root,
        staged=staged,
    )
    by_frame: dict[int, str] = {}
    if pattern and outputs:
        named = {frame_path(pattern, f): f for f in frames}
        by_frame = {named[o]: o for o in outputs if o in named}
    elif len(outputs) == len(frames):
        by_frame = dict(zip(frames, outputs, strict=True))
    for rel in outputs:
        inner = rel
        if inside_outdir:
            relative = check_relative(rel, "output file")
            if not relative.is_relative_to(base):
                raise PathEscapeError(f"output file {rel!r} is not inside {outdir!r}; refused")
            inner = str(relative.relative_to(base))
        path = confine(write_root, inner, "output file")
        frame = next((f for f, o in by_frame.items() if o == rel), None)
        if frame is None:
            files.extra.append((rel, path))
        else:
            files.expected[frame] = (rel, path)
    return files


def partial_folder(root: Path, outdir: str, job_id: str, chunk: int, attempt: int) -> Path:
    """Where a chunk attempt writes when staging is off: a folder inside its output folder."""
    folder = confine_output(root, outdir, "output folder")
    return folder / f"{PARTIAL_PREFIX}{job_id}.{chunk}.{attempt}"


def remove_partial_folder(root: Path, assign: AssignChunk, render_uid: int | None = None) -> None:
    """An attempt's folder inside its output folder (staging off) and what is in it, gone;
    never through a symlink. ``render_uid``: its folders taken back from that user first,
    so that none of it moves while it is removed. Never raises."""
    try:
        where = partial_folder(root, assign.outdir, assign.job_id, assign.chunk, assign.attempt)
        rel = where.relative_to(root)
    except (ValueError, ChunkSetupError):
        return
    if render_uid is not None:  # its folders only: its files are not copied to be deleted
        with contextlib.suppress(OSError, ChunkSetupError):
            take_back(root, rel.parts, render_uid, files=False)
    try:
        parent = open_folder(root, rel.parent.parts)
    except (OSError, ChunkSetupError):
        return
    try:
        shutil.rmtree(rel.name, dir_fd=parent, ignore_errors=True)
    finally:
        os.close(parent)


def _never() -> bool:
    return False


@dataclass(frozen=True, slots=True)
class Fence:
    """The attempt a delivery belongs to, and whether it may still write.

    ``refusal()`` is None while the attempt is current here (not told to stop,
    the node's lease not run out), else why it may not write. It is asked
    right before each file lands.
    """

    job_id: str
    chunk: int
    attempt: int
    refusal: Callable[[], str | None]
    # The uid its files must have: with a render user (``agent.render_user``), the
    # agent's own, once it took them back from that user (``agent.no_follow.take_back``).
    # None: any.
    owner: int | None = None
    # The folder its files were written in (its staging folder): each is reached from it
    # a folder at a time, never through a symlink. None: by its path.
    folder: Path | None = None
    # True once the agent goes at once (a second signal): the attempt may still write,
    # but its copy stops where it is, its output kept for the next start. Asked from the
    # copy's thread, which nothing else can stop.
    given_up: Callable[[], bool] = _never

    def check(self) -> None:
        why = self.refusal()
        if why is not None:
            raise FenceError(f"attempt {self.attempt} may no longer write: {why}")

    def going_on(self) -> None:
        """``check``, and CopyGivenUp once the agent goes at once: before each block of a
        copy, and before its file takes its final name."""
        self.check()
        if self.given_up():
            raise CopyGivenUp(f"attempt {self.attempt}: the agent goes; its copy stops here")

    def check_landed(self, folder: int, name: str, landed: os.stat_result) -> None:
        """Asked again once file ``name`` has landed in ``folder`` (a descriptor) as
        ``landed``: told to stop while it landed (an NFS rename that hung for seconds),
        it is taken back, so a stopped attempt leaves no file where its next attempt,
        or nobody, should write."""
        if self.refusal() is None:
            return
        try:
            now = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except OSError:
            now = None
        if now is not None and (now.st_dev, now.st_ino) == (landed.st_dev, landed.st_ino):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=folder)
        self.check()


def output_path(relative: str) -> PurePosixPath:
    """A job's output path in the sync root, as written: never in the leader's folders.

    Deliveries reach it a folder at a time without following a symlink
    (``agent.no_follow``), so the path as written is where the file lands.
    """
    rel = check_relative(relative, "output file")
    if not rel.parts:
        raise PathEscapeError("output file '' names no file; refused")
    if leader_owned(rel):
        raise PathEscapeError(
            f"output file {relative!r} is in {rel.parts[0]}, which only the leader writes; refused"
        )
    return rel


def open_output(source: Path, owner: int | None, folder: Path | None = None) -> BinaryIO:
    """A rendered file opened for reading; OutputRefused unless it is a regular file
    (and, with ``owner``, one of that uid's).

    A renderer may leave anything under a file's name: a symlink to a file only
    the agent may read (the agent may run as root), or a FIFO whose open would
    wait for a writer forever; or a symlink in place of a folder on its way.
    The file opened is the one checked: no symlink is followed at its name nor,
    from ``folder`` (where it was written), on its way; none is opened blocking;
    its owner is read from it.
    """
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        if folder is None:
            fd = os.open(source, flags)
        else:
            written = source.relative_to(folder)
            parent = open_folder(folder, written.parent.parts, what=str(written))
            try:
                fd = os.open(written.name, flags, dir_fd=parent)
            finally:
                os.close(parent)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputRefused(f"output file {source.name} is a symlink; refused") from None
        raise
    try:
        _check_rendered(source, os.fstat(fd), owner)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _check_rendered(source: Path, info: os.stat_result, owner: int | None) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise OutputRefused(f"output file {source.name} is not a regular file; refused")
    if owner is not None and info.st_uid != owner:
        raise OutputRefused(
            f"output file {source.name} is not its renderer's (it belongs to uid "
            f"{info.st_uid}); refused"
        )


class Delivery(Protocol):
    """Puts a finished chunk's staged files where the leader sees them."""

    async def deliver(self, relative: str, source: Path, fence: Fence) -> None: ...


class CopyToSyncRoot:
    """Copy into a shared sync root: temporary name in the destination folder, then replace.

    ``records``: where each temporary file is noted while it may exist, for the sweep of
    an agent killed midway (``agent.copy_records``).
    """

    def __init__(self, root: Path, records: CopyRecords | None = None) -> None:
        self.root = root
        self.records = records

    def _copy(self, relative: str, source: Path, fence: Fence) -> None:
        rel = output_path(relative)
        with open_output(source, fence.owner, fence.folder) as rendered:
            try:
                folder = open_folder(self.root, rel.parent.parts, make=True, what=relative)
            except PathEscapeError as exc:  # in the sync root, not in what was rendered
                raise DestinationBlocked(str(exc)) from None
            try:
                _land_copy(folder, rel.name, rendered, fence, self.records, rel.parent.parts)
            finally:
                os.close(folder)

    async def deliver(self, relative: str, source: Path, fence: Fence) -> None:
        await asyncio.to_thread(self._copy, relative, source, fence)


def _land_copy(
    folder: int,
    name: str,
    rendered: BinaryIO,
    fence: Fence,
    records: CopyRecords | None = None,
    steps: Sequence[str] = (),
) -> None:
    """Copy ``rendered`` to ``name`` in ``folder`` (a descriptor, ``steps`` from the sync
    root): whole, then renamed."""
    temporary = temporary_name(name, uuid.uuid4().hex[:8])
    noted = records is not None and records.note(temporary, steps)
    try:
        _copy_then_rename(folder, temporary, name, rendered, fence)
    finally:
        if noted:
            assert records is not None
            records.done(temporary)  # renamed into place, or removed


def _copy_then_rename(
    folder: int, temporary: str, name: str, rendered: BinaryIO, fence: Fence
) -> None:
    made = os.open(temporary, _NEW_FILE, 0o666, dir_fd=folder)
    try:
        try:
            copy_data(rendered.fileno(), made, os.fstat(rendered.fileno()).st_size, fence.going_on)
            landed = os.fstat(made)
        finally:
            os.close(made)
        fence.going_on()
        os.replace(temporary, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary, dir_fd=folder)
        raise
    fence.check_landed(folder, name, landed)


class RenameIntoPlace:
    """Staging off: the renderer wrote inside the output folder; rename each file into place."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _rename(self, relative: str, source: Path, fence: Fence) -> None:
        rel = output_path(relative)
        written = PurePosixPath(source.relative_to(self.root))
        origin = open_folder(self.root, written.parent.parts, what=str(written))
        try:
            target = open_folder(self.root, rel.parent.parts, make=True, what=relative)
            try:
                _move(origin, written.name, target, rel.name, fence)
            finally:
                os.close(target)
        finally:
            os.close(origin)

    async def deliver(self, relative: str, source: Path, fence: Fence) -> None:
        await asyncio.to_thread(self._rename, relative, source, fence)


def _move(origin: int, source: str, folder: int, name: str, fence: Fence) -> None:
    """Rename ``source`` in ``origin`` to ``name`` in ``folder`` (descriptors, both)."""
    try:
        checked = os.stat(source, dir_fd=origin, follow_symlinks=False)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read {source}: {exc.strerror}") from None
    _check_rendered(Path(source), checked, fence.owner)
    fence.check()
    os.replace(source, name, src_dir_fd=origin, dst_dir_fd=folder)
    landed = os.stat(name, dir_fd=folder, follow_symlinks=False)
    if (landed.st_dev, landed.st_ino) != (checked.st_dev, checked.st_ino):
        # Put in its place between the look and the rename (a renderer of the agent's
        # own user may write in its folder): whatever it is, it does not stay.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=folder)
        raise OutputRefused(f"output file {source} changed as it was moved; refused")
    fence.check_landed(folder, name, landed)


# How long a leader has to answer ``/healthz`` after an upload was cut midway.
PROBE_TIMEOUT = 5.0


def _why(exc: httpx.TransportError) -> str:
    """httpx's message, or its kind when it has none (a reset says nothing)."""
    return str(exc) or type(exc).__name__


class UploadToLeader:
    """``PUT {leader}/api/files/{relative}`` with the agent token, for nodes without the share."""

    def __init__(
        self,
        leader: str,
        token: str,
        *,
        timeout: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self.leader = leader.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.transport = transport
        # The agent's own trust (``farm agent --ca``), as on its WebSocket.
        self.verify = verify

    async def deliver(self, relative: str, source: Path, fence: Fence) -> None:
        check_relative(relative, "output file")
        fence.check()
        rendered = await asyncio.to_thread(open_output, source, fence.owner, fence.folder)
        try:
            await self._upload(relative, rendered, fence)
        finally:
            rendered.close()

    async def _away(self) -> str | None:
        """Why no active leader is there (``GET /healthz``), or None if one is."""
        try:
            async with httpx.AsyncClient(
                timeout=PROBE_TIMEOUT, transport=self.transport, verify=self.verify
            ) as client:
                response = await client.get(f"{self.leader}/healthz")
            role = response.json().get("role") if response.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            return f"cannot reach the leader at {self.leader}: {exc or type(exc).__name__}"
        if role != "active":
            return f"the leader at {self.leader} is not active ({role or response.status_code})"
        return None

    async def _upload(self, relative: str, rendered: BinaryIO, fence: Fence) -> None:
        async def blocks() -> AsyncIterator[bytes]:
            while block := await asyncio.to_thread(rendered.read, _UPLOAD_BLOCK):
                yield block

        size = os.fstat(rendered.fileno()).st_size
        try:
            async with httpx.AsyncClient(
                timeout=self.timeout, transport=self.transport, verify=self.verify
            ) as client:
                # The leader writes the file only while this attempt is current.
                response = await client.put(
                    f"{self.leader}/api/files/{quote(relative)}",
                    params={"job": fence.job_id, "chunk": fence.chunk, "attempt": fence.attempt},
                    content=blocks(),
                    headers={
                        "Authorization": f"Bearer {self.token}",
                        "Content-Length": str(size),
                    },
                )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:  # down, restarting
            raise LeaderAway(f"cannot reach the leader at {self.leader}: {_why(exc)}") from None
        except httpx.TransportError as exc:
            # Cut midway: a leader that died, a standby (a leader cut off from its
            # database) or a forwarder with nothing behind it, all the farm's doing; or
            # an active leader that refused the file before reading it, which says why
            # only to a client that reads before it has sent everything.
            away = await self._away()
            if away is not None:
                raise LeaderAway(away) from None
            why = (
                f"the leader at {self.leader} closed the upload of {relative} midway"
                f" ({_why(exc)}): a refusal unread (a file over its max_upload_bytes,"
                " an attempt no longer current, a full disk?)"
            )
            raise UploadCut(why) from None
        if response.headers.get(ROLE_HEADER) == "standby":
            raise LeaderAway(f"the leader at {self.leader} is a standby now")
        if response.status_code >= 300:
            raise OSError(
                f"upload of {relative} refused: HTTP {response.status_code} {response.text[:200]}"
            )
