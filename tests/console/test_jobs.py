"""The jobs table against the real leader (scripted farm): selection, actions,
confirmation, reorder, filter. Effects are checked in the leader's own state."""

from __future__ import annotations

import pytest
from textual.widgets import OptionList

from farmtui.console.actions import JOB_ACTIONS
from farmtui.console.app import FarmConsole
from farmtui.console.confirmations import JOB_ACTION_COSTS
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.context_menu import ContextMenu
from farmtui.console.screens.main import MainScreen
from farmtui.console.widgets.action_strip import ActionStrip
from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.protocol import MoveJob, RunJobAction, ShowArchived
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import ScriptedLeader


def table(app: object) -> JobsTable:
    return app.screen.query_one(JobsTable)  # type: ignore[attr-defined, no-any-return]


def order(app: object) -> list[str]:
    return table(app).keys


def in_step(app: FarmConsole, leader: ScriptedLeader, job_id: str) -> bool:
    """The console shows the job as the leader has it (an archived job not at all)."""
    real = leader.job(job_id)
    if real.archived:
        return job_id not in app.state.jobs
    return app.state.jobs.get(job_id) == real


async def test_jobs_in_dispatch_order_with_priority_hint(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        assert order(app) == ["j1", "j2", "j3", "j4", "j5"]
        text = screen_text(app)
        assert "Pri↑" in text
        assert "lower=sooner" in text
        assert "shot_010_comp" in text
        assert " rend " in text  # abbreviated by design, not cut ("renderin…")
        assert "…" not in text
        assert "30/90" in text  # the leader does not count j1's 10 excluded frames
        assert "lower number renders sooner" in str(table(app).tooltip)
        # Archived jobs are not listed unless asked for.
        assert "old_preview" not in text


async def test_multi_select_by_keyboard(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        strip = app.screen.query_one(ActionStrip)
        assert not strip.display
        await pilot.press("space")
        assert table(app).selected == {"j1"}
        assert strip.display
        await pilot.press("down", "shift+down", "shift+down")
        assert table(app).selected == {"j2", "j3", "j4"}
        await pilot.press("ctrl+a")
        assert table(app).selected == {"j1", "j2", "j3", "j4", "j5"}
        assert "5 selected" in screen_text(app)
        await pilot.press("escape")
        assert table(app).selected == set()
        await pilot.pause()
        assert not strip.display


async def test_multi_select_by_mouse(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.click("#jobs", offset=(10, 2))
        assert table(app).selected == {"j2"}
        await pilot.click("#jobs", offset=(10, 4), control=True)
        assert table(app).selected == {"j2", "j4"}
        await pilot.click("#jobs", offset=(10, 1), shift=True)
        assert table(app).selected == {"j1", "j2"} or table(app).selected == {
            "j1",
            "j2",
            "j3",
            "j4",
        }


@pytest.mark.parametrize(
    "spec", [s for s in JOB_ACTIONS if s.action not in JOB_ACTION_COSTS], ids=str
)
async def test_each_cheap_job_action_key_sends_to_every_selected_job(
    leader: ScriptedLeader, spec: object
) -> None:
    from farmtui.console.actions import JobActionSpec

    assert isinstance(spec, JobActionSpec)
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "space", "down", "space")  # j2 and j3
        await pilot.press(spec.key)
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1, what="action sent")
        sent = leader.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert sent.action == spec.action
        assert sent.job_ids == ["j2", "j3"]
        # The leader's answer reaches the table.
        # The leader applied it by its own rules, and its answer reaches the table.
        for job_id in ("j2", "j3"):
            await wait_for(pilot, lambda j=job_id: in_step(app, leader, j), what="the table")  # type: ignore[misc]
        if spec.action == "pause":
            assert leader.job("j2").state == "paused"
            assert " paus " in screen_text(app)


async def test_action_on_cursor_job_when_nothing_selected(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "h")
        await wait_for(pilot, lambda: app.state.jobs["j2"].state == "holding")
        assert leader.job("j2").state == "holding"
        assert leader.job("j1").state == "rendering"
        sent = leader.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert sent.job_ids == ["j2"]


@pytest.mark.parametrize(
    ("key", "action"), [("c", "cancel"), ("delete", "delete"), ("q", "requeue"), ("x", "complete")]
)
async def test_costly_actions_ask_first_naming_the_jobs(
    leader: ScriptedLeader, key: str, action: str
) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("space", "down", "space")
        await pilot.press(key)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        text = screen_text(app)
        assert "2 jobs?" in text
        assert "shot_010_comp" in text
        assert "shot_020_light" in text
        # Deny: nothing is sent.
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        # Confirm: sent.
        await pilot.press(key)
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1)
        sent = leader.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert sent.action == action
        assert sent.job_ids == ["j1", "j2"]
        if action == "delete":
            await wait_for(pilot, lambda: "j1" not in app.state.jobs)
            await wait_for(pilot, lambda: "j1" not in order(app))
            assert leader.order() == ["j3", "j4", "j5"]
        else:
            await wait_for(pilot, lambda: app.state.jobs["j1"] == leader.job("j1"))
            expected = {"cancel": "cancelled", "requeue": "rendering", "complete": "done"}[action]
            assert leader.job("j1").state == expected  # requeued: j1 renders again at once
            done = leader.job("j1").stats.frames_done
            assert done == {"cancel": 30, "requeue": 0, "complete": 90}[action]


