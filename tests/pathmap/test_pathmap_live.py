"""Path mapping end to end: a real leader with a ``[[path_map]]`` rule, a real agent
that claims to be Windows (the test-only ``FARMTUI_TEST_CLAIM_OS``), and a job whose
command prints the paths it was given.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.link import CLAIM_OS_VARIABLE
from farmtui.localfarm import LocalFarm, free_port
from tests.helpers.farm import LiveLeader, needs_agent

pytestmark = pytest.mark.slow

PRINT_ARGS = "import sys; print('ARGS', *sys.argv[1:], sep='|')"


@pytest.fixture
def windows_farm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveLeader]:
    """A leader mapping its sync root to ``P:\\projects`` and one agent that claims Windows."""
    root = (tmp_path / "root").resolve()
    data = tmp_path / "data"
    data.mkdir()
    (data / "leader.toml").write_text(
        f'[[path_map]]\nfrom = "{root}"\nto.windows = "P:\\\\projects"\n', encoding="utf-8"
    )
    farm = LocalFarm(data, root, port=free_port())
    try:
        farm.start_leader()
        monkeypatch.setenv(CLAIM_OS_VARIABLE, "windows")
        farm.start_agent(1, 1, name="winnode")
        monkeypatch.delenv(CLAIM_OS_VARIABLE)
        farm.wait_nodes_online(["winnode"])
        yield LiveLeader(farm, tmp_path / "config")
    finally:
        farm.stop(grace=5.0)


@needs_agent
def test_a_windows_node_runs_the_mapped_command(windows_farm: LiveLeader) -> None:
    leader = windows_farm
    scene = leader.root / "shots" / "a.blend"
    scene.parent.mkdir(parents=True)
    scene.write_bytes(b"BLENDER")
    lut = leader.root / "luts" / "show.cube"
    done = leader.cli(
        "submit", "--json", "--name", "mapped", "--retries", "0", "--no-staging",
        "--scene", str(scene),
        "--", sys.executable, "-c", PRINT_ARGS, "{scene}", f"--lut={lut}", "/elsewhere/x",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = json.loads(done.stdout)["id"]
    log = leader.cli("logs", job_id, "--chunk", "0", "--follow")
    assert log.returncode == 0, log.stderr
    text = log.stdout
    expected = "ARGS|P:\\projects\\shots\\a.blend|--lut=P:\\projects\\luts\\show.cube|/elsewhere/x"
    assert expected in text, text
    # The header records the command as the node ran it: the mapped one.
    (header,) = [line for line in text.splitlines() if line.startswith("# command:")]
    assert "P:\\projects\\shots\\a.blend" in header
    assert str(leader.root) not in header
    shown = leader.cli("show", job_id, "--json")
    assert json.loads(shown.stdout)["job"]["state"] == "done", shown.stdout


@needs_agent
def test_pathmap_check_asks_the_leader(windows_farm: LiveLeader) -> None:
    leader = windows_farm
    path = f"{leader.root}/shots/a.blend"
    done = leader.cli("pathmap", "check", path, "--os", "windows")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "P:\\projects\\shots\\a.blend"
    assert "rule 1" in done.stderr
    unchanged = leader.cli("pathmap", "check", path, "--os", "darwin", "--json")
    assert unchanged.returncode == 0, unchanged.stderr
    answer = json.loads(unchanged.stdout)
    assert (answer["mapped"], answer["rule"]) == (path, 0)
    refused = leader.cli("pathmap", "check", "", "--os", "windows")
    assert refused.returncode != 0
    assert "path is required" in refused.stderr
