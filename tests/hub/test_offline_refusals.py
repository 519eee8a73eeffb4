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
