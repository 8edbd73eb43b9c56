"""Command palette, remappable keys from keys.toml, and the no-server-import rule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from textual import events
from textual.app import App
from textual.command import CommandPalette
from textual.pilot import Pilot

from farmtui.console.actions import CHUNK_ACTIONS, JOB_ACTIONS
from farmtui.console.keymap import config_path, load_keymap
from farmtui.console.screens.main import MainScreen
from tests.console.conftest import synced, wait_for
from tests.console.real_farm import RealFarm
from tests.console.screen import screen_text


async def test_palette_offers_every_action(farm: RealFarm) -> None:
    job = farm.submit("shot_010")
    app = farm.app()
    async with app.run_test(size=(100, 40)) as pilot:
        await synced(pilot, app, job.id)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        names = [name for name, _, _ in screen.palette_commands()]
        for spec in JOB_ACTIONS:
            assert f"Jobs: {spec.label}" in names
        for chunk_spec in CHUNK_ACTIONS:
            assert f"Chunks: {chunk_spec.label}" in names
        assert any(name.startswith("Jobs: Move up") for name in names)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"jobs: hold")
        await wait_for(pilot, lambda: "Jobs: Hold" in screen_text(app))
        await pilot.press("enter")
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "holding")


async def test_palette_theme_switcher_still_there(farm: RealFarm) -> None:
    job = farm.submit("shot_010")
    app = farm.app()
    async with app.run_test(size=(100, 40)) as pilot:
        await synced(pilot, app, job.id)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"theme")
        await wait_for(pilot, lambda: "Change the current theme" in screen_text(app))


def test_keys_toml_path_honours_xdg(monkeypatch: object, tmp_path: Path) -> None:
    import pytest

    assert isinstance(monkeypatch, pytest.MonkeyPatch)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert config_path() == tmp_path / "farmtui" / "keys.toml"
    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert config_path() == Path.home() / ".config" / "farmtui" / "keys.toml"


def test_bad_keys_toml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[keys]\n"jobs.pause" = "P"\n"jobs.nope" = "z"\n"jobs.hold" = 3\n')
    keymap, problems = load_keymap(path)
    assert keymap == {"jobs.pause": "P"}
    assert len(problems) == 2
    path.write_text("not toml [")
    assert load_keymap(path)[0] == {}


async def test_remapped_key_from_config_file(farm: RealFarm, tmp_path: Path) -> None:
    path = tmp_path / "config" / "farmtui" / "keys.toml"  # XDG_CONFIG_HOME from conftest
    path.parent.mkdir(parents=True)
    path.write_text('[keys]\n"jobs.pause" = "P"\n')
    job = farm.submit("shot_010")
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, job.id)
        # p no longer pauses; h (sent after it, on the same link) holds.
        await pilot.press("p", "h")
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "holding")
        assert "paused" not in farm.client.events(job.id)
        await pilot.press("u")
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "queued")
        await pilot.press("P")
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "paused")
        # The action strip shows the remapped key.
        await pilot.press("space")
        await pilot.pause()
        assert "P Pause" in screen_text(app)


def _modules(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}; import sys; print('\\n'.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {name.split(".")[0] for name in out.split()}


def test_console_never_imports_server_or_agent() -> None:
    loaded = _modules("import farmtui.console.app")
    assert not loaded & {"server", "agent"}
    assert "textual" in loaded


def test_protocol_does_not_pull_textual() -> None:
    assert "textual" not in _modules("import farmtui.protocol")
    assert "textual" not in _modules("import farmtui.console.state")


async def palette_offering(pilot: Pilot[None], app: App[None], typed: str, shown: str) -> None:
    """Open the command palette and type ``typed`` until it offers ``shown``."""
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(app.screen, CommandPalette))
    await pilot.press(*typed)
    await wait_for(pilot, lambda: shown in screen_text(app))


def send_at_once(app: App[None], *keys: str) -> None:
    """``keys`` read at once, as a terminal hands over a burst of typing (``pilot.press``
    lets the app settle between keys)."""
    assert app._driver is not None
    for key in keys:
        event = events.Key(key, {"enter": "\r", "escape": "\x1b"}.get(key, key))
        event.set_sender(app)
        app._driver.send_message(event)


async def test_enter_pressed_twice_in_the_palette_leaves_the_console_running(
    farm: RealFarm,
) -> None:
    """Textual dismissed its palette once per Enter: the second popped the main screen
    and the console (under ``farm up``, the farm with it) died with ScreenStackError."""
    job = farm.submit("shot_010")
    app = farm.app()
    async with app.run_test(size=(100, 40)) as pilot:
        await synced(pilot, app, job.id)
        for after in ("enter", "escape"):
            await palette_offering(pilot, app, "jobs: hold", "Jobs: Hold")
            send_at_once(app, "enter", after)
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
            await pilot.pause()
            assert app.is_running
            assert isinstance(app.screen, MainScreen)
        await wait_for(pilot, lambda: farm.client.show(job.id).job.state == "holding")


async def test_enter_pressed_thrice_into_the_theme_list_leaves_the_console_running(
    farm: RealFarm,
) -> None:
    """The palette's "theme" opens a second palette, Textual's own: Enter, Enter, Enter
    there killed the console after the first palette was guarded (break round 27c)."""
    job = farm.submit("shot_010")
    app = farm.app()
    async with app.run_test(size=(100, 40)) as pilot:
        await synced(pilot, app, job.id)
        for last in ("enter", "escape"):
            await palette_offering(pilot, app, "theme", "Change the current theme")
            await pilot.press("enter")
            await wait_for(pilot, lambda: "Search for themes" in screen_text(app))
            await pilot.press("down")
            send_at_once(app, "enter", last)
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen | CommandPalette))
            for _ in range(5):
                await pilot.pause()
            assert app.is_running
            while isinstance(app.screen, CommandPalette):
                await pilot.press("escape")
            assert isinstance(app.screen, MainScreen)
