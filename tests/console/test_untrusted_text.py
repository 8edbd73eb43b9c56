"""Names, paths, log lines and errors are shown as plain text: never markup, never raw escapes.

Issue 9 item 6: a job named ``[/oops]`` crashed the cancel dialog (MarkupError)
and ``[@click=app.quit]...`` became a hidden clickable action. Each hostile
string here must show literally wherever the console puts it, and no ESC may
reach the terminal.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from pathlib import Path

import msgspec
import pytest
from textual.widgets import OptionList, Static
from textual.widgets._toast import Toast

from farmtui.console.app import FarmConsole
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.context_menu import ContextMenu
from farmtui.console.screens.main import MainScreen
from farmtui.console.widgets.jobs_table import JobsTable
from farmtui.console.widgets.logs_panel import LogsPanel
from farmtui.console.widgets.nodes_panel import NodesPanel
from farmtui.console.widgets.status_bar import ConnectionBanner
from farmtui.printable import is_printable
from farmtui.protocol import RunJobAction
from tests.console.conftest import make_app, synced, wait_for
from tests.console.screen import screen_text
from tests.console.scripted_leader import LeaderThread, ScriptedLeader, output_line, scripted

UNCLOSED = "[/oops]"
CLICK = "[@click=app.quit]click me[/]"
BOLD = "[b]bold[/b]"
ESCAPES = "\x1b[31mred\nsecond line"
ESCAPES_SHOWN = r"\x1b[31mred\nsecond line"
NODE = "[b]gpu[/b]\x1b[2J"
NODE_SHOWN = r"[b]gpu[/b]\x1b[2J"


@pytest.fixture
def hostile(leader_thread: LeaderThread, tmp_path: Path) -> Iterator[ScriptedLeader]:
    """The standard farm with j1-j3 renamed with markup, escapes in j4's scene and
    owner and in j1's owner, and a node with both in its name.

    Markup is printable: the leader takes such names as submitted. A job name
    with control characters cannot reach a console at all (the protocol's
    JobName refuses it, on both ends), so escapes go where the protocol carries
    free text: scene paths, owners, node names, logs and events. Those the
    leader would refuse at its door are written into its records directly.
    """
    with scripted(leader_thread, tmp_path / "farm") as farm:
        for job_id, name in (("j1", UNCLOSED), ("j2", CLICK), ("j3", BOLD), ("j4", None)):
            spec = farm.job(job_id).spec
            assert name is None or is_printable(name)
            scene = f"/proj/{name or ESCAPES}.blend"
            farm.touch(
                job_id,
                spec=msgspec.structs.replace(spec, name=name or spec.name, scene=scene),
                owner=ESCAPES if name is None else spec.owner,
            )
        farm.touch("j1", owner="[i]eve\x07")
        farm.connect(NODE, 2, cpu=3.0, memory=12.0, cpu_count=8, memory_total=32 * 2**30)
        farm.run(lambda now: farm.leader.scheduler.node_disconnected("node-b", now))
        farm.agent_log(NODE, ["\x1b[31mred agent line\x1b[0m", "[b]not bold[/b]\tend"])
        yield farm


def watching(app: FarmConsole, job_id: str) -> bool:
    return app.state.watched is not None and app.state.watched.job_id == job_id


def no_raw_escape(text: str) -> bool:
    return "\x1b" not in text and "\x07" not in text


async def test_names_render_literally_in_the_table_and_the_detail(hostile: ScriptedLeader) -> None:
    app = make_app(hostile)
    async with app.run_test(size=(120, 30)) as pilot:
        await synced(pilot, app)
        text = screen_text(app)
        for shown in (UNCLOSED, CLICK, BOLD):
            assert shown in text
        assert no_raw_escape(text)
        # j4's owner with ESC and a newline stays on its row (cut to the column).
        (row,) = [line for line in text.splitlines() if "shot_040_anim" in line]
        assert r"\x1b" in row
        # Each hostile job in the detail view: title, view bar, settings.
        table = app.screen.query_one(JobsTable)
        for job_id, shown in (("j1", UNCLOSED), ("j2", CLICK), ("j3", BOLD), ("j4", "shot_040")):
            table.move_cursor_to_key(job_id)
            await pilot.press("enter")
            await wait_for(pilot, partial(watching, app, job_id), what=f"{job_id} watched")
            await pilot.pause()
            title = str(app.screen.query_one("#detail-title", Static).render())
            assert title.startswith(shown)
            text = screen_text(app)
            assert no_raw_escape(text)
            assert text.count(shown) >= 2  # the title and the view bar
            if job_id == "j1":
                assert r"[i]eve\x07" in text
            await pilot.press("t", "t")  # the settings tab: the scene path
            await pilot.pause()
            scene = ESCAPES_SHOWN if job_id == "j4" else shown
            assert f"/proj/{scene}.blend" in screen_text(app)
            await pilot.press("t", "t", "1")  # Events, Frames, back to the jobs


async def test_cancel_dialog_of_a_markup_name_shows_it_and_cancels(hostile: ScriptedLeader) -> None:
    app = make_app(hostile)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("c")  # j1, "[/oops]", is under the cursor
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause()
        text = screen_text(app)
        assert f"{UNCLOSED}  (j1)" in text
        await pilot.press("y")
        await wait_for(pilot, lambda: hostile.count(RunJobAction) == 1)
        sent = hostile.last(RunJobAction)
        assert isinstance(sent, RunJobAction)
        assert (sent.action, sent.job_ids) == ("cancel", ["j1"])
        await wait_for(pilot, lambda: app.state.jobs["j1"].state == "cancelled")
        assert isinstance(app.screen, MainScreen)


async def test_every_hostile_name_in_one_dialog(hostile: ScriptedLeader) -> None:
    app = make_app(hostile)
    async with app.run_test(size=(100, 30)) as pilot:
        await synced(pilot, app)
        await pilot.press("ctrl+a", "delete")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause()
        listed = str(app.screen.query_one("#confirm-items", Static).render()).splitlines()
        assert listed == [
            f" • {UNCLOSED}  (j1)",
            f" • {CLICK}  (j2)",
            f" • {BOLD}  (j3)",
            " • shot_040_anim  (j4)",
            " • turntable  (j5)",
        ]
        assert no_raw_escape(screen_text(app))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        assert hostile.count(RunJobAction) == 0


async def test_a_chunk_dialog_names_the_job_literally(hostile: ScriptedLeader) -> None:
    app = make_app(hostile)
    async with app.run_test(size=(100, 30)) as pilot:
        await synced(pilot, app)  # j1, "[/oops]", is watched
        await pilot.press("enter", "t", "k", "d")  # set chunk 1 done: asks first
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause()
        assert f"Set done 1 chunk of {UNCLOSED}?" in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))


async def test_clicking_a_click_markup_name_does_not_quit(hostile: ScriptedLeader) -> None:
    app = make_app(hostile)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("down", "c")  # j2, "[@click=app.quit]click me[/]"
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.pause()
        names = app.screen.query_one("#confirm-items", Static)
        assert CLICK in str(names.render())
        # All along the name: where "click me" is shown, and where it would be
        # shown had the markup been read (from the name's first column on).
        start = str(names.render()).find(CLICK)
        # Every third column: "click me" (8 wide) is hit at least twice wherever it is.
        for x in range(max(0, start), min(names.size.width, start + len(CLICK) + 1), 3):
            await pilot.click(names, offset=(x, 0))
        await pilot.pause()
        assert app.return_code is None
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
        # The same name as the detail title and the view bar's title.
        await pilot.press("enter")
        await wait_for(pilot, partial(watching, app, "j2"), what="j2 watched")
        await pilot.pause()
        for selector in ("#detail-title", "#viewbar"):
            widget = app.screen.query_one(selector)
            start = str(widget.render()).find(CLICK)
            assert start >= 0, f"{selector} does not show the name as written"
            for x in range(start, min(widget.size.width, start + len(CLICK) + 1), 3):
                await pilot.click(widget, offset=(x, 0))
        await pilot.pause()
        assert app.return_code is None
        assert hostile.count(RunJobAction) == 0


async def test_context_menu_title_is_the_literal_name(hostile: ScriptedLeader) -> None:
    app = make_app(hostile)
    async with app.run_test(size=(80, 24)) as pilot:
        await synced(pilot, app)
        await pilot.press("m")  # j1's menu
        await wait_for(pilot, lambda: isinstance(app.screen, ContextMenu))
        await pilot.pause()
        assert UNCLOSED in screen_text(app)
        assert str(app.screen.query_one(OptionList).border_title) == r"\[/oops]"
        await pilot.press("escape")


async def test_nodes_logs_events_and_toasts_are_plain(hostile: ScriptedLeader) -> None:
    app = make_app(hostile)
    async with app.run_test(size=(120, 30), notifications=True) as pilot:
        await synced(pilot, app)
        # Nodes: the name, and the peer-log picker that lists it.
        await pilot.press("4")
        await pilot.pause()
        text = screen_text(app)
        assert NODE_SHOWN in text
        assert no_raw_escape(text)
        nodes = app.screen.query_one(NodesPanel)
        nodes.move_cursor_to_key(NODE)
        await pilot.press("l")
        panel = app.screen.query_one(LogsPanel)
        await wait_for(pilot, lambda: r"[b]not bold[/b]	end" in panel.peer_lines())
        assert r"\x1b[31mred agent line\x1b[0m" in panel.peer_lines()
        text = screen_text(app)
        assert NODE_SHOWN in text  # the node picker
        assert r"\x1b[31mred agent line\x1b[0m" in text
        assert "[b]not bold[/b]" in text
        assert no_raw_escape(text)
        # Task output of a chunk of j1.
        panel.pick_chunk(3)  # rendering on node-a
        await wait_for(pilot, lambda: output_line("j1", 3, 1, 2) in panel.task_lines())
        hostile.output("j1", 3, 1, ["Fra:1 \x1b[1mbold\x1b[0m [red]x[/red]"])
        await wait_for(pilot, lambda: panel.task_lines()[-1].startswith("Fra:1"))
        assert panel.task_lines()[-1] == r"Fra:1 \x1b[1mbold\x1b[0m [red]x[/red]"
        assert no_raw_escape(screen_text(app))
        # The monitor log: an event from the leader with markup and escapes in it.
        hostile.event("error", f"{UNCLOSED} \x1b]0;owned\x07", actor="[b]x")
        await pilot.press("3")
        panel.show_source("monitor")
        await wait_for(
            pilot, lambda: any(r"[/oops] \x1b]0;owned\x07" in x for x in panel.monitor_lines())
        )
        assert any("[[b]x]" in line for line in panel.monitor_lines())
        # Toasts: whatever a caller passes, it is plain text.
        app.notify(f"{UNCLOSED} {CLICK}\x1b[2J", title=BOLD, severity="error")
        await wait_for(pilot, lambda: app.screen.query(Toast))
        await pilot.pause()
        (toast,) = app.screen.query(Toast)
        assert str(toast.render()) == f"{BOLD}\n{UNCLOSED} {CLICK}\\x1b[2J"
        assert no_raw_escape(screen_text(app))
        # The connection banner: the link's error text.
        banner = app.screen.query_one(ConnectionBanner)
        banner.show_lost(2, f"{UNCLOSED} \x1b[2J", None)
        await pilot.pause()
        assert rf"{UNCLOSED} \x1b[2J" in str(banner.render())
        assert no_raw_escape(screen_text(app))
        assert app.return_code is None


async def test_edit_settings_dialog_of_a_markup_name_opens(hostile: ScriptedLeader) -> None:
    from farmtui.console.screens.edit_settings import EditSettingsScreen

    app = make_app(hostile)
    async with app.run_test(size=(100, 30)) as pilot:
        await synced(pilot, app)  # j1, "[/oops]", is watched
        await pilot.press("enter", "e")
        await wait_for(pilot, lambda: isinstance(app.screen, EditSettingsScreen))
        await pilot.pause()
        assert f"Settings of {UNCLOSED}" in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MainScreen))
