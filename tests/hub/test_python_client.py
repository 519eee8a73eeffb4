"""The hub through the ``kubernetes`` Python client, informer style (list, then watch from the
list's resourceVersion), online and across upstream cuts."""

from __future__ import annotations

import asyncio

import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from kubernetes import client as k8s
from kubernetes.client.rest import ApiException

from edgecache.hub import HubServer

from .conftest import KubeWatcher, cut, k8s_client, names, restore

to_thread = asyncio.to_thread


async def test_online_proxying_is_transparent(hub: HubServer, kube_api: KubeAPIServer) -> None:
    kube_api.seed(objects.pods(12))
    through = k8s.CoreV1Api(k8s_client(hub.url))
    direct = k8s.CoreV1Api(k8s_client(kube_api.url))
    via_hub = await to_thread(through.list_namespaced_pod, "default")
    straight = await to_thread(direct.list_namespaced_pod, "default")
    assert names(via_hub.items) == names(straight.items)
    assert via_hub.metadata.resource_version == straight.metadata.resource_version
    pod = await to_thread(through.read_namespaced_pod, "pod-00003", "default")
    assert pod.spec.node_name == "node-3"

    created = await to_thread(
        through.create_namespaced_config_map,
        "default",
        k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="settings"), data={"a": "1"}),
    )
    assert kube_api.get("v1", "ConfigMap", "settings", "default")["data"] == {"a": "1"}
    watcher = KubeWatcher(
        through.list_namespaced_config_map,
        "default",
        resource_version=created.metadata.resource_version,
        timeout_seconds=30,
    )
    await asyncio.sleep(0.2)
    await to_thread(through.delete_namespaced_config_map, "settings", "default")
    event = await watcher.next_change()
    assert event is not None and event["type"] == "DELETED"
    watcher.stop()
    with pytest.raises(ApiException) as missing:
        await to_thread(through.read_namespaced_config_map, "settings", "default")
    assert missing.value.status == 404


async def test_informer_across_cut_and_restore(hub: HubServer, kube_api: KubeAPIServer) -> None:
    kube_api.seed(objects.pods(10))
    v1 = k8s.CoreV1Api(k8s_client(hub.url))
    listed = await to_thread(v1.list_namespaced_pod, "default")
    watcher = KubeWatcher(
        v1.list_namespaced_pod,
        "default",
        resource_version=listed.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=120,
    )
    await asyncio.sleep(0.3)
    kube_api.create(objects.pod("late", node_name="node-1"))
    event = await watcher.next_change()
    assert event is not None and event["type"] == "ADDED"
    assert event["object"].metadata.name == "late"

    # The cut ends the proxied watch: the client learns it must re-list.
    await cut(kube_api, hub)
    rest = await watcher.until_end()
    assert all(e["type"] == "BOOKMARK" for e in rest)

    offline = await to_thread(v1.list_namespaced_pod, "default")
    assert names(offline.items) == sorted([*(f"pod-{i:05d}" for i in range(10)), "late"])
    list_rv = int(offline.metadata.resource_version)
    assert list_rv >= max(int(p.metadata.resource_version) for p in offline.items)
    single = await to_thread(v1.read_namespaced_pod, "late", "default")
    assert single.spec.node_name == "node-1"

    # An offline watch stays open, sends bookmarks, and ends when the upstream is back.
    offline_watch = KubeWatcher(
        v1.list_namespaced_pod,
        "default",
        resource_version=offline.metadata.resource_version,
        allow_watch_bookmarks=True,
        timeout_seconds=120,
    )
    bookmark = await offline_watch.anext()
    assert bookmark is not None and bookmark["type"] == "BOOKMARK"

    kube_api.delete("v1", "Pod", "pod-00004", "default")  # deleted while we were cut off
    await restore(kube_api, hub)
    tail = await offline_watch.until_end()
    assert all(e["type"] == "BOOKMARK" for e in tail)
    assert hub.watches.closed_by_switch >= 1

    # Resync: the fresh list replaces the recorded one, so the deletion sticks offline too.
    relisted = await to_thread(v1.list_namespaced_pod, "default")
    assert "pod-00004" not in names(relisted.items)
    await cut(kube_api, hub)
    again = await to_thread(v1.list_namespaced_pod, "default")
    assert names(again.items) == names(relisted.items)
    with pytest.raises(ApiException) as gone:
        await to_thread(v1.read_namespaced_pod, "pod-00004", "default")
    assert gone.value.status == 404


async def test_offline_writes_get_503_status(hub: HubServer, kube_api: KubeAPIServer) -> None:
    kube_api.seed(objects.pods(2))
    v1 = k8s.CoreV1Api(k8s_client(hub.url))
    await to_thread(v1.list_namespaced_pod, "default")
    await cut(kube_api, hub)
    with pytest.raises(ApiException) as refused:
        await to_thread(
            v1.create_namespaced_config_map,
            "default",
            k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="nope")),
        )
    assert refused.value.status == 503
    assert "offline" in refused.value.body and "nothing was applied" in refused.value.body
    with pytest.raises(ApiException) as refused_delete:
        await to_thread(v1.delete_namespaced_pod, "pod-00000", "default")
    assert refused_delete.value.status == 503
    await restore(kube_api, hub)
    assert kube_api.get("v1", "Pod", "pod-00000", "default")


