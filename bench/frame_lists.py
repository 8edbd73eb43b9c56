"""Reading frame lists: farmtui's own reader against fileseq's, side by side.

Break rounds 27b and 27c found frame lists that fileseq (which farmtui used
to read any list beyond ``a-b`` and ``a-bxN``) took seconds, or forever, to
read: on a leader thread per submit, and again at every leader start. farmtui
now reads every list itself (``farmtui.frames._items``); the tests check it
reads them as fileseq does. This times both on the lists the rounds used,
medians of ``--runs``.

    python bench/frame_lists.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fileseq.frameset import FrameSet  # noqa: E402

from farmtui.frames import parse_frames  # noqa: E402

LISTS = {
    "6,000 frames and one 1-2y2 (29 kB)": ",".join(str(i) for i in range(6000)) + ",1-2y2",
    "1-1000000:1000000": "1-1000000:1000000",
    "1-1000000:3": "1-1000000:3",
    "1-1000000y1000000": "1-1000000y1000000",
    "1-1000000": "1-1000000",
}


def timed(read: object, text: str, runs: int) -> float:
    took = []
    for _ in range(runs):
        began = time.perf_counter()
        read(text)  # type: ignore[operator]
        took.append(time.perf_counter() - began)
    return statistics.median(took)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(f"{'list':40} {'fileseq':>10} {'farmtui':>10}")
    for name, text in LISTS.items():
        old = timed(lambda t: list(FrameSet(t)), text, args.runs)
        new = timed(parse_frames, text, args.runs)
        print(f"{name:40} {old:9.3f}s {new:9.3f}s")


if __name__ == "__main__":
    main()
