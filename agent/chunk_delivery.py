"""How a chunk attempt ends: its verdict, its files delivered, its ChunkFinished.

:class:`ChunkDelivery` is the part of :class:`agent.chunk_run.ChunkRun` that
reports frames as their files appear, judges the end with
:func:`agent.chunk_outcome.decide`, copies, renames or uploads the files into
place (fenced by the attempt), reports ``ChunkFinished``, and removes the
attempt's folders or keeps its staged output for a retry sync. A mixin: the
attempt's state is ChunkRun's (see there), declared here so that the type
checker checks this part as strictly as the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, TypedDict

from agent.chunk_outcome import Stop, TimeoutKind, Verdict, decide
from agent.errors import ChunkSetupError, DeliveryPostponed, FenceError, LeaderAway, UploadCut
from agent.no_follow import take_back
from agent.process_tree import exit_status
from agent.removal import remove_entry, remove_folder
from agent.staging import ChunkFiles, Delivery, Fence
from farmtui.printable import utf8_text
from farmtui.protocol import AssignChunk, ChunkFinished, ChunkStarted, ChunkTimeouts, FramesWritten

if TYPE_CHECKING:
    from agent.supervisor import Supervisor

# The supervisor's logger: a chunk's lines in the agent log read as before.
log = logging.getLogger("farmtui.agent.supervisor")

# In an attempt's staging folder: its copy failed; keep it for a retry sync.
KEPT_MARK = ".farmtui-kept"
# An upload no leader took is tried again after this long, doubled each time up to
# ``UPLOAD_RETRY_MAX`` (a leader restart takes seconds; a failover, a node_timeout).
UPLOAD_RETRY_FIRST = 0.25
UPLOAD_RETRY_MAX = 2.0
# Uploads of one file a leader may cut midway in a row before the copy has failed.
UPLOAD_CUTS = 3


def mark_kept(folder: Path) -> None:
    """Put ``KEPT_MARK`` in ``folder``: made anew, never through what a renderer put there."""
    mark = folder / KEPT_MARK
    remove_entry(mark)
    os.close(os.open(mark, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))


def is_kept(folder: Path) -> bool:
    """Whether ``folder`` holds a kept output: a mark the agent made (a regular file of
    its own user's), not one a renderer left, nor a symlink."""
    try:
        info = os.lstat(folder / KEPT_MARK)
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def take_back_attempt(base: Path, parts: tuple[str, ...], render_uid: int) -> None:
    """An attempt's folder taken back from the render user (``no_follow.take_back``), and
    a kept mark its renderer left in it removed: the agent's own from now on, it would
    pass for one of the agent's."""
    take_back(base, parts, render_uid)
    remove_entry(base.joinpath(*parts) / KEPT_MARK)


class _Ids(TypedDict):
    job_id: str
    chunk: int
    attempt: int


class ChunkDelivery:
    """The end of a :class:`agent.chunk_run.ChunkRun`: judge, deliver, report, clean up."""

    # ChunkRun's state that this part reads and sets (see ChunkRun.__init__).
    sup: Supervisor
    assign: AssignChunk
    marker: str
    timeouts: ChunkTimeouts
    stop: Stop | None
    revoked: str | None
    files: ChunkFiles | None
    workdir: Path | None
    delivery: Delivery | None
    reported: set[int]
    _last_scan: float
    keep_staged: bool
    ended: bool
    given_up: bool
    disk_trouble: str | None
    wake: asyncio.Event

    if TYPE_CHECKING:  # ChunkRun's, used here

        def refusal(self) -> str | None: ...
        def _chunk_folder(self, attempt: int | None = None) -> Path: ...
        def _files_in(
            self, write_root: Path, *, staged: bool, inside_outdir: bool = False
        ) -> ChunkFiles: ...
        def _lapsed(self) -> bool: ...
        async def _lease_again(self) -> None: ...
        def _elapsed(self) -> float: ...
        def _notify(self, kind: TimeoutKind) -> None: ...
        def _release_slot(self) -> None: ...

    # ------------------------------------------------------------------ frames and folders

    def _scan_files(self, force: bool = False) -> None:
        """Report frames whose files have appeared (staged=True until they are in place)."""
        now = time.monotonic()
        if self.files is None or (not force and now - self._last_scan < self.sup.scan_interval):
            return
        self._last_scan = now
        new = [f for f in self.files.frames_present() if f not in self.reported]
        if new:
            self.reported.update(new)
            self.sup.reporter.send(
                FramesWritten(**self._ids(), frames=new, staged=self.files.staged)
            )

    def _clean_staging(self) -> None:
        """Remove this attempt's folders once nothing in them is needed (or mark output kept)."""
        kept: Path | None = None
        files = self.files
        if files is not None and files.staged:
            if self.keep_staged:
                kept = files.write_root
                with contextlib.suppress(OSError):
                    mark_kept(kept)
            else:
                self._put_away(files.write_root)
        folders = [files.write_root] if files is not None and files.staged else []
        if self.workdir is not None and self.workdir != kept:
            self._put_away(self.workdir)
            folders.append(self.workdir)
        for folder in folders:
            if folder != kept and folder.is_relative_to(self.sup.staging_root):
                self.sup.job_folder_emptied(folder.parent)

    def _put_away(self, folder: Path) -> None:
        """Kept for a later attempt when empty, else removed with what is in it."""
        if not self.sup.spares.keep(folder):
            remove_folder(folder)

    # ------------------------------------------------------------------ the end

    async def _conclude(self, returncode: int | None, started: float) -> None:
        assert self.files is not None
        try:
            await self._take_back()
        except (OSError, ChunkSetupError) as exc:
            # What it left may still change under other renderers: neither delivered nor kept.
            why = f"cannot take its folder back from the render user: {exc}"
            log.error("chunk %s: %s", self.marker, why)
            self._finish(Verdict("failed", why), started=started)
            return
        finally:
            self._release_slot()  # with a render user, held till now
        missing, others = self.files.missing()
        verdict = decide(
            stop=self.stop,
            returncode=returncode,
            elapsed=self._elapsed(),
            timeouts=self.timeouts,
            missing=missing,
            others=others,
        )
        if verdict.missing:
            # Its files under another name (a format's own extension, another padding) say
            # why at once: "did not write frame(s) 1, 2" alone sent artists hunting.
            found = await asyncio.to_thread(self.files.unexpected)
            if found:
                verdict = replace(verdict, reason=f"{verdict.reason}; it wrote {', '.join(found)}")
        if verdict.notify is not None:
            self._notify(verdict.notify)
        status = None if returncode is None else exit_status(returncode)
        if verdict.deliver != "none":
            frames = (
                self.files.frames_present()
                if verdict.deliver == "present"
                else list(self.files.expected)
            )
            error = await self._deliver(frames)
            if error and verdict.outcome == "done":
                verdict = Verdict("killed" if self.revoked else "failed", error)
            elif error:
                verdict = replace(verdict, reason=f"{verdict.reason}; {error}")
        self._finish(verdict, started=started, status=status)

    async def _take_back(self) -> None:
        """With a render user, its renderer gone: the attempt's folders, and what it wrote
        in them, become the agent's (``agent.no_follow.take_back``) before anything is
        judged, delivered or kept."""
        user = self.sup.render_user
        if user is None:
            return
        folders = [(self.sup.staging_root, self.workdir)]
        root = self.sup.storage.sync_root
        if self.files is not None and self.files.staged and root is not None:
            folders.append((root, self.files.write_root))  # staging off: its partial folder
        for base, folder in folders:
            if folder is not None and folder.is_relative_to(base):
                parts = folder.relative_to(base).parts
                await asyncio.to_thread(take_back_attempt, base, parts, user.uid)

    async def _copy_kept_output(self, started: float) -> None:
        """Retry sync: copy the output an earlier attempt staged here, without a render."""
        a = self.assign
        log.info("chunk %s copies the output staged by attempt %d", self.marker, a.sync_from)
        self.sup.reporter.send(
            ChunkStarted(
                **self._ids(),
                pid=0,
                command=[f"copy the output staged by attempt {a.sync_from}"],
                started=started,  # the node's clock, as its end's (the log's header and footer)
            )
        )
        try:
            kept = self._chunk_folder(a.sync_from)
            folder = self._chunk_folder()
            if not kept.is_dir():
                why = f"the output staged by attempt {a.sync_from} is no longer on this node"
                self._finish(Verdict("failed", why), started=started)
                return
            # This attempt owns it now. Its mark goes with it: an agent killed while it
            # copies (kill -9) finds it kept at its next start, under this attempt's
            # number, and lists it in its hello, so the leader copies it again rather
            # than render the chunk again (unmarked, it went as a leftover).
            os.replace(kept, folder)
            self.delivery = self.sup.storage.delivery
            self.files = self._files_in(folder, staged=True)
        except (ChunkSetupError, OSError) as exc:
            self._finish(Verdict("failed", f"cannot use the staged output: {exc}"), started)
            return
        missing, others = self.files.missing()
        if missing or others:
            why = f"the staged output of attempt {a.sync_from} is incomplete"
            self._finish(Verdict("failed", why, missing=tuple(missing)), started=started)
            return
        self._scan_files(force=True)
        try:
            error = await self._deliver(list(self.files.expected))
        except (DeliveryPostponed, asyncio.CancelledError):  # the agent stops, or goes now
            with contextlib.suppress(OSError):  # kept again, as it was, for a later retry sync
                os.replace(folder, kept)
                mark_kept(kept)
            self.files = None
            raise
        verdict = Verdict("killed" if self.revoked else "failed", error) if error else None
        self._finish(verdict or Verdict("done", ""), started=started, status="0")

    def _given_up(self) -> bool:
        return self.given_up

    async def _deliver(self, frames: list[int]) -> str:
        """Copy, rename or upload the files of ``frames`` (and frame-less outputs); '' or why not.

        Fenced: nothing lands once this attempt may no longer write.
        """
        files = self.files
        assert files is not None
        if not files.staged or self.delivery is None:
            return ""
        wanted = [files.expected[f] for f in frames if f in files.expected]
        wanted += [(rel, p) for rel, p in files.extra if files.present(p)]
        fence = Fence(
            job_id=self.assign.job_id,
            chunk=self.assign.chunk,
            attempt=self.assign.attempt,
            refusal=self.refusal,
            # Taken back from the render user: the agent's own now, or not its renderer's.
            owner=os.geteuid() if self.sup.render_user is not None else None,
            folder=files.write_root,
            given_up=self._given_up,
        )
        tries = cuts = 0
        try:
            while wanted:
                try:
                    await self.delivery.deliver(*wanted[0], fence)
                except LeaderAway as away:
                    # Down, restarting, failing over: the farm's doing, not the job's, and
                    # the output is here. It waits (its slot free for the next chunk) and
                    # goes once a leader answers, as the lease allows (the branch below);
                    # the leader's stop meanwhile (the chunk moved, cancelled) ends it.
                    await self._await_leader(away, tries)
                    tries += 1
                    continue
                except UploadCut as cut:
                    # An active leader refused the file unread (too large ...): the same
                    # answer each time, so a few tries (one that died midway is away).
                    cuts += 1
                    if cuts >= UPLOAD_CUTS:
                        raise OSError(f"{cut} ({cuts} times)") from None
                    await self._await_leader(cut, tries)
                    tries += 1
                    continue
                except FenceError as refused:
                    if not self._lapsed():
                        raise
                    # The lease ran out while the render's files were copied (the agent
                    # frozen, the leader slow to answer): as for a render that ended by
                    # itself, the copy waits for the lease, then goes on; killed only if
                    # the leader says the chunk moved meanwhile.
                    await self._lease_again()
                    if self.stop is not None:
                        fence.check()  # the leader's word now: it says why
                        raise refused from None
                    continue
                wanted.pop(0)
                tries = cuts = 0  # (a later file that waits says so again)
        except DeliveryPostponed:
            raise  # not a failed copy: the output stays, and the agent's next start copies it
        except FenceError as exc:
            # Not the job's fault: the farm took the attempt away (no retry used).
            log.warning("chunk %s: %s", self.marker, exc)
            self.revoked = self.revoked or str(exc)
            return str(exc)
        except ChunkSetupError as exc:  # what it left is not fit to deliver, now or later
            log.error("chunk %s: %s", self.marker, exc)
            return str(exc)
        except Exception as exc:  # any failure fails the chunk; the files stay staged
            log.error("chunk %s: delivery failed: %s", self.marker, exc)
            # Output staged on this node waits there for a retry sync.
            self.keep_staged = files.write_root.is_relative_to(self.sup.staging_root)
            return f"copy to the sync root failed: {exc}"
        delivered = [f for f in frames if f in files.expected]
        if delivered:
            self.sup.reporter.send(FramesWritten(**self._ids(), frames=delivered, staged=False))
        return ""

    async def _await_leader(self, away: LeaderAway | UploadCut, tries: int) -> None:
        """Wait a while (longer each try), or until told to stop, before an upload is tried
        again; through the leader the link has then (a failover names another).
        DeliveryPostponed if the agent stops meanwhile: it would wait for a leader that
        may never come, and a second signal threw the render away (break round 29d)."""
        if tries == 0:
            log.warning(
                "chunk %s: %s; its output waits here until a leader takes it", self.marker, away
            )
        if not self.sup.stopping:
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                pause = min(UPLOAD_RETRY_MAX, UPLOAD_RETRY_FIRST * 2 ** min(tries, 8))
                await asyncio.wait_for(self.wake.wait(), pause)
        if self.sup.stopping:
            log.warning(
                "chunk %s: the agent stops; its output stays here for its next start", self.marker
            )
            raise DeliveryPostponed(self.marker)
        self.delivery = self.sup.storage.delivery

    def _finish(self, verdict: Verdict, started: float, status: str | None = None) -> None:
        self.ended = True
        level = logging.INFO if verdict.outcome == "done" else logging.WARNING
        reason = utf8_text(verdict.reason)  # it may quote a file or an error of the node's
        if verdict.outcome == "failed" and self.disk_trouble:
            reason = f"{reason}; {self.disk_trouble}" if reason else self.disk_trouble
        log.log(
            level, "chunk %s %s%s", self.marker, verdict.outcome, f": {reason}" if reason else ""
        )
        self.sup.reporter.send(
            ChunkFinished(
                **self._ids(),
                outcome=verdict.outcome,
                exit_status=status,
                reason=reason,
                timeout_kind=verdict.kind,
                started=started,
                finished=self.sup.wall(),
                missing=list(verdict.missing),
                kept_staged=self.keep_staged,
            )
        )

    def _ids(self) -> _Ids:
        return {
            "job_id": self.assign.job_id,
            "chunk": self.assign.chunk,
            "attempt": self.assign.attempt,
        }
