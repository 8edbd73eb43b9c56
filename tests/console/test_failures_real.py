"""The failures view (``5``) on a real farm: a leader and an agent whose renderer
exits 1. The failure shows with its error line; Enter reads that attempt's
output, ``r`` retries the chunk and ``b`` blocks (then unblocks) the node, all
for real."""

from __future__ import annotations

import sys

from farmtui.console.app import FarmConsole
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.widgets.failures_panel import FailuresTable
from tests.console.conftest import synced, wait_for
from tests.console.real_farm import RealFarm
from tests.console.screen import screen_text
from tests.helpers.farm import needs_agent

pytestmark = needs_agent

FAILING = [
    sys.executable,
    "-c",
    "import sys; print('rendering frames {start}-{end}'); "
    "print('Error: no licence seat for frames {start}-{end}', file=sys.stderr); sys.exit(1)",
]


def failure_rows(app: FarmConsole) -> list[str]:
    return [row for row in app.screen.query_one(FailuresTable).rows if isinstance(row, str)]


async def test_a_real_failure_is_listed_read_retried_and_its_node_blocked(farm: RealFarm) -> None:
    (node,) = farm.agents(1)
    job = farm.submit("lic_fail", frames="1-4", chunk=2, argv=FAILING, retries=0)
    app = farm.app()
    async with app.run_test(size=(120, 30)) as pilot:
        await synced(pilot, app, job.id)
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "failed", 30)
        await pilot.press("5")
        await wait_for(pilot, lambda: len(failure_rows(app)) == 2, what="both chunks listed")
        text = screen_text(app)
        assert "lic_fail" in text
        assert node in text
        assert "Error: no licence seat for frames" in text
        assert "2 failed attempts in 1 job" in text

        # Enter: Task Output with that attempt's log.
        table = app.screen.query_one(FailuresTable)
        failure = table.current
        assert failure is not None
        assert failure.attempt == 1
        first, last = failure.frames.split("-")
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: f"rendering frames {first}-{last}" in screen_text(app),
            what="the attempt's output",
        )
        assert app.screen.view == "logs"  # type: ignore[attr-defined]

        # r: the chunk runs again (attempt 2) and fails again: a new row, newest first.
        await pilot.press("5")
        await wait_for(pilot, lambda: table.has_focus)
        chunk = failure.chunk
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: farm.client.show(job.id).chunks[chunk].attempt == 2,
            20,
            "the chunk dispatched again",
        )
        await wait_for(pilot, lambda: len(failure_rows(app)) == 3, 20, "attempt 2 listed")
        newest = table.by_key[failure_rows(app)[0]]
        assert (newest.chunk, newest.attempt) == (chunk, 2)

        # b: block the node for this job (after saying what it does), then let it back.
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Block {node} for lic_fail?" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: node in farm.client.show(job.id).job.blocked_nodes)
        await wait_for(pilot, lambda: f"⊘{node}" in screen_text(app), what="the block shown")
        await pilot.press("b")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert f"Unblock {node} for lic_fail?" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: node not in farm.client.show(job.id).job.blocked_nodes)
