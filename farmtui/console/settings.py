"""The console's own settings, from ``$XDG_CONFIG_HOME/farmtui/console.toml``.

::

    [notify]
    bell = true          # ring the terminal bell when a job fails or finishes
    toast = true         # and show a toast
    on = ["failed", "done"]

    [filters]            # saved job-list filters (F), written by the console
    "alice's failures" = "state:failed owner:alice"

    [link]
    connect_timeout = 5  # seconds to wait for a leader to answer before trying again

Missing file or keys: these defaults. The console writes only the
``[filters]`` table (``save_filter``, ``delete_filter``) and leaves the rest
of the file as the user wrote it. Pure: no textual.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from farmtui.printable import CONTROL_CHARACTERS

try:
    import fcntl
except ImportError:  # Windows: saves from two consoles at once are not serialised there
    fcntl = None  # type: ignore[assignment]

NOTIFY_STATES = ("failed", "done", "cancelled")
FILTER_NAME_MAX = 40
# More than a wrangler can scan in the F list (which grew slow to open at thousands).
FILTERS_MAX = 200
FILTERS_TABLE = "filters"


class SettingsError(ValueError):
    """console.toml cannot be changed (unreadable, not TOML, or a bad name); says why."""


@dataclass
class NotifySettings:
    """When a watched-for job state is reached: ring the bell, show a toast, or neither."""

    bell: bool = True
    toast: bool = True
    on: frozenset[str] = field(default_factory=lambda: frozenset({"failed", "done"}))


# A leader that accepts the connection and says nothing is given up on after this.
CONNECT_TIMEOUT = 5.0
CONNECT_TIMEOUT_RANGE = (0.5, 120.0)


@dataclass
class LinkSettings:
    """The link to the leader: ``connect_timeout`` bounds opening it (seconds)."""

    connect_timeout: float = CONNECT_TIMEOUT


@dataclass
class ConsoleSettings:
    """``filters``: saved job-list filters, name -> filter text, in the order saved.

    ``path``: the file they were read from and saved filters go to; None keeps
    saved filters for this run only (tests that hand the console its settings).
    """

    notify: NotifySettings = field(default_factory=NotifySettings)
    filters: dict[str, str] = field(default_factory=dict)
    link: LinkSettings = field(default_factory=LinkSettings)
    path: Path | None = field(default=None, compare=False)


def settings_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "farmtui" / "console.toml"


def load_settings(path: Path | None = None) -> tuple[ConsoleSettings, list[str]]:
    """Read the settings file; returns the settings and the problems to show the user."""
    path = path or settings_path()
    settings = ConsoleSettings(path=path)
    if not path.exists():
        return settings, []
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        return settings, [f"{path}: {exc}"]
    problems = _read_notify(path, data.get("notify", {}), settings.notify)
    problems += _read_link(path, data.get("link", {}), settings.link)
    filters, filter_problems = _read_filters(path, data.get(FILTERS_TABLE, {}))
    settings.filters = filters
    return settings, problems + filter_problems


def _read_notify(path: Path, notify: object, settings: NotifySettings) -> list[str]:
    if not isinstance(notify, dict):
        return [f"{path}: [notify] must be a table"]
    problems: list[str] = []
    for key in ("bell", "toast"):
        if key in notify:
            if isinstance(notify[key], bool):
                setattr(settings, key, notify[key])
            else:
                problems.append(f"{path}: notify.{key} must be true or false")
    if "on" in notify:
        states = notify["on"]
        if isinstance(states, list) and all(s in NOTIFY_STATES for s in states):
            settings.on = frozenset(states)
        else:
            problems.append(f"{path}: notify.on must be a list of {', '.join(NOTIFY_STATES)}")
    unknown = set(notify) - {"bell", "toast", "on"}
    problems += [f"{path}: unknown setting notify.{key}" for key in sorted(unknown)]
    return problems


def _read_link(path: Path, link: object, settings: LinkSettings) -> list[str]:
    if not isinstance(link, dict):
        return [f"{path}: [link] must be a table"]
    problems: list[str] = []
    if "connect_timeout" in link:
        value = link["connect_timeout"]
        low, high = CONNECT_TIMEOUT_RANGE
        if isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high:
            settings.connect_timeout = float(value)
        else:
            problems.append(
                f"{path}: link.connect_timeout must be a number of seconds from {low:g} to {high:g}"
            )
    unknown = sorted(set(link) - {"connect_timeout"})
    problems += [f"{path}: unknown setting link.{key}" for key in unknown]
    return problems


def _read_filters(path: Path, table: object) -> tuple[dict[str, str], list[str]]:
    if not isinstance(table, dict):
        return {}, [f'{path}: [filters] must be a table of name = "filter"']
    filters: dict[str, str] = {}
    problems: list[str] = []
    for name, text in table.items():
        problem = filter_name_problem(name)
        if len(filters) == FILTERS_MAX:
            problems.append(f"{path}: only the first {FILTERS_MAX} saved filters are used")
            break
        if problem is not None:
            problems.append(f"{path}: filters: {problem}")
        elif not isinstance(text, str):
            problems.append(f"{path}: filters.{name} must be a filter string")
        else:
            filters[name] = text
    return filters, problems


_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def filter_name_problem(name: str) -> str | None:
    """Why ``name`` cannot name a saved filter, or None."""
    if not name.strip():
        return "a saved filter needs a name"
    if len(name) > FILTER_NAME_MAX:
        return f"a filter name has at most {FILTER_NAME_MAX} characters"
    if _CONTROL.search(name):
        return "a filter name cannot hold control characters"
    return None


# -- writing the [filters] table ---------------------------------------------------------


def save_filter(path: Path, name: str, text: str) -> dict[str, str]:
    """Save ``text`` as filter ``name`` (replacing one of that name); returns every filter.

    Read afresh from the file, so filters saved meanwhile by another console stay.
    """
    problem = filter_name_problem(name)
    if problem is not None:
        raise SettingsError(problem)
    with _locked(path):
        old, data = _read_for_writing(path)
        table = _table_for_writing(path, data)
        usable, _ = _read_filters(path, table)
        if name.strip() not in usable and len(usable) >= FILTERS_MAX:
            raise SettingsError(f"at most {FILTERS_MAX} saved filters: delete one first (F, d)")
        table[name.strip()] = text
        _write_filters(path, old, data, table)
    return _read_filters(path, table)[0]


def delete_filter(path: Path, name: str) -> dict[str, str]:
    """Forget the saved filter ``name``; returns the filters left."""
    with _locked(path):
        old, data = _read_for_writing(path)
        table = _table_for_writing(path, data)
        if table.pop(name, None) is not None:
            _write_filters(path, old, data, table)
    return _read_filters(path, table)[0]


def _table_for_writing(path: Path, data: dict[str, object]) -> dict[str, str]:
    """Every entry of the ``[filters]`` table, those the console does not use too
    (past ``FILTERS_MAX``, odd names): a rewrite keeps them. One that is not a
    string cannot be written back as it was, so nothing is written."""
    table = data.get(FILTERS_TABLE, {})
    if not isinstance(table, dict):
        raise SettingsError(f'{path}: [{FILTERS_TABLE}] must be a table of name = "filter"')
    odd = [name for name, text in table.items() if not isinstance(text, str)]
    if odd:
        raise SettingsError(
            f"{path}: filters.{odd[0]} is not a filter string; fix it first (nothing was saved)"
        )
    return dict(table)


def saved_filters(path: Path) -> dict[str, str]:
    """The filters saved in the file now (another console may have saved some meanwhile)."""
    return _read_filters(path, _read_for_writing(path)[1].get(FILTERS_TABLE, {}))[0]


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One console at a time reads, changes and writes the file (an advisory lock beside it)."""
    target = path.resolve()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(target.with_name(target.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise SettingsError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        if fcntl is not None:
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield
    finally:
        os.close(lock)


def _read_for_writing(path: Path) -> tuple[str, dict[str, object]]:
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        data = tomllib.loads(text)
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        # Never overwrite a file the user is half-way through editing.
        raise SettingsError(f"{path} is not valid TOML ({exc}); fix it first") from None
    return text, data


_TABLE_HEADER = re.compile(r"^\s*\[")
_FILTERS_HEADER = re.compile(rf"^\s*\[\s*{FILTERS_TABLE}\s*\]\s*(#.*)?$")


def _filter_entry(line: str) -> tuple[str, str] | None:
    """``name = "filter"`` on one line (a comment after it allowed), else None."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    try:
        parsed = tomllib.loads(line)
    except tomllib.TOMLDecodeError:
        return None  # part of something longer: kept, and judged by the read-back
    if len(parsed) == 1:
        ((name, text),) = parsed.items()
        if isinstance(text, str):
            return name, text
    return None


def _edited_lines(old: str, filters: dict[str, str]) -> list[str]:
    """The file's lines with its ``[filters]`` table edited in place.

    An entry still saved with the same text keeps its line as written (its
    comment too); a deleted or changed one loses it; new and changed entries
    follow the table's last entry; comments and blank lines stay where they
    are. A file without the table gets it at its end.
    """
    out: list[str] = []
    table: list[str] | None = None  # the lines of the [filters] table being read
    kept: set[str] = set()
    found = False
    header_at = 0

    def close_table() -> None:
        nonlocal table
        assert table is not None
        blank_tail: list[str] = []
        while table and not table[-1].strip():
            blank_tail.insert(0, table.pop())
        table += [_entry_line(name, text) for name, text in filters.items() if name not in kept]
        kept.update(filters)
        if any(line.strip() for line in table):
            out.extend(table + blank_tail)
        else:  # nothing left in it: no empty table either
            del out[header_at:]
            while out and not out[-1].strip():
                out.pop()
            if blank_tail and out:
                out.append("")
        table = None

    for line in old.splitlines():
        if _FILTERS_HEADER.match(line):
            if table is not None:
                close_table()
            found = True
            header_at = len(out)
            out.append(line)
            table = []
            continue
        if table is not None and _TABLE_HEADER.match(line):
            close_table()
        if table is None:
            out.append(line)
            continue
        entry = _filter_entry(line)
        if entry is None:
            table.append(line)
        elif filters.get(entry[0]) == entry[1] and entry[0] not in kept:
            table.append(line)
            kept.add(entry[0])
    if table is not None:
        close_table()
    if filters and not found:
        while out and not out[-1].strip():
            out.pop()
        if out:
            out.append("")
        out.append(f"[{FILTERS_TABLE}]")
        out += [_entry_line(name, text) for name, text in filters.items()]
    return out


def _entry_line(name: str, text: str) -> str:
    return f"{toml_string(name)} = {toml_string(text)}"


def _write_filters(path: Path, old: str, data: dict[str, object], filters: dict[str, str]) -> None:
    """Edit the ``[filters]`` table in place, keeping every other line of the file as it was.

    The new text is read back before it is written: a file that holds its
    filters another way (dotted keys, an inline table, a multi-line string
    that looks like a header) is refused rather than broken.
    """
    kept = _edited_lines(old, filters)
    new = "\n".join(kept) + "\n" if kept else ""
    try:
        written = tomllib.loads(new)
    except tomllib.TOMLDecodeError:
        written = None
    others = {key: value for key, value in data.items() if key != FILTERS_TABLE}
    if (
        written is None
        or {key: value for key, value in written.items() if key != FILTERS_TABLE} != others
        or written.get(FILTERS_TABLE, {}) != filters
    ):
        raise SettingsError(
            f"{path} holds its filters in a way the console cannot edit (keep them as "
            f'name = "filter" lines under a plain [{FILTERS_TABLE}] header); nothing was saved'
        )
    # Through a symbolic link (a dotfiles repository), the file it points to is replaced.
    target = path.resolve()
    tmp: str | None = None
    try:
        handle, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(new)
        with contextlib.suppress(FileNotFoundError):
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))
        os.replace(tmp, target)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise SettingsError(f"cannot write {path}: {exc.strerror or exc}") from None


def toml_string(value: str) -> str:
    """``value`` as a TOML basic string (quotes, backslashes and controls escaped)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + _CONTROL.sub(lambda m: f"\\u{ord(m.group()):04x}", escaped) + '"'