async def test_two_selectors_of_one_component_served_offline(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(6, prefix="web", nodes=3))
    kube_api.seed(objects.pods(4, prefix="db", nodes=2))
    v1 = k8s.CoreV1Api(k8s_client(hub.url, agent="kubelet/v1.32.0 (linux/amd64)"))
    web = await to_thread(v1.list_namespaced_pod, "default", label_selector="app=web")
    db = await to_thread(v1.list_namespaced_pod, "default", label_selector="app in (db)")
    on_node = await to_thread(v1.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-1")
    await cut(kube_api, hub)
    assert names(
        (await to_thread(v1.list_namespaced_pod, "default", label_selector="app=web")).items
    ) == names(web.items)
    assert names(
        (await to_thread(v1.list_namespaced_pod, "default", label_selector="app in (db)")).items
    ) == names(db.items)
    offline_node = await to_thread(
        v1.list_pod_for_all_namespaces, field_selector="spec.nodeName=node-1"
    )
    assert (
        names(offline_node.items)
        == names(on_node.items)
        == ["db-00001", "db-00003", "web-00001", "web-00004"]
    )
    # A selector never listed online is not guessed at.
    with pytest.raises(ApiException) as unknown:
        await to_thread(v1.list_namespaced_pod, "default", label_selector="app=cache")
    assert unknown.value.status == 503


async def test_unselected_list_answers_other_selectors_locally(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(6, prefix="web", nodes=3))
    kube_api.seed(objects.pods(3, prefix="db", nodes=3))
    v1 = k8s.CoreV1Api(k8s_client(hub.url))
    await to_thread(v1.list_pod_for_all_namespaces)
    await cut(kube_api, hub)
    db = await to_thread(v1.list_namespaced_pod, "default", label_selector="app!=web")
    assert names(db.items) == ["db-00000", "db-00001", "db-00002"]
    node = await to_thread(
        v1.list_namespaced_pod,
        "default",
        field_selector="spec.nodeName=node-2,metadata.name!=db-00002",
    )
    assert names(node.items) == ["web-00002", "web-00005"]
    first = await to_thread(v1.list_namespaced_pod, "default", limit=4)
    assert len(first.items) == 4 and first.metadata._continue
    second = await to_thread(
        v1.list_namespaced_pod, "default", limit=10, _continue=first.metadata._continue
    )
    assert len(second.items) == 5 and not second.metadata._continue
    assert second.metadata.resource_version == first.metadata.resource_version


async def test_crd_list_served_offline(hub: HubServer, kube_api: KubeAPIServer) -> None:
    kube_api.create(objects.crd("data.edgecache.io", "Dataset", versions=("v1alpha1",)))
    for name in ("imagenet", "coco"):
        kube_api.create(
            {
                "apiVersion": "data.edgecache.io/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"mounts": [{"mountPoint": f"oss://bucket/{name}"}]},
            }
        )
    custom = k8s.CustomObjectsApi(k8s_client(hub.url, agent="edgecache-controller/0.1"))
    args = ("data.edgecache.io", "v1alpha1", "default", "datasets")
    online = await to_thread(custom.list_namespaced_custom_object, *args)
    await cut(kube_api, hub)
    offline = await to_thread(custom.list_namespaced_custom_object, *args)
    assert sorted(i["metadata"]["name"] for i in offline["items"]) == ["coco", "imagenet"]
    assert offline["kind"] == online["kind"] == "DatasetList"
    one = await to_thread(custom.get_namespaced_custom_object, *args, "coco")
    assert one["spec"]["mounts"][0]["mountPoint"] == "oss://bucket/coco"


async def test_credentials_never_seen_online_are_refused_offline(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from .conftest import fast_settings

    async with KubeAPIServer(tokens={"node-token": "node", "ops-token": "ops"}) as api:
        api.seed(objects.pods(3))
        async with HubServer(fast_settings(tmp_path / "hub", api.url)) as hub:
            known = k8s.CoreV1Api(k8s_client(hub.url, token="node-token"))
            await to_thread(known.list_namespaced_pod, "default")
            stranger = k8s.CoreV1Api(k8s_client(hub.url, token="stolen-token"))
            with pytest.raises(ApiException) as online_refusal:
                await to_thread(stranger.list_namespaced_pod, "default")
            assert online_refusal.value.status == 401  # the upstream's own answer

            assert hub.recorder is not None
            await hub.recorder.drain()
            await api.astop()
            await hub.health.wait_for(False, within_seconds=10)
            assert len((await to_thread(known.list_namespaced_pod, "default")).items) == 3
            for client in (
                stranger,
                k8s.CoreV1Api(k8s_client(hub.url, token="ops-token")),  # valid, but never seen
                k8s.CoreV1Api(k8s_client(hub.url)),  # anonymous, never accepted upstream
            ):
                with pytest.raises(ApiException) as refused:
                    await to_thread(client.list_namespaced_pod, "default")
                assert refused.value.status in (401, 403)
            # The store holds digests, never the token itself.
            assert b"node-token" not in (tmp_path / "hub" / "hub.sqlite").read_bytes()
