"""Shared fixtures for the edgecache test suite."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import pytest
from moto.server import ThreadedMotoServer

# --- the reliability suite (issue #15) --------------------------------------------------------
#: EDGECACHE_RELIABILITY=long runs the tests marked ``reliability`` at release volume; unset (or
#: "ci") they run CI-sized inside the normal test run. EDGECACHE_RELIABILITY_REPORT=FILE writes
#: each test's figures there as JSON (docs/reliability.md is filled from a long run's report).
RELIABILITY_MODE = os.environ.get("EDGECACHE_RELIABILITY", "ci").strip().lower() or "ci"
_FIGURES: dict[str, dict[str, Any]] = {}


@dataclass
class ReliabilityFigures:
    """What one reliability test did: the figures docs/reliability.md reports."""

    mode: str
    iterations: int = 0
    faults_injected: int = 0
    bad_inputs: int = 0
    reads_checked: int = 0
    wrong_bytes: int = 0
    """Reads that returned bytes other than the object's (must stay 0)."""
    data_lost: int = 0
    """Objects or records that should have survived and did not (must stay 0)."""
    notes: dict[str, Any] = field(default_factory=dict)

    def scale(self, ci: int, long: int) -> int:
        """``ci`` in the normal test run, ``long`` with EDGECACHE_RELIABILITY=long."""
        return long if self.mode == "long" else ci


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Iterator[ReliabilityFigures]:
    """The figures of this reliability test (its volume from EDGECACHE_RELIABILITY)."""
    figures = ReliabilityFigures(RELIABILITY_MODE)
    yield figures
    _FIGURES[request.node.nodeid] = asdict(figures)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report = os.environ.get("EDGECACHE_RELIABILITY_REPORT")
    if report and _FIGURES:
        with open(report, "w") as f:
            json.dump({"mode": RELIABILITY_MODE, "tests": _FIGURES}, f, indent=2, sort_keys=True)


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """An S3 test server (moto) on loopback, one per test module."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()
