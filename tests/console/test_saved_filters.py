"""Saved filters (``F``): save the ``/`` filter under a name, recall it after a
restart of the console, delete it; kept in console.toml beside the user's settings."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from farmtui.console.app import FarmConsole
from farmtui.console.screens.saved_filters import SavedFiltersScreen, SaveFilterPrompt
from farmtui.console.settings import (
    FILTERS_MAX,
    SettingsError,
    delete_filter,
    load_settings,
    save_filter,
    settings_path,
)
from farmtui.console.widgets.jobs_table import JobsTable
from tests.console.conftest import synced, wait_for
from tests.console.real_farm import RealFarm
from tests.console.screen import screen_text


def shown_jobs(app: FarmConsole) -> list[str]:
    return [row for row in app.screen.query_one(JobsTable).rows if isinstance(row, str)]


def toasts(app: FarmConsole) -> str:
    return "\n".join(str(n.message) for n in app._notifications)


async def test_a_saved_filter_survives_a_restart_and_can_be_deleted(farm: RealFarm) -> None:
    path = settings_path()
    path.parent.mkdir(parents=True)
    path.write_text("[notify]\nbell = false  # a quiet office\n")
    shot = farm.submit("shot_010")
    comp = farm.submit("comp_020")
    farm.client.action("hold", [comp.id])

    app = farm.app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await synced(pilot, app, shot.id)
        assert set(shown_jobs(app)) == {shot.id, comp.id}
        await pilot.press("slash", *"state:hold")
        await wait_for(pilot, lambda: shown_jobs(app) == [comp.id], what="the filter typed")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, SaveFilterPrompt))
        assert "state:hold" in screen_text(app)
        await pilot.press(*"held", "space", *"jobs", "enter")
        await wait_for(pilot, lambda: "Saved the filter 'held jobs'" in toasts(app))
        # Esc in the field clears the filter: every job again.
        await pilot.press("escape")
        await wait_for(pilot, lambda: len(shown_jobs(app)) == 2, what="the filter cleared")

    # The user's own line is still there, and the filter beside it.
    text = path.read_text()
    assert "bell = false  # a quiet office" in text
    assert tomllib.loads(text)["filters"] == {"held jobs": "state:hold"}

    # A new console (a restart): F lists it, Enter applies it.
    app = farm.app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await synced(pilot, app, shot.id)
        assert not app.settings.notify.bell
        assert len(shown_jobs(app)) == 2
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, SavedFiltersScreen))
        assert "held jobs" in screen_text(app)
        assert "state:hold" in screen_text(app)
        await pilot.press("enter")
        await wait_for(pilot, lambda: shown_jobs(app) == [comp.id], what="the saved filter")
        assert "state:hold" in screen_text(app)  # shown in the filter field
        assert "comp_020" in screen_text(app)
        assert "shot_010" not in screen_text(app)

        # d deletes it (the list stays open, now empty).
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, SavedFiltersScreen))
        await pilot.press("d")
        await wait_for(pilot, lambda: "Deleted the saved filter 'held jobs'" in toasts(app))
        await wait_for(pilot, lambda: "None saved yet" in screen_text(app))
        await pilot.press("escape")
    assert "filters" not in tomllib.loads(path.read_text())
    assert "bell = false  # a quiet office" in path.read_text()


async def test_n_in_the_list_saves_the_filter_in_use_and_a_name_can_be_replaced(
    farm: RealFarm,
) -> None:
    shot = farm.submit("shot_010", priority=40)
    farm.submit("shot_020")
    app = farm.app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await synced(pilot, app, shot.id)
        # Nothing typed yet: nothing to save, and the list says how to make one.
        await pilot.press("F")
        await wait_for(pilot, lambda: isinstance(app.screen, SavedFiltersScreen))
        assert "None saved yet" in screen_text(app)
        await pilot.press("n")
        await wait_for(pilot, lambda: "Type a filter first" in toasts(app))
        assert not isinstance(app.screen, SaveFilterPrompt)

        for text in ("pri:<50", "pri:50"):
            await pilot.press("slash", "ctrl+u", *text, "enter")
            await pilot.press("F")
            await wait_for(pilot, lambda: isinstance(app.screen, SavedFiltersScreen))
            await pilot.press("n")
            await wait_for(pilot, lambda: isinstance(app.screen, SaveFilterPrompt))
            await pilot.press(*"urgent")
            if text == "pri:50":
                await wait_for(pilot, lambda: "Enter replaces 'urgent'" in screen_text(app))
            await pilot.press("enter")
            await wait_for(pilot, lambda: not isinstance(app.screen, SaveFilterPrompt))
        assert "Replaced the filter 'urgent'" in toasts(app)
    settings, problems = load_settings()
    assert problems == []
    assert settings.filters == {"urgent": "pri:50"}


async def test_saved_filters_in_the_command_palette(farm: RealFarm) -> None:
    shot = farm.submit("shot_010")
    app = farm.app()
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app, shot.id)
        await pilot.press("ctrl+p", *"saved filters")
        await wait_for(pilot, lambda: "Jobs: Saved filters" in screen_text(app))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, SavedFiltersScreen))


def test_a_broken_console_toml_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    path.write_text("[notify\nbell = ")
    with pytest.raises(SettingsError, match="not valid TOML"):
        save_filter(path, "mine", "owner:alice")
    assert path.read_text() == "[notify\nbell = "
    with pytest.raises(SettingsError, match="control characters"):
        save_filter(tmp_path / "other.toml", "bad\x1bname", "x")


def test_filters_are_read_with_the_rest_and_odd_text_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    odd = 'name:"quoted" \\back\u202e'
    save_filter(path, "odd one", odd)
    save_filter(path, "second", "state:failed")
    settings, problems = load_settings(path)
    assert problems == []
    assert list(settings.filters.items()) == [("odd one", odd), ("second", "state:failed")]
    path.write_text(path.read_text() + "\n[extra]\n")  # a table after [filters] stays
    save_filter(path, "third", "owner:bob")
    data = tomllib.loads(path.read_text())
    assert "extra" in data
    assert list(data["filters"]) == ["odd one", "second", "third"]
    path.write_text('[filters]\nok = "owner:a"\nbad = 3\n')
    settings, problems = load_settings(path)
    assert settings.filters == {"ok": "owner:a"}
    assert problems == [f"{path}: filters.bad must be a filter string"]


@pytest.mark.parametrize(
    "layout",
    [
        'filters.old = "state:failed"\n[notify]\nbell = false\n',
        '["filters"]\nold = "state:failed"\n[notify]\nbell = false\n',
        'filters = {old = "state:failed"}\n[notify]\nbell = false\n',
        '[filters]\nold = """\n[notify]\n"""\n[notify]\nbell = false\n',
    ],
)
def test_filters_written_another_way_are_refused_not_broken(tmp_path: Path, layout: str) -> None:
    """Valid TOML the line editor would break: nothing is written, and the user is told how."""
    path = tmp_path / "console.toml"
    path.write_text(layout)
    with pytest.raises(SettingsError, match=r"plain \[filters\] header\); nothing was saved"):
        save_filter(path, "mine", "owner:admin")
    assert path.read_text() == layout
    assert not load_settings(path)[0].notify.bell


def test_two_consoles_saving_at_once_lose_nothing_and_tear_nothing(tmp_path: Path) -> None:
    path = tmp_path / "console.toml"
    path.write_text("[notify]\nbell = false\n")
    script = (
        "import sys; from pathlib import Path; from farmtui.console.settings import save_filter\n"
        "for i in range(60): save_filter(Path(sys.argv[1]), f'{sys.argv[2]}{i}', f'owner:u{i}')\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", script, str(path), who]) for who in ("a", "b")
    ]
    assert [writer.wait(timeout=120) for writer in writers] == [0, 0]
    settings, problems = load_settings(path)
    assert problems == []
    assert sorted(settings.filters) == sorted(f"{who}{i}" for who in "ab" for i in range(60))
    assert not settings.notify.bell
    assert sorted(p.name for p in tmp_path.iterdir()) == ["console.toml", "console.toml.lock"]


def test_a_symlinked_console_toml_stays_a_link(tmp_path: Path) -> None:
    dotfiles = tmp_path / "dotfiles" / "console.toml"
    dotfiles.parent.mkdir()
    dotfiles.write_text("[notify]\ntoast = false\n")
    path = tmp_path / "config" / "console.toml"
    path.parent.mkdir()
    path.symlink_to(dotfiles)
    save_filter(path, "mine", "owner:admin")
    assert path.is_symlink()
    assert tomllib.loads(dotfiles.read_text())["filters"] == {"mine": "owner:admin"}


def test_saved_filters_are_capped_with_a_clear_refusal(tmp_path: Path) -> None:
    """The F list stays quick to open: the 201st name is refused and says what to do;
    an old name can still be replaced; a hand-written longer list is cut, and said so."""
    path = tmp_path / "console.toml"
    path.write_text(
        "[filters]\n" + "".join(f'f{i} = "owner:u{i}"\n' for i in range(FILTERS_MAX + 5))
    )
    settings, problems = load_settings(path)
    assert len(settings.filters) == FILTERS_MAX
    assert problems == [f"{path}: only the first {FILTERS_MAX} saved filters are used"]
    path.write_text("[filters]\n" + "".join(f'f{i} = "owner:u{i}"\n' for i in range(FILTERS_MAX)))
    with pytest.raises(SettingsError, match=f"at most {FILTERS_MAX} saved filters: delete one"):
        save_filter(path, "one more", "state:failed")
    assert "one more" not in path.read_text()
    assert save_filter(path, "f3", "state:failed")["f3"] == "state:failed"


def test_a_rewrite_keeps_the_entries_the_console_does_not_use(tmp_path: Path) -> None:
    """Deleting one filter used to rewrite [filters] with only the ones in use: those past
    the cap, odd names and the table's comments were lost without a word."""
    path = tmp_path / "console.toml"
    long_name = "n" * 41
    path.write_text(
        "[filters]\n# mine, keep\n"
        + "".join(f'f{i:03d} = "owner:u{i}"\n' for i in range(FILTERS_MAX + 3))
        + f'{long_name} = "state:failed"\n'
    )
    left = delete_filter(path, "f000")
    assert len(left) == FILTERS_MAX  # f200 moves up into the first 200
    data = tomllib.loads(path.read_text())["filters"]
    assert "f000" not in data
    assert {"f201", "f202", long_name} <= set(data)
    assert "# mine, keep" in path.read_text()
    # Edited in place: untouched entries keep their lines (comments too), and the
    # tables keep their places.
    path.write_text(
        '[filters]\n"a" = "state:failed"  # why a\n# between\n'
        "'b' = \"owner:bob\"  # why b\n\n[other]\nx = 1\n"
    )
    save_filter(path, "c", "pri:10")
    delete_filter(path, "a")
    assert path.read_text() == (
        '[filters]\n# between\n\'b\' = "owner:bob"  # why b\n"c" = "pri:10"\n\n[other]\nx = 1\n'
    )
    path.write_text('[filters]\nok = "owner:a"\nnum = 5\n')
    with pytest.raises(SettingsError, match="filters.num is not a filter string"):
        delete_filter(path, "ok")
    assert path.read_text() == '[filters]\nok = "owner:a"\nnum = 5\n'
