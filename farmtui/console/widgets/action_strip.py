"""The bulk action strip: shown while jobs are selected, one clickable label per action.

Each label shows its keyboard shortcut (as remapped by the keymap) and runs the
screen's ``job_action`` when clicked, exactly like the key.
"""

from __future__ import annotations

from textual.content import Content
from textual.widgets import Static

from farmtui.console.actions import JOB_ACTIONS
from farmtui.console.confirmations import JOB_ACTION_COSTS


class ActionStrip(Static):
    """See the module docstring."""

    DEFAULT_CSS = """
    ActionStrip { height: auto; padding: 0 1; background: $boost; }
    """

    def show(self, count: int, keys: dict[str, str]) -> None:
        """Show the strip for ``count`` selected jobs (hide it for none)."""
        self.display = count > 0
        if not count:
            return
        parts: list[Content | str] = [Content.styled(f"{count} selected:", "bold"), " "]
        for spec in JOB_ACTIONS:
            key = keys.get(spec.binding_id, "")
            # The actions that ask first, stating their cost, stand out.
            style = "$error" if spec.action in JOB_ACTION_COSTS else "$text-accent"
            parts.append(
                Content.from_markup(
                    f"[@click=screen.job_action('{spec.action}')][{style}]$key[/] $label[/]",
                    key=key,
                    label=spec.label,
                )
            )
            parts.append("  ")
        self.update(Content.assemble(*parts))
