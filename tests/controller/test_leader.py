"""Two ``edgecache controller`` processes: one leads (holds the Lease, reconciles), the other
waits; the leader stopping (SIGTERM: Lease released) or dying (SIGKILL: Lease expires) hands
over; /healthz, /readyz and /metrics tell which is which."""

from __future__ import annotations

import asyncio
import os
import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import aiohttp
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer

from .conftest import dataset, eventually, get, runtime

EDGECACHE = str(Path(sys.executable).with_name("edgecache"))


class ControllerProcess:
    """``edgecache controller`` as a user starts it, with short Lease timings."""

    def __init__(self, api_url: str, tmp_path: Path, name: str) -> None:
        self.log = (tmp_path / f"{name}.log").open("w")
        self.process = subprocess.Popen(
            [
                EDGECACHE,
                "controller",
                "--server",
                api_url,
                "--lease-namespace",
                "default",
                "--lease-duration",
                "2",
                "--renew-deadline",
                "1.5",
                "--retry-period",
                "0.2",
                "--health-listen",
                "127.0.0.1:0",
                "--resync",
                "5",
                "--cache-dir",
                str(tmp_path / f"{name}-cache"),
            ],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        assert self.process.stdout is not None
        stdout: IO[str] = self.process.stdout
        threading.Thread(target=lambda: [lines.put(line) for line in stdout], daemon=True).start()
        try:
            first = lines.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"{name} printed nothing: {self.stderr()}") from None
        match = re.match(r"edgecache controller: (\S+) serving health on (\S+)", first)
        assert match, first
        self.identity, self.health_url = match.group(1), match.group(2)

    def stderr(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return Path(self.log.name).read_text()

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as session, session.get(self.health_url + path) as r:
            return r.status, await r.text()

    async def wait_ready(self, timeout_seconds: float = 10.0) -> tuple[int, str]:
        """/readyz once it answers 200 (a replica is ready once it has reached the API)."""
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while True:
            status, text = await self.get("/readyz")
            if status == 200 or asyncio.get_running_loop().time() > deadline:
                return status, text
            await asyncio.sleep(0.05)

    async def metric(self, name: str) -> float:
        _, text = await self.get("/metrics")
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout=20)
        self.log.close()
        return code


@pytest.fixture
def processes(cluster: KubeAPIServer, tmp_path: Path) -> Iterator[list[ControllerProcess]]:
    started: list[ControllerProcess] = []
    yield started
    for p in started:
        if p.process.poll() is None:
            p.stop(signal.SIGKILL)


def holder(api: KubeAPIServer) -> str:
    lease = api.get("coordination.k8s.io/v1", "Lease", "edgecache-controller", "default")
    return str(lease["spec"].get("holderIdentity") or "")


def bound(api: KubeAPIServer, name: str) -> bool:
    return get(api, "Dataset", name).get("status", {}).get("phase") == "Bound"


async def test_one_leader_acts_and_a_standby_takes_over_when_it_stops(
    cluster: KubeAPIServer, processes: list[ControllerProcess], tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    data = f"file://{tmp_path / 'd'}"
    first = ControllerProcess(cluster.url, tmp_path, "first")
    processes.append(first)
    await eventually(lambda: holder(cluster) == first.identity, what="first leads")
    second = ControllerProcess(cluster.url, tmp_path, "second")
    processes.append(second)
    cluster.create(dataset("one", data))
    cluster.create(runtime("one"))
    await eventually(lambda: bound(cluster, "one"), what="Dataset one Bound")
    assert holder(cluster) == first.identity  # the second never took it over
    assert await first.metric("edgecache_controller_leader") == 1
    assert await second.metric("edgecache_controller_leader") == 0
    assert await second.metric("edgecache_controller_reconciles_total") == 0
    assert await first.metric("edgecache_controller_reconciles_total") > 0
    assert (await first.get("/readyz"))[0] == 200
    status, text = await second.wait_ready()
    assert status == 200 and f"standby (leader: {first.identity})" in text
    assert (await second.get("/healthz")) == (200, "ok\n")

    # Graceful stop: the Lease is released, the standby takes over without waiting it out.
    assert first.stop(signal.SIGTERM) == 0
    await eventually(lambda: holder(cluster) == second.identity, what="second leads")
    assert "lost the lease" in first.stderr() or "acquired" in first.stderr()
    cluster.create(dataset("two", data))
    cluster.create(runtime("two"))
    await eventually(lambda: bound(cluster, "two"), what="Dataset two Bound by the new leader")
    assert await second.metric("edgecache_controller_leader") == 1

    # A leader that dies keeps the Lease until it expires; then the next one takes it.
    third = ControllerProcess(cluster.url, tmp_path, "third")
    processes.append(third)
    status, text = await third.wait_ready()
    assert "standby" in text
    second.stop(signal.SIGKILL)
    await eventually(lambda: holder(cluster) == third.identity, timeout_seconds=15)
    cluster.create(dataset("three", data))
    cluster.create(runtime("three"))
    await eventually(lambda: bound(cluster, "three"), what="Dataset three Bound after failover")
    assert third.stop(signal.SIGTERM) == 0
    lease = cluster.get("coordination.k8s.io/v1", "Lease", "edgecache-controller", "default")
    assert lease["spec"]["holderIdentity"] == ""  # released on the way out
    assert lease["spec"]["leaseTransitions"] >= 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "no API server given: use --server URL, --kubeconfig FILE, or run in a pod"),
        (["--server", "ftp://x"], "API server URL (--server) must be http(s), got 'ftp://x'"),
        (
            ["--server", "http://127.0.0.1:1", "--lease-duration", "1"],
            "--renew-deadline must be shorter than --lease-duration",
        ),
        (["--server", "http://127.0.0.1:1", "--health-listen", "nope"], "expected host:port"),
    ],
)
def test_usage_mistakes_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    result = subprocess.run(
        [EDGECACHE, "controller", *args], capture_output=True, text=True, timeout=30, env=env
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
