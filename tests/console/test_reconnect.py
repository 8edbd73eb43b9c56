"""Losing the leader: banner, stale marking, reconnect with backoff, full resync.

The link is cut by a gate between console and the real leader, which runs on
and changes meanwhile."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from farmtui.console.widgets.status_bar import ConnectionBanner
from farmtui.protocol import WatchJob
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader


def quick_link(tmp_path: Path, timeout: float) -> None:
    """console.toml gives up on a silent leader after ``timeout`` seconds."""
    path = tmp_path / "config" / "farmtui" / "console.toml"  # XDG_CONFIG_HOME from conftest
    path.parent.mkdir(parents=True)
    path.write_text(f"[link]\nconnect_timeout = {timeout}\n")


async def test_leader_lost_then_back(leader: ScriptedLeader) -> None:
    leader.open_gate()
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        banner = app.screen.query_one(ConnectionBanner)
        assert not banner.display
        assert "● live" in screen_text(app)
        leader.cut()
        await wait_for(pilot, lambda: banner.display and "unreachable" in str(banner.render()))
        await wait_for(pilot, lambda: "attempt 2" in screen_text(app), what="retrying")
        text = screen_text(app)
        assert "leader unreachable — reconnecting (attempt" in text
        assert "stale since" in text
        assert app.screen.stale
        # While away, the farm changes: j5 is deleted, j4 resumed.
        leader.action("delete", ["j5"])
        leader.action("resume", ["j4"])
        assert app.state.jobs["j4"].state == "paused"
        watches = leader.count(WatchJob)
        leader.mend()  # same port
        await wait_for(pilot, lambda: not banner.display, what="reconnected")
        assert not app.screen.stale
        assert "j5" not in app.state.jobs
        assert "turntable" not in screen_text(app)
        assert app.state.jobs["j4"] == leader.job("j4")
        assert "● live" in screen_text(app)
        # The watched job is asked for again on the new connection.
        await wait_for(pilot, lambda: leader.count(WatchJob) > watches)
        # And live updates flow again.
        leader.action("hold", ["j2"])
        await wait_for(pilot, lambda: app.state.jobs["j2"].state == "holding")


async def test_actions_while_disconnected_say_so(leader: ScriptedLeader) -> None:
    leader.open_gate()
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        leader.cut()
        await wait_for(pilot, lambda: app.screen.stale)
        await pilot.press("p")
        await pilot.pause()
        assert any("leader is unreachable" in n.message for n in app._notifications)
        assert leader.job("j1").state == "rendering"


async def test_wrong_token_keeps_retrying_and_says_why(leader: ScriptedLeader) -> None:
    from farmtui.console.app import FarmConsole
    from farmtui.console.link import Backoff

    app = FarmConsole(leader.url, "wrong", backoff=Backoff(base=0.05, cap=0.1))
    async with app.run_test(size=(80, 24)) as pilot:
        # The banner says it between tries (each try shows "connecting" for a moment).
        await wait_for(
            pilot,
            lambda: (
                "401" in screen_text(app) and "the leader refused this console" in screen_text(app)
            ),
            what="401 shown as a refusal",
        )
        assert not app.state.synced
        # No role the leader never granted: "?(viewer)@..." before.
        assert "(viewer)" not in screen_text(app)
        assert "?@127.0.0.1" in screen_text(app)


async def test_a_silent_leader_is_given_up_on_after_the_connect_timeout_of_console_toml(
    tmp_path: Path,
) -> None:
    """A leader that accepts the connection and never answers (frozen, a hung proxy)."""
    from farmtui.console.app import FarmConsole
    from farmtui.console.link import Backoff

    path = tmp_path / "config" / "farmtui" / "console.toml"  # XDG_CONFIG_HOME from conftest
    path.parent.mkdir(parents=True)
    path.write_text("[link]\nconnect_timeout = 0.5\n")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        app = FarmConsole(url, "token", backoff=Backoff(base=0.05, cap=0.1))
        async with app.run_test(size=(80, 24)) as pilot:
            assert app.screen.link.open_timeout == 0.5
            await wait_for(pilot, lambda: "timed out" in screen_text(app), what="timed out")
            await wait_for(pilot, lambda: "attempt 2" in screen_text(app), what="tried again")
            assert not app.state.synced


async def test_a_leader_that_stops_answering_is_left_and_the_data_is_stale_since_it_did(
    leader: ScriptedLeader, tmp_path: Path
) -> None:
    """A frozen leader keeps its connections open: without a keepalive the screen said
    "live" for 20 s, and "stale since" named the moment the console gave up."""
    quick_link(tmp_path, 0.5)
    leader.open_gate()
    app = make_app(leader)
    async with app.run_test(size=(120, 24)) as pilot:
        await synced(pilot, app)
        frozen_at = time.time()
        leader.freeze()
        await wait_for(pilot, lambda: "stopped answering" in screen_text(app), within=10)
        assert app.screen.stale
        stale_since = app.screen.link.stale_since
        assert stale_since is not None
        assert stale_since <= frozen_at
        leader.freeze(False)
        await wait_for(pilot, lambda: not app.screen.stale, within=20, what="back")


async def test_an_action_a_frozen_leader_never_answers_is_shown_waiting_then_unconfirmed(
    leader: ScriptedLeader, tmp_path: Path
) -> None:
    """Pressing p on a frozen leader used to look like nothing happened: now the status
    line counts the unanswered request, and when the link drops the operator is told
    it may or may not have been done."""
    quick_link(tmp_path, 1)
    leader.open_gate()
    app = make_app(leader)
    async with app.run_test(size=(120, 24)) as pilot:
        await synced(pilot, app)
        leader.freeze()
        await pilot.press("p")
        await wait_for(pilot, lambda: "1 request unanswered" in screen_text(app), within=10)
        await wait_for(
            pilot,
            lambda: any(
                "no answer before the link dropped" in n.message for n in app._notifications
            ),
            within=15,
            what="the unconfirmed request named",
        )
        assert "unanswered" not in screen_text(app)
        leader.freeze(False)
        await wait_for(pilot, lambda: not app.screen.stale, within=20, what="back")
