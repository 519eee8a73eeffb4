"""Fixtures for the node agent tests: the API test server with our CRDs and nodes, agents as
real ``edgecache agent`` subprocesses, and helpers to wait for views and reports.

``cluster`` is the threaded :class:`KubeAPIServer` of the controller tests (CRDs of
``manifests/crds``, nodes a1/a2 in ``pool-a`` and b1 in ``pool-b``). :class:`AgentProcess`
starts ``edgecache agent`` with its own ``--root`` and ``--cache-dir`` under ``tmp_path`` and a
short metadata TTL; :func:`wait_for` polls a condition with a deadline. ``cloud`` (one per
module) is the end-to-end site's cloud: the API, S3 (moto) and OSS test servers behind WAN
emulators, with an ``edgecache hub`` and ``edgecache controller``; ``site`` gives each test its
own bucket and OSS prefix on it. ``VIEW_WATCHER`` is a script that scans a view continuously and
records every file whose bytes are not its object's (a partial or temporary file).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import TEST_BOOKMARK_INTERVAL_SECONDS
from edgecache_testservers.oss import OSSServer
from edgecache_testservers.waiting import wait_for as wait_for
from edgecache_testservers.wan import WANEmulator, WANProfile

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


# --- the cloud behind its links, and the edge hub and controller (end-to-end tests) ---------

LINK = WANProfile(rtt_ms=4, mbit=40)
API_LINK = WANProfile(rtt_ms=4, mbit=200)
OSS_KEY, OSS_SECRET = "LTAIagenttest", "agent-test-secret"


@dataclass
class Site:
    """The cloud (API, S3, OSS) behind its links, the edge hub and the controller."""

    api: KubeAPIServer
    base: Path
    s3: Any
    bucket: str
    oss: OSSServer
    s3_link: WANEmulator
    oss_link: WANEmulator
    api_link: WANEmulator
    hub_url: str
    oss_prefix: str = "logs/"

    def put_s3(self, objects: dict[str, bytes], prefix: str = "images/") -> None:
        for key, data in objects.items():
            self.s3.put_object(Bucket=self.bucket, Key=prefix + key, Body=data)

    def s3_dataset(self, name: str = "images", prefix: str = "images/") -> dict[str, Any]:
        obj = dataset(name, f"s3://{self.bucket}/{prefix}")
        obj["spec"]["mounts"][0]["options"] = {
            "aws.endpoint": self.s3_link.endpoint,
            "aws.accessKeyId": "k",
            "aws.secretAccessKey": "s",
            "aws.region": "us-east-1",
        }
        return obj

    def oss_dataset(self, name: str = "logs") -> dict[str, Any]:
        obj = dataset(name, f"oss://data/{self.oss_prefix}")
        mount = obj["spec"]["mounts"][0]
        mount["options"] = {"fs.oss.endpoint": self.oss_link.endpoint}
        mount["encryptOptions"] = [
            {
                "name": option,
                "valueFrom": {"secretKeyRef": {"name": "oss-creds", "key": key}},
            }
            for option, key in (("fs.oss.accessKeyId", "id"), ("fs.oss.accessKeySecret", "secret"))
        ]
        return obj

    def wan_bytes_down(self) -> int:
        return self.s3_link.bytes_down + self.oss_link.bytes_down

    def cut(self) -> None:
        for link in (self.s3_link, self.oss_link, self.api_link):
            link.cut("blackhole")

    def restore(self) -> None:
        for link in (self.s3_link, self.oss_link, self.api_link):
            link.restore()

    def agent(self, node: str = "a1", **kwargs: Any) -> AgentProcess:
        extra = ("--report-interval=0.3",)
        return AgentProcess(self.base, node, self.hub_url, extra=extra, **kwargs)


@dataclass
class Cloud:
    """What a module's tests share: the API, object stores, links, hub and controller."""

    api: KubeAPIServer
    oss: OSSServer
    s3_link: WANEmulator
    oss_link: WANEmulator
    api_link: WANEmulator
    hub_url: str


@pytest.fixture(scope="module")
def cloud(tmp_path_factory: pytest.TempPathFactory, moto_endpoint: str) -> Iterator[Cloud]:
    base = tmp_path_factory.mktemp("cloud")
    with (
        KubeAPIServer(bookmark_interval_seconds=TEST_BOOKMARK_INTERVAL_SECONDS) as api,
        OSSServer(credentials={OSS_KEY: OSS_SECRET}) as oss,
        WANEmulator(moto_endpoint, LINK) as s3_link,
        WANEmulator(oss.endpoint, LINK) as oss_link,
        WANEmulator(api.url, API_LINK) as api_link,
    ):
        seed_cluster(api)
        api.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "oss-creds", "namespace": "default"},
                "stringData": {"id": OSS_KEY, "secret": OSS_SECRET},
            }
        )
        oss.create_bucket("data")
        hub, hub_url = start_hub(base, api_link.endpoint)
        controller = start_controller(base, api.url)
        try:
            yield Cloud(api, oss, s3_link, oss_link, api_link, hub_url)
        finally:
            controller.stop()
            hub.stop()


@pytest.fixture
def site(cloud: Cloud, tmp_path: Path, moto_endpoint: str) -> Iterator[Site]:
    """A fresh bucket and OSS prefix per test; its API objects are deleted afterwards."""
    s3 = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    )
    bucket = f"data-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    built = Site(
        cloud.api,
        tmp_path,
        s3,
        bucket,
        cloud.oss,
        cloud.s3_link,
        cloud.oss_link,
        cloud.api_link,
        cloud.hub_url,
        oss_prefix=f"logs-{uuid.uuid4().hex[:8]}/",
    )
    try:
        yield built
    finally:
        built.restore()
        for kind in ("DataLoad", "Dataset", "EdgeCacheRuntime"):
            for obj in cloud.api.list_objects(API_VERSION, kind, "default"):
                cloud.api.delete(API_VERSION, kind, obj["metadata"]["name"], "default")
        wait_for(
            lambda: not cloud.api.list_objects(API_VERSION, "Dataset", "default"),
            what="the test's Datasets gone (the controller's finalizer)",
        )


def objects_of(count: int, size: int, prefix: str = "") -> dict[str, bytes]:
    return {f"{prefix}f{i:03d}.bin": os.urandom(size + i) for i in range(count)}


def get(api: KubeAPIServer, kind: str, name: str) -> dict[str, Any]:
    return api.get(API_VERSION, kind, name, "default")


def health(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


VIEW_WATCHER = r"""
import hashlib, json, os, sys, time
view, expected_file, stop_file, out = sys.argv[1:5]
expected = json.load(open(expected_file))
checks = 0
bad = []
while not os.path.exists(stop_file):
    for dirpath, _dirs, names in os.walk(view):
        for name in names:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, view)
            try:
                with open(full, "rb") as f:
                    data = f.read()
            except FileNotFoundError:
                continue
            checks += 1
            if expected.get(rel) != hashlib.sha256(data).hexdigest():
                bad.append(f"{rel}: {len(data)} bytes, not the object's")
    time.sleep(0.002)  # share the CPU with the agent it watches
json.dump({"checks": checks, "bad": bad[:20]}, open(out, "w"))
"""
