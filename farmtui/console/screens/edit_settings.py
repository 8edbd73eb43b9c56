"""A form for the job settings that can change after submission (sent as ``PatchJob``).

Its inputs are read with the same table of job fields as ``farm set``'s flags
(``farmtui.jobfields``), and the job's spec with the patch applied is checked by
the same ``check_patch`` the leader runs, so a bad value is refused here with the
leader's words, naming the input, before anything is sent.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static

from farmtui.console import fmt
from farmtui.jobfields import CLEAR, JobFieldError, check_patch, read, to_patch
from farmtui.printable import printable
from farmtui.protocol import JobPatch, JobView

ON_TIMEOUT = ("error", "requeue", "notify", "fail", "complete")
# Each input, by its job field key (farmtui.jobfields.FIELDS), and its label.
INPUTS = {
    "retries": ("edit-retries", "Retries"),
    "max-running": ("edit-max-running", "Max running"),
    "tags": ("edit-tags", "Tags"),
    "timeout-min": ("edit-min-render", "Min render"),
    "timeout-max": ("edit-max-render", "Max render"),
    "timeout-start": ("edit-max-start", "Max start"),
}
LABELS = {key: label for key, (_, label) in INPUTS.items()} | {"on-timeout": "On timeout"}


def _seconds(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


class EditSettingsScreen(ModalScreen[JobPatch | None]):
    """See the module docstring. Returns the patch, or None when cancelled."""

    MERGED_ESCAPE = "cancel"  # see farmtui.console.app.FarmConsole.on_event

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="edit.cancel"),
        Binding("ctrl+s", "save", "Save", id="edit.save"),
    ]

    def __init__(self, job: JobView, default_retries: int | None = None) -> None:
        super().__init__()
        self.job = job
        self.default_retries = default_retries  # the leader's, for a job without its own

    def compose(self) -> ComposeResult:
        spec = self.job.spec
        t = spec.timeouts
        with Vertical(id="edit-dialog"):
            yield Label(fmt.plain(f"Settings of {self.job.name}  (durations: 90, 90s, 5m, 1h30m)"))
            with Grid(id="edit-grid"):
                yield Label("Retries")
                yield Input(
                    _seconds(spec.retries),
                    id="edit-retries",
                    type="integer",
                    placeholder=fmt.leader_default(
                        None if self.default_retries is None else str(self.default_retries)
                    ),
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
            # What the form refuses, in the dialog: a toast at the bottom of 80x24 covered
            # the buttons, and several piled up (break round 33c).
            yield Static("", id="edit-refusal", markup=False)
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
        except JobFieldError as exc:
            self.refusal = str(exc)
            return
        self.dismiss(patch)

    @property
    def refusal(self) -> str:
        """What the form refuses now ("" for nothing), as the dialog shows it."""
        return str(self.query_one("#edit-refusal", Static).content)

    @refusal.setter
    def refusal(self, text: str) -> None:
        shown = self.query_one("#edit-refusal", Static)
        shown.update(printable(text))
        shown.display = bool(text)

    def _value(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def patch(self) -> JobPatch:
        """The form as a ``JobPatch``, checked on the job as the leader will (JobFieldError)."""
        raw: dict[str, object] = {key: self._value(widget) for key, (widget, _) in INPUTS.items()}
        raw["retries"] = raw["retries"] or None  # blank: as it is (the leader's default)
        raw["max-running"] = raw["max-running"] or "0"
        for key in ("timeout-min", "timeout-max", "timeout-start"):
            raw[key] = raw[key] or CLEAR  # blank: no limit
        on_timeout = self.query_one("#edit-on-timeout", Select).value
        raw["on-timeout"] = on_timeout if isinstance(on_timeout, str) else None
        given = read(raw, LABELS.__getitem__, clearable=True)
        try:
            patch = to_patch(given, self.job.spec.timeouts)
            check_patch(self.job.spec, patch)
        except JobFieldError as exc:
            raise JobFieldError(given.message(exc), exc.path) from None
        return patch
