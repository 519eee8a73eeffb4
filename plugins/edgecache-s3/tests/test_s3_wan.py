"""S3 over the WAN emulator: the shared network-failure suite (a link cut mid-read, a blackholed
link, cached data while the link is down) against moto."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from s3testlib import KEY, SECRET, put

from edgecache.testing.backend_suite import RemoteBackendWANConformance, Seed

# Runs alone (conftest.py): timeouts and cached reads held to deadlines.
pytestmark = pytest.mark.exclusive


class TestS3OverWAN(RemoteBackendWANConformance):
    protocol = "s3"

    @pytest.fixture
    def upstream(self, moto_endpoint: str) -> str:
        return moto_endpoint

    @pytest.fixture
    def options_for(self) -> Callable[..., dict[str, Any]]:
        return lambda endpoint, **extra: {
            "endpoint_url": endpoint,
            "key": KEY,
            "secret": SECRET,
            **extra,
        }

    @pytest.fixture
    def seed(self, client: Any, prefix: str) -> Seed:
        return lambda name, data: put(client, f"{prefix}/{name}", data)
