"""The built-in demo renderer: writes real PNG frames with nothing but the stdlib.

A new user sees the farm work with no DCC installed, and the tests get a
renderer whose failures can be ordered on the command line::

    farm demo-render --frames 1,2,3 --output out/frame_####.png
    python -m farmtui.demo_render --frames 1,2,3 --output out/frame_####.png

Demo jobs run it as ``farm demo-render``, found on the node's PATH like any
renderer, rather than through the submitting machine's interpreter path,
which a node with another Python does not have.

It prints ``demo: frame 7 (1/4)`` when it starts a frame and ``Saved: <path>``
when the file is written, like Blender does. ``--fail-on`` exits 1 at those
frames, ``--skip-write`` exits 0 without writing them, ``--hang`` never exits.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
import zlib
from pathlib import Path

from farmtui.frames import FrameListError, OutputPatternError, frame_path, parse_frames

WIDTH, HEIGHT = 64, 36


def _chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def png_bytes(frame: int, width: int = WIDTH, height: int = HEIGHT) -> bytes:
    """An RGB gradient whose colours shift with the frame number, as a PNG file."""
    shift = (frame * 37) % 256
    rows = bytearray()
    for y in range(height):
        rows.append(0)  # filter type: none
        for x in range(width):
            rows += bytes(
                (
                    (x * 255 // max(width - 1, 1) + shift) % 256,
                    (y * 255 // max(height - 1, 1)) % 256,
                    (shift * 3) % 256,
                )
            )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(bytes(rows), 6))
        + _chunk(b"IEND", b"")
    )


def _frames(text: str) -> set[int]:
    return set(parse_frames(text)) if text else set()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The demo renderer's flags, for ``python -m farmtui.demo_render`` and ``farm demo-render``."""
    parser.add_argument("--frames", required=True, help="frame list, e.g. 1-10 or 1,2,3")
    parser.add_argument("--output", required=True, help="output pattern, '#' marks padding")
    parser.add_argument("--seconds-per-frame", type=float, default=0.2)
    parser.add_argument("--fail-on", default="", help="exit 1 when reaching these frames")
    parser.add_argument("--skip-write", default="", help="exit 0 without writing these frames")
    parser.add_argument("--hang", action="store_true", help="never exit")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="farmtui.demo_render", description=__doc__)
    add_arguments(parser)
    return render(parser.parse_args(argv))


def render(args: argparse.Namespace) -> int:
    """Render the frames ``args`` name (parsed by :func:`add_arguments`'s flags)."""
    try:
        frames = parse_frames(args.frames)
        fail_on, skip = _frames(args.fail_on), _frames(args.skip_write)
    except FrameListError as exc:
        print(f"demo: {exc}", file=sys.stderr)
        return 2
    print(f"demo: rendering {len(frames)} frame(s) to {args.output}", flush=True)
    if args.hang:
        while True:
            time.sleep(3600)
    for number, frame in enumerate(frames, start=1):
        print(f"demo: frame {frame} ({number}/{len(frames)})", flush=True)
        time.sleep(args.seconds_per_frame)
        if frame in fail_on:
            print(f"demo: error: frame {frame} failed (--fail-on)", file=sys.stderr, flush=True)
            return 1
        if frame in skip:
            print(f"demo: frame {frame} not written (--skip-write)", flush=True)
            continue
        try:
            path = Path(frame_path(args.output, frame))
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(png_bytes(frame))
            partial.replace(path)  # never a half-written frame under the final name
        except OutputPatternError as exc:
            print(f"demo: error: {exc}", file=sys.stderr, flush=True)
            return 2
        except OSError as exc:
            why = exc.strerror or type(exc).__name__
            print(f"demo: error: cannot write frame {frame}: {why}", file=sys.stderr, flush=True)
            return 1
        print(f"Saved: {path}", flush=True)
    print("demo: done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
