"""The hub as a real process (``edgecache hub``): restarted while offline it still answers, and
SIGKILL in the middle of heavy recording leaves a store that opens and answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import aiohttp
import pytest
from edgecache_testservers.kubeapi import APIError, KubeAPIServer, objects
from kubernetes import client as k8s

from edgecache.hub import HubStore

from .conftest import KubeWatcher, k8s_client
from .processes import HubProcess


async def _wait_ready_text(health_url: str, text: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            async with session.get(health_url + "/readyz") as response:
                if text in await response.text():
                    return
            await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never said {text!r}")


async def _stored_objects(health_url: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(health_url + "/metrics") as got:
        metrics = await got.text()
    match = re.search(r"^edgecache_hub_store_objects (\S+)$", metrics, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_hub_restarted_while_offline_still_answers(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    kube_api.seed(objects.pods(50))
    first = HubProcess(tmp_path / "hub", kube_api.url)
    try:
        assert first.mode == "online"
        v1 = k8s.CoreV1Api(k8s_client(first.url))
        online = await asyncio.to_thread(v1.list_namespaced_pod, "default")
        for _ in range(100):
            if await _stored_objects(first.health_url) >= 50:
                break
            await asyncio.sleep(0.05)
    finally:
        await asyncio.to_thread(kube_api.stop)
        assert await asyncio.to_thread(first.terminate) == 0

    second = await asyncio.to_thread(HubProcess, tmp_path / "hub", kube_api.url)
    try:
        assert second.mode == "offline"
        v1 = k8s.CoreV1Api(k8s_client(second.url))
        offline = await asyncio.to_thread(v1.list_namespaced_pod, "default")
        assert [p.metadata.name for p in offline.items] == [p.metadata.name for p in online.items]
        assert offline.metadata.resource_version == online.metadata.resource_version
        await _wait_ready_text(second.health_url, "offline")
        await asyncio.to_thread(kube_api.start)
        await _wait_ready_text(second.health_url, "online")
    finally:
        await asyncio.to_thread(second.terminate)


def test_unreachable_upstream_with_empty_store_exits_1(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            *(sys.executable, "-m", "edgecache.hub", "--server", "http://127.0.0.1:9"),
            *("--cache-dir", str(tmp_path), "--listen", "127.0.0.1:0"),
            *("--health-listen", "127.0.0.1:0"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "cannot reach" in result.stderr


def test_bad_flags_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgecache.hub",
            "--server",
            "ftp://x",
            "--cache-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "--server" in result.stderr


@pytest.mark.slow
async def test_sigkill_during_heavy_writes_leaves_a_working_store(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    cache_dir = tmp_path / "hub"
    stop_writing = threading.Event()

    def write_heavily() -> None:
        index = 0
        while not stop_writing.is_set():
            name = f"cm-{index % 300:03d}"
            data = {"payload": "x" * 2000, "index": str(index)}
            kube_api.put(objects.config_map(name, data=data))
            if index % 7 == 0:
                with contextlib.suppress(APIError):  # already deleted
                    kube_api.delete("v1", "ConfigMap", f"cm-{(index * 13) % 300:03d}", "default")
            index += 1

    for _round in range(3):
        hub = await asyncio.to_thread(HubProcess, cache_dir, kube_api.url)
        v1 = k8s.CoreV1Api(k8s_client(hub.url))
        listed = await asyncio.to_thread(v1.list_namespaced_config_map, "default")
        watcher = KubeWatcher(
            v1.list_namespaced_config_map,
            "default",
            resource_version=listed.metadata.resource_version,
            timeout_seconds=60,
        )
        stop_writing.clear()
        writer = threading.Thread(target=write_heavily, daemon=True)
        writer.start()
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:  # lists too: whole-list replacements in flight
            await asyncio.to_thread(v1.list_namespaced_config_map, "default")
        os.kill(hub.process.pid, signal.SIGKILL)
        hub.process.wait(timeout=10)
        stop_writing.set()
        writer.join()
        watcher.join()

    store = await asyncio.to_thread(HubStore.open, cache_dir)
    try:
        assert list((cache_dir).glob("hub.sqlite.corrupt-*")) == []  # opened as it was
        count, _size = await store.read(store.stats)
        assert count > 0
    finally:
        await asyncio.to_thread(store.close)

    await asyncio.to_thread(kube_api.stop)
    hub = await asyncio.to_thread(HubProcess, cache_dir, kube_api.url)
    try:
        assert hub.mode == "offline"
        agent = {"User-Agent": "edgecache-agent/0.1"}
        url = hub.url + "/api/v1/namespaces/default/configmaps"
        async with aiohttp.ClientSession(headers=agent) as http, http.get(url) as response:
            assert response.status == 200
            body = json.loads(await response.read())
        items = body["items"]
        assert items and len({i["metadata"]["name"] for i in items}) == len(items)
        assert all(len(i["data"]["payload"]) == 2000 for i in items)
        list_rv = int(body["metadata"]["resourceVersion"])
        assert list_rv >= max(int(i["metadata"]["resourceVersion"]) for i in items)
    finally:
        await asyncio.to_thread(hub.terminate)


async def test_kubeconfig_flag(tmp_path: Path) -> None:
    async with KubeAPIServer(tokens={"node-token": "node"}) as api:
        api.seed(objects.pods(2))
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(
            "apiVersion: v1\nkind: Config\ncurrent-context: edge\n"
            "contexts: [{name: edge, context: {cluster: cloud, user: node}}]\n"
            f"clusters: [{{name: cloud, cluster: {{server: '{api.url}'}}}}]\n"
            "users: [{name: node, user: {token: node-token}}]\n"
        )
        hub = await asyncio.to_thread(
            HubProcess, tmp_path / "hub", "", "--kubeconfig", str(kubeconfig)
        )
        try:
            assert hub.mode == "online"
            v1 = k8s.CoreV1Api(k8s_client(hub.url))  # no token: the hub adds its own
            pods = await asyncio.to_thread(v1.list_namespaced_pod, "default")
            assert len(pods.items) == 2
            assert next(r for r in reversed(api.requests) if "pods" in r.path).user == "node"
        finally:
            await asyncio.to_thread(hub.terminate)
