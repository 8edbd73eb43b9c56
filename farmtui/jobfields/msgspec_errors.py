"""msgspec's validation errors as one line that names the setting the user typed.

``explain`` turns ``Expected `int` >= 1 - at `$.chunk``` into ``chunk: 0 is out of
range (>= 1)``, quoting the limits from the Struct itself; ``revalidate`` checks a
Struct built in Python against its own limits, with the same words.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterator
from typing import TypeVar

import msgspec
import msgspec.inspect

from farmtui.jobfields.errors import FieldPath, JobFieldError, UnknownKey
from farmtui.jobfields.table import _BY_PATH

_AT = re.compile(
    r"^(?P<problem>.*?)(?: - at `key` in `\$(?P<keyof>[^`]*)`| - at `\$(?P<at>[^`]*)`)?$"
)
_UNKNOWN = re.compile(r"Object contains unknown field `(?P<name>[^`]*)`")
_BOUND = re.compile(r"Expected `(?P<type>\w+)` (?P<op>>=|<=|>|<) (?P<limit>\S+)$")
_LENGTH = re.compile(r"Expected `(?P<type>\w+)` of length (?P<op>>=|<=) (?P<limit>\d+)$")
_TYPE = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`$")
_ENUM = re.compile(r"Invalid enum value (?P<value>.*)$")
_WANT = {
    "int": "must be a whole number",
    "float": "must be a number",
    "bool": "must be true or false",
    "str": "must be text",
    "array": "must be a list",
    "object": "must be a table",
}


def _split_path(text: str) -> FieldPath:
    """msgspec's ``.timeouts.max_render`` or ``.argv[1]`` -> ``("timeouts", "max_render")``."""
    return tuple(part for part in re.sub(r"\[[^\]]*\]", "", text).split(".") if part)


def _type_at(kind: type[msgspec.Struct], path: FieldPath) -> msgspec.inspect.Type | None:
    """The msgspec type description of the field at ``path`` (None-less), or None."""
    info: msgspec.inspect.Type = msgspec.inspect.type_info(kind)
    for name in path:
        if isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        if not isinstance(info, msgspec.inspect.StructType):
            return None
        found = [f for f in info.fields if f.name == name]
        if not found:
            return None
        info = found[0].type
    if isinstance(info, msgspec.inspect.UnionType):
        info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
    return info


def _value_at(data: object, path: FieldPath) -> object:
    for name in path:
        if not isinstance(data, dict):
            return None
        data = data.get(name)
    return data


def _show(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _bounds(info: msgspec.inspect.Type | None) -> str:
    """``0-100``, ``>= 1``, ``> 0 and <= 100`` from the Struct's own limits."""
    if not isinstance(info, msgspec.inspect.IntType | msgspec.inspect.FloatType):
        return ""
    low = f">= {_show(info.ge)}" if info.ge is not None else None
    low = f"> {_show(info.gt)}" if info.gt is not None else low
    high = f"<= {_show(info.le)}" if info.le is not None else None
    high = f"< {_show(info.lt)}" if info.lt is not None else high
    if info.ge is not None and info.le is not None:
        return f"{_show(info.ge)}-{_show(info.le)}"
    return " and ".join(part for part in (low, high) if part)


def explain(
    exc: msgspec.ValidationError,
    data: object,
    kind: type[msgspec.Struct],
    label: Callable[[FieldPath], str] | None = None,
    *,
    split_nothing: bool = False,
) -> JobFieldError:
    """msgspec's ``Expected `int` >= 1 - at `$.chunk``` as ``chunk: 0 is out of range (>= 1)``.

    ``data`` is what was converted (to quote the value), ``kind`` the Struct (for its
    limits), ``label(path)`` how the user named the field (default: its JSON path).
    ``split_nothing``: ``data`` is a request's JSON, whose strings were not split into
    lists as the CLI and a job file split them (``--tags a,b``).
    """
    name_of = label or (lambda path: ".".join(path))
    match = _AT.match(str(exc))
    assert match is not None  # the pattern matches any line
    problem = match.group("problem")
    where = match.group("keyof") if match.group("keyof") is not None else match.group("at")
    path = _split_path(where or "")
    value = _value_at(data, path)
    info = _type_at(kind, path)
    known = _BY_PATH.get(path)
    rule = known.rule if known is not None else ""
    if unknown := _UNKNOWN.match(problem):
        path = (*path, unknown.group("name"))
        inner = _type_at(kind, path[:-1]) if len(path) > 1 else msgspec.inspect.type_info(kind)
        choices = (
            [f.name for f in inner.fields] if isinstance(inner, msgspec.inspect.StructType) else []
        )
        close = difflib.get_close_matches(path[-1], choices, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return UnknownKey(f"{'.'.join(path)}: unknown field{hint}", path)
    if match.group("keyof") is not None:
        text = rule or "has a key that is not allowed"
    elif bound := _BOUND.match(problem):
        limits = _bounds(info) or f"{bound.group('op')} {bound.group('limit')}"
        if value is None:  # the caller could not say what was sent
            text = f"must be {limits}"
        else:
            text = f"{_show(value)} is out of range ({limits})"
    elif length := _LENGTH.match(problem):
        limit = int(length.group("limit"))
        unit = "characters" if length.group("type") == "str" else "items"
        if length.group("op") == ">=":
            text = "must not be empty" if limit == 1 else f"must have at least {limit} {unit}"
        else:
            text = f"must have at most {limit} {unit}"
    elif "matching regex" in problem:
        # A NUL first: no rule of a field says why a program cannot be given one.
        nul = any("\x00" in text for text in _texts(value))
        text = "must not hold a NUL byte" if nul else rule or "has characters that are not allowed"
    elif typed := _TYPE.match(problem):
        want = typed.group("want").split(" | ")[0]
        text = rule or _WANT.get(want, f"must be {want}")
        if split_nothing and want == "array" and typed.group("got") == "str":
            text = "must be a list, not a string"  # a rule's "or a string" is not true here
        if want == "int" and isinstance(value, float):
            text = f"{_show(value)} is not a whole number"
    elif enum := _ENUM.match(problem):
        values = info.values if isinstance(info, msgspec.inspect.LiteralType) else ()
        text = f"{enum.group('value')} is not one of {', '.join(map(str, values))}"
    else:
        text = problem
    return JobFieldError(f"{name_of(path)}: {text}", path)


S = TypeVar("S", bound=msgspec.Struct)


def revalidate(value: S) -> S:
    """``value`` checked against its Struct's limits (a Struct built in Python is not)."""
    kind = type(value)
    data = msgspec.to_builtins(value)
    try:
        return msgspec.convert(data, kind)
    except msgspec.ValidationError as exc:
        raise explain(exc, data, kind) from None


def _texts(value: object) -> Iterator[str]:
    """Every string in ``value``: itself, its items, or its keys and values."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _texts(key)
            yield from _texts(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)
