"""Offline refusals say what the server would say, and why (issue #10, item 12): selectors the
API server refuses are refused offline too (400, never an empty list), and a component the hub
has no answers for is named, with the flag that would record it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp
import pytest
from edgecache_testservers.kubeapi import KubeAPIServer, objects

from edgecache.hub import HubServer

from .conftest import cut, fast_settings

KUBELET = {"User-Agent": "kubelet/v1.32.0 (linux/amd64)"}
PODS = "/api/v1/namespaces/default/pods"
CONFIGMAPS = "/api/v1/namespaces/default/configmaps"
REPLICASETS = "/apis/apps/v1/namespaces/default/replicasets"

REFUSED = [
    (PODS, "fieldSelector=spec.foo%3Dbar"),  # not a pod field label
    (PODS, "fieldSelector=metadata.labels%3Dx"),
    (CONFIGMAPS, "fieldSelector=data.key%3Dvalue"),  # configmaps: metadata only
    ("/api/v1/nodes", "fieldSelector=metadata.namespace%3Dx"),  # nodes are cluster-scoped
    (PODS, "fieldSelector=spec.nodeName+in+(a)"),  # no set operators in field selectors
    (PODS, "labelSelector=app%3Dbad%20value"),  # not a label value
    (PODS, "labelSelector=-app%3Dx"),  # not a label key
    (PODS, "watch=1&fieldSelector=spec.foo%3Dbar"),
    # apps/v1 registers no conversion: status.replicas is refused (kubernetes#135136)
    (REPLICASETS, "fieldSelector=status.replicas%3D1"),
]


async def _answer(http: aiohttp.ClientSession, path: str, query: str) -> tuple[int, Any]:
    async with http.get(f"{path}?{query}") as response:
        return response.status, await response.json()


async def test_selectors_the_server_refuses_are_refused_offline(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    kube_api.seed(objects.pods(4, nodes=2))
    kube_api.seed([objects.config_map("c", data={"key": "value"}), objects.node("n1")])
    async with aiohttp.ClientSession(hub.url, headers=KUBELET) as http:
        for path in (PODS, CONFIGMAPS, "/api/v1/nodes", REPLICASETS):
            async with http.get(path) as listed:  # recorded, unselected: could filter anything
                assert listed.status == 200
        online = {case: await _answer(http, *case) for case in REFUSED}
        assert all(status == 400 for status, _ in online.values()), online
        await cut(kube_api, hub)
        for case in REFUSED:
            status, body = await _answer(http, *case)
            assert status == 400, (case, body)
            assert body["kind"] == "Status" and body["reason"] == "BadRequest"
            assert body["message"] == online[case][1]["message"], case
        # What the server supports is still answered, filtered from the recorded list.
        status, body = await _answer(http, PODS, "fieldSelector=spec.nodeName%3Dnode-1")
        assert status == 200 and [p["metadata"]["name"] for p in body["items"]] == [
            "pod-00001",
            "pod-00003",
        ]


@pytest.mark.parametrize(
    ("components", "hint"),
    [
        (None, "--components coredns,curl,edgecache-agent,"),  # not recorded: the flag to add
        (frozenset({"curl"}), "records that component, but no request of it succeeded"),
    ],
)
async def test_a_component_without_answers_is_named_with_the_flag(
    kube_api: KubeAPIServer, tmp_path: Path, components: frozenset[str] | None, hint: str
) -> None:
    settings = fast_settings(tmp_path / "hub", kube_api.url)
    if components is not None:
        settings.recording.components = components
    kube_api.seed(objects.pods(1))
    agent = "curl/8.5.0 (x86_64-pc-linux-gnu)"
    async with HubServer(settings) as hub, aiohttp.ClientSession(hub.url) as http:
        async with http.get(PODS, headers=KUBELET) as listed:
            assert listed.status == 200
        await cut(kube_api, hub)
        async with http.get(PODS, headers={"User-Agent": agent}) as refused:
            body = await refused.json()
    assert refused.status == 503 and body["reason"] == "ServiceUnavailable"
    message = body["message"]
    assert "component 'curl'" in message and repr(agent) in message
    assert hint in message, message


DATASETS = "/apis/data.edgecache.io/v1alpha1/namespaces/default/datasets"
POOLS = "/apis/data.edgecache.io/v1alpha1/pools"  # cluster-scoped
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
KUBECTL = {"User-Agent": "kubectl/v1.32.0 (linux/amd64)"}
AGENT = {"User-Agent": "edgecache-agent/0.1"}

#: Field selectors on custom resources: the CRD declares .spec.tier (datasets) and .spec.zone
#: (pools) selectable; anything else but metadata.name (and metadata.namespace on namespaced
#: resources) is the server's 400.
CUSTOM_SELECTORS = [
    (DATASETS, "fieldSelector=spec.tier%3Dssd"),
    (DATASETS, "fieldSelector=spec.tier!%3Dssd"),
    (DATASETS, "fieldSelector=spec.tier%3D"),  # the object without a tier
    (DATASETS, "fieldSelector=spec.tier%3Dhdd,metadata.name!%3Dcold"),
    (DATASETS, "fieldSelector=metadata.namespace%3Ddefault"),
    (DATASETS, "fieldSelector=spec.owner%3Dml"),  # not declared: 400
    (DATASETS, "watch=1&fieldSelector=spec.owner%3Dml"),
    (POOLS, "fieldSelector=metadata.name%3Deast"),
    (POOLS, "fieldSelector=metadata.namespace%3Ddefault"),  # cluster-scoped: 400
]


def _custom_resources() -> list[dict[str, Any]]:
    datasets = objects.crd("data.edgecache.io", "Dataset", versions=("v1alpha1",))
    datasets["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.tier"}]
    pools = objects.crd("data.edgecache.io", "Pool", versions=("v1alpha1",), namespaced=False)
    pools["spec"]["versions"][0]["selectableFields"] = [{"jsonPath": ".spec.zone"}]
    found: list[dict[str, Any]] = [datasets, pools]
    for name, spec in (
        ("hot", {"tier": "ssd", "owner": "ml"}),
        ("cold", {"tier": "hdd", "owner": "ml"}),
        ("warm", {"tier": "hdd"}),
        ("bare", {"owner": "bi"}),
    ):
        found.append(
            {
                "apiVersion": "data.edgecache.io/v1alpha1",
                "kind": "Dataset",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            }
        )
    for name, zone in (("east", "a"), ("west", "b")):
        found.append(
            {
                "apiVersion": "data.edgecache.io/v1alpha1",
                "kind": "Pool",
                "metadata": {"name": name},
                "spec": {"zone": zone},
            }
        )
    return found


def _outcome(status: int, body: Any) -> tuple[int, Any]:
    """What a client sees: the status with the item names, or the refusal's message."""
    if status == 200:
        return status, sorted(item["metadata"]["name"] for item in body["items"])
    return status, body.get("message")


