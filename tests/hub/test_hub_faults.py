"""The hub under faults at volume (issue #15, marker ``reliability``): SIGKILLed at random points
with clients listing, watching and writing through it, and its WAN cut and restored at random
under informer-style watchers.

The truth the hub is held to is the test API server's own event log
(``KubeAPIServer.store.events_after``): the state of the ConfigMaps at any resourceVersion is
known exactly. What the hub recorded (a list at resourceVersion R) must be that state at R,
and a list committed before a kill must not be lost (docs/hub.md, crash safety: a SIGKILL loses
at most the transactions not yet committed). CI runs a few rounds; EDGECACHE_RELIABILITY=long
runs release volume (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.wan import WANEmulator, WANProfile
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from .conftest import k8s_client
from .processes import HubProcess

pytestmark = pytest.mark.reliability

NAMESPACE = "default"
#: The WAN between the hub and the API test server: short, so the tests stay quick; the faults
#: are its cuts, not its latency.
LINK = WANProfile(rtt_ms=2, mbit=1000)
#: The hub's list of ConfigMaps in ``default`` for the agent (component, gvr, scope, selector).
AGENT_LIST_KEY = ("edgecache-agent", "/v1/configmaps", NAMESPACE, "")


def _seed() -> int:
    """The run's random seed: EDGECACHE_RELIABILITY_SEED reproduces a run."""
    text = os.environ.get("EDGECACHE_RELIABILITY_SEED", "")
    return int(text) if text.isdigit() else random.SystemRandom().randrange(1 << 30)


class ServerTruth:
    """The ConfigMaps of ``default`` at every resourceVersion, from the server's event log."""

    def __init__(self, api: KubeAPIServer) -> None:
        self.api = api
        self.collected = 0
        self._changes: list[tuple[int, str, str, dict[str, Any] | None]] = []

    def collect(self) -> None:
        """Take in the events since the last call (call often: the log is bounded)."""
        found = self.api.store.events_after(self.collected)
        assert found is not None, "the server's event log was compacted under the test"
        events, reached = found
        for event in events:
            if event.group_resource == ("", "configmaps") and event.namespace == NAMESPACE:
                name = event.object["metadata"]["name"]
                body = None if event.type == "DELETED" else event.object
                self._changes.append((event.resource_version, event.type, name, body))
        self.collected = reached

    def state_at(self, resource_version: int) -> dict[str, tuple[str, dict[str, str]]]:
        """``name -> (resourceVersion, data)`` of every ConfigMap at ``resource_version``."""
        self.collect()
        state: dict[str, tuple[str, dict[str, str]]] = {}
        for rv, _type, name, body in self._changes:
            if rv > resource_version:
                break
            if body is None:
                state.pop(name, None)
            else:
                state[name] = (body["metadata"]["resourceVersion"], dict(body.get("data") or {}))
        return state


def _as_state(items: Any) -> dict[str, tuple[str, dict[str, str]]]:
    return {i.metadata.name: (i.metadata.resource_version, dict(i.data or {})) for i in items}


def _committed_rv(cache_dir: Path, key: tuple[str, str, str, str]) -> int | None:
    """The resourceVersion of one list as committed in the hub's store (read-only, the hub may
    be writing): what a SIGKILL must not take back."""
    with contextlib.closing(
        sqlite3.connect(f"file:{cache_dir / 'hub.sqlite'}?mode=ro", uri=True, timeout=5)
    ) as conn:
        row = conn.execute(
            "SELECT rv FROM lists WHERE component=? AND gvr=? AND scope=? AND selector=?", key
        ).fetchone()
    return int(row[0]) if row and str(row[0]).isdigit() else None


@dataclass
class Load:
    """Clients of one hub: a writer, a lister and an informer (list, then watch from its
    resourceVersion, re-list when the stream ends), each on its own thread with the official
    client. They stop at ``stop`` or when the hub goes away."""

    url: str
    rng: random.Random
    stop: threading.Event = field(default_factory=threading.Event)
    writes: int = 0
    lists: int = 0
    events: int = 0
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._write, self._list, self._inform):
            thread = threading.Thread(target=self._guarded(target), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _guarded(self, target: Callable[[k8s.CoreV1Api], None]) -> Callable[[], None]:
        def run() -> None:
            v1 = k8s.CoreV1Api(k8s_client(self.url))
            while not self.stop.is_set():
                # A killed or restarting hub: connection errors end the loop's pass, not the test.
                with contextlib.suppress(Exception):
                    target(v1)
                self.stop.wait(0.05)

        return run

    def _write(self, v1: k8s.CoreV1Api) -> None:
        names: set[str] = set()
        while not self.stop.is_set():
            name = f"cm-{self.rng.randrange(40):02d}"
            body = objects.config_map(name, data={"v": str(self.writes), "pad": "x" * 300})
            try:
                if name in names and self.rng.random() < 0.2:
                    v1.delete_namespaced_config_map(name, NAMESPACE)
                    names.discard(name)
                elif name in names:
                    v1.replace_namespaced_config_map(name, NAMESPACE, body)
                else:
                    v1.create_namespaced_config_map(NAMESPACE, body)
                    names.add(name)
            except ApiException as exc:
                if exc.status == 409:
                    names.add(name)  # created before (another pass): replace it next time
                elif exc.status == 404:
                    names.discard(name)
                else:
                    raise
            self.writes += 1

    def _list(self, v1: k8s.CoreV1Api) -> None:
        while not self.stop.is_set():
            v1.list_namespaced_config_map(NAMESPACE)
            self.lists += 1

    def _inform(self, v1: k8s.CoreV1Api) -> None:
        listed = v1.list_namespaced_config_map(NAMESPACE)
        watcher = k8s_watch.Watch()
        for _event in watcher.stream(
            v1.list_namespaced_config_map,
            NAMESPACE,
            resource_version=listed.metadata.resource_version,
            timeout_seconds=30,
        ):
            self.events += 1
            if self.stop.is_set():
                watcher.stop()

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)


