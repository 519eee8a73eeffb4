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
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from edgecache_testservers.kubeapi import APIError, KubeAPIServer, objects
from edgecache_testservers.kubeapi.rbac import ADMIN, DISCOVERY, Rule
from edgecache_testservers.waiting import eventually, wait_for
from edgecache_testservers.wan import WANEmulator, WANProfile
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from edgecache.hub import HubServer

from .conftest import fast_settings, k8s_client
from .processes import HubProcess

#: Release volume (EDGECACHE_RELIABILITY=long) runs for minutes: past the suite's 300 s limit.
LONG = os.environ.get("EDGECACHE_RELIABILITY", "").strip().lower() == "long"
pytestmark = [pytest.mark.reliability, pytest.mark.timeout(3600 if LONG else 300)]

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

    def changes(self) -> list[tuple[int, str, str, dict[str, Any] | None]]:
        """``(resourceVersion, type, name, object or None)`` of every change, in order."""
        self.collect()
        return list(self._changes)

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


def _readyz(health_url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(health_url + "/readyz", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _ready_says(health_url: str, text: str) -> bool:
    status, body = _readyz(health_url)
    return status == 200 and text in body


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
                    await asyncio.to_thread(
                        wait_for, partial(_ready_says, hub.health_url, "online"), what="online"
                    )
                load = Load(hub.url, random.Random(rng.random()))
                load.start()
                try:
                    # Something is committed before the first kill (an empty store cannot start
                    # offline), then the kill comes at a random point of the traffic.
                    await asyncio.to_thread(
                        wait_for,
                        partial(_committed_rv, cache_dir, AGENT_LIST_KEY),
                        what="the first recorded list",
                    )
                    await asyncio.sleep(rng.uniform(0.2, 2.0))
                    committed = await asyncio.to_thread(
                        wait_for,  # retried: a read can meet a checkpoint ("database is locked")
                        partial(_committed_rv, cache_dir, AGENT_LIST_KEY),
                        what="the committed list",
                    )
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
    status, ready = await asyncio.to_thread(_readyz, hub.health_url)
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


ADMIN_TOKEN = "admin-token"
LIMITED_TOKEN = "limited-token"
#: The limited token may read ConfigMaps of ``other`` only (and API discovery).
LIMITED_RULES = (
    *DISCOVERY,
    Rule(
        verbs=("get", "list", "watch"),
        api_groups=("",),
        resources=("configmaps",),
        namespaces=("other",),
    ),
)


@dataclass
class Informer:
    """An informer-style watcher through the hub with the official client, as client-go's
    reflector: list, watch from the list's resourceVersion, re-watch from the last event's
    when a stream ends, re-list when a watch fails (410 Gone, a broken connection).

    Every stream's events are kept (``streams``: start resourceVersion, event
    resourceVersions), so each can be compared with the server's log: a stream must deliver a
    prefix of the server's events after its start, no duplicate, no gap, no reordering."""

    url: str
    token: str
    stop: threading.Event
    cache: dict[str, tuple[str, dict[str, str]]] = field(default_factory=dict)
    streams: list[tuple[int, list[int]]] = field(default_factory=list)
    relists: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        v1 = k8s.CoreV1Api(k8s_client(self.url, token=self.token))
        rv: str | None = None
        while not self.stop.is_set():
            try:
                if rv is None:
                    listed = v1.list_namespaced_config_map(NAMESPACE, _request_timeout=10)
                    self.cache = _as_state(listed.items)
                    rv = listed.metadata.resource_version
                    self.relists += 1
                rv = self._watch(v1, rv)
            except Exception:
                rv = None  # 410, a refused or broken connection: re-list (after a pause)
                self.stop.wait(0.1)

    def _watch(self, v1: k8s.CoreV1Api, rv: str) -> str:
        seen: list[int] = []
        self.streams.append((int(rv), seen))
        watcher = k8s_watch.Watch()
        for event in watcher.stream(
            v1.list_namespaced_config_map,
            NAMESPACE,
            resource_version=rv,
            allow_watch_bookmarks=True,
            timeout_seconds=5,
            _request_timeout=10,
        ):
            if event["type"] == "ERROR":  # 410 Expired: the stream cannot resume
                raise RuntimeError(f"watch error: {event['raw_object']}")
            obj = event["object"]
            rv = obj.metadata.resource_version
            if event["type"] != "BOOKMARK":
                seen.append(int(rv))
                if event["type"] == "DELETED":
                    self.cache.pop(obj.metadata.name, None)
                else:
                    self.cache[obj.metadata.name] = (rv, dict(obj.data or {}))
            if self.stop.is_set():
                watcher.stop()
        return rv

    def join(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=30)


#: The status recorded for a 200 that carried objects of another namespace than asked.
WRONG_NAMESPACE = 299


def _probe_access(url: str, stop: threading.Event, answers: dict[str, list[int]]) -> None:
    """Reads the limited token and a token the upstream never accepted must not get: status
    codes per case (200 for a refused case is a leak)."""
    clients = {
        "limited-default": (LIMITED_TOKEN, NAMESPACE),
        "limited-other": (LIMITED_TOKEN, "other"),
        "forged-default": ("forged-token", NAMESPACE),
    }
    apis = {case: k8s.CoreV1Api(k8s_client(url, token=t)) for case, (t, _ns) in clients.items()}
    while not stop.is_set():
        for case, (_token, namespace) in clients.items():
            try:
                listed = apis[case].list_namespaced_config_map(namespace, _request_timeout=5)
                # Whatever it gets is of the namespace asked only (else: counted as a leak).
                right = all(i.metadata.namespace == namespace for i in listed.items)
                status = 200 if right else WRONG_NAMESPACE
            except ApiException as exc:
                status = exc.status
            except Exception:
                status = 0  # the hub switching: no answer is not a leak
            answers.setdefault(case, []).append(status)
        stop.wait(0.05)


async def test_wan_flaps_under_watchers_through_the_hub(tmp_path: Path, reliability: Any) -> None:
    """Cut and restore the WAN between the hub and the API server at random (connections
    reset, or packets swallowed) while informers watch through the hub and the cloud side keeps
    writing: every watch stream is a prefix of the server's events (no duplicate, lost or
    reordered event within a stream; a re-list repairs what a switch cut short), every informer
    ends with exactly the server's objects, the store's offline list is the server's state at
    its resourceVersion, and a limited or forged token never gets what the upstream refused."""
    seed = _seed()
    rng = random.Random(seed)
    reliability.notes["seed"] = seed
    flaps = reliability.scale(4, 50)
    api = KubeAPIServer(
        tokens={ADMIN_TOKEN: "admin", LIMITED_TOKEN: "limited"},
        authorization={"admin": ADMIN, "limited": LIMITED_RULES},
        bookmark_interval_seconds=0.5,
    )
    with api, WANEmulator(api.url, LINK) as wan:
        api.seed([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other"}}])
        api.seed(objects.config_map(f"cm-{i:02d}", data={"v": "seed"}) for i in range(20))
        api.seed([objects.config_map("theirs", "other", data={"v": "other"})])
        truth = ServerTruth(api)
        settings = fast_settings(tmp_path / "hub", wan.endpoint)
        async with HubServer(settings) as hub:
            stop = threading.Event()
            informers = [Informer(hub.url, ADMIN_TOKEN, stop) for _ in range(2)]
            for informer in informers:
                informer.start()
            answers: dict[str, list[int]] = {}
            prober = threading.Thread(target=_probe_access, args=(hub.url, stop, answers))
            prober.start()
            writer_stop = threading.Event()
            writer = threading.Thread(target=_write_upstream, args=(api, writer_stop, rng.random()))
            writer.start()
            try:
                # The first cut comes once every client is working (not while they start).
                await eventually(
                    lambda: all(i.streams for i in informers) and len(answers) == 3,
                    timeout_seconds=30,
                    what="the clients' first answers",
                )
                for _ in range(flaps):
                    await asyncio.sleep(rng.uniform(0.2, 1.0))  # the random moment of a cut
                    mode = rng.choice(["reset", "blackhole"])
                    wan.cut(mode)
                    reliability.notes[mode] = reliability.notes.get(mode, 0) + 1
                    await asyncio.sleep(rng.uniform(0.2, 1.5))
                    wan.restore()
                    truth.collect()
                    reliability.faults_injected += 1
                    reliability.iterations += 1
                writer_stop.set()
                writer.join()
                await hub.health.wait_for(True, within_seconds=20)
                final = truth.state_at(api.resource_version)
                await eventually(
                    lambda: all(i.cache == final for i in informers),
                    timeout_seconds=30,
                    what="every informer to hold the server's objects",
                )
            finally:
                writer_stop.set()
                stop.set()
                for informer in informers:
                    await asyncio.to_thread(informer.join)
                await asyncio.to_thread(prober.join, 30)
            truth.collect()
            _check_streams(informers, truth, reliability)
            _check_access(answers, reliability)
            # What the store kept through the flaps is a true state of the server.
            await asyncio.to_thread(api.stop)
            await hub.health.wait_for(False, within_seconds=20)
            v1 = k8s.CoreV1Api(k8s_client(hub.url, token=ADMIN_TOKEN))
            listed = await asyncio.to_thread(v1.list_namespaced_config_map, NAMESPACE)
            offline = _as_state(listed.items)
            expected = truth.state_at(int(listed.metadata.resource_version))
            reliability.reads_checked += 1
            assert offline == expected
    assert reliability.wrong_bytes == 0 and reliability.data_lost == 0


def _write_upstream(api: KubeAPIServer, stop: threading.Event, seed: float) -> None:
    """The cloud side keeps changing: create, replace and delete ConfigMaps of ``default``."""
    rng = random.Random(seed)
    version = 0
    while not stop.is_set():
        name = f"cm-{rng.randrange(40):02d}"
        version += 1
        if rng.random() < 0.15:
            with contextlib.suppress(APIError):  # not there
                api.delete("v1", "ConfigMap", name, NAMESPACE)
        else:
            api.put(objects.config_map(name, data={"v": str(version)}))
        stop.wait(0.005)


def _check_streams(informers: list[Informer], truth: ServerTruth, reliability: Any) -> None:
    """Each watch stream delivered exactly the server's next events after its start: a
    prefix, so nothing was duplicated, skipped or reordered within it."""
    server_rvs = [rv for rv, _type, _name, _body in truth.changes()]
    streams = [stream for informer in informers for stream in informer.streams]
    bad = 0
    for start, seen in streams:
        after = [rv for rv in server_rvs if rv > start]
        if seen != after[: len(seen)]:
            bad += 1
    reliability.reads_checked += sum(len(seen) for _start, seen in streams)
    reliability.notes["watch_streams"] = len(streams)
    reliability.notes["watch_events"] = sum(len(seen) for _start, seen in streams)
    reliability.notes["relists"] = sum(i.relists for i in informers)
    reliability.data_lost += bad
    assert bad == 0, f"{bad} of {len(streams)} watch streams were not a prefix of the server's"


def _check_access(answers: dict[str, list[int]], reliability: Any) -> None:
    leaks = answers.get("limited-default", []).count(200) + answers.get("forged-default", []).count(
        200
    )
    reliability.bad_inputs += len(answers.get("limited-default", [])) + len(
        answers.get("forged-default", [])
    )
    reliability.notes["access_answers"] = {
        case: {str(status): codes.count(status) for status in sorted(set(codes))}
        for case, codes in answers.items()
    }
    reliability.wrong_bytes += leaks  # data given to a client the upstream refused
    assert leaks == 0, reliability.notes["access_answers"]
    assert 200 in answers.get("limited-other", []), "the limited token's own reads never worked"
