"""Integration tests: the real leader and agents (tests/helpers/farm.py) for the live ones."""

from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401
