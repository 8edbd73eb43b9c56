"""``PUT /api/files/{path}``: a node without the shared sync root uploads a finished file.

Who may write what is ``operations.upload_allowed``. The file is written under
a temporary name and renamed into place once whole; a failed, refused or
abandoned upload leaves nothing behind. Every operation on the file (the
folder made, the open, each write, the rename) runs on a thread: the sync
root is a filer on a real farm, and a write that waits for it must not hold
the event loop, and with it every node's lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import secrets
import threading
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from farmtui.no_follow import NotAFolder, open_folder
from server import operations
from server.api_requests import Disconnected, leader_of, who
from server.errors import BadRequest, Conflict, RequestError, TooLarge, Unavailable, shown
from server.operations import UploadFence
from server.paths import confine
from server.upload_records import TOKEN_BYTES, temporary_name

# Bytes of the body gathered before they are written (each write is a hop to a thread).
WRITE_EVERY = 1024 * 1024


async def upload_file(request: Request) -> Response:
    """Store a finished file under the sync root: written to a temporary name, then renamed.

    Who may write what is ``operations.upload_allowed`` (the path found on a
    thread, the checks of the farm on the loop); it is asked again once the
    body is in, since the attempt may have been stopped meanwhile. A failed,
    refused or abandoned upload leaves no temporary file behind.
    """
    principal = who(request, "upload_output")
    leader = leader_of(request)
    relative = request.path_params["path"]
    raw = request.scope.get("raw_path")
    if raw is not None and not _utf8(unquote_to_bytes(raw)):
        # Starlette reads it with replacement characters: the file got another name.
        raise BadRequest("the path is not valid UTF-8")
    fence = upload_fence(request)
    target = await asyncio.to_thread(confine, leader.root, relative)  # reads the disk
    operations.upload_allowed(leader, principal, relative, target, fence)
    limit = leader.config.max_upload_bytes
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise TooLarge(f"file of {length} bytes is over the {limit} byte limit")
    upload: Upload | None = None
    try:
        opening = asyncio.ensure_future(
            asyncio.to_thread(Upload, leader.root, relative, leader.upload_records)
        )
        try:
            upload = await asyncio.shield(opening)
        except asyncio.CancelledError:
            opening.add_done_callback(_abort_once_open)
            raise
        size = 0
        held: list[bytes] = []
        held_size = 0
        async for part in request.stream():
            size += len(part)
            if size > limit:
                raise TooLarge(f"file is over the {limit} byte limit")
            held.append(part)
            held_size += len(part)
            if held_size >= WRITE_EVERY:
                await asyncio.to_thread(upload.write, b"".join(held))
                held, held_size = [], 0
        if held:
            await asyncio.to_thread(upload.write, b"".join(held))
        # Again once the body is in: the attempt may have been stopped, and a renderer
        # may have put a symlink on the way meanwhile.
        if await asyncio.to_thread(confine, leader.root, relative) != target:
            raise Conflict(f"{shown(relative)} changed during the upload: not written")
        operations.upload_allowed(leader, principal, relative, target, fence)
        await asyncio.to_thread(upload.commit)
        try:
            operations.upload_allowed(leader, principal, relative, target, fence)
        except RequestError:
            # Stopped while it landed (a rename the filer held for seconds): it does not
            # stay where the attempt's next run, or nobody, should write.
            await asyncio.to_thread(upload.take_back)
            raise
    except FolderMoved:
        raise Conflict(f"{shown(relative)} changed during the upload: not written") from None
    except OSError as exc:
        raise write_error(exc, relative) from None
    except ClientDisconnect:
        raise Disconnected() from None
    finally:
        if upload is not None:
            # Shielded: a cancelled request still has its temporary file removed.
            await asyncio.shield(asyncio.to_thread(upload.abort))
    return Response(status_code=204)


def write_error(exc: OSError, relative: str) -> RequestError:
    """A failed write as one line: the reason, never the server's path."""
    reason = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return Unavailable(f"cannot write {shown(relative)}: {reason}; try again later")
    return BadRequest(f"cannot write {shown(relative)}: {reason}")


