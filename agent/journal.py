"""The journal of attempts: what a restarted agent reads to credit renders that ended meanwhile.

Before an attempt may start, its entry is written (its ``AssignChunk`` and
start time); when its renderer exits on its own, the shim writes the exit
status beside it, then tells the agent. An agent that died in between finds
both at its next start and concludes the render instead of having it
rendered again (``Supervisor.recover``). Not fsynced: the journal guards
against the agent's death, not the machine's (a power cut ends the render too).

Entries are files that are reused, not made for each attempt: ``N.json``
and ``N.exit``, blanked when the attempt is over and handed to the next
one. Creating a file cost this machine's ext4 0.2-0.6 ms of kernel time,
and an attempt's two files were a sixth of an agent's time on chunks of
``/bin/true``. They are written in place, never truncated to nothing: ext4
flushes a file that was emptied and written again as it is closed (its
guard for programs that replace a file that way), which cost more than the
creating. So a record that begins with a space is a free entry, and an
exit status is ``STATUS_WIDTH`` bytes, padded with spaces (blank: none
yet). An entry whose shim may still write to it (the shim froze or died
without saying its renderer had exited) is removed, never handed on: a late
exit status must not pass for the next attempt's.

Entries an older agent left, named ``job.chunk.attempt.json``, are read
the same way and removed once concluded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from agent.removal import remove_entry
from agent.shim import STATUS_WIDTH

_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
_FREE = b" "
_NO_STATUS = b" " * STATUS_WIDTH


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One attempt's entry: where its record is, and where its shim writes the exit status."""

    record: Path
    exit: Path
    number: int | None  # None: an older agent's entry, removed when done


@dataclass(frozen=True, slots=True)
class Found:
    """An entry found at start: its record, and the exit status with its time if written."""

    entry: JournalEntry
    record: bytes
    status: str  # "" when the render was cut short (no status written)
    ended: float


class Journal:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._free: list[int] = []
        self._next = 0

    def write(self, record: bytes) -> JournalEntry:
        """A free entry holding ``record``, its exit status empty; OSError if not written."""
        number = self._free.pop() if self._free else self._new_number()
        entry = self._entry(number)
        try:
            try:
                _overwrite(entry.exit, _NO_STATUS)  # first: a stale status never passes
                _overwrite(entry.record, record, fit=True)
            except FileNotFoundError:  # the first entry, or the folder was removed
                self.folder.mkdir(parents=True, exist_ok=True)
                _overwrite(entry.exit, _NO_STATUS)
                _overwrite(entry.record, record, fit=True)
        except OSError:
            self.drop(entry, reuse=False)
            raise
        return entry

    def drop(self, entry: JournalEntry, reuse: bool = True) -> None:
        """The attempt is over: free its entry (``reuse`` False: remove it). Never raises."""
        if entry.number is None or not reuse:
            remove_entry(entry.record)
            remove_entry(entry.exit)
            return
        try:
            _overwrite(entry.record, _FREE)  # first: from now on the entry is free
            _overwrite(entry.exit, _NO_STATUS)
        except OSError:
            remove_entry(entry.record)  # never hand on an entry that may not be empty
            remove_entry(entry.exit)
            return
        self._free.append(entry.number)

    def found(self) -> list[Found]:
        """At start: the entries in use, oldest name first; free ones are kept for reuse.

        An entry that cannot be read is removed (and skipped), as is an exit
        status left without a record.
        """
        try:
            names = sorted(path.name for path in self.folder.iterdir())
        except OSError:
            return []
        numbers = {int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()}
        self._next = max(numbers, default=-1) + 1
        self._free = []
        found: list[Found] = []
        for name in names:
            if name.endswith(".exit"):
                record = self.folder / f"{name[:-5]}.json"
                if not record.exists():
                    remove_entry(self.folder / name)  # a status whose attempt was forgotten
                continue
            if not name.endswith(".json"):
                continue
            stem = name[:-5]
            entry = self._entry(int(stem)) if stem.isdigit() else self._legacy(stem)
            try:
                data = entry.record.read_bytes()
            except OSError:  # whatever took an entry's name
                self.drop(entry, reuse=False)
                continue
            if data[:1] in (b"", _FREE):
                self.drop(entry)  # free: blank its status too, and reuse it
                continue
            try:
                status = entry.exit.read_text()
                ended = entry.exit.stat().st_mtime
            except FileNotFoundError:
                status, ended = "", 0.0
            except (OSError, ValueError):
                self.drop(entry, reuse=False)
                continue
            found.append(Found(entry, data, status.strip(), ended))
        return found

    def _new_number(self) -> int:
        number = self._next
        self._next += 1
        return number

    def _entry(self, number: int) -> JournalEntry:
        folder = self.folder
        return JournalEntry(folder / f"{number}.json", folder / f"{number}.exit", number)

    def _legacy(self, stem: str) -> JournalEntry:
        return JournalEntry(self.folder / f"{stem}.json", self.folder / f"{stem}.exit", None)


def _overwrite(path: Path, data: bytes, fit: bool = False) -> None:
    """Write ``data`` at the start of the file (made if missing); ``fit``: cut what follows."""
    fd = os.open(path, _FLAGS, 0o600)
    try:
        view, offset = memoryview(data), 0
        while offset < len(data):
            offset += os.pwrite(fd, view[offset:], offset)
        if fit:
            os.ftruncate(fd, len(data))  # never to nothing (a record is never empty)
    finally:
        os.close(fd)
