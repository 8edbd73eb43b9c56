"""Path mapping: the paths of a job as a node of another operating system sees them.

Rules come from ``leader.toml`` (``[[path_map]]``), in order::

    [[path_map]]
    from = "/mnt/projects"
    to.windows = "P:\\\\projects"
    to.darwin = "/Volumes/projects"

The leader maps an assignment when it builds it for a node (``map_assignment``,
called from ``server.assignments``): the scene, every argv token that holds a
path (the whole token, or the value of ``--flag=PATH``), the pre/post-job
command and the environment's values. For each path the rule with the longest
source that matches wins; a source matches only at a path-component boundary
(``/mnt/proj`` never matches ``/mnt/projects``); the rest of the path keeps its
spelling, with its separators converted to the node's (``\\`` on Windows, ``/``
elsewhere). A path no rule matches is left as it is; so is a rule with no
target for the node's OS. The output folder and pattern are relative to the
sync root, which each agent names in its own form, so they need no rule; the
working folder is the attempt's own folder on the node.

Matching compares with ``/`` and ``\\`` alike; ``case_sensitive`` (default:
false for a Windows source, ``C:\\...`` or ``\\\\server\\share``, true otherwise)
says whether letter case counts.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from typing import get_args

import msgspec

from farmtui.protocol import AssignChunk, OsName, platform_os

OS_NAMES: tuple[OsName, ...] = get_args(OsName)

_DRIVE = re.compile(r"[A-Za-z]:[\\/]")
_DRIVE_ROOT = re.compile(r"[A-Za-z]:/")
# ``{scene}`` and the escapes the agent's ``expand`` reads (farmtui.renderers).
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


class PathMapError(ValueError):
    """A ``[[path_map]]`` rule that cannot be used; the message names the rule."""


class PathRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """One ``[[path_map]]`` table: a source prefix and its form on each OS."""

    source: str = msgspec.field(name="from")
    # OS name ("linux", "windows", "darwin") -> the prefix a node of that OS uses.
    to: dict[str, str] = msgspec.field(default_factory=dict)
    # None: false for a Windows source, true otherwise.
    case_sensitive: bool | None = None


class PathMapView(msgspec.Struct, kw_only=True):
    """``GET /api/pathmap``: what a node of ``os`` sees for ``path``."""

    path: str
    os: OsName
    mapped: str
    # The 1-based number of the rule that matched, and its source; 0 and "" when none did.
    rule: int = 0
    source: str = ""


def node_os(reported: str) -> OsName:
    """The OS a node's paths are mapped for: what it said, or the leader's own (old agents)."""
    for name in OS_NAMES:
        if reported == name:
            return name
    return platform_os(sys.platform)


def is_windows_path(path: str) -> bool:
    """``C:\\...`` / ``C:/...`` or a UNC path ``\\\\server\\share``."""
    return bool(_DRIVE.match(path)) or path.startswith(("\\\\", "//"))


def _absolute(path: str, windows: bool) -> bool:
    return is_windows_path(path) if windows else path.startswith("/")


def _norm(path: str) -> str:
    """Separators as ``/``, no trailing one except on a root (``/``, ``C:/``)."""
    text = path.replace("\\", "/")
    while len(text) > 1 and text.endswith("/") and not _DRIVE_ROOT.fullmatch(text):
        text = text[:-1]
    return text


def _case_sensitive(rule: PathRule) -> bool:
    if rule.case_sensitive is not None:
        return rule.case_sensitive
    return not is_windows_path(rule.source)


def _describe(number: int, rule: PathRule) -> str:
    return f"path_map rule {number} (from {rule.source!r})"


def check_rules(rules: Sequence[PathRule]) -> None:
    """PathMapError naming the first unusable rule (one line), else nothing."""
    seen: dict[str, int] = {}
    for number, rule in enumerate(rules, 1):
        where = _describe(number, rule)
        if not rule.source.strip():
            raise PathMapError(f"path_map rule {number}: from must not be empty")
        if not (is_windows_path(rule.source) or rule.source.startswith("/")):
            raise PathMapError(
                f"{where}: from must be an absolute path (/..., C:\\... or \\\\server\\share)"
            )
        if not rule.to:
            raise PathMapError(f"{where}: no target; add to.linux, to.windows or to.darwin")
        for name, target in rule.to.items():
            if name not in OS_NAMES:
                raise PathMapError(
                    f"{where}: unknown OS {name!r} in to (known: {', '.join(OS_NAMES)})"
                )
            if not target.strip():
                raise PathMapError(f"{where}: to.{name} must not be empty")
            if not _absolute(target, name == "windows"):
                form = "C:\\... or \\\\server\\share" if name == "windows" else "/..."
                raise PathMapError(f"{where}: to.{name} {target!r} must be absolute ({form})")
        key = _norm(rule.source)
        if not _case_sensitive(rule):
            key = key.lower()
        if key in seen:
            raise PathMapError(f"{where}: the same source as rule {seen[key]}")
        seen[key] = number


def resolve(
    path: str, rules: Sequence[PathRule], os_name: OsName, *, template: bool = False
) -> tuple[str, int]:
    """``path`` as a node of ``os_name`` sees it, and the 1-based rule used (0: none).

    ``template``: ``path`` is an argv token, which the agent expands
    (``{outdir}``, ``{{`` for a brace): the rule's target goes in with its braces
    escaped, so a folder named ``{shots}`` stays a folder, not a token.
    """
    if not rules or not path:
        return path, 0
    text = path.replace("\\", "/")
    best: tuple[int, int, str] | None = None  # (source length, rule number, rest)
    for number, rule in enumerate(rules, 1):
        if os_name not in rule.to:
            continue
        source = _norm(rule.source)
        if best is not None and len(source) <= best[0]:
            continue  # longest source wins; on a tie, the earlier rule
        head = text[: len(source)]
        same = head == source if _case_sensitive(rule) else head.lower() == source.lower()
        if not same:
            continue
        rest = text[len(source) :]
        if rest and not source.endswith("/"):
            if not rest.startswith("/"):
                continue  # /mnt/proj must not match /mnt/projects
            rest = rest[1:]
        best = (len(source), number, rest)
    if best is None:
        return path, 0
    _, number, rest = best
    sep = "\\" if os_name == "windows" else "/"
    target = _norm(rules[number - 1].to[os_name]).replace("/", sep)
    if not target.endswith(sep) and (rest or len(text) != best[0]):
        target += sep
    if template:
        target = target.replace("{", "{{").replace("}", "}}")
    return target + rest.replace("/", sep), number


def map_path(path: str, rules: Sequence[PathRule], os_name: OsName) -> str:
    """``path`` as a node of ``os_name`` sees it (unchanged when no rule matches)."""
    return resolve(path, rules, os_name)[0]


def map_token(
    token: str, rules: Sequence[PathRule], os_name: OsName, *, template: bool = False
) -> str:
    """An argv token (``template``) or env value: a path as a whole, or after ``--flag=``."""
    mapped, number = resolve(token, rules, os_name, template=template)
    if number:
        return mapped
    key, equals, value = token.partition("=")
    if equals and value:
        mapped, number = resolve(value, rules, os_name, template=template)
        if number:
            return f"{key}={mapped}"
    return token


def _put_scene(argv: list[str], scene: str) -> list[str]:
    """``{scene}`` filled in now, every other token and escape left for the agent."""
    escaped = scene.replace("{", "{{").replace("}", "}}")

    def substitute(match: re.Match[str]) -> str:
        return escaped if match.group(1) == "scene" else match.group(0)

    return [_TOKEN.sub(substitute, arg) for arg in argv]


def map_assignment(
    message: AssignChunk, rules: Sequence[PathRule], reported_os: str
) -> AssignChunk:
    """The assignment with its paths in the form the node's OS reads (see the module doc)."""
    if not rules:
        return message
    os_name = node_os(reported_os)
    argv = [map_token(arg, rules, os_name, template=True) for arg in message.argv]
    env = {name: map_token(value, rules, os_name) for name, value in message.env.items()}
    scene = message.scene
    mapped_scene = map_path(scene, rules, os_name) if scene else scene
    if mapped_scene != scene:
        # The agent reads ``scene`` as a POSIX path in its sync root; a mapped
        # scene is already the node's own absolute path, so it goes into the
        # command here and the agent is given it only when it can read it.
        argv = _put_scene(argv, mapped_scene)
        scene = mapped_scene if mapped_scene.startswith("/") else ""
    if argv == message.argv and env == message.env and scene == message.scene:
        return message
    return msgspec.structs.replace(message, argv=argv, env=env, scene=scene)


def view(path: str, rules: Sequence[PathRule], os_name: OsName) -> PathMapView:
    mapped, number = resolve(path, rules, os_name)
    source = rules[number - 1].source if number else ""
    return PathMapView(path=path, os=os_name, mapped=mapped, rule=number, source=source)
