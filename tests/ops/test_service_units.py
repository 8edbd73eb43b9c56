"""``farm leader|agent --print-service``: units that parse, verify, and whose ExecStart runs."""

from __future__ import annotations

import configparser
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from farmtui.client import FarmClient
from farmtui.localfarm import free_port
from farmtui.service_units import exec_argument

FARM = [sys.executable, "-m", "farmtui"]


def farm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*FARM, *args], capture_output=True, text=True, timeout=60, check=check)


def parse_unit(text: str) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(interpolation=None, strict=True)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys keep case
    unit.read_string(text)
    return unit


def exec_start(unit: configparser.ConfigParser) -> list[str]:
    """ExecStart= split back into words (systemd's quoting, %% and $$ undone)."""
    words = shlex.split(unit["Service"]["ExecStart"])
    return [w.replace("%%", "%").replace("$$", "$") for w in words]


def test_the_agent_unit_restarts_always_as_its_own_user_and_lets_the_agent_stop_its_renders(
    tmp_path: Path,
) -> None:
    token = tmp_path / "agent.token"
    token.write_text("secret-agent-token\n")
    printed = farm(
        "agent",
        "--leader",
        "https://farm.lan:7878",
        "--token-file",
        str(token),
        "--name",
        "node7",
        "--slots",
        "4",
        "--tags",
        "gpu,linux",
        "--print-service",
    )
    assert printed.stderr == ""
    unit = parse_unit(printed.stdout)
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["User"] == "farm"
    assert service["Group"] == "farm"
    # The agent gets SIGTERM alone and stops its renderer trees itself; leftovers are SIGKILLed.
    assert service["KillMode"] == "mixed"
    assert service["StateDirectory"] == "farmtui-agent"
    assert "PrivateTmp" not in service
    assert "exactly-once" in printed.stdout  # the choice is explained in the unit
    assert exec_start(unit) == [
        *FARM,
        "agent",
        "--leader",
        "https://farm.lan:7878",
        "--token-file",
        str(token),
        "--name",
        "node7",
        "--slots",
        "4",
        "--staging",
        "/var/lib/farmtui-agent/staging",
        "--state",
        "/var/lib/farmtui-agent/state",
        "--tags",
        "gpu,linux",
    ]
    assert "secret-agent-token" not in printed.stdout
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_a_unit_never_holds_a_token(tmp_path: Path) -> None:
    refused = farm(
        "agent", "--leader", "http://h:7878", "--token", "s3cret", "--print-service", check=False
    )
    assert refused.returncode == 2
    assert refused.stdout == ""
    assert "--token-file" in refused.stderr
    assert "s3cret" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


def test_the_leader_unit_keeps_the_given_flags_with_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "odd $dir 100%").mkdir()
    printed = farm(
        "leader",
        "--data",
        "farm-data",
        "--root",
        "odd $dir 100%/root",
        "--host",
        "0.0.0.0",
        "--port",
        "7979",
        "--service-user",
        "render",
        "--print-service",
    )
    unit = parse_unit(printed.stdout)
    service = unit["Service"]
    assert service["Restart"] == "always"
    assert service["User"] == "render"
    assert service["KillMode"] == "mixed"
    assert exec_start(unit) == [
        *FARM,
        "leader",
        "--data",
        str(tmp_path / "farm-data"),
        "--root",
        str(tmp_path / "odd $dir 100%/root"),
        "--host",
        "0.0.0.0",
        "--port",
        "7979",
    ]


def test_exec_arguments_are_quoted_as_systemd_reads_them() -> None:
    assert exec_argument("/usr/bin/python3") == "/usr/bin/python3"
    assert exec_argument("a b") == '"a b"'
    assert exec_argument('say "hi"') == '"say \\"hi\\""'
    assert exec_argument("50%") == "50%%"
    assert exec_argument("$HOME") == "$$HOME"
    assert exec_argument("") == '""'


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verify_accepts_both_units(tmp_path: Path) -> None:
    token = tmp_path / "agent.token"
    token.write_text("t\n")
    units = {
        "farmtui-leader.service": farm(
            "leader", "--data", str(tmp_path / "d"), "--root", str(tmp_path / "r"),
            "--print-service",
        ).stdout,
        "farmtui-agent.service": farm(
            "agent", "--leader", "http://127.0.0.1:7878", "--token-file", str(token),
            "--print-service",
        ).stdout,
    }  # fmt: skip
    for name, text in units.items():
        (tmp_path / name).write_text(text)
    verified = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in units)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert verified.returncode == 0, verified.stderr
    # Warnings about these units' own lines would name them (other units' noise is not ours).
    ours = [line for line in verified.stderr.splitlines() if "farmtui-" in line]
    assert ours == []


