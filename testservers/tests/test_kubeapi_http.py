"""The Kubernetes API test server over real HTTP (aiohttp): verbs, errors, lists, discovery."""

from __future__ import annotations

import asyncio
import inspect
import time
from typing import Any

import aiohttp
import edgecache_testservers.kubeapi as kubeapi
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects

PODS = "/api/v1/namespaces/default/pods"
MERGE = {"Content-Type": "application/merge-patch+json"}


async def _json(response: aiohttp.ClientResponse) -> Any:
    return await response.json(content_type=None)


async def create_pod(http: aiohttp.ClientSession, name: str, **labels: str) -> dict[str, Any]:
    async with http.post(PODS, json=objects.pod(name, labels=labels)) as response:
        assert response.status == 201, await response.text()
        body: dict[str, Any] = await _json(response)
        return body


def test_public_api_is_small_and_sorted() -> None:
    assert kubeapi.__all__ == sorted(kubeapi.__all__)
    public = {
        n
        for n in dir(kubeapi)
        if not n.startswith("_") and not inspect.ismodule(getattr(kubeapi, n))
    }
    assert set(kubeapi.__all__) == public - {"annotations"} | {"objects"}


# --------------------------------------------------------------------------------- discovery


async def test_legacy_discovery_lists_builtin_groups_and_resources(
    http: aiohttp.ClientSession,
) -> None:
    async with http.get("/version") as response:
        assert (await _json(response))["major"] == "1"
    async with http.get("/api") as response:
        assert (await _json(response))["versions"] == ["v1"]
    async with http.get("/apis") as response:
        groups = {g["name"] for g in (await _json(response))["groups"]}
    assert {"apps", "discovery.k8s.io", "coordination.k8s.io", "apiextensions.k8s.io"} <= groups
    async with http.get("/api/v1") as response:
        resources = {r["name"]: r for r in (await _json(response))["resources"]}
    assert resources["pods"]["namespaced"] and not resources["nodes"]["namespaced"]
    assert "pods/status" in resources and "watch" in resources["pods"]["verbs"]
    async with http.get("/apis/apps/v1") as response:
        assert {r["name"] for r in (await _json(response))["resources"]} >= {
            "deployments",
            "daemonsets",
        }
    async with http.get("/apis/nope.example.com/v1") as response:
        assert response.status == 404
        assert (await _json(response))["kind"] == "Status"


async def test_aggregated_discovery_is_served_when_asked_for(http: aiohttp.ClientSession) -> None:
    accept = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
    async with http.get("/apis", headers={"Accept": accept}) as response:
        assert response.headers["Content-Type"].startswith(
            "application/json;g=apidiscovery.k8s.io;v=v2"
        )
        body = await _json(response)
    assert body["kind"] == "APIGroupDiscoveryList"
    apps = next(item for item in body["items"] if item["metadata"]["name"] == "apps")
    deployments = next(
        r for r in apps["versions"][0]["resources"] if r["resource"] == "deployments"
    )
    assert (
        deployments["scope"] == "Namespaced"
        and deployments["subresources"][0]["subresource"] == "status"
    )
    async with http.get("/api", headers={"Accept": accept}) as response:
        core = (await _json(response))["items"]
    assert [item["metadata"]["name"] for item in core] == [""]


async def test_unknown_paths_get_a_not_found_status(http: aiohttp.ClientSession) -> None:
    for path in ("/api/v1/widgets", "/apis/apps/v1/namespaces/default/widgets", "/nowhere"):
        async with http.get(path) as response:
            body = await _json(response)
        assert response.status == 404 and body["reason"] == "NotFound", path


# ------------------------------------------------------------------------------ create / get


