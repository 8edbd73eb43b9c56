"""Key bindings of the main screen, and the user's remapping of them.

Every binding has an id (``jobs.pause``, ``view.logs`` ...). A user overrides
keys in ``$XDG_CONFIG_HOME/farmtui/keys.toml`` (``~/.config/farmtui/keys.toml``)::

    [keys]
    "jobs.pause" = "P"
    "jobs.move_up" = "ctrl+k,ctrl+up"

and the app hands that table to Textual's ``App.set_keymap``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

from textual.binding import Binding, BindingType

from farmtui.console.actions import JOB_ACTIONS


def screen_bindings() -> list[BindingType]:
    """The main screen's bindings: job actions, moves, views, filter, grouping.

    These mean the same in every view, whatever has the focus: a job action
    always acts on the selected jobs (or the one under the jobs table's cursor),
    and chunk actions are reached only through ``k`` (chunk action mode).
    """
    bindings: list[BindingType] = [
        Binding(
            spec.key,
            f"job_action('{spec.action}')",
            spec.label,
            id=spec.binding_id,
            tooltip=spec.description,
        )
        for spec in JOB_ACTIONS
    ]
    bindings += [
        Binding(
            "ctrl+up,left_square_bracket", "move('up')", "Move up", id="jobs.move_up", show=False
        ),
        Binding(
            "ctrl+down,right_square_bracket",
            "move('down')",
            "Move down",
            id="jobs.move_down",
            show=False,
        ),
        Binding(
            "ctrl+home,left_curly_bracket",
            "move('top')",
            "Move to top",
            id="jobs.move_top",
            show=False,
        ),
        Binding(
            "ctrl+end,right_curly_bracket",
            "move('bottom')",
            "Move to bottom",
            id="jobs.move_bottom",
            show=False,
        ),
        Binding(
            "slash",
            "filter",
            "Filter",
            id="jobs.filter",
            tooltip="words, state:failed, owner:alice, pri:<50",
        ),
        Binding(
            "F",
            "saved_filters",
            "Saved filters",
            id="jobs.saved_filters",
            tooltip="apply, save (n) or delete (d) a named filter",
        ),
        Binding("s", "cycle_sort", "Sort", id="jobs.sort", tooltip="cycle the sort column"),
        Binding("H", "toggle_finished", "Hide finished", id="jobs.hide_finished"),
        Binding("g", "cycle_group", "Group", id="jobs.group", tooltip="none, priority, state"),
        Binding("A", "toggle_archived", "Archived", id="jobs.archived"),
        Binding(
            "P",
            "set_priority",
            "Set priority",
            id="jobs.priority",
            tooltip="type a number, Enter applies once (admins)",
        ),
        Binding("e", "edit_settings", "Edit settings", id="jobs.edit"),
        Binding(
            "k",
            "chunk_mode",
            "Chunk action…",
            id="chunks.mode",
            tooltip="then r retry, h hold, F set failed, d set done, e exclude",
        ),
        Binding("question_mark", "help", "Keys", id="help.show"),
        Binding("1", "view('jobs')", "Jobs", id="view.jobs", show=False),
        Binding("2", "view('detail')", "Detail", id="view.detail", show=False),
        Binding("3", "view('logs')", "Logs", id="view.logs", show=False),
        Binding("4", "view('nodes')", "Nodes", id="view.nodes", show=False),
        Binding("5", "view('failures')", "Failures", id="view.failures", show=False),
        Binding("escape", "escape", "Back", id="view.back", show=False),
    ]
    return bindings


def known_binding_ids() -> set[str]:
    """Every binding id a keys.toml may name."""
    from farmtui.console.screens.chunk_mode import ChunkActionMode
    from farmtui.console.screens.confirm import ConfirmScreen
    from farmtui.console.screens.context_menu import ContextMenu
    from farmtui.console.screens.edit_settings import EditSettingsScreen
    from farmtui.console.screens.help import HelpScreen
    from farmtui.console.screens.priority_prompt import PriorityPrompt
    from farmtui.console.screens.saved_filters import SavedFiltersScreen, SaveFilterPrompt
    from farmtui.console.screens.unblock import UnblockScreen
    from farmtui.console.widgets.chunk_table import ChunkTable
    from farmtui.console.widgets.failures_panel import FailuresTable
    from farmtui.console.widgets.filter_input import FilterInput
    from farmtui.console.widgets.frame_grid import FrameGrid
    from farmtui.console.widgets.job_detail import JobDetailPanel
    from farmtui.console.widgets.line_table import LineTable
    from farmtui.console.widgets.logs_panel import LogsPanel
    from farmtui.console.widgets.nodes_panel import NodesPanel
    from farmtui.console.widgets.task_output import TaskOutputPane

    ids: set[str] = set()
    for bindings in (
        screen_bindings(),
        LineTable.BINDINGS,
        ChunkTable.BINDINGS,
        FrameGrid.BINDINGS,
        NodesPanel.BINDINGS,
        ChunkActionMode.BINDINGS,
        PriorityPrompt.BINDINGS,
        HelpScreen.BINDINGS,
        ConfirmScreen.BINDINGS,
        ContextMenu.BINDINGS,
        EditSettingsScreen.BINDINGS,
        JobDetailPanel.BINDINGS,
        TaskOutputPane.BINDINGS,
        FailuresTable.BINDINGS,
        LogsPanel.BINDINGS,
        UnblockScreen.BINDINGS,
        SavedFiltersScreen.BINDINGS,
        SaveFilterPrompt.BINDINGS,
        FilterInput.BINDINGS,
    ):
        ids |= {b.id for b in bindings if isinstance(b, Binding) and b.id}
    return ids


def config_path() -> Path:
    """Where keys.toml lives, honouring ``XDG_CONFIG_HOME``."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "farmtui" / "keys.toml"


def load_keymap(path: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """Read the user's keymap; returns (binding id -> keys, problems to show the user)."""
    path = path or config_path()
    if not path.exists():
        return {}, []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return {}, [f"{path}: {exc}"]
    table = data.get("keys", data)
    if not isinstance(table, dict):
        return {}, [f"{path}: [keys] must be a table of binding id = key"]
    known = known_binding_ids()
    keymap: dict[str, str] = {}
    problems: list[str] = []
    for binding_id, keys in table.items():
        if not isinstance(keys, str) or not keys.strip():
            problems.append(f'{path}: {binding_id} must be a key string like "ctrl+p"')
        elif binding_id not in known:
            problems.append(f"{path}: unknown binding id {binding_id!r}")
        else:
            keymap[binding_id] = keys.strip()
    return keymap, problems
