"""The command palette's entries: every action of the main screen, by name.

Built from the same tables as the keys (``actions.py``) and calling the same
screen methods, so the palette and the keys cannot drift apart.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from farmtui.console.actions import CHUNK_ACTIONS, JOB_ACTIONS, MOVES, RunChunks
from farmtui.console.commands import Command

if TYPE_CHECKING:
    from farmtui.console.screens.main import MainScreen


def palette_commands(screen: MainScreen) -> list[Command]:
    """Every action of ``screen``, as (name, callback, help) for the palette."""
    commands: list[Command] = [
        (f"Jobs: {spec.label}", partial(screen.action_job_action, spec.action), spec.description)
        for spec in JOB_ACTIONS
    ]
    commands += [
        (
            f"Jobs: Move {where} in its priority group",
            partial(screen.action_move, where),
            "Reorder within the group",
        )
        for where in MOVES
    ]
    commands += [
        ("Jobs: Filter…", screen.action_filter, "state:failed owner:alice words"),
        ("Jobs: Saved filters…", screen.action_saved_filters, "F · apply or delete one"),
        ("Jobs: Save filter as…", screen.action_save_filter, "ctrl+s in the filter field"),
        ("Jobs: Sort by the next column", screen.action_cycle_sort, "s"),
        ("Jobs: Hide or show finished jobs", screen.action_toggle_finished, "H"),
        ("Jobs: Cycle grouping (none / priority / state)", screen.action_cycle_group, "g"),
        ("Jobs: Show or hide archived jobs", screen.action_toggle_archived, "A"),
        ("Jobs: Select all", screen.jobs.action_select_all, "ctrl+a"),
        ("Jobs: Clear selection", screen.jobs.action_clear_selection, "esc"),
        (
            "Job: Edit settings…",
            screen.action_edit_settings,
            "Timeouts, retries, tags, machine limit",
        ),
        ("Job: Set priority…", screen.action_set_priority, "P · admins only; lower renders sooner"),
    ]
    commands += [
        (
            f"Chunks: {spec.label}",
            partial(_chunk_action, screen, RunChunks(spec.action)),
            f"k {spec.key} · {spec.description}",
        )
        for spec in CHUNK_ACTIONS
    ]
    commands += [
        ("Frames: Heat map by render time", _heat_map(screen), "T in the frame grid"),
        ("View: Jobs", partial(screen.action_view, "jobs"), "1"),
        ("View: Detail", partial(screen.action_view, "detail"), "2"),
        ("View: Logs", partial(screen.action_view, "logs"), "3"),
        ("View: Nodes", partial(screen.action_view, "nodes"), "4"),
        ("View: Keys of this view", screen.action_help, "?"),
        ("Logs: Monitor log", partial(screen.show_logs, "monitor"), "The console's events"),
        ("Logs: A peer's agent log", partial(screen.show_logs, "peer"), "Refreshed every 3 s"),
        ("Logs: Task output", partial(screen.show_logs, "task"), "Pick a chunk"),
        ("Nodes: Enable or disable the selected node", screen.toggle_node, "d · admins only"),
        (
            "Notifications: bell and toasts for finished jobs on/off",
            screen.action_toggle_notifications,
            "console.toml [notify] sets the default",
        ),
    ]
    return commands


def _chunk_action(screen: MainScreen, command: RunChunks) -> None:
    """The chunks picked in the chunk table (or under its cursor)."""
    screen.run_chunks(command, [int(key) for key in screen.detail.chunks.targets()])


def _heat_map(screen: MainScreen) -> partial[None]:
    def toggle() -> None:
        screen.action_view("detail")
        screen.detail.show_tab("tab-frames")
        screen.detail.grid.action_toggle_heat()

    return partial(toggle)
