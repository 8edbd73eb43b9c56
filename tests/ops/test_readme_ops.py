"""What README.md's "Running a farm for real" section shows stays true."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from farmtui import jobfile
from server.config import read_config
from tests.helpers.leader import leader_in_process

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def test_the_readme_job_file_is_one_farm_submit_accepts(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(# shot010\.toml\n.*?)```", README, re.S)
    assert block is not None, "the job file example is gone from README.md"
    path = tmp_path / "shot010.toml"
    path.write_text(block.group(1))
    spec = jobfile.build_spec(jobfile.load_jobfile(path))
    assert (spec.name, spec.frames, spec.chunk, spec.priority) == ("shot-010", "1-48", 4, 40)
    assert spec.renderer == "demo"
    assert spec.output == "renders/shot010/frame_####.png"
    assert spec.timeouts.max_render == 600
    assert spec.tags == ["linux"]


def test_the_readme_leader_toml_is_one_a_leader_starts_with(tmp_path: Path) -> None:
    """Copied as written, its metrics token ("...") stopped the leader (break round 33c)."""
    block = re.search(r"The leader reads `<data>/leader.toml`.*?```toml\n(.*?)```", README, re.S)
    assert block is not None, "the leader.toml example is gone from README.md"
    (tmp_path / "leader.toml").write_text(block.group(1))
    config = read_config(tmp_path)
    assert (config.retries, config.user_priority_min, config.node_timeout) == (3, 50, 15.0)


async def test_every_metric_the_readme_names_is_served(tmp_path: Path) -> None:
    section = README.split("## Running a farm for real")[1].split("\n## ")[0]
    named = set(re.findall(r"\bfarmtui_[a-z_]+", section))
    assert "farmtui_chunks_completed_total" in named
    async with leader_in_process(tmp_path) as farm, farm.http() as http:
        text = (await http.get("/metrics")).text
    families = list(text_string_to_metric_families(text))
    served = {f.name for f in families} | {s.name for f in families for s in f.samples}
    assert named <= served, named - served