async def test_create_sets_server_fields_and_monotonic_resource_versions(
    http: aiohttp.ClientSession,
) -> None:
    first = await create_pod(http, "a")
    second = await create_pod(http, "b")
    meta = first["metadata"]
    assert (
        meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["namespace"] == "default"
    )
    assert int(second["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])
    assert (
        first["status"]["phase"] == "Pending"
    )  # a create resets the status, as the API server does
    async with http.get(f"{PODS}/a") as response:
        assert (await _json(response))["metadata"]["uid"] == meta["uid"]


async def test_generate_name_gives_a_unique_name(http: aiohttp.ClientSession) -> None:
    body = {"metadata": {"generateName": "worker-"}, "data": {}}
    names = set()
    for _ in range(3):
        async with http.post("/api/v1/namespaces/default/configmaps", json=body) as response:
            assert response.status == 201
            names.add((await _json(response))["metadata"]["name"])
    assert len(names) == 3 and all(n.startswith("worker-") and len(n) == 12 for n in names)


@pytest.mark.parametrize(
    ("path", "body", "code", "reason"),
    [
        (PODS, objects.pod("dup"), 409, "AlreadyExists"),
        (PODS, {"metadata": {}}, 422, "Invalid"),
        ("/api/v1/namespaces/missing/pods", objects.pod("x", "missing"), 404, "NotFound"),
        (PODS, objects.pod("x", "other"), 400, "BadRequest"),
        (
            PODS,
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}},
            400,
            "BadRequest",
        ),
    ],
)
async def test_create_errors_are_status_objects(
    http: aiohttp.ClientSession, path: str, body: dict[str, Any], code: int, reason: str
) -> None:
    await create_pod(http, "dup")
    async with http.post(path, json=body) as response:
        status = await _json(response)
    assert response.status == code
    assert (status["kind"], status["status"], status["reason"], status["code"]) == (
        "Status",
        "Failure",
        reason,
        code,
    )


async def test_get_missing_object_is_404_with_details(http: aiohttp.ClientSession) -> None:
    async with http.get("/apis/apps/v1/namespaces/default/deployments/nope") as response:
        status = await _json(response)
    assert response.status == 404
    assert status["message"] == 'deployments.apps "nope" not found'
    assert status["details"] == {"name": "nope", "kind": "deployments", "group": "apps"}


# --------------------------------------------------------------------------- update / patch


async def test_update_with_stale_resource_version_conflicts(http: aiohttp.ClientSession) -> None:
    pod = await create_pod(http, "a")
    pod["metadata"]["labels"] = {"v": "1"}
    async with http.put(f"{PODS}/a", json=pod) as response:
        assert response.status == 200
        updated = await _json(response)
    assert int(updated["metadata"]["resourceVersion"]) > int(pod["metadata"]["resourceVersion"])
    pod["metadata"]["labels"] = {"v": "2"}  # still carries the old resourceVersion
    async with http.put(f"{PODS}/a", json=pod) as response:
        assert response.status == 409
        assert (await _json(response))["reason"] == "Conflict"
    del pod["metadata"]["resourceVersion"]  # an unconditional update is allowed
    async with http.put(f"{PODS}/a", json=pod) as response:
        assert response.status == 200


async def test_noop_update_keeps_the_resource_version(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    pod = await create_pod(http, "a")
    before = api.resource_version
    async with http.put(f"{PODS}/a", json=pod) as response:
        assert (await _json(response))["metadata"]["resourceVersion"] == pod["metadata"][
            "resourceVersion"
        ]
    assert api.resource_version == before


async def test_patch_types(http: aiohttp.ClientSession) -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}},
        "spec": {
            "template": {"spec": {"containers": [{"name": "c", "image": "x:1", "args": ["run"]}]}}
        },
    }
    path = "/apis/apps/v1/namespaces/default/deployments"
    async with http.post(path, json=deployment) as response:
        assert response.status == 201
        assert (await _json(response))["metadata"]["generation"] == 1
    merge = {"metadata": {"labels": {"a": None, "c": "3"}}}
    async with http.patch(f"{path}/web", json=merge, headers=MERGE) as response:
        patched = await _json(response)
    assert patched["metadata"]["labels"] == {"b": "2", "c": "3"}
    assert patched["metadata"]["generation"] == 1  # metadata changes do not bump the generation
    strategic = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x:2"}]}}}}
    headers = {"Content-Type": "application/strategic-merge-patch+json"}
    async with http.patch(f"{path}/web", json=strategic, headers=headers) as response:
        patched = await _json(response)
    assert patched["spec"]["template"]["spec"]["containers"] == [
        {"name": "c", "image": "x:2", "args": ["run"]}
    ]
    assert patched["metadata"]["generation"] == 2
    json_patch = [{"op": "replace", "path": "/metadata/labels/b", "value": "20"}]
    headers = {"Content-Type": "application/json-patch+json"}
    async with http.patch(f"{path}/web", json=json_patch, headers=headers) as response:
        assert (await _json(response))["metadata"]["labels"]["b"] == "20"
    async with http.patch(
        f"{path}/web", data=b"{}", headers={"Content-Type": "text/plain"}
    ) as response:
        assert response.status == 415


