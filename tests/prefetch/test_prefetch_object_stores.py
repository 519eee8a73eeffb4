"""Prefetch from the S3 (moto) and OSS test servers through the WAN emulator: exact bytes, a
second run moves no data over the WAN, and after the link is cut `cat`, `ls` and `info` of the
prefetched paths still work, from this process and from a new `edgecache` process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from edgecache_testservers.oss import OSSServer
from edgecache_testservers.wan import WANEmulator, WANProfile
from moto.server import ThreadedMotoServer

from edgecache.fs import EdgeCacheFileSystem, run_prefetch

FAST = WANProfile(rtt_ms=2, mbit=800)
OSS_KEY, OSS_SECRET = "AKIDPREFETCH", "prefetch-secret-value"


@dataclass
class Store:
    """One object store behind a WAN emulator, with the data of one test."""

    protocol: str
    options: dict[str, Any]
    root: str
    """``bucket/prefix`` holding the test's objects."""
    objects: dict[str, bytes]
    wan: WANEmulator

    def cli_options(self) -> list[str]:
        return [f"-o{k}={v}" for k, v in self.options.items()]


def dataset() -> dict[str, bytes]:
    objects = {f"small/f{i:03d}.bin": os.urandom(3000 + i) for i in range(30)}
    objects["large/blob.bin"] = os.urandom(5 * 1024 * 1024 + 11)
    return objects


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def oss() -> Iterator[OSSServer]:
    with OSSServer(credentials={OSS_KEY: OSS_SECRET}) as server:
        server.create_bucket("data")
        yield server


@pytest.fixture(params=["s3", "oss"])
def store(request: pytest.FixtureRequest, moto: str, oss: OSSServer) -> Iterator[Store]:
    objects = dataset()
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    if request.param == "s3":
        client = boto3.client(
            "s3",
            endpoint_url=moto,
            aws_access_key_id="k",
            aws_secret_access_key="s",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket="data")
        for key, data in objects.items():
            client.put_object(Bucket="data", Key=f"{prefix}/{key}", Body=data)
        upstream = moto
    else:
        for key, data in objects.items():
            oss.put_object("data", f"{prefix}/{key}", data)
        upstream = oss.endpoint
    with WANEmulator(upstream, FAST) as wan:
        if request.param == "s3":
            options = {"endpoint_url": wan.endpoint, "key": "k", "secret": "s"}
        else:
            options = {"endpoint": wan.endpoint, "key": OSS_KEY, "secret": OSS_SECRET}
        yield Store(request.param, options, f"data/{prefix}", objects, wan)


def make_fs(store: Store, cache: Path, **options: Any) -> EdgeCacheFileSystem:
    return EdgeCacheFileSystem(
        target_protocol=store.protocol,
        target_options=store.options,
        cache_dir=str(cache),
        block_size="1MiB",
        skip_instance_cache=True,
        **options,
    )


def edgecache(store: Store, cache: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecache",
            *args,
            "--cache-dir",
            str(cache),
            "--set",
            "block_size=1MiB",
            *store.cli_options(),
        ],
        capture_output=True,
        env=env,
        timeout=120,
    )


def test_prefetch_then_second_run_then_offline(store: Store, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    url = f"{store.protocol}://{store.root}"
    payload = sum(len(b) for b in store.objects.values())

    fs = make_fs(store, cache)
    report = run_prefetch(fs, [url])
    assert report.ok, report.failed
    assert report.files_loaded == len(store.objects) and report.bytes_loaded == payload
    for key, data in store.objects.items():
        assert fs.cat_file(f"{store.root}/{key}") == data
    assert store.wan.bytes_down >= payload

    # A second run, in a new process: metadata may be listed again, data never moves.
    store.wan.reset_counters()
    second = edgecache(store, cache, "prefetch", url, "--json")
    assert second.returncode == 0, second.stderr.decode()
    again = json.loads(second.stdout)
    assert again["bytes_loaded"] == 0 and again["files_cached"] == len(store.objects)
    assert store.wan.bytes_down < payload * 0.05, "the second run moved data over the WAN"

    # The link goes down: prefetched paths are still listed, described and read.
    store.wan.cut("reset")
    offline = make_fs(store, cache, metadata_ttl=0)  # every metadata entry counts as expired
    assert len(offline.ls(f"{store.root}/small")) == 30
    assert offline.info(f"{store.root}/large/blob.bin")["size"] == len(
        store.objects["large/blob.bin"]
    )
    assert offline.cat_file(f"{store.root}/small/f007.bin") == store.objects["small/f007.bin"]

    cat = edgecache(store, cache, "cat", f"{url}/large/blob.bin", "--set", "metadata_ttl=0")
    assert cat.returncode == 0, cat.stderr.decode()
    assert cat.stdout == store.objects["large/blob.bin"]
    listing = edgecache(store, cache, "ls", "--json", f"{url}/small", "--set", "metadata_ttl=0")
    assert listing.returncode == 0, listing.stderr.decode()
    assert len(json.loads(listing.stdout)) == 30
    missing = edgecache(store, cache, "cat", f"{url}/not-prefetched.bin", "--set", "metadata_ttl=0")
    assert missing.returncode == 1 and b"unreachable" in missing.stderr
