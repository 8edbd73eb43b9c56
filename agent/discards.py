"""Kept output the leader no longer wants, deleted on a thread, folder after folder.

A node can be told to delete thousands of kept outputs at once: after a long
outage of the sync root its hello and the ``KeptStaged`` pages after it name
them all, and the leader answers with a ``DiscardStaged`` each. Deleted on the
agent's event loop, a batch of them (frames of a few hundred MB each) held it
for seconds in which it read nothing, renewed no lease and sent no heartbeat.

Only the attempt's folder goes on the thread. Its job's folder is left to
``Supervisor.remove_job_folders``, on the loop, where no chunk can be making
an attempt folder in it meanwhile.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from pathlib import Path

from agent.removal import remove_entry

# Folders deleted in one hand-over to the thread.
BATCH = 64


class Discards:
    """Folders to delete, in the order they were asked for, one thread's work at a time."""

    def __init__(self, emptied: Callable[[Path], None]) -> None:
        # ``emptied(job_folder)``, on the loop, once an attempt folder in it is gone.
        self._emptied = emptied
        self._waiting: deque[Path] = deque()
        self._queued: set[Path] = set()  # a discard sent again (a hello) is not queued twice
        self._task: asyncio.Task[None] | None = None

    def add(self, folder: Path) -> None:
        if folder in self._queued:
            return
        self._queued.add(folder)
        self._waiting.append(folder)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    def __len__(self) -> int:
        return len(self._queued)

    async def wait(self) -> None:
        """Until every folder asked for so far is gone."""
        while self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def _drain(self) -> None:
        while self._waiting:
            batch = [self._waiting.popleft() for _ in range(min(BATCH, len(self._waiting)))]
            await asyncio.to_thread(_remove_all, batch)
            for folder in batch:
                self._queued.discard(folder)
                self._emptied(folder.parent)


def _remove_all(folders: list[Path]) -> None:
    for folder in folders:
        remove_entry(folder)  # never what a symlink a renderer left points to