async def test_custom_resource_field_selectors_offline_as_the_server_answers(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    """The hub learns selectableFields from the recorded CRD: offline, a selector on a custom
    resource is filtered like the server filters it, and refused (400) where it refuses it."""
    seeded = _custom_resources()
    kube_api.seed(seeded[:2])
    kube_api.seed(seeded[2:])
    async with aiohttp.ClientSession(hub.url) as http:
        # kubectl asks every selector online: the server's answers (and exact-key records).
        server = {}
        for path, query in CUSTOM_SELECTORS:
            if "watch=1" in query:
                query += "&timeoutSeconds=1"
            async with http.get(f"{path}?{query}", headers=KUBECTL) as response:
                server[(path, query)] = _outcome(response.status, await response.json())
        assert server[(DATASETS, "fieldSelector=spec.tier%3Dssd")] == (200, ["hot"])
        assert server[(DATASETS, "fieldSelector=spec.tier%3D")] == (200, ["bare"])
        assert server[(DATASETS, "fieldSelector=spec.owner%3Dml")][0] == 400
        assert server[(POOLS, "fieldSelector=metadata.namespace%3Ddefault")][0] == 400
        # The agent only lists everything and reads the datasets CRD (pools' CRD: never).
        for path in (DATASETS, POOLS, f"{CRDS}/datasets.data.edgecache.io"):
            async with http.get(path, headers=AGENT) as listed:
                assert listed.status == 200
        # Online, the pools CRD's selectable field works for kubectl: recorded exactly.
        async with http.get(f"{POOLS}?fieldSelector=spec.zone%3Da", headers=KUBECTL) as response:
            zone_online = _outcome(response.status, await response.json())
        assert zone_online == (200, ["east"])
        await cut(kube_api, hub)
        for headers in (KUBECTL, AGENT):  # exact records / filtered from the unselected list
            for (path, query), expected in server.items():
                async with http.get(f"{path}?{query}", headers=headers) as response:
                    got = _outcome(response.status, await response.json())
                if query.startswith("watch=1") and expected[0] == 200:
                    continue  # a watch's answer is a stream, compared by test_kubectl
                assert got == expected, (headers, path, query)
        # The agent's pools selector on a declared field, whose CRD it never recorded: the hub
        # cannot know the server accepts it, so it says so (503) instead of guessing.
        async with http.get(f"{POOLS}?fieldSelector=spec.zone%3Da", headers=AGENT) as response:
            body = await response.json()
            assert response.status == 503, body
            assert "spec.zone" in body["message"] and "cannot tell" in body["message"]
        async with http.get(f"{POOLS}?fieldSelector=spec.zone%3Da", headers=KUBECTL) as response:
            assert _outcome(response.status, await response.json()) == zone_online


async def test_pod_alias_spec_host_offline_as_the_server_answers(
    hub: HubServer, kube_api: KubeAPIServer
) -> None:
    """``spec.host`` (old v1 clients) is the server's alias of ``spec.nodeName``."""
    kube_api.seed(objects.pods(4, nodes=2))
    queries = ["fieldSelector=spec.host%3Dnode-1", "fieldSelector=spec.host!%3Dnode-1"]
    async with aiohttp.ClientSession(hub.url, headers=KUBECTL) as http:
        online = {q: _outcome(*(await _answer(http, PODS, q))) for q in queries}
        assert online[queries[0]] == (200, ["pod-00001", "pod-00003"])
        async with http.get(PODS, headers=AGENT) as listed:
            assert listed.status == 200
        await cut(kube_api, hub)
        for headers in (KUBECTL, AGENT):
            for query in queries:
                async with http.get(f"{PODS}?{query}", headers=headers) as response:
                    got = _outcome(response.status, await response.json())
                assert got == online[query], (headers, query)
