"""The connection banner (top, only when the leader is unreachable) and the status line.

Nothing on screen is stale without saying so: while the link is down the
banner says "leader unreachable — reconnecting (attempt N)" and the status line
says since when the data is stale.

The leader's address, the link's error, the user's name and the filter text
are shown as plain ``Content`` with control characters escaped, never as markup
(an IPv6 address in brackets is not a style tag).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.content import Content
from textual.widgets import Static

from farmtui.console import fmt
from farmtui.printable import printable

if TYPE_CHECKING:
    from farmtui.console.operator import Waiting


class ConnectionBanner(Static):
    """Red line across the top while the link to the leader is down."""

    DEFAULT_CSS = """
    ConnectionBanner {
        height: 1; padding: 0 1;
        background: $error; color: $text; text-style: bold;
        display: none;
    }
    """

    def show_lost(
        self, attempt: int, error: str, stale_since: float | None, refused: bool = False
    ) -> None:
        """``refused``: the leader answered and said no (a token, a certificate)."""
        since = f" · stale since {fmt.clock(stale_since)}" if stale_since else ""
        reason = f" · {error}" if error else ""
        what = "the leader refused this console" if refused else "leader unreachable"
        self.update(
            fmt.plain_content(f"⚠ {what} — reconnecting (attempt {attempt}){reason}{since}")
        )
        self.tooltip = fmt.plain_content(error, multiline=True) if error else None
        self.display = True

    def show_connecting(self, url: str) -> None:
        self.update(fmt.plain_content(f"connecting to {url} …"))
        self.display = True

    def show_resyncing(self) -> None:
        self.update("↻ connected — resyncing from the leader…")
        self.display = True

    def hide(self) -> None:
        self.display = False


class StatusBar(Static):
    """One line: connection, user and role, counts, grouping, filter, the priority hint."""

    DEFAULT_CSS = """
    StatusBar { height: 1; padding: 0 1; background: $panel; color: $text-muted; }
    """

    def show(
        self,
        *,
        leader: str,
        live: bool,
        stale_since: float | None,
        user: str,
        role: str,
        jobs: int,
        shown: int,
        selected: int,
        group_by: str,
        text_filter: str,
        archived: bool,
        sort: str = "",
        hide_finished: bool = False,
        waiting: Waiting | None = None,
    ) -> None:
        parts: list[Content | str] = []
        if live:
            parts.append(Content.styled("● live", "$success"))
        else:
            since = fmt.clock(stale_since) if stale_since else "start"
            parts.append(Content.styled(f"○ stale since {since}", "bold $error"))
        if waiting is not None:
            requests = "request" if waiting.count == 1 else "requests"
            unanswered = f" · {waiting.count} {requests} unanswered {fmt.duration(waiting.oldest)}"
            parts.append(Content.styled(unanswered, "bold $warning"))
        # Before the leader said who this is (a token it refused, a link not up yet), no
        # role is shown: "?(viewer)" claimed one it never granted.
        who = f"{user}({role})" if role else user
        parts.append(printable(f" {who}@{leader} · "))
        parts.append(f"{shown}/{jobs} jobs" if shown != jobs else f"{jobs} jobs")
        if selected:
            parts.append(f" · {selected} sel")
        if group_by != "none":
            parts.append(f" · by {group_by}")
        if text_filter:
            parts.append(printable(f" · /{text_filter}"))
        if sort:
            parts.append(f" · sort {sort}")
        if hide_finished:
            parts.append(" · −finished")
        if archived:
            parts.append(" · +archived")
        parts.append(" · Pri↑ lower=sooner")
        self.update(Content.assemble(*parts))


class ViewBar(Static):
    """The view switcher: 1 Jobs · 2 Detail · 3 Logs · 4 Nodes · 5 Fails (clickable)."""

    DEFAULT_CSS = """
    ViewBar { height: 1; background: $panel; padding: 0 1; }
    """

    VIEWS = (
        ("jobs", "1", "Jobs"),
        ("detail", "2", "Detail"),
        ("logs", "3", "Logs"),
        ("nodes", "4", "Nodes"),
        ("failures", "5", "Fails"),
    )

    def show(self, current: str, title: str) -> None:
        parts: list[Content | str] = []
        for view, key, label in self.VIEWS:
            style = "reverse bold" if view == current else "$text-muted"
            parts.append(
                Content.from_markup(
                    f"[@click=screen.view('{view}')][{style}] $key $label [/][/]",
                    key=key,
                    label=label,
                )
            )
            parts.append(" ")
        parts.append(Content.styled(printable(f" {title}"), "bold"))
        self.update(Content.assemble(*parts))
