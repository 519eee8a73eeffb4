"""Run-wide test plumbing for every test directory (tests/, testservers/tests, plugins/*/tests).

``scripts/test`` runs the suite on pytest-xdist workers (the suite mostly waits: on servers,
emulated links and child processes). A test marked ``exclusive`` measures time (link rates,
latency percentiles, timeouts against a deadline): another worker's test beside it would
measure that test's load, not ours. It runs alone: it waits until the tests running on other
workers end, and no other worker starts a test until it ends. While it waits it holds a gate
that every test passes before it starts, so it never starves behind a stream of others. Without
xdist (plain ``pytest``, ``-n 0``) no lock is taken.

Tests that must only not overlap *each other* (one shared resource, no timing) use
``pytest.mark.xdist_group`` with ``--dist loadgroup`` instead.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_RUN_DIR = "edgecache_run_dir"
"""workerinput key: the directory of the run's locks, made by the xdist controller."""


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    # xdist's controller, once per worker it starts: every worker gets the same directory.
    config = node.config
    if not hasattr(config, "edgecache_run_dir"):
        config.edgecache_run_dir = tempfile.mkdtemp(prefix="edgecache-test-run-")
    node.workerinput[_RUN_DIR] = config.edgecache_run_dir


def pytest_unconfigure(config: pytest.Config) -> None:
    run_dir = getattr(config, "edgecache_run_dir", None)
    if run_dir is not None:
        shutil.rmtree(run_dir, ignore_errors=True)


# Outermost (tryfirst), so a test's timeout starts once it has the lock, not while it waits.
@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None or _RUN_DIR not in workerinput:
        yield  # one process runs every test: nothing to wait for
        return
    run_dir = Path(workerinput[_RUN_DIR])
    exclusive = item.get_closest_marker("exclusive") is not None
    with open(run_dir / "gate", "a+") as gate, open(run_dir / "run", "a+") as run:
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(run, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(run, fcntl.LOCK_UN)