def upload_fence(request: Request) -> UploadFence | None:
    """The chunk attempt an upload belongs to (``?job=&chunk=&attempt=``), if named."""
    params = request.query_params
    if "job" not in params:
        return None
    try:
        return params["job"], int(params.get("chunk", "")), int(params.get("attempt", ""))
    except ValueError:
        raise BadRequest("chunk and attempt must be whole numbers") from None


class FolderMoved(Exception):
    """The target's folder was renamed or replaced while the body came: nothing lands."""


class Upload:
    """A file written under a temporary name and renamed into place only when complete.

    The temporary name is short (a long target name still fits) and made with
    ``O_EXCL | O_NOFOLLOW`` in the target's folder, reached from the sync root
    a folder at a time without following a symlink and kept open: whatever
    happens to that folder's name meanwhile (renamed, a symlink put in its
    place), the temporary file is made, renamed and removed in the folder it
    was made in, and lands only if the target's name still leads there. Each
    method may block on the disk: they are called on threads, one at a time
    (a request cancelled mid-write has its ``abort`` wait for that write).
    """

    def __init__(self, root: Path, relative: str, records: Path | None = None) -> None:
        """``relative`` (checked by ``paths.confine``): its folders are made and opened a
        step at a time from ``root`` as written, never through a symlink (BadRequest), as
        a node's own copy does (``farmtui.no_follow``). ``records``: where the upload is
        noted while its temporary file may exist (``sweep_uploads``)."""
        self.root = root.resolve()
        *steps, self.file_name = PurePosixPath(relative).parts
        self.steps = tuple(steps)
        token = secrets.token_hex(TOKEN_BYTES)
        self.name = temporary_name(token)
        self.record = None if records is None else records / token
        if self.record is not None:
            try:
                self.record.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                self.record.write_text(relative, encoding="utf-8")
            except OSError:  # only the litter of a leader killed midway is at stake
                self.record = None
        try:
            self.folder = open_folder(
                self.root, self.steps, make=True, what=f"cannot write {shown(relative)}"
            )
        except NotAFolder as exc:
            self._forget()
            raise BadRequest(str(exc)) from None
        except BaseException:
            self._forget()
            raise
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            self.handle = os.fdopen(os.open(self.name, flags, 0o644, dir_fd=self.folder), "wb")
        except BaseException:
            os.close(self.folder)
            self._forget()
            raise
        self.committed = False
        self.file_id = (0, 0)  # the file's (device, inode) once committed
        self.closed = False
        self._lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self._lock:
            self.handle.write(data)

    def commit(self) -> None:
        """Rename it into place; FolderMoved if the target's name leads elsewhere now."""
        with self._lock:
            written = os.fstat(self.handle.fileno())
            self.file_id = (written.st_dev, written.st_ino)
            self.handle.close()
            here = os.fstat(self.folder)
            try:
                again = open_folder(self.root, self.steps)
            except (FileNotFoundError, NotAFolder):
                raise FolderMoved() from None
            try:
                there = os.fstat(again)
            finally:
                os.close(again)
            if (here.st_dev, here.st_ino) != (there.st_dev, there.st_ino):
                raise FolderMoved()
            os.replace(self.name, self.file_name, src_dir_fd=self.folder, dst_dir_fd=self.folder)
            self.committed = True

    def take_back(self) -> None:
        """Remove the committed file, if the target's name still leads to it."""
        with self._lock:
            try:
                there = os.stat(self.file_name, dir_fd=self.folder, follow_symlinks=False)
            except FileNotFoundError:
                return
            if (there.st_dev, there.st_ino) == self.file_id:
                os.unlink(self.file_name, dir_fd=self.folder)

    def abort(self) -> None:
        """Remove the temporary file unless it was committed, and let go of the folder
        (harmless after commit, and twice)."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                with contextlib.suppress(OSError):
                    self.handle.close()  # a full disk may refuse what it still holds
                if not self.committed:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.name, dir_fd=self.folder)
            finally:
                os.close(self.folder)
                self._forget()

    def _forget(self) -> None:
        if self.record is not None:
            with contextlib.suppress(OSError):
                self.record.unlink()


def _abort_once_open(opening: asyncio.Future[Upload]) -> None:
    """An upload cancelled while its file was being made: removed once it is made."""
    if not opening.cancelled() and opening.exception() is None:
        asyncio.get_running_loop().run_in_executor(None, opening.result().abort)


def _utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
