"""A form for the job settings that can change after submission (sent as ``PatchJob``)."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select

from farmtui.console import fmt
from farmtui.protocol import JobPatch, JobView, Timeouts

ON_TIMEOUT = ("error", "requeue", "notify", "fail", "complete")


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


class EditSettingsScreen(ModalScreen[JobPatch | None]):
    """See the module docstring. Returns the patch, or None when cancelled."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="edit.cancel"),
        Binding("ctrl+s", "save", "Save", id="edit.save"),
    ]

    def __init__(self, job: JobView) -> None:
        super().__init__()
        self.job = job

    def compose(self) -> ComposeResult:
        spec = self.job.spec
        t = spec.timeouts
        with Vertical(id="edit-dialog"):
            yield Label(f"Settings of {self.job.name}  (durations: 90, 90s, 5m, 1h30m)")
            with Grid(id="edit-grid"):
                yield Label("Retries")
                yield Input(
                    _seconds(spec.retries),
                    id="edit-retries",
                    type="integer",
                    placeholder="leader default",
                )
                yield Label("Max running")
                yield Input(str(spec.max_running), id="edit-max-running", type="integer")
                yield Label("Tags")
                yield Input(",".join(spec.tags), id="edit-tags", placeholder="a,b")
                yield Label("Min render")
                yield Input(_seconds(t.min_render), id="edit-min-render")
                yield Label("Max render")
                yield Input(_seconds(t.max_render), id="edit-max-render")
                yield Label("Max start")
                yield Input(_seconds(t.max_start), id="edit-max-start")
                yield Label("On timeout")
                yield Select(
                    [(name, name) for name in ON_TIMEOUT],
                    value=t.on_timeout,
                    allow_blank=False,
                    id="edit-on-timeout",
                    compact=True,
                )
            with Horizontal(id="edit-buttons"):
                yield Button("Save (ctrl+s)", variant="primary", id="edit-save")
                yield Button("Cancel (esc)", id="edit-cancel")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "edit-save":
            self.action_save()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_save(self) -> None:
        try:
            patch = self.patch()
        except ValueError as exc:
            self.notify(str(exc), severity="error")
            return
        self.dismiss(patch)

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def patch(self) -> JobPatch:
        """The form as a ``JobPatch`` (ValueError on bad input)."""
        old = self.job.spec.timeouts
        on_timeout = self.query_one("#edit-on-timeout", Select).value
        timeouts = Timeouts(
            min_render=fmt.parse_duration(self._value("edit-min-render")),
            max_render=fmt.parse_duration(self._value("edit-max-render")),
            max_start=fmt.parse_duration(self._value("edit-max-start")),
            per_frame=old.per_frame,
            on_timeout=on_timeout if isinstance(on_timeout, str) else old.on_timeout,  # type: ignore[arg-type]
            auto=old.auto,
            auto_min_chunks=old.auto_min_chunks,
            auto_min_percent=old.auto_min_percent,
            auto_multiplier=old.auto_multiplier,
            script_timeout=old.script_timeout,
        )
        retries = self._value("edit-retries")
        tags = [tag.strip() for tag in self._value("edit-tags").split(",") if tag.strip()]
        return JobPatch(
            retries=int(retries) if retries else None,
            max_running=int(self._value("edit-max-running") or 0),
            tags=tags,
            timeouts=timeouts,
        )
