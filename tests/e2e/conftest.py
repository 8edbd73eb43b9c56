"""End-to-end tests: a real leader subprocess, real agent subprocesses, real renderers.

The shared fixtures come from tests/helpers/farm.py (``farm_leader``, ``farm_agents``).
"""

from tests.helpers.farm import farm_agents, farm_leader  # noqa: F401
