"""Frame lists and output patterns, the VFX way.

Frame lists (``1-100``, ``1-100x5``, ``1,5,10-20``, ``100-1``, ``-10--1``) are
read exactly as fileseq, the industry's parser, reads them (the tests compare
the two), so farmtui reads them as other pipeline tools do, with one
restriction: frames and steps are whole numbers. fileseq also reads subframes
(``1.5``, ``1-10x0.5``); a renderer would be handed frame 1 for them, so they
are refused. The reading is farmtui's own, at C speed (``_items``). Output
patterns mark padding with ``#`` (``renders/shot/frame_####.png``).
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterable, Sequence
from itertools import chain, compress
from pathlib import PurePosixPath

from farmtui.path_limits import path_size_refusal
from farmtui.printable import has_control

# A job of more frames than this is almost certainly a typo (1-1000000000).
MAX_FRAMES = 1_000_000
# Frame numbers go this far either side of 0: a renderer takes them as 32-bit
# integers, and a 400-digit frame number is a typo.
MAX_FRAME_NUMBER = 999_999_999

_PADDING = re.compile(r"#+")
_SUBFRAME = re.compile(r"\d*\.\d*")
# Any one item of a frame list as fileseq reads it (whole numbers only): first frame,
# last frame, the step's form ('x' every Nth, 'y' all but every Nth, ':' staggered) and
# the step.
_ITEM = re.compile(r"(-?\d+)(?:-(-?\d+)(?:([:xy])(-?\d+))?)?")
_HINT = "expected e.g. 1-100, 1-100x5, 1,5,10-20, 100-1"


class FrameListError(ValueError):
    """A frame list that cannot be parsed, is empty or is too long."""


class OutputPatternError(ValueError):
    """An output pattern that is malformed or escapes the sync root."""


def parse_frames(text: str) -> list[int]:
    """Frames in the order written, duplicates dropped: ``"1-5x2,10"`` -> ``[1, 3, 5, 10]``."""
    spec = text.strip().replace(" ", "")
    if not spec:
        raise FrameListError("frame list is empty")
    if _SUBFRAME.search(spec) is not None:
        raise FrameListError(
            f"frame list {text!r} has a frame or step that is not a whole number "
            "(whole frames only)"
        )
    items = _items(spec, text)
    # Duplicates dropped, the first place kept, as fileseq does.
    frames = list(items[0]) if len(items) == 1 else list(dict.fromkeys(chain(*items)))
    if not frames:  # "1-1y1": all but every frame
        raise FrameListError(f"frame list {text!r} has no frames")
    return frames


def _items(spec: str, text: str) -> list[Sequence[int]]:
    """Each item's frames, read as fileseq reads it, checked before any is expanded.

    Each item's frames are counted from its numbers alone, so a list of
    billions of frames, or of numbers past any integer a renderer takes, is
    refused at once. Each item is expanded on its own, at C speed (``range``,
    slices of a ``bytearray``): fileseq read a list in time growing with the
    square of its items (a 29 kB list of 6,000 frames and one ``1-2y2``: 12 s of
    a leader thread), and walked each step of a stagger (``1-10:3``: every third
    frame, then every second, then the rest) in Python, for good with a step of
    twenty digits. A step longer than the span adds only the first frame, which
    the span's own step adds first as well, so it is read as the span.
    A test compares the frames and their order with fileseq's.
    """
    parsed: list[tuple[int, int, str | None, int]] = []
    total = 0
    for item in spec.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:  # also an empty item: "1,,2" is a typo
            raise FrameListError(f"malformed frame list {text!r} ({_HINT})")
        first, last, form, step_text = match.groups()
        a = int(first)
        b = a if last is None else int(last)
        if max(abs(a), abs(b)) > MAX_FRAME_NUMBER:
            raise FrameListError(
                f"frame list {text!r} has a frame beyond ±{MAX_FRAME_NUMBER:,} (frames are "
                "32-bit numbers to a renderer)"
            )
        step = 1 if step_text is None else int(step_text)
        if step == 0 or (step < 0 and b > a):  # fileseq's own refusals
            raise FrameListError(f"malformed frame list {text!r} ({_HINT})")
        step = abs(step)
        span = abs(b - a)
        if form == "x":
            total += span // step + 1
        elif form == "y":
            total += span + 1 - (span // step + 1)
        else:
            total += span + 1
        if total > MAX_FRAMES:
            # Counted before expanding: a frame named in two items counts twice.
            repeats = " (a frame named twice counts twice)" if parsed else ""
            raise FrameListError(
                f"frame list {text!r} has too many frames; the limit is {MAX_FRAMES}{repeats}"
            )
        parsed.append((a, b, form, step))
    return [_expand(*item) for item in parsed]


def _expand(a: int, b: int, form: str | None, step: int) -> Sequence[int]:
    """One item's frames, from ``a`` towards ``b`` (see ``_items``)."""
    way = 1 if b >= a else -1
    span = abs(b - a)
    if form is None:
        return range(a, b + way, way)
    if form == "x":
        return range(a, b + way, way * step)
    offsets = range(span + 1)
    kept: Iterable[int]
    if form == "y":  # all but every step-th
        skipped = bytearray(span + 1)
        skipped[::step] = b"\x01" * len(offsets[::step])
        kept = compress(offsets, skipped.translate(_NOT))
    else:  # ":": every step-th, then every (step - 1)-th not yet taken, down to every one
        seen = bytearray(span + 1)
        kept_runs: list[Iterable[int]] = []
        for stride in range(min(step, max(span, 1)), 0, -1):
            fresh = seen[::stride].translate(_NOT)
            kept_runs.append(list(compress(offsets[::stride], fresh)))
            seen[::stride] = b"\x01" * len(fresh)
        kept = chain.from_iterable(kept_runs)
    return [a + way * offset for offset in kept]


