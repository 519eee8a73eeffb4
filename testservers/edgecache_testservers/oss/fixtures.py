"""Pytest fixtures for suites that need OSS (the OSS backend plugin, benchmarks' smoke tests).

Import into a ``conftest.py``: ``from edgecache_testservers.oss.fixtures import oss_server``.
``oss_server`` is a fresh threaded :class:`OSSServer` per test with one bucket,
:data:`TEST_BUCKET`, and the default test credentials; :func:`ossfs_options` gives the keyword
arguments that point ``ossfs.OSSFileSystem``/``AioOSSFileSystem`` at it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._server import OSSServer

TEST_BUCKET = "edgecache-test"


@pytest.fixture
def oss_server() -> Iterator[OSSServer]:
    """A running OSS server (own thread and loop), usable from sync and async tests alike."""
    with OSSServer() as server:
        server.create_bucket(TEST_BUCKET)
        yield server


def ossfs_options(server: OSSServer) -> dict[str, str]:
    """``endpoint``, ``key`` and ``secret`` for ossfs, with the server's first credentials."""
    return {
        "endpoint": server.endpoint,
        "key": server.access_key_id,
        "secret": server.access_key_secret,
    }
