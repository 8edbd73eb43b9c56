"""Safe keys (issue 11, defect 3): one meaning per key in every view, chunk actions
only through the ``k`` mode, priority typed and applied once, a visible focus
ring, no key typing into a hidden field, a key bar per view and the ``?``
overlay generated from the bindings."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.color import Color
from textual.widgets import Input
from textual.widgets._toast import Toast

from farmtui.console.app import FarmConsole
from farmtui.console.screens.chunk_mode import ChunkActionMode
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.help import HelpScreen
from farmtui.console.screens.main import MainScreen
from farmtui.console.screens.priority_prompt import PriorityPrompt
from farmtui.console.widgets.filter_input import FilterInput
from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.protocol import RunChunkAction, RunJobAction, SetPriority
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader

# How to reach each pane, from the jobs table with j1 under the cursor.
PANES = {
    "jobs table": (),
    "frame grid": ("enter",),
    "chunk table": ("enter", "t"),
    "task output": ("3",),
    "nodes": ("4",),
}


def key_bar(app: FarmConsole) -> str:
    return screen_text(app).splitlines()[-1]


@pytest.mark.parametrize("pane", list(PANES))
async def test_r_and_h_act_on_the_job_whatever_has_the_focus(
    leader: ScriptedLeader, pane: str
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press(*PANES[pane])
        await pilot.pause()
        await pilot.press("h")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1, what="hold sent")
        await pilot.press("r")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 2, what="resume sent")
        actions = [m.action for m in leader.received if isinstance(m, RunJobAction)]
        assert actions == ["hold", "resume"]
        await wait_for(pilot, lambda: app.state.jobs["j1"].state == leader.job("j1").state)
        assert all(m.job_ids == ["j1"] for m in leader.received if isinstance(m, RunJobAction))
        assert leader.count(RunChunkAction) == 0


async def test_chunk_actions_only_in_the_k_mode_shown_in_the_footer(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        assert "k chunk" not in key_bar(app)  # nothing to act on from the jobs table
        await pilot.press("enter", "t", "down")  # chunk 1
        assert "k chunk action" in key_bar(app)
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ChunkActionMode))
        await pilot.pause()
        text = screen_text(app)
        assert "CHUNK ACTION on chunk 1 of shot_010_comp" in text
        footer = text.splitlines()[-1]
        for key, label in (("r", "Retry"), ("h", "Hold"), ("F", "Set failed"), ("e", "Exclude")):
            assert f"{key} {label}" in footer
        # A key that is no chunk action leaves the mode and does nothing.
        await pilot.press("p")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        await pilot.pause()
        assert leader.count(RunChunkAction) == 0
        assert leader.count(RunJobAction) == 0
        # Esc leaves too.
        await pilot.press("k")
        await wait_for(pilot, lambda: isinstance(app.screen, ChunkActionMode))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        # k r retries the chunk, not the job (done: it asks first, as it re-renders it).
        await pilot.press("k", "r")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: leader.count(RunChunkAction) == 1)
        sent = leader.last(RunChunkAction)
        assert isinstance(sent, RunChunkAction)
        assert (sent.action, sent.chunks) == ("retry", [1])
        assert leader.count(RunJobAction) == 0
        assert leader.job("j1").state == "rendering"


async def test_k_on_the_settings_tab_says_where_chunks_are_picked(leader: ScriptedLeader) -> None:
    """It did nothing there, silently: the ``h`` typed after it held the whole job."""
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter", "t", "t")  # the detail's Settings tab
        assert "k chunk action" in key_bar(app)
        await pilot.press("k")
        await wait_for(
            pilot,
            lambda: any("Pick frames in the frame grid" in n.message for n in app._notifications),
            what="where to pick chunks",
        )
        assert isinstance(app.screen, MainScreen)


async def test_priority_is_typed_and_applied_once_on_enter(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter")  # detail of j1 (priority 10)
        await pilot.pause()
        assert "Pri 10" in screen_text(app)
        await pilot.press("P")
        await wait_for(pilot, lambda: isinstance(app.screen, PriorityPrompt))
        await pilot.pause()
        assert "Priority of shot_010_comp (now 10)" in screen_text(app)
        # Arrows step nothing, letters do not type, nothing is sent while typing.
        await pilot.press("up", "up", "down", "x", "4", "minus", "2")
        await pilot.pause()
        assert app.screen.query_one("#priority-input").value == "42"  # type: ignore[attr-defined]
        assert leader.count(SetPriority) == 0
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.state.jobs["j1"].priority == 42)
        await pilot.pause()
        assert leader.count(SetPriority) == 1
        sent = leader.last(SetPriority)
        assert isinstance(sent, SetPriority)
        assert (sent.job_id, sent.priority) == ("j1", 42)
        assert leader.job("j1").priority == 42
        await wait_for(pilot, lambda: "Pri 42" in screen_text(app))
        # Out of range: said so, nothing sent; Esc cancels.
        await pilot.press("P", "2", "0", "0", "enter")
        await wait_for(pilot, lambda: "type a whole number 0–100" in screen_text(app))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(SetPriority) == 1


async def test_the_priority_prompt_is_for_admins_only(leader: ScriptedLeader) -> None:
    app = make_app(leader, token=leader.user_token("bob"))
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("enter")
        await pilot.pause()
        assert "admins change it" in screen_text(app)
        await pilot.press("P")
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert any("Only admins" in n.message for n in app._notifications)
        assert leader.count(SetPriority) == 0


async def test_the_focused_pane_has_a_visible_focus_ring(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(160, 48)) as pilot:
        await synced(pilot, app)
        jobs = app.screen.query_one("#jobs")
        grid = app.screen.query_one("#frame-grid")
        accent = Color.parse(app.theme_variables["accent"])

        def ring(widget: object) -> Color:
            return widget.styles.border_left[1]  # type: ignore[attr-defined,no-any-return]

        assert ring(jobs).hex == accent.hex
        assert ring(grid).hex != accent.hex
        await pilot.click("#frame-grid")
        await pilot.pause()
        assert ring(grid).hex == accent.hex
        assert ring(jobs).hex != accent.hex


async def test_no_key_types_into_the_hidden_filter(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("slash", *"shot")
        field = app.screen.query_one(FilterInput)
        assert field.has_focus
        # The view bar's "2 Detail" hides the jobs pane and the filter with it.
        await pilot.click("#viewbar", offset=(12, 0))
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert app.screen.view == "detail"
        assert not field.has_focus
        await pilot.press("1")
        await pilot.pause()
        assert app.screen.view == "jobs"
        assert field.value == "shot"


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        ((), ["? keys", "p pause", "r resume", "h hold"]),
        (("enter",), ["k chunk action", "⏎ chunk", "T heat map", "t next tab"]),
        (("4",), ["d enable/disable", "l agent log"]),
        (("3",), ["← older attempt"]),
    ],
)
async def test_the_key_bar_shows_what_matters_in_the_view(
    leader: ScriptedLeader, keys: tuple[str, ...], expected: list[str]
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press(*keys)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        if keys == ("3",):  # Task Output, its chunk list focused
            screen.logs.show_source("task")
            screen.logs.task_pane.chunk_list.focus()
        await pilot.pause()
        bar = key_bar(app)
        for item in expected:
            assert item in bar, (item, bar)
        assert "…" not in bar
        assert bar.startswith(" ? keys")


async def test_help_overlay_lists_the_keys_of_the_view_from_the_bindings(
    leader: ScriptedLeader, tmp_path: Path
) -> None:
    path = tmp_path / "config" / "farmtui" / "keys.toml"  # XDG_CONFIG_HOME from conftest
    path.parent.mkdir(parents=True)
    path.write_text('[keys]\n"jobs.pause" = "ctrl+o"\n"grid.heat" = "M"\n')
    app = make_app(leader)
    async with app.run_test(size=(100, 40), notifications=True) as pilot:
        await synced(pilot, app)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        overlay = app.screen
        assert isinstance(overlay, HelpScreen)
        text = overlay.text()
        # Every screen binding is there, under its remapped key when remapped.
        main = app.screen_stack[0]
        assert isinstance(main, MainScreen)
        for _, binding in main._bindings:
            if binding.description and binding.id != "jobs.pause":
                assert binding.description in text, binding.description
        assert "^o  Pause" in text
        assert "Jobs table" in text
        # Not Textual's "return to the command prompt": under farm up the farm stops too.
        assert "under farm up the farm stops with it" in text
        # A toast over a dialog shows at its top, not over the bottom's keys and buttons.
        app.notify("job shot_010 finished", title="Job finished")
        await wait_for(pilot, lambda: bool(overlay.query(Toast)))
        await pilot.pause()
        assert all(toast.region.y < 10 for toast in overlay.query(Toast))
        assert "Frame grid" not in text  # not the jobs view's
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        # In Detail: the grid's keys, the chunk table's and the chunk action mode's.
        await pilot.press("enter", "question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        text = app.screen.text()  # type: ignore[attr-defined]
        assert "Frames tab (frame grid)" in text
        assert "M  Heat map: Colour by render time" in text
        assert "Chunk action mode (after k)" in text
        assert "F  Set failed" in text
        assert "rend=rendering" in text  # the abbreviations
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_one_meaning_per_key_across_the_panes(leader: ScriptedLeader) -> None:
    """No key means a job action in one pane and something else in another."""
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        job_keys = {key for key, b in screen._bindings if b.action.startswith("job_action")}
        meanings: dict[str, set[str]] = {}
        for keys in PANES.values():
            await pilot.press("1")
            await pilot.press(*keys)
            await pilot.pause()
            for key, active in screen.active_bindings.items():
                meanings.setdefault(key, set()).add(active.binding.action)
        for key in job_keys:
            assert len(meanings[key]) == 1, (key, meanings[key])
        assert isinstance(screen.query_one(JobsTable), JobsTable)


async def test_an_escape_typed_just_before_a_key_is_an_escape(leader: ScriptedLeader) -> None:
    """Esc then a typed quickly reach the console as alt+a (how a terminal sends alt):
    it was typed into the field as "a". Now it is the Escape, and the "a" is dropped
    rather than guessed at; nothing is sent to the leader."""
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("slash", *"shot")
        assert isinstance(app.focused, FilterInput)
        await pilot.press("alt+a")
        await pilot.pause()
        assert not isinstance(app.focused, FilterInput)
        assert "shota" not in app.screen.job_list.text_filter  # type: ignore[attr-defined]
        await pilot.press("alt+c")  # on the jobs table: an Escape, not Cancel
        await pilot.pause()
        assert isinstance(app.screen, MainScreen)
        assert leader.count(RunJobAction) == 0


async def test_keys_typed_right_after_slash_go_into_the_field(leader: ScriptedLeader) -> None:
    """Keys that arrive with the ``/`` (typed fast, or queued behind a repaint over SSH)
    used to reach the jobs table before the field took the focus: ``/ a`` archived the
    job under the cursor, and in the Logs view ``/ x`` opened Complete. Now the field
    has the focus at once, and what was typed right behind the ``/`` lands in it."""
    from textual import events

    def burst(*keys: tuple[str, str]) -> None:
        for key, character in keys:
            app.post_message(events.Key(key, character))

    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        burst(("slash", "/"), ("a", "a"), ("b", "b"))
        await wait_for(pilot, lambda: app.screen.job_list.text_filter == "ab")  # type: ignore[attr-defined]
        assert isinstance(app.focused, FilterInput)
        await pilot.press("escape", "escape")
        await pilot.press("3")
        await wait_for(pilot, lambda: app.screen.view == "logs")  # type: ignore[attr-defined]
        burst(("slash", "/"), ("x", "x"), ("y", "y"))
        await wait_for(pilot, lambda: app.screen.query_one(LogsPanel).search == "xy")
        assert isinstance(app.screen, MainScreen)
        assert leader.count(RunJobAction) == 0
        assert not leader.job("j1").archived


async def test_an_escape_turned_into_an_option_character_is_an_escape(
    leader: ScriptedLeader,
) -> None:
    """Esc then 1 typed quickly reach the console as "¡" (Textual maps ESC+digit to
    macOS's Option characters): the Logs search typed "¡". It is the Escape."""
    from textual import events

    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("3", "slash", "x")
        logs = app.screen.query_one(LogsPanel)
        await wait_for(pilot, lambda: logs.search == "x")
        # What ESC 1 arrives as from the terminal (Pilot's press would drop the "¡").
        app.post_message(events.Key("inverted_exclamation_mark", "¡"))
        await wait_for(pilot, lambda: logs.search == "", what="the search cleared")
        assert "¡" not in logs.query_one("#logs-search", Input).value


async def test_a_viewer_is_refused_a_delete_at_once_not_after_confirming_it(
    leader: ScriptedLeader,
) -> None:
    """A viewer's delete asked "delete …?" first and was refused only after ``y``
    (break round 27a); pause was refused at once. The leader's refusal is shown now."""
    from farmtui.console.screens.confirm import ConfirmScreen
    from farmtui.protocol import RunJobAction

    token = leader.call(lambda: leader.leader.tokens.create("viewer", "vera"))
    app = make_app(leader, token=token)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        assert app.state.role == "viewer"
        await pilot.press("delete")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1, what="sent")
        assert not isinstance(app.screen, ConfirmScreen)
        await wait_for(
            pilot,
            lambda: any("viewer may not" in n.message for n in app._notifications),
            what="the leader's refusal",
        )
        assert leader.job("j1").state != "deleted"
