"""Fixtures for the node agent tests: the API test server with our CRDs and nodes, agents as
real ``edgecache agent`` subprocesses, and helpers to wait for views and reports.

``cluster`` is the threaded :class:`KubeAPIServer` of the controller tests (CRDs of
``manifests/crds``, nodes a1/a2 in ``pool-a`` and b1 in ``pool-b``). :class:`AgentProcess`
starts ``edgecache agent`` with its own ``--root`` and ``--cache-dir`` under ``tmp_path`` and a
short metadata TTL; :func:`wait_for` polls a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import TEST_BOOKMARK_INTERVAL_SECONDS
from edgecache_testservers.waiting import wait_for as wait_for

from edgecache.k8s.objects import API_VERSION, NODEPOOL_LABEL, report_name

ROOT = Path(__file__).resolve().parents[2]
EDGECACHE = str(Path(sys.executable).with_name("edgecache"))
JSONObject = dict[str, Any]


def seed_cluster(api: KubeAPIServer) -> None:
    """Our CRDs, and nodes a1, a2 in pool-a and b1 in pool-b."""
    for path in sorted((ROOT / "manifests/crds").glob("*.yaml")):
        api.create(yaml.safe_load(path.read_text()))
    for name, pool in (("a1", "pool-a"), ("a2", "pool-a"), ("b1", "pool-b")):
        api.create(objects.node(name, labels={NODEPOOL_LABEL: pool}))


@pytest.fixture
def cluster() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval_seconds=TEST_BOOKMARK_INTERVAL_SECONDS) as api:
        seed_cluster(api)
        yield api


class ServiceProcess:
    """An ``edgecache`` service as a subprocess: started, its first stdout line read."""

    def __init__(self, log: Path, command: list[str]) -> None:
        self.log = log
        self.command = command
        self.process: subprocess.Popen[bytes] | None = None
        self.first_line = ""

    def start(self) -> ServiceProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - the child writes it
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=out,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        out.close()
        assert self.process.stdout is not None
        self.first_line = self.process.stdout.readline().decode()
        if not self.first_line:
            self.stop()
            raise AssertionError(f"{self.command[:2]} did not start:\n{self.log.read_text()}")
        return self

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode


def start_hub(base: Path, upstream: str) -> tuple[ServiceProcess, str]:
    """``edgecache hub`` in front of ``upstream`` with fast health probes; (process, URL)."""
    hub = ServiceProcess(
        base / "hub.log",
        [
            EDGECACHE,
            "hub",
            f"--server={upstream}",
            f"--cache-dir={base / 'hub'}",
            "--listen=127.0.0.1:0",
            "--health-listen=127.0.0.1:0",
            "--probe-interval=0.2",
        ],
    ).start()
    url = hub.first_line.split("serving ", 1)[1].split(" ", 1)[0]
    return hub, url


def start_controller(base: Path, server: str) -> ServiceProcess:
    return ServiceProcess(
        base / "controller.log",
        [
            EDGECACHE,
            "controller",
            f"--server={server}",
            "--no-leader-elect",
            "--health-listen=127.0.0.1:0",
            f"--cache-dir={base / 'controller-cache'}",
            "--resync=2",
            "--listing-refresh=2",
        ],
    ).start()


class AgentProcess:
    """``edgecache agent`` as a subprocess with this node's own directories."""

    def __init__(
        self,
        base: Path,
        node: str,
        server: str,
        *,
        metadata_ttl: float = 1.0,
        extra: tuple[str, ...] = (),
    ) -> None:
        self.node = node
        self.root = base / node / "root"
        self.cache_dir = base / node / "cache"
        self.server = server
        self.metadata_ttl = metadata_ttl
        self.extra = extra
        self.log = base / node / "agent.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.health_url = ""

    def start(self) -> AgentProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [
            EDGECACHE,
            "agent",
            f"--node-name={self.node}",
            f"--server={self.server}",
            f"--root={self.root}",
            f"--cache-dir={self.cache_dir}",
            "--health-listen=127.0.0.1:0",
            f"--metadata-ttl={self.metadata_ttl}",
            "-v",
            *self.extra,
        ]
        out = open(self.log, "ab")  # noqa: SIM115 - the child writes it; closed by the OS
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=out, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().decode()
        if "health on " not in line:
            self.stop()
            raise AssertionError(f"agent did not start: {line!r}\n{self.log.read_text()}")
        self.health_url = line.rsplit("health on ", 1)[1].strip()
        return self

    def view(self, name: str, namespace: str = "default") -> Path:
        return self.root / "datasets" / namespace / name

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        return self.process.returncode

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[list[AgentProcess]]:
    """Agents a test starts (append them); all are stopped at the end."""
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        agent.stop()


def dataset(name: str, mount_point: str, *, pool: str = "pool-a", **spec: Any) -> JSONObject:
    body: JSONObject = {
        "mounts": [{"mountPoint": mount_point, "name": name}],
        "nodeAffinity": {
            "required": {
                "nodeSelectorTerms": [
                    {
                        "matchExpressions": [
                            {"key": NODEPOOL_LABEL, "operator": "In", "values": [pool]}
                        ]
                    }
                ]
            }
        },
    }
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


def runtime(name: str, *, quota: str = "1Gi", **level: Any) -> JSONObject:
    levels = [{"mediumtype": "SSD", "path": "/mnt/cache", "quota": quota, **level}]
    return {
        "apiVersion": API_VERSION,
        "kind": "EdgeCacheRuntime",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"tieredstore": {"levels": levels}},
    }


def dataload(name: str, dataset_name: str, *targets: str, pin: bool = False) -> JSONObject:
    spec: JSONObject = {"dataset": {"name": dataset_name, "namespace": "default"}}
    if targets:
        spec["target"] = [{"path": t} for t in targets]
    if pin:
        spec["pin"] = True
    return {
        "apiVersion": API_VERSION,
        "kind": "DataLoad",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def report(api: KubeAPIServer, dataset_name: str, node: str) -> JSONObject | None:
    try:
        return api.get(API_VERSION, "CacheReport", report_name(dataset_name, node), "default")
    except Exception:
        return None


def tree(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` with its bytes (relative POSIX paths)."""
    return {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
