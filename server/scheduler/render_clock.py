"""The renders' clock: a render that has run ``PREFETCH_BELOW`` s and not ended is long.

While one runs, its job takes no chunk ahead of a slot (``Tally.long_renders``); a
job that did is long now, and so is its kind, and what of it waits comes back. A
node whose every slot holds one, of any job, gives back what waits there and takes
nothing ahead until one ends. Without the clock a chunk waited ahead behind such a
render for as long as it ran, while other nodes sat idle. What is held ahead and
why is ``server.prefetch``'s.

Renders are timed from their ``ChunkStarted`` (in the order they began) and from
the hello of an agent that runs them (how long each has run, by its own clock): a
leader started again, or a link back, would otherwise know nothing of a render
begun before.
"""

from __future__ import annotations

import heapq

from server.frame_states import tally_of
from server.model import Changes, Node
from server.prefetch import (
    PREFETCH_BELOW,
    still_runs,
    take_back,
    takes_ahead,
    withdraw_waiting,
    work_kind,
)
from server.scheduler.dispatch_index import DispatchIndex

Render = tuple[str, int, int]  # job id, chunk, attempt


class RenderClock(DispatchIndex):
    """Renders judged long by the clock (``_judge_by_clock``, once a tick)."""

    def _judge_by_clock(self, changes: Changes, now: float) -> None:
        """Renders that began ``PREFETCH_BELOW`` s ago and have not ended: long
        (``_judge_long``). O(renders begun since the last tick): each is judged once."""
        renders = self._renders
        while renders and now - renders[0][0] >= PREFETCH_BELOW:
            _, job_id, index, attempt = renders.popleft()
            self._judge_long((job_id, index, attempt), changes)
        told = self._told_renders
        while told and now - told[0][0] >= PREFETCH_BELOW:
            _, job_id, index, attempt = heapq.heappop(told)
            self._judge_long((job_id, index, attempt), changes)

    def _time_render(
        self, render: Render, rendered_for: float, now: float, changes: Changes
    ) -> None:
        """An agent's hello says ``render`` has run ``rendered_for`` s: judged long at once
        if it has run ``PREFETCH_BELOW`` s, else when it will have. Before, chunks went
        ahead behind a render of an hour that a leader started again knew nothing of."""
        if rendered_for >= PREFETCH_BELOW:
            self._judge_long(render, changes)
        else:
            heapq.heappush(self._told_renders, (now - rendered_for, *render))

    def _judge_long(self, render: Render, changes: Changes) -> None:
        """``render`` has run ``PREFETCH_BELOW`` s: its job takes no chunk ahead while it
        runs; a job that took chunks ahead is long now, and its kind, and what of it waits
        comes back; its node's slots may all be long now (``_give_back_waiting``). Its first
        render, or one after brief ones (frames that turned heavy)."""
        job_id, index, attempt = render
        job = self.jobs.get(job_id)
        if job is None or not still_runs(job, index, attempt):
            return  # it ended (done, or without a time: cancelled, killed, lost)
        short = takes_ahead(job, self._short_kinds)
        tally_of(job).long_renders.append((index, attempt))
        if short:
            self._ahead_by_kind.discard(job_id)
            self._short_kinds.learn(work_kind(job), False)
            changes.jobs.add(job_id)  # out of the index of jobs that go ahead
            why = f"not started: a chunk of it has rendered for {PREFETCH_BELOW:g} s or more"
            withdraw_waiting(job, self.nodes, changes, why)
        # (Not short: nothing of it waits ahead; paused, long already, or not known.)
        node = self.nodes.get(job.chunks[index].node or "")
        if node is not None and node.prefetch:  # (one that takes none holds none waiting)
            self._long_on.setdefault(node.name, set()).add(render)
            self._give_back_waiting(node, changes)

    def _give_back_waiting(self, node: Node, changes: Changes) -> None:
        """Once every slot of ``node`` holds a long render, what waits ahead there comes
        back (its agent stops only what has not started; no retry used) for a free slot
        elsewhere, and the node takes nothing ahead until one of them ends
        (``_all_slots_long``). Before, a chunk held ahead behind another job's hour-long
        render waited the hour while other nodes sat idle (break round 35b)."""
        if not self._all_slots_long(node):
            return
        self._renode(node.name)  # no room ahead there now
        long = self._long_on[node.name]
        asked = {(kill.job_id, kill.chunk, kill.attempt) for kill in changes.kills}
        why = (
            f"not started: every slot of {node.name} holds a render of {PREFETCH_BELOW:g} s or more"
        )
        for waiting in sorted(node.running - long - asked - self._asked_back):
            self._asked_back.add(waiting)
            take_back(node.name, waiting, why, changes)
