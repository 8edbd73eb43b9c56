"""The console's own settings, from ``$XDG_CONFIG_HOME/farmtui/console.toml``.

::

    [notify]
    bell = true          # ring the terminal bell when a job fails or finishes
    toast = true         # and show a toast
    on = ["failed", "done"]

Missing file or keys: these defaults. Pure: no textual.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

NOTIFY_STATES = ("failed", "done", "cancelled")


@dataclass
class NotifySettings:
    """When a watched-for job state is reached: ring the bell, show a toast, or neither."""

    bell: bool = True
    toast: bool = True
    on: frozenset[str] = field(default_factory=lambda: frozenset({"failed", "done"}))


@dataclass
class ConsoleSettings:
    notify: NotifySettings = field(default_factory=NotifySettings)


def settings_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "farmtui" / "console.toml"


def load_settings(path: Path | None = None) -> tuple[ConsoleSettings, list[str]]:
    """Read the settings file; returns the settings and the problems to show the user."""
    path = path or settings_path()
    settings = ConsoleSettings()
    if not path.exists():
        return settings, []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return settings, [f"{path}: {exc}"]
    problems: list[str] = []
    notify = data.get("notify", {})
    if not isinstance(notify, dict):
        return settings, [f"{path}: [notify] must be a table"]
    for key in ("bell", "toast"):
        if key in notify:
            if isinstance(notify[key], bool):
                setattr(settings.notify, key, notify[key])
            else:
                problems.append(f"{path}: notify.{key} must be true or false")
    if "on" in notify:
        states = notify["on"]
        if isinstance(states, list) and all(s in NOTIFY_STATES for s in states):
            settings.notify.on = frozenset(states)
        else:
            problems.append(f"{path}: notify.on must be a list of {', '.join(NOTIFY_STATES)}")
    unknown = set(notify) - {"bell", "toast", "on"}
    problems += [f"{path}: unknown setting notify.{key}" for key in sorted(unknown)]
    return settings, problems
