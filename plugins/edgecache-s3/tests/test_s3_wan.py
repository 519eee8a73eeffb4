"""S3 over the WAN emulator: a link cut mid-read gives BackendUnavailableError in bounded time and
never wrong bytes; after the link is restored the same read is exact; cached data is served while
the link is down."""

from __future__ import annotations

import concurrent.futures
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from s3testlib import KEY, SECRET, put

from edgecache.backends import get_backend
from edgecache.errors import BackendUnavailableError
from edgecache.testing.backend_suite import run
from edgecache.testing.wan import WANEmulator, WANProfile

SLOW = WANProfile(rtt_ms=10, mbit=16)
"""8 MiB take about 4 s: long enough to cut the link in the middle."""


@pytest.fixture
def wan(moto_endpoint: str) -> Iterator[WANEmulator]:
    with WANEmulator(moto_endpoint, SLOW) as emulator:
        yield emulator


def test_cut_mid_read_then_restore(wan: WANEmulator, client: Any, prefix: str) -> None:
    data = os.urandom(8 * 1024 * 1024)
    path = put(client, f"{prefix}/big.bin", data)
    options = {"endpoint_url": wan.endpoint, "key": KEY, "secret": SECRET, "read_timeout": 5}
    backend = get_backend("s3", options)
    version = backend.version(run(backend.call, "info", path))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reading = pool.submit(run, backend.fetch_range, path, 0, len(data), version)
        deadline = time.monotonic() + 10
        while wan.bytes_down < 1024 * 1024 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not reading.done(), "the read finished before the cut: slow the link down"
        wan.cut("reset")
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError, match=r"s3://.*big\.bin"):
            reading.result(timeout=30)
        assert time.monotonic() - started < 15
    wan.restore()
    # The same backend recovers (a part of the object is enough to show it).
    assert run(backend.fetch_range, path, 1000, 300_000, version) == data[1000:300_000]


def test_cached_data_is_served_while_the_link_is_down(
    wan: WANEmulator, client: Any, prefix: str, tmp_path: Path
) -> None:
    data = os.urandom(300_000)
    path = put(client, f"{prefix}/warm.bin", data)
    options = {"endpoint_url": wan.endpoint, "key": KEY, "secret": SECRET, "retries": 1}
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="s3",
        target_options=options,
        cache_dir=str(tmp_path / "cache"),
        skip_instance_cache=True,
    )
    assert fs.cat_file(f"s3://{path}") == data
    wan.cut("reset")
    started = time.monotonic()
    assert fs.cat_file(f"s3://{path}") == data
    assert time.monotonic() - started < 1
    with pytest.raises(ConnectionError):
        fs.cat_file(f"s3://{prefix}/never-read.bin")
    fs.cache.close()
    fs.metadata.close()


def test_a_blackholed_link_is_bounded_by_the_timeouts(
    wan: WANEmulator, client: Any, prefix: str
) -> None:
    data = os.urandom(4 * 1024 * 1024)
    path = put(client, f"{prefix}/hole.bin", data)
    options = {
        "endpoint_url": wan.endpoint,
        "key": KEY,
        "secret": SECRET,
        "connect_timeout": 1,
        "read_timeout": 1,
        "retries": 2,
    }
    backend = get_backend("s3", options)
    version = backend.version(run(backend.call, "info", path))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        reading = pool.submit(run, backend.fetch_range, path, 0, len(data), version)
        deadline = time.monotonic() + 10
        while wan.bytes_down < 512 * 1024 and time.monotonic() < deadline:
            time.sleep(0.02)
        wan.cut("blackhole")
        started = time.monotonic()
        with pytest.raises(BackendUnavailableError):
            reading.result(timeout=60)
        assert time.monotonic() - started < 12
    wan.restore()
    # The same backend recovers (a part of the object is enough to show it).
    assert run(backend.fetch_range, path, 1000, 300_000, version) == data[1000:300_000]
