"""Fixtures for the OpenJD tests: a real leader and agents for the CLI ones."""

from __future__ import annotations

from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401
