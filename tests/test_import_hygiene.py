"""The layering rules of STYLE.md, checked in a fresh interpreter each."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    return {name.split(".")[0] for name in out.split()}


@pytest.mark.parametrize(
    "module", ["server.app", "server.scheduler", "agent.main", "farmtui.protocol", "farmtui.cli"]
)
def test_leader_agent_and_cli_never_pull_in_textual(module: str) -> None:
    assert "textual" not in _modules_after_import(module)


def test_console_knows_the_farm_only_through_the_wire() -> None:
    loaded = _modules_after_import("farmtui.console.app")
    assert not loaded & {"server", "agent"}
