"""Watch semantics of the Kubernetes API test server, over real chunked HTTP (aiohttp client)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp
import edgecache_testservers.kubeapi as kubeapi
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import WatchReader

PODS = "/api/v1/namespaces/default/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}


def _names(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"]["name"]) for e in events]


async def _list_rv(http: aiohttp.ClientSession, path: str = PODS) -> str:
    async with http.get(path) as response:
        rv: str = (await response.json())["metadata"]["resourceVersion"]
        return rv


async def test_watch_from_list_rv_streams_changes_in_order(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.seed([objects.pod("old")])
    rv = await _list_rv(http)
    async with http.get(PODS, params={"watch": "1", "resourceVersion": rv}) as response:
        assert response.headers.get("Transfer-Encoding") == "chunked"
        reader = WatchReader(response)
        async with http.post(PODS, json=objects.pod("a")) as created:
            assert created.status == 201
        async with http.patch(
            f"{PODS}/a", json={"metadata": {"labels": {"x": "1"}}}, headers=MERGE
        ):
            pass
        async with http.delete(f"{PODS}/a"):
            pass
        events = await reader.take(3)
    assert _names(events) == [("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a")]
    versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert versions == sorted(versions) and versions[0] > int(rv)


async def test_watch_resumes_from_any_retained_resource_version(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    start = api.resource_version
    for name in ("a", "b", "c"):
        api.create(objects.pod(name))
    middle = start + 1  # the RV of pod "a": resuming there replays what came after it
    async with http.get(PODS, params={"watch": "true", "resourceVersion": str(middle)}) as response:
        events = await WatchReader(response).take(2)
    assert _names(events) == [("ADDED", "b"), ("ADDED", "c")]


async def test_watch_from_a_compacted_resource_version_gets_410(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    old = api.resource_version
    api.seed(
        objects.pods(60, nodes=0)
    )  # the fixture keeps 50 events: "old" falls out of the window
    async with http.get(PODS, params={"watch": "1", "resourceVersion": str(old)}) as response:
        assert response.status == 200
        reader = WatchReader(response)
        event = await reader.next()
        assert await reader.next() is None  # the stream ends after the error
    assert event is not None and event["type"] == "ERROR"
    assert (event["object"]["kind"], event["object"]["code"], event["object"]["reason"]) == (
        "Status",
        410,
        "Expired",
    )


async def test_watch_without_resource_version_starts_with_the_current_state(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.seed([objects.pod("a"), objects.pod("b")])
    async with http.get(PODS, params={"watch": "1"}) as response:
        reader = WatchReader(response)
        initial = await reader.take(2)
        api.create(objects.pod("c"))
        later = await reader.take(1)
    assert _names(initial + later) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]


async def test_bookmarks_carry_a_resumable_resource_version(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    rv = await _list_rv(http)
    params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true"}
    async with http.get(PODS, params=params) as response:
        reader = WatchReader(response)
        api.create(objects.config_map("unrelated"))  # advances the RV without a pod event
        bookmark = await reader.next(timeout_seconds=5)
    assert bookmark is not None and bookmark["type"] == "BOOKMARK"
    assert bookmark["object"]["kind"] == "Pod" and bookmark["object"]["apiVersion"] == "v1"
    assert bookmark["object"]["metadata"]["resourceVersion"] == str(api.resource_version)


async def test_no_bookmarks_unless_asked(http: aiohttp.ClientSession, api: KubeAPIServer) -> None:
    params = {"watch": "1", "resourceVersion": str(api.resource_version), "timeoutSeconds": "1"}
    async with http.get(PODS, params=params) as response:
        assert await WatchReader(response).next() is None


async def test_send_initial_events_ends_with_the_marked_bookmark(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.seed([objects.pod("a"), objects.pod("b")])
    params = {
        "watch": "1",
        "sendInitialEvents": "true",
        "resourceVersionMatch": "NotOlderThan",
        "allowWatchBookmarks": "true",
    }
    async with http.get(PODS, params=params) as response:
        reader = WatchReader(response)
        events = await reader.take(3)
        api.create(objects.pod("c"))
        after = await reader.take_skipping_bookmarks(1)
    assert _names(events[:2]) == [("ADDED", "a"), ("ADDED", "b")]
    end = events[2]
    assert end["type"] == "BOOKMARK"
    assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
    assert _names(after) == [("ADDED", "c")]


async def test_send_initial_events_requires_not_older_than(http: aiohttp.ClientSession) -> None:
    async with http.get(PODS, params={"watch": "1", "sendInitialEvents": "true"}) as response:
        assert response.status == 422


async def test_timeout_seconds_ends_the_stream(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    params = {"watch": "1", "resourceVersion": str(api.resource_version), "timeoutSeconds": "1"}
    async with http.get(PODS, params=params) as response:
        assert await WatchReader(response).next(timeout_seconds=5) is None
    assert 0.9 <= loop.time() - started < 6


async def test_selectors_turn_modifications_into_added_and_deleted(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.create(objects.pod("a"))
    params = {
        "watch": "1",
        "resourceVersion": str(api.resource_version),
        "labelSelector": "role=cache",
    }
    async with http.get(PODS, params=params) as response:
        reader = WatchReader(response)
        for labels in ({"role": "cache"}, {"role": "cache", "v": "2"}, {"role": "other"}):
            async with http.patch(
                f"{PODS}/a", json={"metadata": {"labels": labels}}, headers=MERGE
            ):
                pass
        events = await reader.take(3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]


async def test_field_selector_watch_and_namespaces(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.create(objects.namespace("other"))
    params = {
        "watch": "1",
        "resourceVersion": str(api.resource_version),
        "fieldSelector": "spec.nodeName=n1",
    }
    async with (
        http.get("/api/v1/pods", params=params) as all_ns,
        http.get(PODS, params=params) as default_ns,
    ):
        api.seed([objects.pod("x", "other", node_name="n1"), objects.pod("y", node_name="n2")])
        api.seed([objects.pod("z", node_name="n1")])
        everywhere = await WatchReader(all_ns).take(2)
        here = await WatchReader(default_ns).take(1)
    assert _names(everywhere) == [("ADDED", "x"), ("ADDED", "z")]
    assert _names(here) == [("ADDED", "z")]


async def test_watch_of_a_single_object(http: aiohttp.ClientSession, api: KubeAPIServer) -> None:
    api.seed([objects.pod("a"), objects.pod("b")])
    rv = str(api.resource_version)
    async with (
        http.get(f"{PODS}/a", params={"watch": "1", "resourceVersion": rv}) as by_name,
        http.get(
            "/api/v1/watch/namespaces/default/pods/a", params={"resourceVersion": rv}
        ) as legacy,
    ):
        for name in ("b", "a"):
            async with http.delete(f"{PODS}/{name}"):
                pass
        assert _names(await WatchReader(by_name).take(1)) == [("DELETED", "a")]
        assert _names(await WatchReader(legacy).take(1)) == [("DELETED", "a")]


async def test_crd_objects_can_be_watched(http: aiohttp.ClientSession, api: KubeAPIServer) -> None:
    api.create(objects.crd("data.edgecache.io", "DataLoad", versions=("v1alpha1",)))
    path = "/apis/data.edgecache.io/v1alpha1/namespaces/default/dataloads"
    async with http.get(
        path, params={"watch": "1", "resourceVersion": str(api.resource_version)}
    ) as response:
        body = {
            "apiVersion": "data.edgecache.io/v1alpha1",
            "kind": "DataLoad",
            "metadata": {"name": "warm"},
        }
        async with http.post(path, json=body) as created:
            assert created.status == 201
        api.delete(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", "dataloads.data.edgecache.io"
        )
        events = await WatchReader(response).take(2)
    assert _names(events) == [("ADDED", "warm"), ("DELETED", "warm")]


async def test_stopping_the_server_cuts_open_watches(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    async with http.get(
        PODS, params={"watch": "1", "resourceVersion": str(api.resource_version)}
    ) as response:
        reader = WatchReader(response)
        await asyncio.sleep(0.05)
        assert api.open_watches == 1
        await api.astop()
        with contextlib.suppress(
            aiohttp.ClientPayloadError
        ):  # an aborted chunked stream: a cut link
            assert await reader.next() is None
    assert api.open_watches == 0


async def test_close_watches_ends_streams_cleanly(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    async with http.get(
        PODS, params={"watch": "1", "resourceVersion": str(api.resource_version)}
    ) as response:
        await asyncio.sleep(0.05)
        assert api.close_watches() == 1
        assert await WatchReader(response).next() is None


async def test_an_idle_watch_ends_when_its_client_goes(api: KubeAPIServer) -> None:
    async with aiohttp.ClientSession(base_url=api.url) as http:
        response = await http.get(
            PODS, params={"watch": "1", "resourceVersion": str(api.resource_version)}
        )
        await asyncio.sleep(0.05)
        assert api.open_watches == 1
        response.close()  # drops the connection; nothing is ever written to this watch
    for _ in range(40):
        if api.open_watches == 0:
            break
        await asyncio.sleep(0.05)
    assert api.open_watches == 0


async def test_a_replica_serves_the_same_cluster(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    async with api.replica() as second, aiohttp.ClientSession(base_url=second.url) as other:
        assert second.url != api.url
        rv = await _list_rv(http)
        async with other.get(PODS, params={"watch": "1", "resourceVersion": rv}) as response:
            async with http.post(PODS, json=objects.pod("a")) as created:
                assert created.status == 201
            assert _names(await WatchReader(response).take(1)) == [("ADDED", "a")]
        await api.astop()
        async with other.get(f"{PODS}/a") as response:
            assert response.status == 200


async def test_watches_can_be_reset_while_the_server_keeps_serving(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    async with http.get(
        PODS, params={"watch": "1", "resourceVersion": str(api.resource_version)}
    ) as response:
        await asyncio.to_thread(api.wait_for_watches, 1)
        assert api.close_watches(abort=True) == 1
        with contextlib.suppress(aiohttp.ClientPayloadError):  # reset: no final chunk
            assert await WatchReader(response).next() is None
    async with http.get(PODS) as response:
        assert response.status == 200


async def test_faults_can_target_watches_only(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.fail(503, watch=True)
    async with http.get(PODS, params={"watch": "1"}) as response:
        assert response.status == 503
    async with http.get(PODS) as response:
        assert response.status == 200
    api.clear_faults()
    api.fail(500, watch=False)
    async with http.get(PODS, params={"watch": "1", "timeoutSeconds": "1"}) as response:
        assert response.status == 200


async def test_concurrent_writers_and_watchers_see_every_change_in_order() -> None:
    async with KubeAPIServer(bookmark_interval_seconds=0.05, history_size=100_000) as api:
        start = str(api.resource_version)
        writes_per_thread, threads = 150, 3

        def write(worker: int) -> None:
            for index in range(writes_per_thread):
                name = f"w{worker}-{index % 10}"
                if index % 5 == 4:
                    with contextlib.suppress(kubeapi.APIError):
                        api.delete("v1", "ConfigMap", name, "default")
                else:
                    api.put(objects.config_map(name, data={"i": str(index)}))

        async def watch(params: dict[str, str]) -> list[dict[str, Any]]:
            seen: list[dict[str, Any]] = []
            path = "/api/v1/namespaces/default/configmaps"
            async with (
                aiohttp.ClientSession(base_url=api.url) as session,
                session.get(path, params=params) as response,
            ):
                reader = WatchReader(response)
                while True:
                    event = await reader.next(timeout_seconds=5)
                    if event is None:
                        return seen
                    seen.append(event)

        params = {
            "watch": "1",
            "resourceVersion": start,
            "allowWatchBookmarks": "1",
            "timeoutSeconds": "2",
        }
        watchers = [asyncio.create_task(watch(params)) for _ in range(3)]
        await asyncio.sleep(0.1)
        await asyncio.gather(*(asyncio.to_thread(write, w) for w in range(threads)))
        final = {c["metadata"]["name"]: c for c in api.list_objects("v1", "ConfigMap", "default")}
        for events in await asyncio.gather(*watchers):
            changes = [e for e in events if e["type"] != "BOOKMARK"]
            versions = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
            assert versions == sorted(versions)  # bookmarks included: never backwards
            state: dict[str, dict[str, Any]] = {}
            for event in changes:
                name = event["object"]["metadata"]["name"]
                if event["type"] == "DELETED":
                    del state[name]
                else:
                    state[name] = event["object"]
            assert state == final  # replaying the stream rebuilds exactly the final state
