"""Fixtures of the reliability suite (issue #15): the helpers of the cache tests (their index
audit), the agent and pool tests' fixtures, and the ``reliability`` marker on every test here.
Volume comes from EDGECACHE_RELIABILITY (see tests/conftest.py and docs/reliability.md)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from agent.conftest import agents, cloud, site  # noqa: F401 (reused, not copied)
from pool.conftest import start_peers, token_file, wan  # noqa: F401 (reused, not copied)

# The index audit of the cache tests (tests/cache/cachetestlib.py) is reused, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cache"))


LONG_TIMEOUT_SECONDS = 3600
"""A test's time limit at release volume (the suite's 300 s is for the CI size)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    long = os.environ.get("EDGECACHE_RELIABILITY", "").strip().lower() == "long"
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)
            if long:
                item.add_marker(pytest.mark.timeout(LONG_TIMEOUT_SECONDS))
