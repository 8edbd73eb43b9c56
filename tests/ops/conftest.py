"""Fixtures for the ops tests (metrics, service units, TLS, OpenAPI, the Python client)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401


@pytest.fixture(autouse=True)
def isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No test reads the real user's config or sees their FARM_* or SSL_CERT_FILE variables."""
    home = tmp_path / "xdg"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    for name in ("FARM_LEADER", "FARM_TOKEN", "FARM_TOKEN_FILE", "FARM_CA", "SSL_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    return home / "farmtui" / "config.toml"
