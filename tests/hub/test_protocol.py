"""Offline protocol details over plain HTTP: WatchList, 410 for old versions, 404/503 Status,
secrets, protobuf-first clients, failover, the topology filter and the health port."""

from __future__ import annotations

import asyncio
import gzip
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects

from edgecache.hub import HubServer

from .conftest import cut, fast_settings, restore

KUBELET = {"User-Agent": "kubelet/v1.32.0 (linux/amd64) kubernetes/abc"}
PODS = "/api/v1/namespaces/default/pods"


async def _events(response: aiohttp.ClientResponse, count: int) -> list[dict[str, Any]]:
    events = []
    for _ in range(count):
        line = await response.content.readline()
        assert line, f"stream ended after {events}"
        events.append(json.loads(line))
    return events


async def test_watchlist_online_is_recorded_and_served_offline(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(5))
    watchlist = (
        "?watch=1&sendInitialEvents=true&allowWatchBookmarks=true&resourceVersionMatch=NotOlderThan"
    )
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        async with http.get(PODS + watchlist + "&timeoutSeconds=30") as online:
            events = await _events(online, 6)
        assert [e["type"] for e in events] == ["ADDED"] * 5 + ["BOOKMARK"]
        end_rv = events[-1]["object"]["metadata"]["resourceVersion"]
        await cut(kube_api, hub)
        # The WatchList stream alone was enough to answer lists offline (no LIST was made).
        async with http.get(PODS) as listed:
            body = await listed.json()
        assert len(body["items"]) == 5 and body["metadata"]["resourceVersion"] == end_rv
        async with http.get(PODS + watchlist) as offline:
            assert offline.status == 200
            events = await _events(offline, 7)
            assert [e["type"] for e in events] == ["ADDED"] * 5 + ["BOOKMARK", "BOOKMARK"]
            end = events[5]["object"]["metadata"]
            assert end["annotations"] == {"k8s.io/initial-events-end": "true"}
            assert end["resourceVersion"] == end_rv
            await restore(kube_api, hub)
            rest = await asyncio.wait_for(offline.content.read(), 5)  # ended by the switch
            assert all(json.loads(line)["type"] == "BOOKMARK" for line in rest.splitlines())


async def test_offline_status_answers(hub: HubServer, kube_api: KubeAPIServer) -> None:
    kube_api.seed(objects.pods(3))
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        async with http.get(PODS) as listed:
            rv = (await listed.json())["metadata"]["resourceVersion"]
        kube_api.create(objects.pod("later"))  # advances the upstream version
        await cut(kube_api, hub)
        async with http.get(PODS + "?watch=1&resourceVersion=1") as old:
            event = json.loads(await old.content.readline())
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
        async with http.get(PODS + f"?watch=1&resourceVersion={rv}&timeoutSeconds=1") as same:
            assert same.status == 200 and await same.read() == b""  # open, then timed out
        async with http.get("/apis/example.com/v1/namespaces/default/gizmos") as unknown:
            status = await unknown.json()
        assert unknown.status == 404 and status["kind"] == "Status" and status["code"] == 404
        async with http.get(PODS + "/nope") as missing:
            assert missing.status == 404 and (await missing.json())["reason"] == "NotFound"
        async with http.delete(PODS + "/pod-00000") as write:
            assert write.status == 503
            assert (await write.json())["reason"] == "ServiceUnavailable"
    curl = {"User-Agent": "curl/8"}
    async with aiohttp.ClientSession(hub.url, headers=curl) as http, http.get(PODS) as stranger:
        assert stranger.status == 503  # never recorded: not a default component
        assert "--components" in (await stranger.json())["message"]


