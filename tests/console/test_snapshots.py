"""What every view looks like, at 80x24 (SSH) and 200x50 (Logs beside Detail), against
the real leader with the scripted farm (fixed ids, fixed clock).

Regenerate after a deliberate change with ``pytest tests/console --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from textual.pilot import Pilot

from farmtui.console.app import FarmConsole
from tests.console.conftest import make_app, synced, wait_for
from tests.console.scripted_leader import ScriptedLeader

Compare = Callable[..., bool]


def steps(*keys: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Wait for the snapshot and the watched job, then press ``keys``."""

    async def run_before(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, FarmConsole)
        # Generous: a busy machine.
        await wait_for(pilot, lambda: app.state.synced, within=20, what="snapshot")
        await synced(pilot, app)
        for key in keys:
            await pilot.press(key)
            await pilot.pause()
        await wait_for(pilot, lambda: not app.screen.is_modal or app.screen.is_active)
        # Short-lived toasts ("Grouped by priority") would be there or gone by chance.
        app.clear_notifications()
        await pilot.pause()

    return run_before


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("jobs", ()),
        ("jobs_selected", ("space", "down", "space")),
        ("detail_frames", ("enter",)),
        ("detail_chunks", ("enter", "t")),
        ("detail_settings", ("enter", "t", "t")),
        ("detail_heat_map", ("enter", "T")),
        ("chunk_mode", ("enter", "right", "space", "right", "space", "k")),
        ("priority_prompt", ("enter", "P", "4", "2")),
        ("help_jobs", ("question_mark",)),
        ("logs_monitor", ("3",)),
        ("nodes", ("4",)),
        ("confirm_cancel", ("space", "down", "space", "c")),
    ],
)
def test_screens_80x24(
    snap_compare: Compare, leader: ScriptedLeader, name: str, keys: tuple[str, ...]
) -> None:
    assert snap_compare(make_app(leader), run_before=steps(*keys), terminal_size=(80, 24))


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("xwide_jobs_detail_logs", ("enter", "1")),
        ("xwide_grouped_selected", ("g", "space", "down", "down", "space")),
        ("xwide_chunks", ("enter", "t", "down", "down", "down", "down")),
        ("xwide_nodes", ("4",)),
        ("xwide_logs", ("3",)),
    ],
)
def test_screens_200x50(
    snap_compare: Compare, leader: ScriptedLeader, name: str, keys: tuple[str, ...]
) -> None:
    assert snap_compare(make_app(leader), run_before=steps(*keys), terminal_size=(200, 50))
