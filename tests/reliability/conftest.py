"""Fixtures of the reliability suite (issue #15): a tree of source objects whose every version
is recognisable from its bytes, the helpers of the cache tests (their index audit), and the
``reliability`` marker on every test here. Volume comes from EDGECACHE_RELIABILITY (see
tests/conftest.py and docs/reliability.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# The index audit of the cache tests (tests/cache/cachetestlib.py) is reused, not copied.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cache"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.reliability)


def version_bytes(name: str, version: int, size: int) -> bytes:
    """Version ``version`` of object ``name``: a header naming both, then a pattern of them,
    ``size`` bytes in all. A read that mixes versions, or is cut short, does not equal it."""
    unit = f"{name}:v{version}:".encode()
    return (unit * (size // len(unit) + 1))[:size]


def parse_version(name: str, data: bytes) -> int | None:
    """The version whose bytes ``data`` are exactly, or None (a mix, a cut, garbage)."""
    prefix = f"{name}:v".encode()
    if not data.startswith(prefix):
        return None
    end = data.find(b":", len(prefix))
    try:
        version = int(data[len(prefix) : end])
    except ValueError:
        return None
    return version if data == version_bytes(name, version, len(data)) else None


# The end-to-end site of the agent tests (the cloud behind its links, the edge hub and the
# controller), reused, not copied.
from agent.conftest import agents, cloud, site  # noqa: E402, F401