async def test_confirmation_keys_and_buttons(leader: ScriptedLeader) -> None:
    """Escape, n, Enter (Keep has the focus) and the Keep button keep everything; y and the
    action's button confirm."""
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        for keep in ("escape", "n", "enter", "#confirm-no"):
            await pilot.press("c")
            await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
            if keep.startswith("#"):
                await pilot.click(keep)
            else:
                await pilot.press(keep)
            await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert leader.count(RunJobAction) == 0
        assert app.state.jobs["j1"].state == "rendering"
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1)
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#confirm-yes")
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 2)


async def test_action_strip_click_runs_the_action(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(160, 48)) as pilot:
        await synced(pilot, app)
        await pilot.press("space")
        await pilot.pause()
        strip = app.screen.query_one(ActionStrip)
        text = str(strip.render())
        assert "p Pause" in text
        assert "c Cancel" in text
        assert "y Retry sync" in text
        # "1 selected: " is 12 cells, then "p Pause".
        await pilot.click(ActionStrip, offset=(14, 0))
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1)
        sent = leader.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert sent.action == "pause"


async def test_right_click_menu_acts_on_that_row_only(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("space")  # j1 selected; the menu ignores the selection
        await pilot.click("#jobs", offset=(12, 3), button=3)
        await wait_for(pilot, lambda: isinstance(app.screen, ContextMenu))
        text = screen_text(app)
        for spec in JOB_ACTIONS:
            assert spec.label in text
        menu = app.screen.query_one(OptionList)
        moves = [str(menu.get_option_at_index(i).prompt) for i in range(menu.option_count)]
        # With their keys, as the job actions have theirs (break round 33c).
        assert "Move up      ^↑" in [line.rstrip() for line in moves]
        await pilot.press("down", "enter")  # Resume
        await wait_for(pilot, lambda: leader.count(RunJobAction) == 1)
        sent = leader.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert sent.action == "resume"
        assert sent.job_ids == ["j3"]


async def test_keyboard_menu_with_destructive_choice_confirms(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "m")
        await wait_for(pilot, lambda: isinstance(app.screen, ContextMenu))
        await pilot.press(*["down"] * 5, "enter")  # Cancel
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        assert "shot_020_light" in screen_text(app)
        await pilot.press("y")
        await wait_for(pilot, lambda: app.state.jobs["j2"].state == "cancelled")
        assert leader.job("j2").state == "cancelled"


async def test_reorder_by_keyboard_within_group(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "down")  # j3, second of group 50
        await pilot.press("ctrl+up")
        await wait_for(pilot, lambda: order(app)[:3] == ["j1", "j3", "j2"])
        assert table(app).cursor_key == "j3"  # the cursor follows the moved job
        await pilot.press("right_curly_bracket")  # bottom of the group
        await wait_for(pilot, lambda: order(app) == ["j1", "j2", "j4", "j3", "j5"])
        await pilot.press("left_square_bracket")  # up one
        await wait_for(pilot, lambda: order(app) == ["j1", "j2", "j3", "j4", "j5"])
        await pilot.press("ctrl+home")
        await wait_for(pilot, lambda: order(app) == ["j1", "j3", "j2", "j4", "j5"])
        await pilot.press("ctrl+down")
        await wait_for(pilot, lambda: order(app) == ["j1", "j2", "j3", "j4", "j5"])
        await pilot.press("ctrl+end")
        await wait_for(pilot, lambda: order(app) == ["j1", "j2", "j4", "j3", "j5"])
        moves = [m for m in leader.received if isinstance(m, MoveJob)]
        assert [m.where for m in moves] == ["up", "bottom", "up", "top", "down", "bottom"]
        assert leader.order() == ["j1", "j2", "j4", "j3", "j5"]


async def test_reorder_by_drag_within_group(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        # Grab j4's handle (row 4 -> y=4) and drop it on j2 (y=2).
        await pilot.mouse_down("#jobs", offset=(1, 4))
        await pilot.hover("#jobs", offset=(1, 2))
        await pilot.pause()
        assert "move shot_040_anim before shot_020_light" in screen_text(app)
        await pilot.mouse_up("#jobs", offset=(1, 2))
        await wait_for(pilot, lambda: order(app) == ["j1", "j4", "j2", "j3", "j5"])
        assert leader.order() == ["j1", "j4", "j2", "j3", "j5"]
        sent = leader.last(MoveJob)
        assert isinstance(sent, MoveJob)
        assert sent.before == "j2"


async def test_drag_across_groups_is_refused(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.mouse_down("#jobs", offset=(1, 3))  # j3, priority 50
        await pilot.hover("#jobs", offset=(1, 1))  # before j1, priority 10
        await pilot.pause()
        assert "refused" in screen_text(app)
        await pilot.mouse_up("#jobs", offset=(1, 1))
        await pilot.pause()
        assert leader.count(MoveJob) == 0
        notes = [n.message for n in app._notifications]
        assert any("priority always wins" in note for note in notes)
        assert order(app) == ["j1", "j2", "j3", "j4", "j5"]
        assert leader.order() == ["j1", "j2", "j3", "j4", "j5"]


async def test_leader_refusal_is_shown(leader: ScriptedLeader) -> None:
    """A move the console lets through but the leader refuses shows the Reply error."""
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        # Bypass the console's own check: ask for a cross-group 'before' move directly.
        screen = app.screen
        assert isinstance(screen, MainScreen)
        screen._send(MoveJob(job_id="j3", before="j1"), "Move shot_030_fx")
        await wait_for(
            pilot,
            lambda: any(
                "priority always wins; change the priority instead" in n.message
                for n in app._notifications
            ),
        )
        assert leader.order() == ["j1", "j2", "j3", "j4", "j5"]


async def test_filter(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("slash")
        await pilot.press(*"alice")
        await wait_for(pilot, lambda: order(app) == ["j1", "j4"])
        await pilot.press("enter")
        assert table(app).has_focus
        assert "/alice" in screen_text(app)
        await pilot.press("slash", "escape")
        await wait_for(pilot, lambda: len(order(app)) == 5)


async def test_group_by_priority_then_state(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("g")
        text = screen_text(app)
        assert "Priority 10  (1)" in text
        assert "Priority 50  (3)" in text
        await pilot.press("g")
        text = screen_text(app)
        assert "Rendering  (1)" in text
        assert "Failed  (1)" in text
        # The cursor skips group titles.
        await pilot.press("home")
        assert table(app).cursor_key is not None
        await pilot.press("g")
        assert "Priority 10" not in screen_text(app)


async def test_show_archived_on_demand(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("A")
        await wait_for(pilot, lambda: "j6" in order(app))
        assert "old_preview" in screen_text(app)
        assert "done▾" in screen_text(app)  # the archived mark
        sent = leader.last(ShowArchived)
        assert isinstance(sent, ShowArchived)
        assert sent.enabled
        await pilot.press("A")
        await wait_for(pilot, lambda: "j6" not in order(app))


async def test_archive_hides_the_job(leader: ScriptedLeader) -> None:
    app = make_app(leader)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("end", "a")
        await wait_for(pilot, lambda: "j5" not in order(app))
        assert leader.job("j5").archived
