"""The console app: wiring only. The monitor itself is ``screens/main.py``."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import ClassVar

from textual import events
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import CommandListItem, CommandPalette, SimpleProvider
from textual.notifications import SeverityLevel
from textual.screen import Screen
from textual.theme import ThemeProvider
from textual.widget import AwaitMount
from textual.widgets import Input

from farmtui.console.command_palette import DismissedOnce
from farmtui.console.commands import FarmCommands
from farmtui.console.confirmations import quit_farm_confirmation
from farmtui.console.keymap import load_keymap
from farmtui.console.link import Backoff, trust
from farmtui.console.merged_escape import merged_escape
from farmtui.console.screens.confirm import ConfirmScreen
from farmtui.console.screens.main import MainScreen
from farmtui.console.settings import ConsoleSettings, load_settings
from farmtui.console.state import ConsoleState
from farmtui.printable import printable


class FarmConsole(App[None]):
    """farmtui's operator console; talks to one leader over ``/ws/console``.

    ``local_farm``: this console was started by ``farm up``, whose leader and
    agents stop when it quits, so quitting asks first while chunks render.
    """

    CSS_PATH = "farm.tcss"
    TITLE = "farmtui"
    COMMANDS: ClassVar = App.COMMANDS | {FarmCommands}
    # Textual's own says "return to the command prompt": under ``farm up`` the farm stops
    # too, which the help screen (``?``) must say (break round 33c).
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "ctrl+q",
            "quit",
            "Quit",
            show=False,
            priority=True,
            tooltip="Quit the console; under farm up the farm stops with it (asks first while"
            " chunks render).",
        ),
    ]

    def __init__(
        self,
        leader: str,
        token: str,
        *,
        keymap_path: Path | None = None,
        clock: Callable[[], float] = time.time,
        backoff: Backoff | None = None,
        local_farm: bool = False,
        settings: ConsoleSettings | None = None,
        ca: str | None = None,
    ) -> None:
        """``settings``: the console's own settings; None reads ``console.toml``.

        ``ca``: a PEM file of the CA an https leader's certificate must come from
        (``--ca``); None trusts the system's CAs. A file that will not do raises
        ``farmtui.errors.ConfigError`` here, before the screen is taken over.
        """
        super().__init__()
        self.leader = leader
        self.token = token
        self.ssl_context = trust(ca)
        self.ca = ca
        self.keymap_path = keymap_path
        self.state = ConsoleState(clock=clock)
        self.backoff = backoff
        self.local_farm = local_farm
        self._asking_to_quit = False
        self._settings_problems: list[str] = []
        if settings is None:
            settings, self._settings_problems = load_settings()
        self.settings = settings

    def action_command_palette(self) -> None:
        """Textual's palette, guarded against a second dismissal (``command_palette``)."""
        if self.use_command_palette and not isinstance(self.screen, CommandPalette):
            self.push_screen(DismissedOnce(id="--command-palette"))

    def search_commands(
        self, commands: Sequence[CommandListItem], placeholder: str = "Search for commands…"
    ) -> AwaitMount:
        """Textual's list of commands (the palette's "Keys", "Maximize" …), guarded too."""
        # A provider instance, as Textual's own search_commands passes (its hint says a class).
        provider = SimpleProvider(self.screen, list(commands))
        palette = DismissedOnce(providers=[provider], placeholder=placeholder)  # type: ignore[list-item]
        return self.push_screen(palette)

    def search_themes(self) -> None:
        """The palette's theme list: a second palette, guarded too (break round 27c)."""
        self.push_screen(DismissedOnce(providers=[ThemeProvider], placeholder="Search for themes…"))

    def get_default_screen(self) -> Screen[None]:
        return MainScreen(
            self.state,
            self.leader,
            self.token,
            backoff=self.backoff,
            settings=self.settings,
            ssl_context=self.ssl_context,
            ca=self.ca,
        )

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every toast is plain text, whatever the caller asked for.

        Toasts carry job names, node names and the leader's error messages;
        every widget's ``notify`` ends up here, so none of them can be read as
        markup or reach the terminal with control characters.
        """
        super().notify(
            printable(message, multiline=True),
            title=printable(title),
            severity=severity,
            timeout=timeout,
            markup=False,
        )

    def on_mount(self) -> None:
        keymap, problems = load_keymap(self.keymap_path)
        if keymap:
            self.set_keymap(keymap)
        for problem in problems:
            self.notify(problem, title="keys.toml", severity="warning", timeout=10)
        for problem in self._settings_problems:
            self.notify(problem, title="console.toml", severity="warning", timeout=10)

    async def on_event(self, event: events.Event) -> None:
        """An Escape the terminal merged with the next key (``merged_escape``) is that
        Escape: a dialog (a screen naming its Escape action in ``MERGED_ESCAPE``)
        closes as Escape closes it; elsewhere the key becomes an Escape. The key
        typed after it is dropped rather than guessed at: pressed again, it does
        what it says. (Textual gave it to the dialog's focused widget: an input
        typed it; a confirmation ignored it and stayed open for a later Enter.)
        """
        if isinstance(event, events.Key) and not event.is_forwarded and merged_escape(event):
            event.stop()
            action = getattr(self.screen, "MERGED_ESCAPE", None)
            if isinstance(action, str):
                await self.run_action(action, self.screen)
            else:
                await super().on_event(events.Key("escape", "\x1b"))
            return
        await super().on_event(event)

    def on_key(self, event: events.Key) -> None:
        """A printable key that bubbled up to the app while a text field has the focus
        was meant for that field: typed right after the key that opened it (``/``,
        fast, or queued over SSH), it went to the widget focused before, and the
        field's bindings then kept it from acting. It goes to the field, in order,
        rather than being lost (before the field took the focus at once, it acted
        on a job instead: ``/ a`` archived one)."""
        field = self.focused
        if isinstance(field, Input) and event.is_printable:
            event.stop()
            field.post_message(events.Key(event.key, event.character))

    async def action_quit(self) -> None:
        """Quit (ctrl+q); a ``local_farm`` console that is rendering asks first."""
        confirmation = quit_farm_confirmation(self.state.nodes.values())
        if not self.local_farm or confirmation is None:
            self.exit()
            return
        if self._asking_to_quit:
            return

        def answered(yes: bool | None) -> None:
            self._asking_to_quit = False
            if yes:
                self.exit()

        self._asking_to_quit = True
        self.push_screen(ConfirmScreen(confirmation), answered)


def run_console(leader: str, token: str, *, local_farm: bool = False, ca: str | None = None) -> int:
    """Run the console full-screen against ``leader`` (``http://host:port``) until quit:
    0 when quit, 1 when it stopped on an error (Textual has printed it).

    ``local_farm``: started by ``farm up``; ``ca``: the CA file of an https leader
    (``--ca``; see ``FarmConsole``).
    """
    app = FarmConsole(leader, token, local_farm=local_farm, ca=ca)
    app.run()
    return app.return_code or 0
