"""A leader with a private CA's certificate: ``--ca FILE`` (or FARM_CA, or ``ca`` in the config)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from farmtui import errors
from farmtui.client import FarmClient, connect
from tests.helpers.leader import InProcessLeader, leader_in_process, wait_for
from tests.helpers.tls import self_signed_certificate

FARM = [sys.executable, "-m", "farmtui"]


@pytest.fixture
async def tls_leader(tmp_path: Path) -> AsyncIterator[tuple[InProcessLeader, Path]]:
    cert, key = self_signed_certificate(tmp_path)
    async with leader_in_process(tmp_path, tls=(cert, key)) as farm:
        assert farm.url.startswith("https://")
        yield farm, cert


async def run_farm(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The real ``farm`` command in a child process (the leader keeps serving meanwhile)."""
    child_env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "FARM_CA")}
    process = await asyncio.create_subprocess_exec(
        *FARM,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**child_env, **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_the_cli_refuses_an_untrusted_leader_in_one_line_and_trusts_it_with_ca(
    tls_leader: tuple[InProcessLeader, Path],
) -> None:
    farm, cert = tls_leader
    login = ["--leader", farm.url, "--token", farm.admin_token]

    code, out, err = await run_farm("whoami", *login)
    assert code == 1
    assert out == ""
    assert len(err.strip().splitlines()) == 1, err
    assert "not trusted" in err
    assert "--ca" in err
    assert farm.admin_token not in err

    code, out, err = await run_farm("whoami", *login, "--ca", str(cert))
    assert (code, err) == (0, "")
    assert out.startswith("admin (admin) on https://127.0.0.1:")

    code, out, err = await run_farm("jobs", "--json", *login, env={"FARM_CA": str(cert)})
    assert (code, err, out.strip()) == (0, "", "[]")


async def test_the_config_file_may_name_the_ca(
    tls_leader: tuple[InProcessLeader, Path], tmp_path: Path
) -> None:
    farm, cert = tls_leader
    home = tmp_path / "home-config"
    (home / "farmtui").mkdir(parents=True)
    (home / "farmtui" / "config.toml").write_text(
        f'leader = "{farm.url}"\ntoken_file = "{farm.data / "admin.token"}"\nca = "{cert}"\n'
    )
    code, out, err = await run_farm("whoami", env={"XDG_CONFIG_HOME": str(home)})
    assert (code, err) == (0, "")
    assert out.startswith("admin (admin)")


async def test_a_missing_or_unreadable_ca_file_is_one_line_and_nothing_is_sent(
    tls_leader: tuple[InProcessLeader, Path], tmp_path: Path
) -> None:
    farm, _ = tls_leader
    login = ["--leader", farm.url, "--token", farm.admin_token]
    code, _, err = await run_farm("whoami", *login, "--ca", str(tmp_path / "nope.pem"))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "cannot read the CA file" in err
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    code, _, err = await run_farm("whoami", *login, "--ca", str(not_pem))
    assert code == 2
    assert len(err.strip().splitlines()) == 1
    assert "no usable PEM certificate" in err
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    code, _, err = await run_farm("whoami", *login, "--ca", str(fifo))
    assert code == 2
    assert "is not a regular file" in err


async def test_the_python_client_takes_the_ca_too(
    tls_leader: tuple[InProcessLeader, Path],
) -> None:
    farm, cert = tls_leader

    def calls() -> None:
        plain = FarmClient(farm.url, farm.admin_token)
        with plain, pytest.raises(errors.LeaderDown, match="not trusted"):
            plain.whoami()
        with connect(farm.url, farm.admin_token, ca=str(cert)) as trusted:
            assert trusted.whoami().role == "admin"

    await asyncio.to_thread(calls)


@pytest.mark.tmux
@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
async def test_the_console_connects_to_a_tls_leader_with_ca(
    tls_leader: tuple[InProcessLeader, Path], tmp_path: Path
) -> None:
    farm, cert = tls_leader
    async with farm.http() as http:
        submitted = await http.post(
            "/api/jobs", json={"name": "tls-visible-job", "frames": "1-2", "argv": ["true"]}
        )
    assert submitted.status_code == 201
    session = f"farmtui-tls-{uuid.uuid4().hex[:8]}"
    command = " ".join(
        [*FARM, "console", "--leader", farm.url, "--token-file", str(farm.data / "admin.token")]
        + ["--ca", str(cert)]
    )

    def tmux(*args: str) -> str:
        return subprocess.run(["tmux", *args], capture_output=True, text=True, check=False).stdout

    def capture() -> str:
        return tmux("capture-pane", "-p", "-t", session)

    await asyncio.to_thread(
        tmux,
        *("new-session", "-d", "-s", session, "-x", "100", "-y", "30"),
        *("-e", f"XDG_CONFIG_HOME={tmp_path / 'xdg'}", command),
    )
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while "tls-visible-job" not in (screen := await asyncio.to_thread(capture)):
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"the console never showed the job:\n{screen}")
            await asyncio.sleep(0.1)  # between polls of the screen
    finally:
        await asyncio.to_thread(tmux, "kill-session", "-t", session)


async def test_an_agent_trusts_a_private_ca_with_ca(
    tls_leader: tuple[InProcessLeader, Path], tmp_path: Path
) -> None:
    farm, cert = tls_leader
    token_file = tmp_path / "agent.token"
    token_file.write_text(farm.agent_token)
    child_env = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "FARM_CA")}
    agent = [
        *FARM, "agent", "--leader", farm.url, "--token-file", str(token_file),
        "--name", "tlsnode", "--state", str(tmp_path / "state"),
        "--staging", str(tmp_path / "staging"),
    ]  # fmt: skip
    code, _, err = await run_farm(*agent[len(FARM) :], "--ca", str(tmp_path / "missing.pem"))
    assert code != 0
    assert len(err.strip().splitlines()) == 1, err
    assert "cannot read the CA file" in err
    process = await asyncio.create_subprocess_exec(
        *agent, "--ca", str(cert), env=child_env, stderr=asyncio.subprocess.DEVNULL
    )
    try:

        def online() -> bool:
            node = farm.leader.scheduler.nodes.get("tlsnode")
            return node is not None and node.online

        await wait_for(online, 30, "the agent over https with --ca")
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)
