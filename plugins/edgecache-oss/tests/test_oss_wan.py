"""OSS over the WAN emulator: the shared network-failure suite (a link cut mid-read, a blackholed
link, cached data while the link is down) against the signature-checking OSS test server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from edgecache_testservers.oss import OSSServer
from osstestlib import KEY, SECRET

from edgecache.testing.backend_suite import RemoteBackendWANConformance, Seed

# Runs alone (conftest.py): timeouts and cached reads held to deadlines.
pytestmark = pytest.mark.exclusive


class TestOSSOverWAN(RemoteBackendWANConformance):
    protocol = "oss"

    @pytest.fixture
    def upstream(self, oss_server: OSSServer) -> str:
        return oss_server.endpoint

    @pytest.fixture
    def options_for(self) -> Callable[..., dict[str, Any]]:
        return lambda endpoint, **extra: {
            "endpoint": endpoint,
            "key": KEY,
            "secret": SECRET,
            **extra,
        }

    @pytest.fixture
    def seed(self, put: Any, prefix: str) -> Seed:
        return lambda name, data: put(f"{prefix}/{name}", data)
