"""Helpers of the WAN QoS tests: a bucket behind the WAN emulator, a block-by-block reader, a
prefetch running in a thread, and the WAN bytes counter by priority."""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3
import fsspec
from edgecache_testservers.wan import WANEmulator, WANProfile

from edgecache.fs import EdgeCacheFileSystem, PrefetchProgress, PrefetchReport, run_prefetch
from edgecache.metrics import REGISTRY

KiB, MiB = 1024, 1024 * 1024
BLOCK = 256 * KiB
LINK = WANProfile(rtt_ms=10, mbit=10)
"""A thin link: one 256 KiB block takes about 0.21 s to cross it, far above the noise of a
busy machine, so "within one block time" is a margin that does not flap."""
BLOCK_SECONDS = BLOCK / LINK.down_bytes_per_second


@dataclass
class Site:
    """A bucket on the S3 test server, reached through an emulated WAN link."""

    moto_endpoint: str
    bucket: str
    wan: WANEmulator

    @property
    def s3_options(self) -> dict[str, str]:
        return {"endpoint_url": self.wan.endpoint, "key": "k", "secret": "s"}

    def put(self, key: str, data: bytes) -> None:
        client = boto3.client(
            "s3",
            endpoint_url=self.moto_endpoint,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )
        client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"


def cache_options(cache_dir: str, **extra: Any) -> dict[str, Any]:
    """The ``edgecache={...}`` options every party of a test uses (the same QoS settings: the
    same link scheduler in one process, a new one for each test).

    ``EDGECACHE_TEST_QOS=off`` in the environment turns QoS off, to check that the tests
    would fail without it (they must)."""
    return {
        "cache_dir": cache_dir,
        "block_size": BLOCK,
        "readahead_blocks": 0,  # one request per read: the latency of one block
        "background_inflight": BLOCK,
        "qos_dir": os.path.join(cache_dir, "qos"),  # the default, spelt out: one per test
        "qos_enabled": os.environ.get("EDGECACHE_TEST_QOS", "on") != "off",
        **extra,
    }


def make_fs(site: Site, options: dict[str, Any]) -> EdgeCacheFileSystem:
    """The filesystem a DataLoad (prefetch) runs on."""
    return EdgeCacheFileSystem(
        target_protocol="s3", target_options=site.s3_options, skip_instance_cache=True, **options
    )


def block_latencies(site: Site, key: str, options: dict[str, Any], blocks: int) -> list[float]:
    """Seconds each block of ``key`` took to read, reading it block by block as a reader
    does (``fsspec.open`` of the chained URL, ``read(block)`` in a loop)."""
    latencies = []
    with fsspec.open(
        f"edgecache::{site.url(key)}", "rb", edgecache=dict(options), s3=site.s3_options
    ) as f:
        for _ in range(blocks):
            started = time.perf_counter()
            data = f.read(BLOCK)
            latencies.append(time.perf_counter() - started)
            assert len(data) == BLOCK
    return latencies


def p50(values: list[float]) -> float:
    return statistics.median(values)


def wan_bytes(priority: str) -> float:
    """``edgecache_wan_bytes_total{priority=...}`` of this process, summed over backends."""
    total = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "edgecache_wan_bytes_total" and sample.labels["priority"] == priority:
                total += sample.value
    return total


@dataclass
class Load:
    """A prefetch of ``url`` running in a thread (what a DataLoad runs in the agent)."""

    fs: EdgeCacheFileSystem
    url: str
    parallel: int | None = 4
    progress: list[tuple[float, int]] = field(default_factory=list)
    """(monotonic seconds, bytes loaded) after every block."""
    loading: threading.Event = field(default_factory=threading.Event)
    """Set once the first block is stored: background traffic is on the link."""
    stop: threading.Event = field(default_factory=threading.Event)
    report: PrefetchReport | None = None
    on_block: Callable[[PrefetchProgress], None] | None = None
    _thread: threading.Thread | None = None

    def _progress(self, progress: PrefetchProgress) -> None:
        self.progress.append((time.monotonic(), progress.bytes_loaded))
        if progress.bytes_loaded:
            self.loading.set()
        if self.on_block is not None:
            self.on_block(progress)

    def _run(self) -> None:
        self.report = run_prefetch(
            self.fs,
            [self.url],
            parallel=self.parallel,
            on_progress=self._progress,
            progress_interval=0,
            stop=self.stop,
        )

    def __enter__(self) -> Load:
        self._thread = threading.Thread(target=self._run, name="load")
        self._thread.start()
        return self

    def wait(self, timeout: float = 120) -> PrefetchReport:
        assert self._thread is not None
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the prefetch did not finish"
        assert self.report is not None
        return self.report

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self._thread is not None:
            self._thread.join(120)
