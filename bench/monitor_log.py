"""The Monitor Log under a flood of events: what a redraw costs the console.

Break round 27a found keys taking 2-31 s on a console watching a busy farm:
every view switch redrew the Monitor Log's 5,000 kept events, one
``RichLog.write`` each, and every keystroke of a search did the same. Now a
hidden log holds the lines that came meanwhile and writes them once shown, and
a redraw writes the latest ``REWRITTEN`` matches in one write. This measures,
side by side in one headless run (medians of ``--runs``):

- before: 5,000 events written one ``RichLog.write`` each (the old redraw);
- after: ``LogsPanel.rewrite_monitor`` over the same 5,000 kept events.

    python bench/monitor_log.py [--runs 5] [--events 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from textual.app import App, ComposeResult  # noqa: E402
from textual.widgets import RichLog  # noqa: E402

from farmtui.console.state import ConsoleState  # noqa: E402
from farmtui.console.widgets.event_line import event_line  # noqa: E402
from farmtui.console.widgets.logs_panel import LogsPanel  # noqa: E402
from farmtui.protocol import EventView  # noqa: E402


class Bench(App[None]):
    def __init__(self, state: ConsoleState) -> None:
        super().__init__()
        self.state = state

    def compose(self) -> ComposeResult:
        yield LogsPanel(self.state, id="logs")
        yield RichLog(id="old", max_lines=5000, wrap=True, markup=False)


async def measure(events: int, runs: int) -> tuple[list[float], list[float]]:
    state = ConsoleState(max_events=events)
    for number in range(events):
        text = f"chunk {number} attempt 1 done in 0.0s on node-{number % 7}"
        state.events.append(EventView(time=1e9 + number, level="info", text=text))
    before: list[float] = []
    after: list[float] = []
    app = Bench(state)
    async with app.run_test(size=(120, 40)) as pilot:
        panel = app.query_one(LogsPanel)
        old = app.query_one("#old", RichLog)
        for _ in range(runs):
            began = time.perf_counter()
            old.clear()
            for event in state.events:
                old.write(event_line(event, state))
            await pilot.pause()
            before.append(time.perf_counter() - began)
            began = time.perf_counter()
            panel.rewrite_monitor()
            await pilot.pause()
            after.append(time.perf_counter() - began)
    return before, after


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    before, after = asyncio.run(measure(args.events, args.runs))
    b, a = statistics.median(before), statistics.median(after)
    print(f"redraw of {args.events} kept events, medians of {args.runs}:")
    print(f"  before (a write an event, all of them): {1000 * b:.0f} ms")
    print(f"  after (the latest 1,000, one write):    {1000 * a:.0f} ms  ({b / a:.1f}x less)")


if __name__ == "__main__":
    main()
