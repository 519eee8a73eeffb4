"""Fixtures for the tests of edgecache_testservers: the Kubernetes API test server in both modes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.kubeapi.fixtures import kube_api

__all__ = ["api", "http", "kube_api"]


@pytest.fixture
async def api() -> AsyncIterator[KubeAPIServer]:
    """A server on the test's own event loop, with short bookmarks and a small event history."""
    async with KubeAPIServer(bookmark_interval_seconds=0.2, history_size=50) as server:
        yield server


@pytest.fixture
async def http(api: KubeAPIServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=api.url) as session:
        yield session
