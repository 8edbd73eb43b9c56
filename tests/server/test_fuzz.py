"""A few thousand bent inputs against a real leader process: nothing breaks, nothing leaks.

The full-size campaign (and its figures) is ``bench/fuzz.py``; this one is
bounded (fixed seed, well under a minute) so that it runs with the suite.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from farmtui.localfarm import LocalFarm, free_port
from tests.helpers.fuzzing import Fuzzer, Target, log_findings

pytestmark = pytest.mark.slow

SEED = 20261201


def seeded_target(farm: LocalFarm) -> Target:
    """Tokens for every role and a few jobs owned by different users."""
    admin = farm.admin_token()
    tokens = {"admin": admin, "agent": farm.agent_token_file.read_text().strip()}
    with httpx.Client(base_url=farm.url, timeout=10.0) as http:
        for role, name in (("user", "alice"), ("user", "bob"), ("viewer", "viewer")):
            made = http.post(
                "/api/tokens",
                json={"role": role, "name": name},
                headers={"Authorization": f"Bearer {admin}"},
            )
            assert made.status_code == 201, made.text
            tokens[name] = made.json()["token"]
        for owner in ("admin", "alice", "alice", "bob"):
            job = {"name": f"{owner}-job", "frames": "1-6", "chunk": 2, "argv": ["true"]}
            submitted = http.post(
                "/api/jobs", json=job, headers={"Authorization": f"Bearer {tokens[owner]}"}
            )
            assert submitted.status_code == 201, submitted.text
    private = [str(farm.data.resolve()), str(farm.root.resolve())]
    return Target(farm.url, tokens, farm.logs / "leader.log", private)


@pytest.fixture
def target(tmp_path: Path) -> Iterator[Target]:
    farm = LocalFarm(tmp_path / "data", tmp_path / "root", port=free_port())
    farm.data.mkdir(parents=True)
    # Consoles get their answers without the default 50 ms pacing: more inputs per second.
    (farm.data / "leader.toml").write_text("console_updates_per_second = 1000.0\n")
    try:
        farm.start_leader()
        yield seeded_target(farm)
        assert farm.leader is not None
        assert farm.leader.alive(), "the leader died"
    finally:
        farm.stop(grace=5.0)


def test_bent_inputs_get_clean_refusals_and_change_nothing(target: Target) -> None:
    fuzzer = Fuzzer(target, SEED)
    try:
        # A sample for every run of the suite; bench/fuzz.py runs the long campaign.
        tally = fuzzer.run(rest=1000, console=350, agent=150)
        assert httpx.get(target.url + "/healthz").status_code == 200
    finally:
        fuzzer.close()
    findings = tally.findings + log_findings(target)
    assert not findings, "\n".join(str(finding) for finding in findings[:20])
    assert tally.total >= 1500
    # The campaign reached past the front door: some inputs were accepted, many refused.
    assert tally.answers["rest 201"] + tally.answers["rest 200"] > 25
    assert sum(n for answer, n in tally.answers.items() if " 4" in answer) > 150
