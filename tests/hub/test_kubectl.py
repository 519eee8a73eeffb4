"""The hub through the real ``kubectl`` on this machine: get, get -w, apply, CRDs, offline.

Every kubectl call gets a fresh ``--cache-dir``, so discovery really goes through the hub (and
comes from the hub's store while offline) instead of kubectl's own disk cache.
"""

from __future__ import annotations

import asyncio
import queue
import subprocess
import threading
from pathlib import Path

import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import kubectl_path

from edgecache.hub import HubServer

from .conftest import cut, restore

pytestmark = pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")

CONFIG_MAP = """
apiVersion: v1
kind: ConfigMap
metadata:
  name: site-settings
  namespace: default
data:
  mode: edge
"""


class Kubectl:
    """kubectl against one server, each call with its own empty discovery cache."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.calls = 0

    def command(self, *args: str) -> list[str]:
        self.calls += 1
        cache = self.tmp_path / f"kubectl-cache-{self.calls}"
        executable = kubectl_path()
        assert executable is not None
        base = [executable, "--server", self.url, "--kubeconfig", "/dev/null"]
        return [*base, "--cache-dir", str(cache), *args]

    async def run(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return await asyncio.to_thread(
            subprocess.run,
            self.command(*args),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


class Streaming:
    """A long-running kubectl (``get -w``) whose output lines are collected on a thread."""

    def __init__(self, command: list[str]) -> None:
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    async def line(self, wait_seconds: float = 10.0) -> str | None:
        return await asyncio.to_thread(self.lines.get, True, wait_seconds)

    async def line_containing(self, text: str) -> str:
        while True:
            line = await self.line()
            assert line is not None, f"kubectl ended before printing {text!r}"
            if text in line:
                return line

    async def exited(self, wait_seconds: float = 10.0) -> int:
        return await asyncio.to_thread(self.process.wait, wait_seconds)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


async def test_kubectl_online_matches_direct(
    hub: HubServer, kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    kube_api.seed(objects.pods(4))
    via_hub = await Kubectl(hub.url, tmp_path).run("get", "pods", "-o", "name")
    direct = await Kubectl(kube_api.url, tmp_path).run("get", "pods", "-o", "name")
    assert via_hub.returncode == 0, via_hub.stderr
    assert via_hub.stdout == direct.stdout
    applied = await Kubectl(hub.url, tmp_path).run(
        "apply", "--validate=false", "-f", "-", stdin=CONFIG_MAP
    )
    assert applied.returncode == 0, applied.stderr
    assert kube_api.get("v1", "ConfigMap", "site-settings", "default")["data"] == {"mode": "edge"}


async def test_kubectl_offline_get_crd_and_refused_apply(
    hub: HubServer, kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    kube_api.seed(objects.pods(3))
    kube_api.create(
        objects.crd(
            "data.edgecache.io",
            "Dataset",
            versions=("v1alpha1",),
            printer_columns=(("Phase", "string", ".status.phase"),),
        )
    )
    kube_api.create(
        {
            "apiVersion": "data.edgecache.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "imagenet", "namespace": "default"},
        }
    )
    kubectl = Kubectl(hub.url, tmp_path)
    assert (await kubectl.run("api-resources")).returncode == 0
    online_pods = await kubectl.run("get", "pods")
    online_datasets = await kubectl.run("get", "datasets")
    online_one = await kubectl.run("get", "pod", "pod-00001", "-o", "jsonpath={.spec.nodeName}")
    assert online_datasets.returncode == 0, online_datasets.stderr
    assert "imagenet" in online_datasets.stdout

    await cut(kube_api, hub)
    resources = await kubectl.run("api-resources")  # discovery, from the store
    assert resources.returncode == 0, resources.stderr
    assert "datasets" in resources.stdout and "pods" in resources.stdout
    offline_pods = await kubectl.run("get", "pods")
    assert offline_pods.returncode == 0, offline_pods.stderr
    assert offline_pods.stdout.split("\n")[0] == online_pods.stdout.split("\n")[0]
    assert [line.split()[0] for line in offline_pods.stdout.splitlines()] == [
        line.split()[0] for line in online_pods.stdout.splitlines()
    ]
    offline_datasets = await kubectl.run("get", "datasets")
    assert offline_datasets.returncode == 0, offline_datasets.stderr  # YurtHub #2121
    assert "imagenet" in offline_datasets.stdout and "PHASE" in offline_datasets.stdout
    offline_one = await kubectl.run("get", "pod", "pod-00001", "-o", "jsonpath={.spec.nodeName}")
    assert offline_one.stdout == online_one.stdout == "node-1"

    refused = await kubectl.run("apply", "--validate=false", "-f", "-", stdin=CONFIG_MAP)
    assert refused.returncode != 0
    assert "offline" in refused.stderr and "nothing was applied" in refused.stderr
    await restore(kube_api, hub)
    with pytest.raises(Exception, match="not found"):
        kube_api.get("v1", "ConfigMap", "site-settings", "default")


async def test_kubectl_watch_is_closed_at_each_switch(
    hub: HubServer, kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    kube_api.seed(objects.pods(2))
    kubectl = Kubectl(hub.url, tmp_path)
    assert (await kubectl.run("get", "pods")).returncode == 0  # recorded for offline use
    online_watch = Streaming(kubectl.command("get", "pods", "-w"))
    try:
        await online_watch.line_containing("pod-00001")
        kube_api.create(objects.pod("arrives-online"))
        await online_watch.line_containing("arrives-online")
        # Hang the probes instead of resetting connections: the upstream watch stays open,
        # so only the hub's own switch can end it (YurtHub #2792 left such watches hanging).
        kube_api.hang(path_prefix="/readyz")
        await hub.health.wait_for(False, within_seconds=10)
        assert await online_watch.exited() is not None
    finally:
        online_watch.kill()

    offline_watch = Streaming(kubectl.command("get", "pods", "-w"))
    try:
        await offline_watch.line_containing("pod-00001")  # initial list from the store
        await asyncio.sleep(1.0)
        assert offline_watch.process.poll() is None, offline_watch.process.stderr.read()  # type: ignore[union-attr]
        kube_api.clear_faults()
        await hub.health.wait_for(True, within_seconds=10)
        assert await offline_watch.exited() is not None  # ended so that kubectl re-lists
    finally:
        offline_watch.kill()
    assert hub.watches.closed_by_switch >= 2