async def test_custom_resources_refuse_strategic_merge(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.create(objects.crd("data.edgecache.io", "Dataset", versions=("v1alpha1",)))
    dataset = {"apiVersion": "data.edgecache.io/v1alpha1", "kind": "Dataset"}
    api.create({**dataset, "metadata": {"name": "d", "namespace": "default"}})
    path = "/apis/data.edgecache.io/v1alpha1/namespaces/default/datasets/d"
    patch = {"metadata": {"labels": {"a": "1"}}}
    headers = {"Content-Type": "application/strategic-merge-patch+json"}
    async with http.patch(path, json=patch, headers=headers) as response:
        assert response.status == 415
    async with http.patch(path, json=patch, headers=MERGE) as response:
        assert response.status == 200


async def test_server_side_apply_creates_then_merges(http: aiohttp.ClientSession) -> None:
    headers = {"Content-Type": "application/apply-patch+yaml"}
    manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cfg\ndata:\n  a: '1'\n"
    path = "/api/v1/namespaces/default/configmaps/cfg?fieldManager=test"
    async with http.patch(path, data=manifest, headers=headers) as response:
        assert response.status == 201
    async with http.patch(path, data=manifest.replace("'1'", "'2'"), headers=headers) as response:
        assert response.status == 200
        assert (await _json(response))["data"] == {"a": "2"}


async def test_patch_helper_writes_like_a_client(api: KubeAPIServer) -> None:
    api.create(objects.pod("a"))
    patched = api.patch(
        "v1", "Pod", "a", {"status": {"phase": "Running"}}, "default", subresource="status"
    )
    assert patched["status"]["phase"] == "Running"
    labelled = api.patch("v1", "Pod", "a", {"metadata": {"labels": {"x": "1"}}}, "default")
    assert labelled["metadata"]["labels"] == {"x": "1"} and labelled["status"]["phase"] == "Running"


async def test_status_subresource_separates_spec_and_status_writes(
    http: aiohttp.ClientSession,
) -> None:
    await create_pod(http, "a")
    status_patch = {"status": {"phase": "Running"}, "metadata": {"labels": {"ignored": "yes"}}}
    async with http.patch(f"{PODS}/a/status", json=status_patch, headers=MERGE) as response:
        pod = await _json(response)
    assert pod["status"]["phase"] == "Running" and "ignored" not in pod["metadata"]["labels"]
    async with http.patch(
        f"{PODS}/a", json={"status": {"phase": "Failed"}}, headers=MERGE
    ) as response:
        assert (await _json(response))["status"]["phase"] == "Running"
    async with http.get(f"{PODS}/a/log") as response:
        assert response.status == 404


# ------------------------------------------------------------------------------------ delete


async def test_delete_returns_the_object_and_then_404(http: aiohttp.ClientSession) -> None:
    created = await create_pod(http, "a")
    async with http.delete(f"{PODS}/a") as response:
        deleted = await _json(response)
    assert response.status == 200 and deleted["metadata"]["uid"] == created["metadata"]["uid"]
    async with http.delete(f"{PODS}/a") as response:
        assert response.status == 404


async def test_delete_precondition_on_uid(http: aiohttp.ClientSession) -> None:
    await create_pod(http, "a")
    options = {
        "kind": "DeleteOptions",
        "apiVersion": "v1",
        "preconditions": {"uid": "someone-else"},
    }
    async with http.delete(f"{PODS}/a", json=options) as response:
        assert response.status == 409


async def test_finalizers_hold_deletion_until_removed(http: aiohttp.ClientSession) -> None:
    body = objects.config_map("held")
    body["metadata"]["finalizers"] = ["data.edgecache.io/cleanup"]
    path = "/api/v1/namespaces/default/configmaps"
    async with http.post(path, json=body) as response:
        assert response.status == 201
    async with http.delete(f"{path}/held") as response:
        assert response.status == 202
        assert (await _json(response))["metadata"]["deletionTimestamp"]
    async with http.get(f"{path}/held") as response:
        assert response.status == 200
    async with http.patch(
        f"{path}/held", json={"metadata": {"finalizers": None}}, headers=MERGE
    ) as response:
        assert response.status == 200
    async with http.get(f"{path}/held") as response:
        assert response.status == 404


async def test_delete_collection_with_a_label_selector(http: aiohttp.ClientSession) -> None:
    for name, app in (("a", "x"), ("b", "x"), ("c", "y")):
        await create_pod(http, name, app=app)
    async with http.delete(PODS, params={"labelSelector": "app=x"}) as response:
        assert sorted(i["metadata"]["name"] for i in (await _json(response))["items"]) == ["a", "b"]
    async with http.get(PODS) as response:
        assert [i["metadata"]["name"] for i in (await _json(response))["items"]] == ["c"]


async def test_deleting_a_namespace_deletes_its_objects(http: aiohttp.ClientSession) -> None:
    async with http.post("/api/v1/namespaces", json=objects.namespace("team")) as response:
        assert response.status == 201
    async with http.post("/api/v1/namespaces/team/pods", json=objects.pod("a", "team")) as response:
        assert response.status == 201
    async with http.delete("/api/v1/namespaces/team") as response:
        assert response.status == 200
    async with http.get("/api/v1/namespaces/team/pods/a") as response:
        assert response.status == 404


# -------------------------------------------------------------------------------------- list


async def test_list_carries_current_resource_version_and_sorted_items(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    for name in ("c", "a", "b"):
        await create_pod(http, name)
    async with http.get(PODS) as response:
        body = await _json(response)
    assert body["kind"] == "PodList" and body["apiVersion"] == "v1"
    assert body["metadata"]["resourceVersion"] == str(api.resource_version)
    assert [i["metadata"]["name"] for i in body["items"]] == ["a", "b", "c"]
    async with http.get("/api/v1/pods") as response:  # all namespaces
        assert len((await _json(response))["items"]) == 3


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("app=web", ["a", "b"]),
        ("app==web,tier=front", ["a"]),
        ("app!=web", ["c", "d"]),
        ("app in (web, db)", ["a", "b", "c"]),
        ("app notin (web)", ["c", "d"]),
        ("tier", ["a", "c"]),
        ("!tier", ["b", "d"]),
    ],
)
async def test_label_selectors(
    http: aiohttp.ClientSession, selector: str, expected: list[str]
) -> None:
    await create_pod(http, "a", app="web", tier="front")
    await create_pod(http, "b", app="web")
    await create_pod(http, "c", app="db", tier="back")
    await create_pod(http, "d")
    async with http.get(PODS, params={"labelSelector": selector}) as response:
        assert [i["metadata"]["name"] for i in (await _json(response))["items"]] == expected


