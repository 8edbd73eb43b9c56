"""A terminal bell and a toast when a job fails or finishes (``console.toml`` [notify])."""

from __future__ import annotations

from pathlib import Path

import pytest

from farmtui.console.app import FarmConsole
from farmtui.console.notices import Notice, grouped
from farmtui.console.screens.main import MainScreen
from farmtui.console.settings import ConsoleSettings, NotifySettings, load_settings
from tests.console.conftest import make_app, synced, wait_for
from tests.console.scripted_leader import ScriptedLeader


def fail_j1(leader: ScriptedLeader) -> None:
    """Every chunk of j1 not done or excluded is set failed: by the leader's rules, j1 fails."""
    leader.chunk_action("j1", "set-failed", [3, 5, 7, 8, 9])
    assert leader.job("j1").state == "failed"


def ring_counter(app: FarmConsole, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    rings: list[int] = []
    monkeypatch.setattr(app, "bell", lambda: rings.append(1))
    return rings


async def test_bell_and_toast_when_a_job_fails_or_finishes(
    leader: ScriptedLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(leader, settings=ConsoleSettings())
    rings = ring_counter(app, monkeypatch)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await synced(pilot, app)
        assert rings == []  # the snapshot rings nothing
        fail_j1(leader)
        # The bell rings at once; Textual adds the toast when it handles its message.
        await wait_for(pilot, lambda: rings == [1] and len(app._notifications) == 1)
        toast = list(app._notifications)[-1]
        assert toast.title == "Job failed"
        assert "shot_010_comp (alice): 30/90 frames done" in toast.message
        leader.action("complete", ["j2"])
        await wait_for(
            pilot,
            lambda: rings == [1, 1] and any(n.title == "Job finished" for n in app._notifications),
        )
        # A change that is no finish rings nothing.
        leader.action("resume", ["j4"])
        await wait_for(pilot, lambda: app.state.jobs["j4"].state == leader.job("j4").state)
        assert leader.job("j4").state != "paused"
        await pilot.pause()
        assert rings == [1, 1]
        # The off switch (palette command), then on again.
        screen = app.screen
        assert isinstance(screen, MainScreen)
        screen.action_toggle_notifications()
        leader.action("cancel", ["j3"])
        leader.chunk_action("j4", "set-failed", [1, 2])
        await wait_for(pilot, lambda: app.state.jobs["j4"].state == "failed")
        await pilot.pause()
        assert rings == [1, 1]


async def test_bell_off_in_the_settings_keeps_the_toast(
    leader: ScriptedLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ConsoleSettings(notify=NotifySettings(bell=False, on=frozenset({"failed"})))
    app = make_app(leader, settings=settings)
    rings = ring_counter(app, monkeypatch)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await synced(pilot, app)
        leader.action("complete", ["j2"])
        fail_j1(leader)
        await wait_for(pilot, lambda: any(n.title == "Job failed" for n in app._notifications))
        assert not any(n.title == "Job finished" for n in app._notifications)  # not in "on"
        assert rings == []


def test_console_toml(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    assert load_settings(path) == (ConsoleSettings(), [])
    path.write_text('[notify]\nbell = false\non = ["failed"]\n')
    settings, problems = load_settings(path)
    assert problems == []
    assert not settings.notify.bell
    assert settings.notify.toast
    assert settings.notify.on == {"failed"}
    path.write_text('[notify]\nbell = "loud"\non = ["exploded"]\nvolume = 3\n')
    settings, problems = load_settings(path)
    assert settings == ConsoleSettings()
    assert len(problems) == 3
    path.write_text("[link]\nconnect_timeout = 12.5\n")
    assert load_settings(path)[0].link.connect_timeout == 12.5
    for bad in ("0", "1000", '"soon"', "true"):
        path.write_text(f"[link]\nconnect_timeout = {bad}\n")
        settings, problems = load_settings(path)
        assert settings == ConsoleSettings()
        said = f"{path}: link.connect_timeout must be a number of seconds from 0.5 to 120"
        assert problems == [said]


async def test_console_toml_is_read_at_start(
    leader: ScriptedLeader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "config" / "farmtui" / "console.toml"  # XDG_CONFIG_HOME from conftest
    path.parent.mkdir(parents=True)
    path.write_text("[notify]\nbell = false\ntoast = false\n")
    app = make_app(leader)
    rings = ring_counter(app, monkeypatch)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await synced(pilot, app)
        fail_j1(leader)
        await wait_for(pilot, lambda: app.state.jobs["j1"].state == "failed")
        await pilot.pause()
        assert rings == []
        assert not any(n.title == "Job failed" for n in app._notifications)


async def test_many_jobs_ending_at_once_ring_once_with_one_toast(
    leader: ScriptedLeader, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A farm finishing ten jobs a second must not bury the screen in toasts."""
    settings = ConsoleSettings(notify=NotifySettings(on=frozenset({"cancelled"})))
    app = make_app(leader, settings=settings)
    rings = ring_counter(app, monkeypatch)
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await synced(pilot, app)
        leader.action("cancel", ["j1", "j2", "j3", "j4"])
        await wait_for(pilot, lambda: rings == [1] and len(app._notifications) == 1)
        toasts = list(app._notifications)
        assert [toast.title for toast in toasts] == ["4 jobs ended"]
        assert "4 × job cancelled" in toasts[0].message


def test_a_few_notices_stay_as_they_are_more_become_one() -> None:
    one = Notice("Job failed", "a (alice): 1/2 frames done", "error", True, True)
    two = Notice("Job finished", "b (bob): 2/2 frames done", "information", False, True)
    assert grouped([one, two]) == [one, two]
    (summary,) = grouped([one, two, two, two])
    assert summary.title == "4 jobs ended"
    assert summary.text.startswith("1 × job failed, 3 × job finished: a (alice)")
    assert summary.severity == "error"
    assert summary.bell
