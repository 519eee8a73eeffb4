"""The backend conformance suite over S3 (moto), plus S3-specific version checks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from edgecache_s3 import S3Backend
from s3testlib import KEY, SECRET, put

from edgecache.backends import Backend, ObjectChangedError, get_backend
from edgecache.testing.backend_suite import BackendConformance, Seed, run


class TestS3Conformance(BackendConformance):
    @pytest.fixture
    def backend(self, s3_options: dict[str, Any]) -> Backend:
        return get_backend("s3", s3_options)

    @pytest.fixture
    def seed(self, backend: Backend, client: Any, prefix: str) -> Seed:
        return lambda name, data: put(client, f"{prefix}/{name}", data)

    @pytest.fixture
    def url_options(self, s3_options: dict[str, Any]) -> dict[str, str]:
        return {k: str(v) for k, v in s3_options.items()}

    @pytest.fixture
    def secrets(self) -> list[str]:
        return [KEY, SECRET]


def test_registered_for_s3_and_s3a(
    s3_options: dict[str, Any], backends: Callable[..., Backend]
) -> None:
    s3, s3a = backends("s3", s3_options), backends("s3a", s3_options)
    assert isinstance(s3, S3Backend) and isinstance(s3a, S3Backend)
    assert s3.identity == s3a.identity == f"s3|{s3_options['endpoint_url']}"


def test_same_size_replacement_is_detected_by_etag(
    s3_options: dict[str, Any], client: Any, prefix: str, backends: Callable[..., Backend]
) -> None:
    backend = backends("s3", s3_options)
    path = put(client, f"{prefix}/same-size.bin", b"A" * 100)
    old = backend.version(run(backend.call, "info", path))
    put(client, f"{prefix}/same-size.bin", b"B" * 100)
    new = backend.version(run(backend.call, "info", path))
    assert new != old
    with pytest.raises(ObjectChangedError, match=r"s3://.*same-size\.bin"):
        run(backend.fetch_range, path, 0, 10, old)
    assert run(backend.fetch_range, path, 0, 10, new) == b"B" * 10


def test_version_has_etag_size_and_mtime(
    s3_options: dict[str, Any], client: Any, prefix: str, backends: Callable[..., Backend]
) -> None:
    backend = backends("s3", s3_options)
    path = put(client, f"{prefix}/v.bin", b"hello")
    info = run(backend.call, "info", path)
    size, mtime, etag = backend.version(info).split("-", 2)
    assert (int(size), etag) == (5, info["ETag"].strip('"'))
    assert int(mtime) == int(info["LastModified"].timestamp())


def test_version_survives_the_metadata_stores_json(
    s3_options: dict[str, Any], client: Any, prefix: str, backends: Callable[..., Backend]
) -> None:
    # edgecache's metadata store keeps info as JSON, datetimes as str.
    backend = backends("s3", s3_options)
    info = run(backend.call, "info", put(client, f"{prefix}/json.bin", b"j"))
    assert backend.version(json.loads(json.dumps(info, default=str))) == backend.version(info)
