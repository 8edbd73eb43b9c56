"""Fixtures for the scheduler tests: a fresh paper farm per test."""

from __future__ import annotations

import pytest

from tests.scheduler.paper_farm import Farm


@pytest.fixture
def farm() -> Farm:
    return Farm()
