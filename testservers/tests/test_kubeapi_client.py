"""The Kubernetes API test server through the Python ``kubernetes`` client (sync, threaded server).

These are the access patterns of the controller and the agent: informer-style list then watch from
the list's resourceVersion, resumption after the watch ends, 410 Gone handling, optimistic
concurrency, custom objects, and bearer-token credentials.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from kubernetes import client, watch
from kubernetes.client.rest import ApiException


def _api_client(server: KubeAPIServer, token: str | None = None) -> client.ApiClient:
    configuration = client.Configuration()
    configuration.host = server.url
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return client.ApiClient(configuration)


@pytest.fixture
def core(kube_api: KubeAPIServer) -> Iterator[client.CoreV1Api]:
    with _api_client(kube_api) as api_client:
        yield client.CoreV1Api(api_client)


def _pod(name: str, **labels: str) -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="pause")]),
    )


def test_informer_list_then_watch_sees_every_change(
    kube_api: KubeAPIServer, core: client.CoreV1Api
) -> None:
    kube_api.seed(objects.pods(3, nodes=0))
    listed = core.list_namespaced_pod("default")
    assert len(listed.items) == 3
    rv = listed.metadata.resource_version

    def writer() -> None:
        core.create_namespaced_pod("default", _pod("new"))
        core.patch_namespaced_pod("new", "default", {"metadata": {"labels": {"v": "2"}}})
        core.delete_namespaced_pod("pod-00000", "default")

    threading.Thread(target=writer).start()
    seen: list[tuple[str, str]] = []
    watcher = watch.Watch()
    for event in watcher.stream(
        core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=5
    ):
        seen.append((event["type"], event["object"].metadata.name))
        if len(seen) == 3:
            watcher.stop()
    assert seen == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "pod-00000")]


def test_watch_resumes_from_its_last_resource_version(
    kube_api: KubeAPIServer, core: client.CoreV1Api
) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", _pod("a"))
    watcher = watch.Watch()
    first = next(
        iter(
            watcher.stream(
                core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=2
            )
        )
    )
    watcher.stop()
    assert first["object"].metadata.name == "a"
    core.create_namespaced_pod("default", _pod("b"))
    resumed = watch.Watch()
    events = resumed.stream(
        core.list_namespaced_pod, "default", resource_version=resumed_rv(watcher), timeout_seconds=1
    )
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "b")]


def resumed_rv(watcher: watch.Watch) -> str:
    rv: str = watcher.resource_version
    return rv


def test_expired_resource_version_raises_410(
    kube_api: KubeAPIServer, core: client.CoreV1Api
) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    core.create_namespaced_pod("default", _pod("a"))
    kube_api.compact()
    with pytest.raises(ApiException) as raised:
        list(
            watch.Watch().stream(
                core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=2
            )
        )
    assert raised.value.status == 410


def test_bookmarks_advance_the_watch_resource_version(
    kube_api: KubeAPIServer, core: client.CoreV1Api
) -> None:
    rv = core.list_namespaced_pod("default").metadata.resource_version
    kube_api.put(objects.config_map("elsewhere"))
    watcher = watch.Watch()
    for event in watcher.stream(
        core.list_namespaced_pod,
        "default",
        resource_version=rv,
        allow_watch_bookmarks=True,
        timeout_seconds=3,
    ):
        assert event["type"] == "BOOKMARK"
        watcher.stop()
    assert watcher.resource_version == str(kube_api.resource_version)


def test_optimistic_concurrency_and_errors(core: client.CoreV1Api) -> None:
    created = core.create_namespaced_pod("default", _pod("a"))
    created.metadata.labels = {"v": "1"}
    core.replace_namespaced_pod(
        "a", "default", created
    )  # created still has the old resourceVersion
    with pytest.raises(ApiException) as conflict:
        core.replace_namespaced_pod("a", "default", created)
    assert conflict.value.status == 409
    with pytest.raises(ApiException) as exists:
        core.create_namespaced_pod("default", _pod("a"))
    assert exists.value.status == 409
    with pytest.raises(ApiException) as missing:
        core.read_namespaced_pod("nope", "default")
    assert missing.value.status == 404


def test_selectors_through_the_client(kube_api: KubeAPIServer, core: client.CoreV1Api) -> None:
    kube_api.seed(objects.pods(20, nodes=4))
    on_node = core.list_pod_for_all_namespaces(
        field_selector="spec.nodeName=node-1", label_selector="app=pod"
    )
    assert len(on_node.items) == 5
    page = core.list_namespaced_pod("default", limit=8)
    assert len(page.items) == 8 and page.metadata._continue
    rest = core.list_namespaced_pod("default", limit=100, _continue=page.metadata._continue)
    assert len(rest.items) == 12


def test_custom_objects_and_leases(kube_api: KubeAPIServer) -> None:
    kube_api.create(objects.crd("data.edgecache.io", "Dataset", versions=("v1alpha1",)))
    with _api_client(kube_api) as api_client:
        custom = client.CustomObjectsApi(api_client)
        body: dict[str, Any] = {
            "apiVersion": "data.edgecache.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "imagenet"},
            "spec": {"mounts": [{"mountPoint": "s3://bucket/imagenet"}]},
        }
        custom.create_namespaced_custom_object(
            "data.edgecache.io", "v1alpha1", "default", "datasets", body
        )
        custom.patch_namespaced_custom_object_status(
            "data.edgecache.io",
            "v1alpha1",
            "default",
            "datasets",
            "imagenet",
            {"status": {"phase": "Bound"}},
        )
        got = custom.get_namespaced_custom_object(
            "data.edgecache.io", "v1alpha1", "default", "datasets", "imagenet"
        )
        assert got["status"] == {"phase": "Bound"} and got["metadata"]["generation"] == 1
        coordination = client.CoordinationV1Api(api_client)
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name="edgecache-controller"),
            spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
        )
        coordination.create_namespaced_lease("kube-system", lease)
        held = coordination.read_namespaced_lease("edgecache-controller", "kube-system")
        assert held.spec.holder_identity == "a"


def test_bearer_token_through_the_client() -> None:
    with KubeAPIServer(tokens={"s3cret": "controller"}) as server:
        with _api_client(server, token="s3cret") as api_client:
            assert client.CoreV1Api(api_client).list_namespace().items
        with (
            _api_client(server, token="wrong") as api_client,
            pytest.raises(ApiException) as refused,
        ):
            client.CoreV1Api(api_client).list_namespace()
        assert refused.value.status == 401
        users = [(r.user, r.status) for r in server.requests]
        assert users == [("controller", 200), ("", 401)]
        assert server.requests[0].user_agent.startswith("OpenAPI-Generator/")


def test_restart_keeps_state_for_sync_clients(
    kube_api: KubeAPIServer, core: client.CoreV1Api
) -> None:
    core.create_namespaced_pod("default", _pod("a"))
    kube_api.stop()
    with pytest.raises(Exception):  # noqa: B017 (urllib3 raises its own connection errors)
        core.read_namespaced_pod("a", "default", _request_timeout=2)
    kube_api.start()
    assert core.read_namespaced_pod("a", "default").metadata.name == "a"
