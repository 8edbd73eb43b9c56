"""``farmtui.console.later``: one-shot callbacks that fire however short the delay.

Textual's ``set_timer`` with a delay of a few microseconds never fires; the
console's repaint waited on one and stopped painting for good."""

from __future__ import annotations

from textual.app import App

from farmtui.console.later import Later, later
from tests.console.conftest import wait_for


class Counting(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.fired: list[str] = []


async def test_a_tiny_delay_still_fires_and_a_stopped_one_never_does() -> None:
    app = Counting()
    async with app.run_test() as pilot:
        for _ in range(100):
            later(app, 1e-7, lambda: app.fired.append("tiny"))
        later(app, 0.0, lambda: app.fired.append("now"))
        stopped: Later = later(app, 0.01, lambda: app.fired.append("stopped"))
        stopped.stop()
        later(app, 0.05, lambda: app.fired.append("last"))
        await wait_for(pilot, lambda: "last" in app.fired, what="the last callback")
        assert app.fired.count("tiny") == 100
        assert app.fired.count("now") == 1
        assert "stopped" not in app.fired
