"""Fixtures of the OSS plugin tests: the OSS-protocol test server (``edgecache_testservers.oss``) on
127.0.0.1, which verifies request signatures, with one bucket and a fresh prefix per test.

Every test runs with the OSS/Alibaba Cloud environment variables cleared, so nothing from the
machine leaks in.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from edgecache_testservers.oss import OSSServer
from osstestlib import BUCKET, KEY, SECRET, STS_KEY, STS_SECRET, TOKEN


@pytest.fixture(autouse=True)
def clean_oss_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "OSS_ENDPOINT",
        "OSS_ACCESS_KEY_ID",
        "OSS_ACCESS_KEY_SECRET",
        "OSS_SESSION_TOKEN",
        "OSS_SECURITY_TOKEN",
        "ALIBABA_CLOUD_ACCESS_KEY_ID",
        "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
        "ALIBABA_CLOUD_SECURITY_TOKEN",
        "EDGECACHE_SECRETS_DIR",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def oss_server() -> Iterator[OSSServer]:
    with OSSServer(
        credentials={KEY: SECRET, STS_KEY: STS_SECRET}, security_tokens={STS_KEY: TOKEN}
    ) as server:
        server.create_bucket(BUCKET)
        yield server


@pytest.fixture
def prefix(oss_server: OSSServer) -> str:
    """``bucket/<unique>``: where this test's objects live."""
    return f"{BUCKET}/t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def oss_options(oss_server: OSSServer) -> dict[str, Any]:
    return {"endpoint": oss_server.endpoint, "key": KEY, "secret": SECRET}


@pytest.fixture
def put(oss_server: OSSServer) -> Any:
    """``put("bucket/key", data) -> "bucket/key"``, straight into the server's store."""

    def store(path: str, data: bytes) -> str:
        bucket, key = path.split("/", 1)
        oss_server.put_object(bucket, key, data)
        return path

    return store
