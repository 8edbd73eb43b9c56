"""Progress parsing per renderer: one line of output in, what it tells us out.

Each adapter reads the renderer's own log format: the frame it is on, how
far into that frame it is, and files it reports as written. The agent uses
these for live progress and to notice frames early; whether a frame exists
is always decided from the files themselves.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """What one output line says. Every field may be missing."""

    # Frame number the renderer is working on (or has just finished).
    frame: int | None = None
    # How far into the current frame, 0..1.
    frame_fraction: float | None = None
    # Frames of the chunk finished so far, for renderers that count (ffmpeg, Nuke).
    done_count: int | None = None
    # A file the renderer says it wrote.
    saved: str | None = None


class Adapter:
    """The generic renderer: no progress lines; frames are known from files appearing."""

    name: ClassVar[str] = "generic"

    def __init__(self, frames: Sequence[int]) -> None:
        self.frames = list(frames)

    def parse(self, line: str) -> ProgressEvent | None:
        return None

    def frame_at(self, count: int) -> int | None:
        """The chunk's ``count``-th frame (1-based), for renderers that count frames."""
        if count < 1 or not self.frames:
            return None
        return self.frames[min(count, len(self.frames)) - 1]


class BlenderAdapter(Adapter):
    """``Fra:12 Mem:... | Sample 3/16`` and ``Saved: '/out/frame_0012.png'``."""

    name = "blender"
    _FRA = re.compile(r"^Fra:(-?\d+)\b")
    _SAMPLE = re.compile(r"\|\s*(?:Sample|Path Tracing Sample)\s+(\d+)/(\d+)")
    _SAVED = re.compile(r"^Saved:\s+'(.+)'")

    def parse(self, line: str) -> ProgressEvent | None:
        if saved := self._SAVED.match(line):
            return ProgressEvent(saved=saved.group(1))
        if fra := self._FRA.match(line):
            fraction = None
            if sample := self._SAMPLE.search(line):
                done, total = int(sample.group(1)), int(sample.group(2))
                fraction = done / total if total else None
            return ProgressEvent(frame=int(fra.group(1)), frame_fraction=fraction)
        return None


class DemoAdapter(Adapter):
    """``demo: frame 7 (1/4)`` and ``Saved: /out/frame_0007.png``."""

    name = "demo"
    _FRAME = re.compile(r"^demo: frame (-?\d+) \((\d+)/(\d+)\)")
    _SAVED = re.compile(r"^Saved: (.+)$")

    def parse(self, line: str) -> ProgressEvent | None:
        if saved := self._SAVED.match(line):
            return ProgressEvent(saved=saved.group(1).strip())
        if frame := self._FRAME.match(line):
            return ProgressEvent(frame=int(frame.group(1)), done_count=int(frame.group(2)) - 1)
        return None


class FfmpegAdapter(Adapter):
    """``frame=   12 fps=...``: a count of frames written so far."""

    name = "ffmpeg"
    _FRAME = re.compile(r"^frame=\s*(\d+)\b")

    def parse(self, line: str) -> ProgressEvent | None:
        if match := self._FRAME.match(line.strip()):
            count = int(match.group(1))
            return ProgressEvent(frame=self.frame_at(count), done_count=count)
        return None


class AerenderAdapter(Adapter):
    """``PROGRESS:  0;00;00;06 (7): 2 Seconds``: frame 7 rendered."""

    name = "aerender"
    _FRAME = re.compile(r"^PROGRESS:\s+\S+\s+\((-?\d+)\):\s+\d+\s+Seconds?")

    def parse(self, line: str) -> ProgressEvent | None:
        if match := self._FRAME.match(line):
            frame = int(match.group(1))
            done = self.frames.index(frame) + 1 if frame in self.frames else None
            return ProgressEvent(frame=frame, done_count=done)
        return None


class NukeAdapter(Adapter):
    """``Writing /out/comp.0007.exr took 1.52 seconds`` then ``Frame 7 (3 of 10)``."""

    name = "nuke"
    _WRITING = re.compile(r"^Writing (.+?) took [\d.]+ seconds")
    _FRAME = re.compile(r"^Frame (-?\d+) \((\d+) of (\d+)\)")

    def parse(self, line: str) -> ProgressEvent | None:
        if match := self._WRITING.match(line):
            return ProgressEvent(saved=match.group(1))
        if match := self._FRAME.match(line):
            return ProgressEvent(frame=int(match.group(1)), done_count=int(match.group(2)))
        return None


class HoudiniAdapter(Adapter):
    """hrender/ROP verbose ``Rendering frame 7``, Mantra/Karma ``ALF_PROGRESS 45%``."""

    name = "houdini"
    _FRAME = re.compile(r"Rendering frame (-?\d+)", re.IGNORECASE)
    _ALF = re.compile(r"ALF_PROGRESS\s+(\d+)%")
    _IMAGE = re.compile(r"Generating Image:\s+(\S+)")

    def parse(self, line: str) -> ProgressEvent | None:
        if match := self._ALF.search(line):
            return ProgressEvent(frame_fraction=int(match.group(1)) / 100)
        if match := self._IMAGE.search(line):
            return ProgressEvent(saved=match.group(1))
        if match := self._FRAME.search(line):
            return ProgressEvent(frame=int(match.group(1)), frame_fraction=0.0)
        return None


class MayaAdapter(Adapter):
    """Maya ``Render``: ``Rendering frame 7``, ``45% done`` (Arnold),
    ``Percentage of rendering done: 45`` (software) and ``Finished Rendering <file>.``."""

    name = "maya"
    _FRAME = re.compile(r"Rendering frame (-?\d+)", re.IGNORECASE)
    _ARNOLD = re.compile(r"\|\s+(\d+)% done")
    _SOFTWARE = re.compile(r"Percentage of rendering done:\s+(\d+)")
    _FINISHED = re.compile(r"Finished Rendering (.+?)\.?\s*$")

    def parse(self, line: str) -> ProgressEvent | None:
        if match := self._FINISHED.search(line):
            return ProgressEvent(saved=match.group(1))
        if match := self._ARNOLD.search(line) or self._SOFTWARE.search(line):
            return ProgressEvent(frame_fraction=int(match.group(1)) / 100)
        if match := self._FRAME.search(line):
            return ProgressEvent(frame=int(match.group(1)), frame_fraction=0.0)
        return None


ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls
    for cls in (
        Adapter,
        BlenderAdapter,
        DemoAdapter,
        FfmpegAdapter,
        AerenderAdapter,
        NukeAdapter,
        HoudiniAdapter,
        MayaAdapter,
    )
}


def adapter_for(renderer: str, frames: Sequence[int]) -> Adapter:
    """The adapter for a renderer's name; unknown names get the generic one."""
    return ADAPTERS.get(renderer.lower(), Adapter)(frames)
