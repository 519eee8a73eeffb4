"""Fixtures of the pool tests: S3 (moto) behind the WAN emulator, a dataset in a bucket, a
token file, and pool nodes as real processes (:class:`Peer`)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from edgecache_testservers.wan import WANEmulator, WANProfile

PEER_SCRIPT = Path(__file__).with_name("peer_process.py")
MiB = 1024 * 1024


@dataclass
class Dataset:
    """Objects in a bucket behind the WAN, and what reading them must give."""

    bucket: str
    sha256: dict[str, str]
    """URL -> sha256 of its bytes."""
    size: int
    """Total bytes."""

    @property
    def urls(self) -> list[str]:
        return sorted(self.sha256)


@pytest.fixture
def wan(moto_endpoint: str) -> Iterator[WANEmulator]:
    # A fast link: the tests count bytes over it; speed is measured in bench/pool_bench.py.
    with WANEmulator(moto_endpoint, WANProfile(rtt_ms=2, mbit=400)) as emulator:
        yield emulator


def make_dataset(endpoint: str, *, files: int, file_bytes: int) -> Dataset:
    """``files`` objects of ``file_bytes`` each: random bytes, and one compressible object
    (so LZ4 runs on the wire too)."""
    name = f"pool-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=name)
    sha: dict[str, str] = {}
    for i in range(files):
        if i == 0:
            data = (b"edgecache pool %08d\n" % i) * (file_bytes // 20 + 1)
            data = data[:file_bytes]
        else:
            data = os.urandom(file_bytes)
        key = f"data/part-{i:03d}.bin"
        client.put_object(Bucket=name, Key=key, Body=data)
        sha[f"edgecache::s3://{name}/{key}"] = hashlib.sha256(data).hexdigest()
    return Dataset(name, sha, files * file_bytes)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "pool-token"
    path.write_text(uuid.uuid4().hex + "\n")
    return path


class Peer:
    """One pool node as a subprocess (``peer_process.py``), driven by JSON lines."""

    def __init__(
        self, name: str, *, tmp_path: Path, token_file: Path, endpoint: str, **extra: Any
    ) -> None:
        self.name = name
        config = {
            "name": name,
            "cache_dir": str(tmp_path / f"cache-{name}"),
            "token_file": str(token_file),
            "s3": {"endpoint_url": endpoint, "key": "k", "secret": "s"},
            "block_size": extra.pop("block_size", MiB),
            **extra,
        }
        self.log = tmp_path / f"{name}.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(PEER_SCRIPT), json.dumps(config)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        ready = self.event()
        assert ready["event"] == "ready", ready
        self.address: str = ready["address"]

    @property
    def entry(self) -> str:
        return f"{self.name}={self.address}"

    def send(self, cmd: str, **args: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.process.stdin.flush()

    def event(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise AssertionError(f"peer {self.name} exited ({self.process.wait()}):\n{tail}")
        event: dict[str, Any] = json.loads(line)
        return event

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        self.send(cmd, **args)
        return self.event()

    def reads(self) -> dict[str, str]:
        """The ``read`` events up to ``done``: URL -> sha256 (or ``error: <type> clear|unclear``
        for a read that failed)."""
        found: dict[str, str] = {}
        while (event := self.event())["event"] != "done":
            failed = f"error: {event.get('error')} {'clear' if event.get('clear') else 'unclear'}"
            found[event["url"]] = event.get("sha256") or failed
        return found

    def pause(self) -> None:
        """SIGSTOP: alive to the kernel (connections are accepted), silent to its peers."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.send("quit")
                self.process.wait(timeout=20)
            except (OSError, subprocess.TimeoutExpired):
                self.kill()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def start_peers(tmp_path: Path, token_file: Path, wan: WANEmulator) -> Iterator[Any]:
    started: list[Peer] = []

    def start(count: int, **extra: Any) -> list[Peer]:
        peers = [
            Peer(
                f"node-{chr(ord('a') + i)}",
                tmp_path=tmp_path,
                token_file=token_file,
                endpoint=wan.endpoint,
                **dict(extra),
            )
            for i in range(count)
        ]
        started.extend(peers)
        return peers

    yield start
    for peer in started:
        peer.close()


def read_all(peers: list[Peer], urls: list[str]) -> list[dict[str, str]]:
    """All peers read ``urls`` at the same time; each one's URL -> sha256."""
    for peer in peers:
        peer.send("read", urls=urls)
    results: list[dict[str, str]] = [{} for _ in peers]

    def collect(i: int) -> None:
        results[i] = peers[i].reads()

    threads = [threading.Thread(target=collect, args=(i,)) for i in range(len(peers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