async def test_field_selectors(http: aiohttp.ClientSession, api: KubeAPIServer) -> None:
    api.seed([objects.pod("a", node_name="n1"), objects.pod("b", node_name="n2", phase="Pending")])
    api.seed([objects.pod("c")])
    cases = {
        "spec.nodeName=n1": ["a"],
        "spec.nodeName!=n1": ["b", "c"],
        "spec.nodeName=": ["c"],
        "status.phase=Running,metadata.name!=a": ["c"],
        "metadata.namespace=default,metadata.name==b": ["b"],
    }
    for selector, expected in cases.items():
        async with http.get(PODS, params={"fieldSelector": selector}) as response:
            assert [i["metadata"]["name"] for i in (await _json(response))["items"]] == expected, (
                selector
            )
    async with http.get(PODS, params={"labelSelector": "=bad"}) as response:
        assert response.status == 400


async def test_pagination_is_a_consistent_snapshot(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.seed(objects.pods(25, nodes=0))
    seen: list[str] = []
    params = {"limit": "10"}
    async with http.get(PODS, params=params) as response:
        page = await _json(response)
    list_rv = page["metadata"]["resourceVersion"]
    assert page["metadata"]["remainingItemCount"] == 15
    await create_pod(http, "aaa-new")  # sorts first: must not shift later pages
    while True:
        seen += [i["metadata"]["name"] for i in page["items"]]
        assert page["metadata"]["resourceVersion"] == list_rv
        token = page["metadata"].get("continue")
        if not token:
            break
        async with http.get(PODS, params={"limit": "10", "continue": token}) as response:
            page = await _json(response)
    assert seen == [f"pod-{i:05d}" for i in range(25)]


async def test_resource_version_zero_lists_are_not_paged(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.seed(objects.pods(5, nodes=0))
    async with http.get(PODS, params={"limit": "2", "resourceVersion": "0"}) as response:
        body = await _json(response)
    assert len(body["items"]) == 5 and "continue" not in body["metadata"]


async def test_exact_resource_version_lists_the_past(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.put(objects.pod("changed", labels={"v": "1"}))
    api.put(objects.pod("removed"))
    then = api.resource_version
    api.put(objects.pod("changed", labels={"v": "2"}))
    api.delete("v1", "Pod", "removed", "default")
    api.put(objects.pod("added"))
    params = {"resourceVersion": str(then), "resourceVersionMatch": "Exact"}
    async with http.get(PODS, params=params) as response:
        body = await _json(response)
    assert body["metadata"]["resourceVersion"] == str(then)
    assert [(p["metadata"]["name"], p["metadata"]["labels"]) for p in body["items"]] == [
        ("changed", {"v": "1"}),
        ("removed", {}),
    ]
    api.compact()
    async with http.get(PODS, params=params) as response:
        assert response.status == 410


async def test_continue_token_expires_with_compaction(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.seed(objects.pods(5, nodes=0))
    async with http.get(PODS, params={"limit": "2"}) as response:
        token = (await _json(response))["metadata"]["continue"]
    api.compact()
    async with http.get(PODS, params={"limit": "2", "continue": token}) as response:
        assert response.status == 410
        assert (await _json(response))["reason"] == "Expired"


async def test_list_at_a_future_resource_version_times_out(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    async with http.get(
        PODS, params={"resourceVersion": str(api.resource_version + 100)}
    ) as response:
        assert response.status == 504


async def test_seeding_five_thousand_pods_is_fast(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    started = time.perf_counter()
    rv = api.seed(objects.pods(5000))
    assert time.perf_counter() - started < 5.0
    async with http.get(
        PODS, params={"labelSelector": "app=pod", "fieldSelector": "spec.nodeName=node-3"}
    ) as r:
        body = await _json(r)
    assert len(body["items"]) == 500 and body["metadata"]["resourceVersion"] == str(rv)


# ------------------------------------------------------------------------------------- CRDs


async def test_crd_serves_its_resources_until_deleted(http: aiohttp.ClientSession) -> None:
    crd = objects.crd("data.edgecache.io", "Dataset", versions=("v1alpha1",))
    async with http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
    ) as response:
        assert response.status == 201
        conditions = {
            c["type"]: c["status"] for c in (await _json(response))["status"]["conditions"]
        }
    assert conditions["Established"] == "True"
    async with http.get("/apis") as response:
        assert "data.edgecache.io" in {g["name"] for g in (await _json(response))["groups"]}
    path = "/apis/data.edgecache.io/v1alpha1/namespaces/default/datasets"
    dataset = {
        "apiVersion": "data.edgecache.io/v1alpha1",
        "kind": "Dataset",
        "metadata": {"name": "imagenet"},
    }
    async with http.post(path, json=dataset) as response:
        assert response.status == 201
    async with http.get(path) as response:
        assert (await _json(response))["kind"] == "DatasetList"
    async with http.delete(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/datasets.data.edgecache.io"
    ):
        pass
    async with http.get(path) as response:
        assert response.status == 404


async def test_cluster_scoped_crd(http: aiohttp.ClientSession) -> None:
    crd = objects.crd("apps.openyurt.io", "NodePool", namespaced=False, versions=("v1beta1", "v1"))
    async with http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
    ) as response:
        assert response.status == 201
    pool = {
        "apiVersion": "apps.openyurt.io/v1beta1",
        "kind": "NodePool",
        "metadata": {"name": "hangzhou"},
    }
    async with http.post("/apis/apps.openyurt.io/v1beta1/nodepools", json=pool) as response:
        assert response.status == 201
    async with http.get(
        "/apis/apps.openyurt.io/v1/nodepools/hangzhou"
    ) as response:  # other version
        assert (await _json(response))["apiVersion"] == "apps.openyurt.io/v1"
    async with http.get("/apis/apps.openyurt.io/v1beta1/namespaces/default/nodepools") as response:
        assert response.status == 404


async def test_invalid_crd_is_rejected(http: aiohttp.ClientSession) -> None:
    crd = objects.crd("example.com", "Widget")
    crd["metadata"]["name"] = "wrong"
    async with http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
    ) as response:
        assert response.status == 422


# --------------------------------------------------------------------------- tables (kubectl)


async def test_table_output_for_kubectl(http: aiohttp.ClientSession) -> None:
    await create_pod(http, "a")
    accept = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
    async with http.get(PODS, headers={"Accept": accept}) as response:
        table = await _json(response)
    assert table["kind"] == "Table"
    columns = [(c["name"], c["priority"]) for c in table["columnDefinitions"]]
    assert columns == [
        ("Name", 0),
        ("Ready", 0),
        ("Status", 0),
        ("Restarts", 0),
        ("Age", 0),
        ("IP", 1),  # priority 1: shown by kubectl only with -o wide
        ("Node", 1),
    ]
    assert table["rows"][0]["cells"][:3] == ["a", "0/1", "Pending"]
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    assert table["rows"][0]["object"]["metadata"]["name"] == "a"
    async with http.get(PODS, params={"includeObject": "Object"}, headers={"Accept": accept}) as r:
        assert (await _json(r))["rows"][0]["object"]["kind"] == "Pod"


# ------------------------------------------------------------------------- auth and controls


async def test_bearer_tokens_and_the_request_log() -> None:
    async with (
        KubeAPIServer(tokens={"good": "alice"}, allow_anonymous=False) as server,
        aiohttp.ClientSession(base_url=server.url) as http,
    ):
        async with http.get(PODS) as response:
            assert response.status == 401
            assert (await _json(response))["reason"] == "Unauthorized"
        async with http.get(PODS, headers={"Authorization": "Bearer bad"}) as response:
            assert response.status == 401
        headers = {"Authorization": "Bearer good", "User-Agent": "kubelet/v1.32.0 (linux/amd64)"}
        async with http.get(PODS, headers=headers) as response:
            assert response.status == 200
        async with http.get("/healthz") as response:
            assert response.status == 200
        last = [r for r in server.requests if r.path == PODS][-1]
        assert (last.user, last.user_agent, last.status) == ("alice", headers["User-Agent"], 200)
        assert last.authorization == "Bearer good"


async def test_anonymous_requests_when_allowed() -> None:
    async with (
        KubeAPIServer(tokens=["t"], allow_anonymous=True) as server,
        aiohttp.ClientSession(base_url=server.url) as http,
    ):
        async with http.get(PODS) as response:
            assert response.status == 200
        assert server.requests[-1].user == "system:anonymous"


async def test_injected_failures(http: aiohttp.ClientSession, api: KubeAPIServer) -> None:
    fault = api.fail(503, count=2, path_prefix="/api/v1")
    for _ in range(2):
        async with http.get(PODS) as response:
            assert response.status == 503
            assert (await _json(response))["kind"] == "Status"
    async with http.get(PODS) as response:
        assert response.status == 200
    assert fault.hits == 2
    api.drop_connections()  # unlimited: aiohttp retries once on a reused keep-alive connection
    with pytest.raises(aiohttp.ClientError):
        async with http.get(PODS) as response:
            await response.read()
    api.clear_faults()
    async with http.get(PODS) as response:
        assert response.status == 200
    api.hang(count=1)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(PODS, timeout=aiohttp.ClientTimeout(total=0.3)) as response:
            await response.read()
    api.fail(500, methods=["POST"])
    async with http.get(PODS) as response:
        assert response.status == 200
    async with http.post(PODS, json=objects.pod("x")) as response:
        assert response.status == 500
    api.clear_faults()
    async with http.post(PODS, json=objects.pod("x")) as response:
        assert response.status == 201
    api.fail(429, count=1)
    async with http.get(PODS) as response:
        assert response.status == 429 and response.headers["Retry-After"] == "1"
        assert (await _json(response))["reason"] == "TooManyRequests"


async def test_stop_and_start_on_the_same_port_keeps_state(api: KubeAPIServer) -> None:
    url = api.url
    api.put(objects.pod("survivor"))
    await api.astop()
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            async with http.get(f"{url}{PODS}"):
                pass
        await api.astart()
        assert api.url == url
        async with http.get(f"{url}{PODS}/survivor") as response:
            assert response.status == 200


async def test_sync_lifecycle_methods_refuse_to_block_the_servers_own_loop(
    api: KubeAPIServer,
) -> None:
    with pytest.raises(RuntimeError, match="await"):
        api.stop()


async def test_large_answers_are_gzipped_like_the_api_server(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.seed(objects.pods(1000, nodes=0))
    async with http.get(PODS, headers={"Accept-Encoding": "gzip"}) as response:
        assert response.headers["Content-Encoding"] == "gzip"
        assert len((await _json(response))["items"]) == 1000  # aiohttp decompresses
        assert response.headers["Audit-Id"]
    async with http.get(f"{PODS}/pod-00001", headers={"Accept-Encoding": "gzip"}) as response:
        assert "Content-Encoding" not in response.headers  # small: sent as is


def _owned_config_map(name: str, *owners: dict[str, Any]) -> dict[str, Any]:
    body = objects.config_map(name)
    body["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"],
        }
        for owner in owners
    ]
    return body


async def test_owner_deletion_collects_dependents(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    api.create(objects.crd("data.edgecache.io", "Dataset", versions=("v1alpha1",)))
    dataset = api.create(
        {
            "apiVersion": "data.edgecache.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": "d", "namespace": "default"},
        }
    )
    other = api.create(objects.config_map("other-owner"))
    api.create(_owned_config_map("only-d", dataset))
    api.create(_owned_config_map("d-and-other", dataset, other))
    held = _owned_config_map("held", dataset)
    held["metadata"]["finalizers"] = ["example.com/keep"]
    api.create(held)
    async with http.delete(
        "/apis/data.edgecache.io/v1alpha1/namespaces/default/datasets/d"
    ) as response:
        assert response.status == 200
    remaining = {c["metadata"]["name"]: c for c in api.list_objects("v1", "ConfigMap", "default")}
    assert sorted(remaining) == ["d-and-other", "held", "other-owner"]  # a live owner keeps it
    assert remaining["held"]["metadata"][
        "deletionTimestamp"
    ]  # collected, waiting for its finalizer


async def test_orphan_propagation_strips_the_owner_reference(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    owner = api.create(objects.config_map("owner"))
    api.create(_owned_config_map("dependent", owner))
    options = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Orphan"}
    async with http.delete("/api/v1/namespaces/default/configmaps/owner", json=options) as response:
        assert response.status == 200
    dependent = api.get("v1", "ConfigMap", "dependent", "default")
    assert "ownerReferences" not in dependent["metadata"]


@pytest.mark.parametrize(
    ("path", "name", "labels", "accepted"),
    [
        (PODS, "web-1.edge", {}, True),
        (PODS, "Web_1", {}, False),
        ("/api/v1/namespaces", "has.dot", {}, False),
        ("/apis/rbac.authorization.k8s.io/v1/clusterroles", "system:edgecache:agent", {}, True),
        (PODS, "ok", {"apps.openyurt.io/nodepool": "hangzhou"}, True),
        (PODS, "ok", {"bad key": "x"}, False),
        (PODS, "ok", {"k": "x" * 64}, False),
    ],
)
async def test_names_and_labels_are_validated(
    http: aiohttp.ClientSession, path: str, name: str, labels: dict[str, str], accepted: bool
) -> None:
    body = {"metadata": {"name": name, "labels": labels}}
    async with http.post(path, json=body) as response:
        assert response.status == (201 if accepted else 422), await response.text()
    if accepted and path == PODS:
        patch = {"metadata": {"labels": {"Not Valid": "x"}}}
        async with http.patch(f"{PODS}/{name}", json=patch, headers=MERGE) as response:
            assert response.status == 422


DATALOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["dataset"],
            "properties": {
                "dataset": {"type": "string", "minLength": 1},
                "policy": {"type": "string", "enum": ["Once", "Cron"], "default": "Once"},
                "parallelism": {"type": "integer", "minimum": 1, "default": 4},
                "target": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"path": {"type": "string"}}},
                },
                "options": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


async def test_crd_schema_defaults_prunes_and_validates(
    http: aiohttp.ClientSession, api: KubeAPIServer
) -> None:
    crd = objects.crd("data.edgecache.io", "DataLoad", versions=("v1alpha1",))
    crd["spec"]["versions"][0]["schema"] = {"openAPIV3Schema": DATALOAD_SCHEMA}
    api.create(crd)
    path = "/apis/data.edgecache.io/v1alpha1/namespaces/default/dataloads"
    body = {
        "apiVersion": "data.edgecache.io/v1alpha1",
        "kind": "DataLoad",
        "metadata": {"name": "warm"},
        "spec": {
            "dataset": "imagenet",
            "target": [{"path": "/train", "unknown": 1}],
            "options": {"a": "1"},
            "extra": {"anything": {"goes": True}},
            "typo": "dropped",
        },
    }
    async with http.post(path, params={"fieldValidation": "Strict"}, json=body) as response:
        assert response.status == 400  # kubectl's default: undeclared fields are refused
        assert 'unknown field "spec.typo"' in (await _json(response))["message"]
    async with http.post(path, json=body) as response:  # the server's default: Warn
        assert response.status == 201, await response.text()
        spec = (await _json(response))["spec"]
        warnings = response.headers.getall("Warning")
    assert warnings == [
        '299 - "unknown field \\"spec.target[0].unknown\\""',
        '299 - "unknown field \\"spec.typo\\""',
    ]
    assert spec == {
        "dataset": "imagenet",
        "policy": "Once",
        "parallelism": 4,
        "target": [{"path": "/train"}],
        "options": {"a": "1"},
        "extra": {"anything": {"goes": True}},
    }
    status = {"status": {"phase": "Loading", "progressTypo": "50%"}}
    async with http.patch(f"{path}/warm/status", json=status, headers=MERGE) as response:
        assert (await _json(response))["status"] == {"phase": "Loading"}  # undeclared: pruned
    bad = {**body, "metadata": {"name": "bad"}, "spec": {"policy": "Sometimes", "parallelism": "8"}}
    async with http.post(path, json=bad) as response:
        assert response.status == 422
        causes = {c["field"] for c in (await _json(response))["details"]["causes"]}
    assert causes == {"spec.dataset", "spec.policy", "spec.parallelism"}


async def test_custom_resources_select_on_their_selectable_fields_only(
    http: aiohttp.ClientSession,
) -> None:
    crd = objects.crd("data.edgecache.io", "Dataset", versions=("v1alpha1",))
    crd["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.tier"}]
    async with http.post(
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd
    ) as response:
        assert response.status == 201
    path = "/apis/data.edgecache.io/v1alpha1/namespaces/default/datasets"
    for name, tier in (("hot", "ssd"), ("cold", "hdd")):
        dataset = {
            "apiVersion": "data.edgecache.io/v1alpha1",
            "kind": "Dataset",
            "metadata": {"name": name},
            "spec": {"tier": tier, "owner": "ml"},
        }
        async with http.post(path, json=dataset) as response:
            assert response.status == 201
    async with http.get(path, params={"fieldSelector": "spec.tier=ssd"}) as response:
        assert [i["metadata"]["name"] for i in (await _json(response))["items"]] == ["hot"]
    async with http.get(path, params={"fieldSelector": "metadata.name=cold"}) as response:
        assert [i["metadata"]["name"] for i in (await _json(response))["items"]] == ["cold"]
    async with http.get(path, params={"fieldSelector": "spec.owner=ml"}) as response:
        assert response.status == 400  # not declared selectable
        assert (await response.json())["message"].endswith("field label not supported: spec.owner")