async def test_secrets_are_recorded_only_for_allowed_components(
    hub: HubServer, kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "creds", "namespace": "default"},
        "data": {"password": "c2VjcmV0LXZhbHVlLTQy"},
    }
    kube_api.create(secret)
    secrets = "/api/v1/namespaces/default/secrets"
    kubectl = {"User-Agent": "kubectl/v1.32.4 (linux/amd64)"}
    async with aiohttp.ClientSession(hub.url) as http:
        for headers in (KUBELET, kubectl):
            async with http.get(secrets, headers=headers) as response:
                assert response.status == 200
        await cut(kube_api, hub)
        async with http.get(secrets, headers=KUBELET) as kubelet_offline:
            assert kubelet_offline.status == 200
            assert len((await kubelet_offline.json())["items"]) == 1
        async with http.get(secrets, headers=kubectl) as kubectl_offline:
            assert kubectl_offline.status != 200


async def test_protobuf_first_clients_are_recorded_as_json(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(2))
    accept = {"Accept": "application/vnd.kubernetes.protobuf,application/json", **KUBELET}
    async with aiohttp.ClientSession(hub.url, headers=accept) as http:
        async with http.get(PODS) as online:
            assert online.content_type == "application/json"
        await cut(kube_api, hub)
        async with http.get(PODS) as offline:
            assert len((await offline.json())["items"]) == 2


async def test_failover_to_the_next_server(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    kube_api.seed(objects.pods(2))
    dead = "http://127.0.0.1:9"  # discard port: nothing listens
    async with HubServer(fast_settings(tmp_path, [dead, kube_api.url])) as hub:
        async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http, http.get(PODS) as got:
            assert got.status == 200 and len((await got.json())["items"]) == 2
        assert hub.upstream.current_server == kube_api.url


async def test_nodepool_filter_on_endpointslices(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    pool = "apps.openyurt.io/nodepool"
    for name, nodepool in (("edge-a1", "a"), ("edge-a2", "a"), ("edge-b1", "b")):
        kube_api.create(objects.node(name, labels={pool: nodepool}))
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "web-abc",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "web"},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": ["10.0.0.1"], "nodeName": "edge-a1"},
            {"addresses": ["10.0.0.2"], "nodeName": "edge-b1"},
            {"addresses": ["10.0.0.3"], "nodeName": "edge-a2"},
        ],
        "ports": [{"port": 80, "protocol": "TCP"}],
    }
    kube_api.create(slice_)
    settings = fast_settings(tmp_path, kube_api.url)
    settings.filters.nodepool = "a"
    path = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    proxy = {"User-Agent": "kube-proxy/v1.32.0"}
    async with HubServer(settings) as hub, aiohttp.ClientSession(hub.url, headers=proxy) as http:
        async with http.get(path) as online:
            items = (await online.json())["items"]
        assert [e["nodeName"] for e in items[0]["endpoints"]] == ["edge-a1", "edge-a2"]
        async with http.get(path + "?watch=1&resourceVersion=0&timeoutSeconds=5") as watch:
            event = json.loads(await watch.content.readline())
        assert [e["nodeName"] for e in event["object"]["endpoints"]] == ["edge-a1", "edge-a2"]
        await cut(kube_api, hub)
        async with http.get(path + "/web-abc") as offline:
            got = await offline.json()
        assert [e["nodeName"] for e in got["endpoints"]] == ["edge-a1", "edge-a2"]


async def test_health_port(hub: HubServer, kube_api: KubeAPIServer) -> None:
    kube_api.seed(objects.pods(3))
    async with aiohttp.ClientSession(headers=KUBELET) as http:
        async with http.get(hub.url + PODS) as listed:
            assert listed.status == 200
        assert hub.recorder is not None
        await hub.recorder.drain()
        async with http.get(hub.health_url + "/healthz") as healthz:
            assert healthz.status == 200
        async with http.get(hub.health_url + "/readyz") as readyz:
            assert "online" in await readyz.text()
        await cut(kube_api, hub)
        async with http.get(hub.url + PODS) as offline:
            assert offline.status == 200
        async with http.get(hub.health_url + "/metrics") as metrics:
            text = await metrics.text()
    assert "edgecache_hub_online 0.0" in text
    assert 'edgecache_hub_requests_total{served_from="store",verb="list"}' in text
    assert 'edgecache_hub_requests_total{served_from="upstream",verb="list"}' in text
    assert "edgecache_hub_store_objects 3.0" in text
    assert 'edgecache_hub_mode_switches_total{to="offline"}' in text
    assert "edgecache_hub_watches_ended_by_switch_total" in text


