"""Shared pieces of the console tests: the real leader (scripted, or the worker's
``farm leader`` process), the app against it, and a polling helper (never sleep
to wait for something)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import textual.constants
from textual.pilot import Pilot
from textual.widgets import Input

from farmtui.console.app import FarmConsole
from farmtui.console.link import Backoff
from farmtui.console.screens.main import MainScreen
from tests.console.real_farm import farm, shared_leader  # noqa: F401  (fixtures)
from tests.console.scripted_leader import (
    NOW,
    LeaderThread,
    ScriptedLeader,
    recording_links,
    scripted,
)
from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401  (the real-farm tmux test)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here drives the real console (``-m "not console"`` leaves them out:
    some 600 Pilot runs, most of the suite's time on two cores)."""
    here = Path(__file__).parent
    for item in items:
        if item.path.is_relative_to(here):
            item.add_marker(pytest.mark.console)


@pytest.fixture(autouse=True)
def _calm_terminal(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No cursor blink, no animations, no user keys.toml, UTC clock: stable screens."""
    monkeypatch.setattr(textual.constants, "TEXTUAL_ANIMATIONS", "none")
    original = Input.__init__

    def init(self: Input, *args: object, **kwargs: object) -> None:
        original(self, *args, **kwargs)  # type: ignore[arg-type]
        self.cursor_blink = False

    monkeypatch.setattr(Input, "__init__", init)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture(scope="session")
def leader_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LeaderThread]:
    """One in-process leader server per test worker; each test gets a fresh leader on it."""
    with recording_links():
        host = LeaderThread(tmp_path_factory.mktemp("scripted-leader"))
        try:
            yield host
        finally:
            host.close()


@pytest.fixture
def leader(leader_thread: LeaderThread, tmp_path: Path) -> Iterator[ScriptedLeader]:
    """The real leader with the standard farm (``scripted_leader.standard_farm``)."""
    with scripted(leader_thread, tmp_path / "farm") as scripted_farm:
        yield scripted_farm


def make_app(leader: ScriptedLeader, token: str | None = None, **kwargs: object) -> FarmConsole:
    """The real console on ``leader`` (admin unless ``token``), fixed clock, quick reconnects."""
    kwargs.setdefault("clock", lambda: NOW)
    kwargs.setdefault("backoff", Backoff(base=0.05, cap=0.2))
    return FarmConsole(leader.url, token or leader.token, **kwargs)  # type: ignore[arg-type]


async def wait_for(
    pilot: Pilot[None], condition: Callable[[], object], within: float = 5.0, what: str = ""
) -> None:
    """Poll ``condition`` between pilot pauses until it holds or the deadline passes.

    Then until the screen shows what the console knows: a repaint of changes
    from the leader may be held back a moment (``MainScreen.on_link_batch``).
    """
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        await pilot.pause(0.02)
    await settled(pilot, deadline)


async def settled(pilot: Pilot[None], deadline: float | None = None) -> None:
    """Wait until no change from the leader waits for a repaint."""
    # A repaint is never held longer than REPAINT_EVERY: one still due seconds
    # later is a console that stopped painting (a timer that never fired).
    # A console that has quit paints nothing more, and need not.
    until = max(deadline if deadline is not None else 0.0, time.monotonic()) + 3.0
    for screen in pilot.app.screen_stack:
        if isinstance(screen, MainScreen):
            while screen.repaint_pending and pilot.app.return_code is None:
                if time.monotonic() > until:
                    raise AssertionError("the console never repainted the leader's changes")
                await pilot.pause(0.02)


async def synced(pilot: Pilot[None], app: FarmConsole, watched: str | None = "j1") -> None:
    """Wait for the first snapshot (and, by default, the first job in the detail view)."""
    # Generous: on a loaded machine the first connection may time out and be retried.
    await wait_for(pilot, lambda: app.state.synced, within=20, what="snapshot")
    if watched is not None:
        await wait_for(
            pilot,
            lambda: app.state.watched is not None and app.state.watched.job_id == watched,
            what=f"{watched} watched",
        )
    await pilot.pause()