async def _readyz(health_url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(health_url + "/readyz") as response:
        return response.status, await response.text()


async def _wait_ready(health_url: str, text: str, within_seconds: float = 20) -> None:
    deadline = time.monotonic() + within_seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            status, body = await _readyz(health_url)
            if status == 200 and text in body:
                return
        await asyncio.sleep(0.05)
    raise AssertionError(f"/readyz never said {text!r}")


async def _until(condition: Callable[[], bool], within_seconds: float, what: str) -> None:
    deadline = time.monotonic() + within_seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_hub_killed_at_random_points_keeps_what_it_committed(
    kube_api: KubeAPIServer, tmp_path: Path, reliability: Any
) -> None:
    """SIGKILL an ``edgecache hub`` process at random points while a writer, a lister and an
    informer use it (official client); restart it with the WAN cut: the store opens as it was
    (nothing set aside, no damaged row), and the offline list is exactly the server's state at
    its resourceVersion, no older than what the store had committed before the kill."""
    seed = _seed()
    rng = random.Random(seed)
    reliability.notes["seed"] = seed
    rounds = reliability.scale(3, 50)
    cache_dir, log = tmp_path / "hub", tmp_path / "hub.log"
    kube_api.seed(objects.config_map(f"cm-{i:02d}", data={"v": "seed"}) for i in range(20))
    truth = ServerTruth(kube_api)
    committed: int | None = None
    with WANEmulator(kube_api.url, LINK) as wan:
        for round_ in range(rounds + 1):
            if round_:
                wan.cut()
            hub = await asyncio.to_thread(HubProcess, cache_dir, wan.endpoint, log=log)
            try:
                if round_:
                    assert hub.mode == "offline", round_
                    await _check_offline(hub, cache_dir, truth, committed, reliability)
                    if round_ == rounds:
                        break
                    wan.restore()
                    await _wait_ready(hub.health_url, "online")
                load = Load(hub.url, random.Random(rng.random()))
                load.start()
                try:
                    # Something is committed before the first kill (an empty store cannot start
                    # offline), then the kill comes at a random point of the traffic.
                    await _until(
                        lambda: _committed_rv(cache_dir, AGENT_LIST_KEY) is not None,
                        20,
                        "the first recorded list",
                    )
                    await asyncio.sleep(rng.uniform(0.2, 2.0))
                    committed = await asyncio.to_thread(_committed_rv, cache_dir, AGENT_LIST_KEY)
                    os.kill(hub.process.pid, signal.SIGKILL)
                    await asyncio.to_thread(hub.process.wait, 10)
                    reliability.faults_injected += 1
                    reliability.iterations += 1
                finally:
                    await asyncio.to_thread(load.join)
                truth.collect()
                reliability.notes["writes"] = reliability.notes.get("writes", 0) + load.writes
                reliability.notes["lists"] = reliability.notes.get("lists", 0) + load.lists
                reliability.notes["watch_events"] = (
                    reliability.notes.get("watch_events", 0) + load.events
                )
            finally:
                if hub.process.poll() is None:
                    await asyncio.to_thread(hub.terminate)
    assert reliability.data_lost == 0 and reliability.wrong_bytes == 0


async def _check_offline(
    hub: HubProcess,
    cache_dir: Path,
    truth: ServerTruth,
    committed: int | None,
    reliability: Any,
) -> None:
    set_aside = await asyncio.to_thread(
        lambda: sorted(p.name for p in cache_dir.glob("hub.sqlite.*"))
    )
    assert set_aside == [], set_aside  # opened as it was: nothing moved aside
    status, ready = await _readyz(hub.health_url)
    assert status == 200 and "damaged" not in ready, ready
    v1 = k8s.CoreV1Api(k8s_client(hub.url))
    listed = await asyncio.to_thread(v1.list_namespaced_config_map, NAMESPACE)
    reliability.reads_checked += 1
    rv = int(listed.metadata.resource_version)
    if committed is not None and rv < committed:
        reliability.data_lost += 1  # a committed list taken back by the kill
    assert committed is None or rv >= committed, (rv, committed)
    offline, expected = _as_state(listed.items), truth.state_at(rv)
    wrong = {
        name for name in offline.keys() | expected.keys() if offline.get(name) != expected.get(name)
    }
    reliability.wrong_bytes += len(wrong)
    assert not wrong, {n: (offline.get(n), expected.get(n)) for n in sorted(wrong)[:5]}