def _wait(condition: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():  # type: ignore[operator]
                return
        except Exception:  # the leader is not up yet
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)  # between polls of a condition


def test_the_units_exec_start_runs_a_leader_and_an_agent_that_stop_cleanly_on_sigterm(
    tmp_path: Path,
) -> None:
    """What systemd would run, run here: the leader serves, the agent joins, SIGTERM stops both."""
    port = free_port()
    data, root = tmp_path / "data", tmp_path / "root"
    leader_argv = exec_start(
        parse_unit(
            farm(
                "leader", "--data", str(data), "--root", str(root), "--port", str(port),
                "--print-service",
            ).stdout
        )
    )  # fmt: skip
    processes: list[subprocess.Popen[bytes]] = []
    try:
        leader = subprocess.Popen(leader_argv, stderr=subprocess.DEVNULL, start_new_session=True)
        processes.append(leader)
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: (data / "admin.token").exists(), "the leader's tokens")
        admin = (data / "admin.token").read_text().strip()
        client = FarmClient(url, admin, timeout=2.0)
        _wait(client.healthz, "the leader's /healthz")
        unit = parse_unit(
            farm(
                "agent", "--leader", url, "--token-file", str(data / "agent.token"),
                "--name", "unit-node", "--staging", str(tmp_path / "staging"),
                "--state", str(tmp_path / "state"), "--print-service",
            ).stdout
        )  # fmt: skip
        agent = subprocess.Popen(
            exec_start(unit), stderr=subprocess.DEVNULL, start_new_session=True
        )
        processes.append(agent)
        _wait(
            lambda: any(n.name == "unit-node" and n.state == "online" for n in client.nodes()),
            "the agent online",
        )
        for process in reversed(processes):
            os.kill(process.pid, signal.SIGTERM)
            assert process.wait(timeout=30) == 0
        client.close()
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_the_agent_unit_keeps_the_private_ca_so_the_service_trusts_the_leader(
    tmp_path: Path,
) -> None:
    token = tmp_path / "agent.token"
    token.write_text("secret-agent-token\n")
    ca = tmp_path / "farm ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    common = ["agent", "--leader", "https://farm.lan:7878", "--token-file", str(token)]
    flagged = exec_start(parse_unit(farm(*common, "--ca", str(ca), "--print-service").stdout))
    assert flagged[flagged.index("--ca") + 1] == str(ca)
    # FARM_CA in the operator's shell is not in the service's environment: it goes in too.
    with_env = subprocess.run(
        [*FARM, *common, "--print-service"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FARM_CA": str(ca)},
    )
    from_env = exec_start(parse_unit(with_env.stdout))
    assert from_env[from_env.index("--ca") + 1] == str(ca)
    missing = farm(*common, "--ca", str(tmp_path / "nope.pem"), "--print-service", check=False)
    assert missing.returncode != 0
    assert "cannot read the CA file" in missing.stderr


def test_a_percent_in_the_node_name_is_not_a_systemd_specifier_in_the_description() -> None:
    from farmtui.service_units import AgentService, agent_unit

    unit = parse_unit(
        agent_unit(AgentService(leader="http://x", token_file=Path("/t"), name="n%n"))
    )
    assert unit["Unit"]["Description"].endswith("(node n%%n)")


def test_an_agent_unit_with_a_render_user_runs_the_agent_as_root_and_lets_renderers_pass(
    tmp_path: Path,
) -> None:
    token = tmp_path / "agent.token"
    token.write_text("secret-agent-token\n")
    base = ["agent", "--leader", "http://farm.lan:7878", "--token-file", str(token)]
    printed = farm(*base, "--render-user", "render", "--print-service")
    unit = parse_unit(printed.stdout)
    service = unit["Service"]
    assert (service["User"], service["Group"]) == ("root", "root")
    assert exec_start(unit)[-2:] == ["--render-user", "render"]
    # Renderers (as render) pass through the state folder to their attempts' folders.
    assert service["StateDirectoryMode"] == "0711"
    assert "useradd --system --no-create-home --shell /usr/sbin/nologin render" in printed.stdout

    refused = farm(
        *base, "--render-user", "render", "--service-user", "farm2", "--print-service", check=False
    )
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "farm agent: --render-user runs the agent as root (it starts renderers as that user): "
        "leave out --service-user"
    )
    refused = farm(*base, "--render-user", "root", "--print-service", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == (
        "farm agent: --render-user root would run renderers as root: name an unprivileged user"
    )
    many = ",".join(f"t{n}" for n in range(65))
    refused = farm(*base, "--tags", many, "--print-service", check=False)
    assert refused.returncode == 2
    assert refused.stderr.strip() == "farm agent: a node has at most 64 tags, not 65"
