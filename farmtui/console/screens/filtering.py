"""The main screen's part for finding jobs: the filter field, saved filters, sort,
grouping, finished and archived jobs."""

from __future__ import annotations

from typing import assert_never

from textual import on
from textual.widgets import Input

from farmtui.console.job_list import SORT_COLUMN_KEY
from farmtui.console.screens.main_parts import ScreenParts
from farmtui.console.screens.saved_filters import (
    ApplyFilter,
    DeleteFilter,
    FilterChoice,
    SavedFiltersScreen,
    SaveFilterAs,
    SaveFilterPrompt,
)
from farmtui.console.settings import SettingsError
from farmtui.console.state import GROUP_CYCLE
from farmtui.protocol import ShowArchived


class Filtering(ScreenParts):
    """Part of ``MainScreen``; see ``farmtui.console.screens.main_parts``."""

    def action_filter(self) -> None:
        field = self.filter_field
        if self.view != "jobs" and self.has_class("-narrow"):
            self._set_view("jobs")
        field.display = True
        field.value = self.job_list.text_filter
        # At once, not through ``focus()`` (which waits its turn behind keys already
        # queued): ``/ a`` typed fast archived the job under the cursor.
        self.set_focus(field)

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        problem = self.job_list.set_filter(event.value)
        self.filter_field.set_class(problem is not None, "-invalid")
        self.filter_field.tooltip = problem
        if problem is None:
            self._show_rows()
            self._update_status()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        problem = self.job_list.set_filter(event.value)
        if problem is not None:
            self.notify(problem, title="Filter", severity="warning")
            return
        if not event.value:
            event.input.display = False
        self.jobs.focus()

    def apply_filter(self, text: str) -> str | None:
        """Filter the jobs table with ``text``, shown in the filter field; the problem, if any."""
        problem = self.job_list.set_filter(text)
        if problem is not None:
            return problem
        field = self.filter_field
        if self.view != "jobs" and self.has_class("-narrow"):
            self.action_view("jobs")
        field.display = bool(text)
        with field.prevent(Input.Changed):
            field.value = text
        field.set_class(False, "-invalid")
        self._show_rows()
        self._update_status()
        return None

    def action_saved_filters(self, highlight: int = 0) -> None:
        """``F``: the saved filters; apply, delete, or save the one in use."""

        def chosen(choice: FilterChoice | None) -> None:
            match choice:
                case None:
                    pass
                case ApplyFilter(name, text):
                    problem = self.apply_filter(text)
                    if problem is None:
                        shown = text if len(text) <= 100 else text[:99] + "…"
                        self.notify(f"Filter {name!r}: {shown}", timeout=3)
                    else:
                        self.notify(f"{name!r}: {problem}", title="Filter", severity="warning")
                case DeleteFilter(name):
                    index = [n for n, _ in self.saved_filters.items()].index(name)
                    try:
                        self.saved_filters.delete(name)
                    except SettingsError as exc:
                        self.notify(str(exc), title="console.toml", severity="error")
                        return
                    self.notify(f"Deleted the saved filter {name!r}", timeout=3)
                    self.action_saved_filters(index)
                case SaveFilterAs():
                    self.action_save_filter()
                case _:
                    assert_never(choice)

        self.saved_filters.refresh()
        self.app.push_screen(
            SavedFiltersScreen(self.saved_filters.items(), self._typed_filter(), highlight),
            chosen,
        )

    def _typed_filter(self) -> str:
        """The filter in use: what the field shows (while shown), else the one applied."""
        field = self.filter_field
        return (field.value if field.display else self.job_list.text_filter).strip()

    def action_save_filter(self) -> None:
        """Save the filter in use under a name (console.toml, kept across restarts)."""
        text = self._typed_filter()
        if not text:
            self.notify("Type a filter first (/), then save it", severity="warning")
            return
        problem = self.job_list.set_filter(text)
        if problem is not None:
            self.notify(problem, title="Filter", severity="warning")
            return
        names = [name for name, _ in self.saved_filters.items()]

        def named(name: str | None) -> None:
            if name is None:
                return
            try:
                replaced = self.saved_filters.save(name, text)
            except SettingsError as exc:
                self.notify(str(exc), title="console.toml", severity="error")
                return
            verb = "Replaced" if replaced else "Saved"
            self.notify(f"{verb} the filter {name!r} (F lists saved filters)", timeout=3)

        self.app.push_screen(SaveFilterPrompt(text, names), named)

    def action_cycle_sort(self) -> None:
        """Sort the jobs table by the next column (dispatch order, name, owner, state ...)."""
        sort = self.job_list.next_sort()
        self.jobs.set_sort_column(SORT_COLUMN_KEY[sort])
        self._show_rows()
        self._update_status()
        self.notify(
            "Sorted in dispatch order" if sort == "dispatch" else f"Sorted by {sort}", timeout=2
        )

    def action_toggle_finished(self) -> None:
        """Hide or show finished jobs (done, cancelled)."""
        self.job_list.hide_finished = not self.job_list.hide_finished
        self._show_rows()
        self._update_status()

    def action_cycle_group(self) -> None:
        """Group the jobs table: none -> by priority -> by state -> none."""
        listing = self.job_list
        listing.group_by = GROUP_CYCLE[listing.group_by]
        self._show_rows()
        self._update_status()
        self.notify(
            f"Grouped by {listing.group_by}" if listing.group_by != "none" else "Not grouped",
            timeout=2,
        )

    def action_toggle_archived(self) -> None:
        """Show or hide archived jobs (asks the leader to send them)."""
        listing = self.job_list
        listing.show_archived = not listing.show_archived
        self._send(ShowArchived(enabled=listing.show_archived), "")
        self._show_rows()
        self._update_status()