async def test_restart_against_a_silent_upstream_serves_at_once(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    kube_api.seed(objects.pods(4))
    settings = fast_settings(tmp_path, kube_api.url)
    settings.health.probe_timeout_seconds = 3.0
    async with (
        HubServer(settings) as hub,
        aiohttp.ClientSession(headers=KUBELET) as http,
        http.get(hub.url + PODS) as online,
    ):
        assert online.status == 200
    kube_api.hang()  # the WAN swallows packets: connections open, nothing comes back
    started = time.monotonic()
    async with HubServer(settings) as hub, aiohttp.ClientSession(headers=KUBELET) as http:
        async with http.get(hub.url + PODS) as offline:
            assert offline.status == 200 and len((await offline.json())["items"]) == 4
        assert time.monotonic() - started < 2.5  # not held up by the 3 s probe timeout
        assert not hub.health.online
        kube_api.clear_faults()
        await hub.health.wait_for(True, within_seconds=15)


async def test_a_read_that_breaks_off_is_answered_from_the_store(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(3))
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        async with http.get(PODS) as recorded:
            assert recorded.status == 200
        assert hub.recorder is not None
        await hub.recorder.drain()
        kube_api.drop_connections(count=1, path_prefix=PODS)
        async with http.get(PODS) as answered:
            assert answered.status == 200 and len((await answered.json())["items"]) == 3
        kube_api.drop_connections(count=1, path_prefix="/api/v1/namespaces/default/configmaps")
        async with http.post(
            "/api/v1/namespaces/default/configmaps", json=objects.config_map("c")
        ) as write:
            assert write.status == 503
            assert "may or may not have been applied" in (await write.json())["message"]


async def test_a_client_leaving_releases_its_upstream_watch(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        response = await http.get(PODS + "?watch=1&resourceVersion=0")
        assert response.status == 200
        for _ in range(50):
            if kube_api.open_watches == 1:
                break
            await asyncio.sleep(0.02)
        assert kube_api.open_watches == 1
        response.close()  # the client goes away mid-watch
    for _ in range(100):
        if kube_api.open_watches == 0 and len(hub.watches) == 0:
            break
        await asyncio.sleep(0.02)
    assert kube_api.open_watches == 0 and len(hub.watches) == 0


async def test_losing_one_of_two_servers_fails_over_without_going_offline(
    kube_api: KubeAPIServer, tmp_path: Path
) -> None:
    async with KubeAPIServer() as second:
        kube_api.seed(objects.pods(1))
        second.seed(objects.pods(2))
        async with (
            HubServer(fast_settings(tmp_path, [kube_api.url, second.url])) as hub,
            aiohttp.ClientSession(hub.url, headers=KUBELET) as http,
        ):
            async with http.get(PODS) as first:
                assert len((await first.json())["items"]) == 1
            await asyncio.to_thread(kube_api.stop)
            async with http.get(PODS) as failed_over:
                assert len((await failed_over.json())["items"]) == 2  # answered by the second
            await asyncio.sleep(0.5)  # several probe rounds
            assert hub.health.online and hub.health.switches == 0
            assert hub.upstream.current_server == second.url


async def test_gzip_answers_pass_through_and_are_recorded(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(1000))  # a list well above the server's 128 KiB gzip threshold
    gzip_client = {**KUBELET, "Accept-Encoding": "gzip"}
    async with aiohttp.ClientSession(hub.url, auto_decompress=False) as http:
        async with http.get(PODS, headers=gzip_client) as compressed:
            assert compressed.headers.get("Content-Encoding") == "gzip"
            body = gzip.decompress(await compressed.read())
        assert len(json.loads(body)["items"]) == 1000
        plain_client = {**KUBELET, "Accept-Encoding": "identity"}
        async with http.get(PODS + "?labelSelector=app%3Dpod", headers=plain_client) as plain:
            assert "Content-Encoding" not in plain.headers
            assert len(json.loads(await plain.read())["items"]) == 1000
        await cut(kube_api, hub)
        async with http.get(PODS, headers=plain_client) as offline:
            assert len(json.loads(await offline.read())["items"]) == 1000


async def test_gateway_errors_are_evidence_and_reads_come_from_the_store(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(2))
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        async with http.get(PODS) as recorded:
            assert recorded.status == 200
        assert hub.recorder is not None
        await hub.recorder.drain()
        kube_api.fail(503, path_prefix=PODS)  # e.g. the load balancer lost its backends
        async with http.get(PODS) as answered:
            assert answered.status == 200 and len((await answered.json())["items"]) == 2


async def test_many_concurrent_watches_see_every_event_in_order(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        async with http.get("/api/v1/namespaces/default/configmaps") as listed:
            rv = (await listed.json())["metadata"]["resourceVersion"]
        url = f"/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={rv}"
        watches = [await http.get(url) for _ in range(20)]
        for index in range(200):
            await asyncio.to_thread(
                kube_api.put, objects.config_map(f"cm-{index % 10}", data={"i": str(index)})
            )
        for response in watches:
            seen = [
                event["object"]["data"]["i"]
                for event in await _events(response, 200)
                if event["type"] in ("ADDED", "MODIFIED")
            ]
            assert seen == [str(i) for i in range(200)]
            response.close()


async def test_offline_reads_are_limited_to_what_the_credential_read_online(
    tmp_path: Path,
) -> None:
    async with KubeAPIServer(tokens={"alice-token": "alice", "bob-token": "bob"}) as api:
        api.seed(objects.pods(2))
        api.create(objects.namespace("team-b"))
        api.seed(objects.pods(1, "team-b"))
        alice = {**KUBELET, "Authorization": "Bearer alice-token"}
        bob = {**KUBELET, "Authorization": "Bearer bob-token"}
        async with (
            HubServer(fast_settings(tmp_path, api.url)) as hub,
            aiohttp.ClientSession(hub.url) as http,
        ):
            async with http.get(PODS, headers=alice) as alice_online:
                assert alice_online.status == 200
            async with http.get("/api/v1/namespaces/team-b/pods", headers=bob) as bob_online:
                assert bob_online.status == 200
            assert hub.recorder is not None
            await hub.recorder.drain()
            await api.astop()
            await hub.health.wait_for(False, within_seconds=10)
            async with http.get(PODS, headers=alice) as alice_offline:
                assert alice_offline.status == 200
            async with http.get(PODS + "/pod-00000", headers=alice) as alice_get:
                assert alice_get.status == 200
            # Same component, but bob never read pods in "default" online: no answer for him.
            async with http.get(PODS, headers=bob) as bob_offline:
                assert bob_offline.status == 403
                assert "never read pods" in (await bob_offline.json())["message"]
            async with http.get("/api/v1/namespaces/team-b/pods", headers=bob) as bob_own:
                assert bob_own.status == 200


async def test_offline_bookmarks_never_go_back_in_time(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(1))
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        async with http.get(PODS) as listed:
            rv = int((await listed.json())["metadata"]["resourceVersion"])
        await cut(kube_api, hub)
        newer = rv + 5  # events the client saw just before the cut, not yet in the store
        async with http.get(
            PODS + f"?watch=1&resourceVersion={newer}&allowWatchBookmarks=true&timeoutSeconds=1"
        ) as watch:
            events = [json.loads(line) for line in (await watch.read()).splitlines()]
        assert events and all(e["type"] == "BOOKMARK" for e in events)
        assert {e["object"]["metadata"]["resourceVersion"] for e in events} == {str(newer)}


async def test_a_broken_store_never_breaks_online_proxying(
    hub: HubServer, kube_api: KubeAPIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    kube_api.seed(objects.pods(2))
    assert hub.store is not None

    def disk_full(*args: object) -> None:
        raise sqlite3.OperationalError("database or disk is full")

    for method in ("add_credential", "add_grant", "replace_list", "put_object", "put_raw"):
        monkeypatch.setattr(hub.store, method, disk_full)
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        for path in (PODS, PODS + "/pod-00001", "/api"):
            async with http.get(path) as response:
                assert response.status == 200, path
