"""End-to-end tests: a real leader subprocess, real agent subprocesses, real renderers.

The shared fixtures come from tests/helpers/farm.py (``farm_leader``, ``farm_agents``).
"""

import pytest

from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything here starts real leader and agent processes: the slow layer."""
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.slow)