# bytes.translate table: 0 -> 1, anything else -> 0 (a mask of what is not yet marked).
_NOT = bytes([1] + [0] * 255)


def format_frames(frames: Sequence[int]) -> str:
    """The compact form of a frame list, as fileseq writes it: ``[1, 2, 3, 7]`` -> ``"1-3,7"``.

    Written here rather than read off fileseq (a test checks the two agree):
    importing fileseq is a fifth of a short ``farm`` command's start-up. Runs
    are taken greedily from the front; a run of step 1 is ``a-b``, a longer
    one of another step ``a-bxS``, and a pair of another step is two frames.
    """
    parts: list[str] = []
    at, count = 0, len(frames)
    while at < count:
        if at + 1 == count:
            parts.append(str(frames[at]))
            break
        step = frames[at + 1] - frames[at]
        end = at + 1
        while end + 1 < count and frames[end + 1] - frames[end] == step:
            end += 1
        if abs(step) == 1:
            parts.append(f"{frames[at]}-{frames[end]}")
        elif end - at >= 2:
            parts.append(f"{frames[at]}-{frames[end]}x{abs(step)}")
        else:
            parts.append(str(frames[at]))
            end = at
        at = end + 1
    return ",".join(parts)


def chunk_frames(frames: Sequence[int], size: int) -> list[list[int]]:
    """Split frames, in order, into chunks of at most ``size`` (see ``chunk_bounds``)."""
    bounds = chunk_bounds(frames, size)
    return [list(frames[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]


def chunk_bounds(frames: Sequence[int], size: int) -> array[int]:
    """Where each chunk starts in ``frames``, then where the last one ends.

    A chunk has at most ``size`` frames and never spans two evenly spaced runs
    of the list, so ``{start}-{end}x{step}`` always names exactly its frames:
    1,5,10-20 in chunks of 5 is 1,5 (x4), 10-14, 15-19, 20. Runs are taken
    greedily from the front.
    """
    if size < 1:
        raise FrameListError(f"chunk size must be at least 1, not {size}")
    bounds = array("q")
    total = len(frames)
    start = 0
    while start < total:
        end = start + 1
        if end < total:
            step = frames[end] - frames[start]
            while end < total and frames[end] - frames[end - 1] == step:
                end += 1
        bounds.extend(range(start, end, size))
        start = end
    bounds.append(total)
    return bounds


def check_output_pattern(pattern: str) -> PurePosixPath:
    """The pattern as a relative path inside the sync root, or OutputPatternError."""
    if not pattern or not pattern.strip():
        raise OutputPatternError("output pattern is empty")
    path = PurePosixPath(pattern)
    if path.is_absolute() or pattern.startswith("~"):
        raise OutputPatternError(f"output pattern {pattern!r} must be relative to the sync root")
    if any(part == ".." for part in path.parts):
        raise OutputPatternError(f"output pattern {pattern!r} escapes the sync root")
    if "\\" in pattern or "\x00" in pattern:
        raise OutputPatternError(f"output pattern {pattern!r} has a backslash or NUL")
    if has_control(pattern):  # a file name with an ESC or a newline in the shared root
        raise OutputPatternError(f"output pattern {pattern!r} has a control character")
    if (too_big := path_size_refusal(pattern, "output pattern")) is not None:
        raise OutputPatternError(too_big)
    padding = list(_PADDING.finditer(path.name))
    if not padding:
        raise OutputPatternError(
            f"output pattern {pattern!r} needs '#' padding in its file name (frame_####.png)"
        )
    # Its files' names as long as the widest frame number (-999999999) makes them.
    last = padding[-1]
    wide = "#" * max(len(last.group()), len(str(-MAX_FRAME_NUMBER)))
    name = path.name[: last.start()] + wide + path.name[last.end() :]
    what = f"output pattern's file name with a {len(wide)}-character frame number"
    if (too_big := path_size_refusal(name, what)) is not None:
        raise OutputPatternError(too_big)
    return path


def frame_path(pattern: str, frame: int) -> str:
    """Substitute a frame into the last run of ``#``: ``frame_####.png``, 7 -> ``frame_0007.png``.

    A negative frame's sign takes one place of the padding (``-007``), as
    Blender writes it.
    """
    matches = list(_PADDING.finditer(pattern))
    if not matches:
        raise OutputPatternError(f"output pattern {pattern!r} has no '#' padding")
    last = matches[-1]
    width = len(last.group())
    return pattern[: last.start()] + f"{frame:0{width}d}" + pattern[last.end() :]


def printf_pattern(pattern: str) -> str:
    """``frame_####.png`` -> ``frame_%04d.png`` for ffmpeg-style renderers."""
    matches = list(_PADDING.finditer(pattern))
    if not matches:
        return pattern
    last = matches[-1]
    return pattern[: last.start()] + f"%0{len(last.group())}d" + pattern[last.end() :]


# --- OpenJD range expressions ---------------------------------------------------------
#
# Two dialects of the same idea. farmtui's frame lists are fileseq's: ``1-100x5``
# steps by 5, ``1-100:5`` is a *stagger* (1,6,...,96, then 2,7,..., every frame
# once), ``y`` inverts a step, and the order written is the order rendered. Open
# Job Description's range expressions (``IntRangeExpr``) step with ``:`` --
# ``1-100:5`` is every 5th frame -- and name a *set*: ranges may not overlap, and a
# descending range needs a negative step (``10-1:-1``).

_OPENJD_ELEMENT = re.compile(r"(-?\d+)(?:-(-?\d+)(?::(-?\d+))?)?")


def openjd_range(frames: Sequence[int]) -> str:
    """The frames as an OpenJD range expression: ``[1, 6, 11]`` -> ``"1-11:5"``.

    The runs are written in the list's order (``100-1`` -> ``100-1:-1``) when they do
    not overlap; an interleaved list (``1-9x2,2-8x2``) is written as its sorted set,
    which is all an OpenJD range means.
    """
    if not frames:
        raise FrameListError("frame list is empty")
    runs = _runs(frames)
    spans = sorted((min(run[0], run[-1]), max(run[0], run[-1])) for run in runs)
    if len(set(frames)) != len(frames) or any(
        a_end >= b_start for (_, a_end), (b_start, _) in zip(spans, spans[1:], strict=False)
    ):
        runs = _runs(sorted(set(frames)))
    return ",".join(_openjd_run(run) for run in runs)


def _runs(frames: Sequence[int]) -> list[list[int]]:
    """Evenly spaced runs taken greedily from the front, as ``format_frames`` writes them."""
    runs: list[list[int]] = []
    at, count = 0, len(frames)
    while at < count:
        end = at + 1
        if end < count:
            step = frames[end] - frames[at]
            while end + 1 < count and frames[end + 1] - frames[end] == step:
                end += 1
            if step == 0 or (end - at < 2 and abs(step) != 1):
                end = at  # a pair of another step is two single frames
        runs.append(list(frames[at : end + 1]))
        at = end + 1
    return runs


def _openjd_run(run: list[int]) -> str:
    if len(run) == 1:
        return str(run[0])
    step = run[1] - run[0]
    if step == 1:
        return f"{run[0]}-{run[-1]}"
    return f"{run[0]}-{run[-1]}:{step}"


def frames_from_openjd(expr: str) -> str:
    """An OpenJD range expression as a farmtui (fileseq) frame list: ``"1-100:5"`` -> ``"1-100x5"``.

    Elements keep the order they are written in. Refused with FrameListError, as
    OpenJD refuses them: a malformed element, a zero step, a step against the
    range's direction (``10-1``, ``1-10:-1``), and overlapping ranges.
    """
    elements = expr.replace(" ", "").replace("\t", "").split(",")
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    for element in elements:
        match = _OPENJD_ELEMENT.fullmatch(element)
        if match is None:
            raise FrameListError(
                f"malformed OpenJD range expression {expr!r} (expected e.g. 1-100, 1-100:5, "
                "1,5,10-20, 100-1:-1)"
            )
        first, last, by = match.groups()
        start = int(first)
        end = start if last is None else int(last)
        step = 1 if by is None else int(by)
        if step == 0:
            raise FrameListError(f"OpenJD range {element!r} has a step of 0")
        if (end < start and step > 0) or (end > start and step < 0):
            raise FrameListError(
                f"OpenJD range {element!r} runs against its step "
                "(a descending range needs a negative step: 10-1:-1)"
            )
        frames = range(start, end + (1 if step > 0 else -1), step)
        spans.append((min(frames[0], frames[-1]), max(frames[0], frames[-1])))
        if len(frames) == 1:
            parts.append(str(start))
        elif abs(step) == 1:
            parts.append(f"{start}-{frames[-1]}")
        else:
            parts.append(f"{start}-{frames[-1]}x{abs(step)}")
    spans.sort()
    for (a_start, a_end), (b_start, b_end) in zip(spans, spans[1:], strict=False):
        if a_end >= b_start:
            raise FrameListError(
                f"OpenJD range expression {expr!r} has overlapping ranges "
                f"({a_start}-{a_end} and {b_start}-{b_end})"
            )
    text = ",".join(parts)
    parse_frames(text)  # farmtui's own limits: frame count, 32-bit frame numbers
    return text
