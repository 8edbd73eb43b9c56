"""Fixtures for every test folder: a throwaway PostgreSQL (``tests.helpers.postgres``).

One cluster per pytest(-xdist) worker, started the first time a test asks
for it; a database per test. Where PostgreSQL is not installed, the tests
that need it fail and say how to install it (CI installs it, so a missing
server is never a silent skip); ``FARMTUI_SKIP_POSTGRES=1`` skips them on a
developer's machine.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from tests.helpers.postgres import PostgresCluster, PostgresMissing, throwaway_cluster

SKIP_POSTGRES = "FARMTUI_SKIP_POSTGRES"


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster]:
    if os.environ.get(SKIP_POSTGRES) == "1":
        pytest.skip(f"{SKIP_POSTGRES}=1: no PostgreSQL tests")
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(throwaway_cluster())
        except PostgresMissing as exc:
            pytest.fail(str(exc), pytrace=False)
        yield cluster


@pytest.fixture
def postgres_url(postgres_cluster: PostgresCluster) -> str:
    """``postgresql://postgres:PASSWORD@127.0.0.1:PORT/tN``: a new empty database."""
    return postgres_cluster.new_database()
