"""Static PV/PVC binding (the one part of the PV controller the test server emulates) and
quantity patterns on int-or-string fields of custom resources."""

from __future__ import annotations

from typing import Any

import pytest
from edgecache_testservers.kubeapi import APIError, KubeAPIServer, objects

JSONObject = dict[str, Any]


def pv(name: str, claim: str | None = None) -> JSONObject:
    spec: JSONObject = {
        "capacity": {"storage": "1Gi"},
        "accessModes": ["ReadOnlyMany"],
        "csi": {"driver": "x.example.com", "volumeHandle": name},
    }
    if claim:
        spec["claimRef"] = {"namespace": "default", "name": claim}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name},
        "spec": spec,
    }


def pvc(name: str, volume: str | None) -> JSONObject:
    spec: JSONObject = {
        "accessModes": ["ReadOnlyMany"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    if volume:
        spec["volumeName"] = volume
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "default"},
        "spec": spec,
    }


def phase(api: KubeAPIServer, kind: str, name: str) -> str:
    namespace = None if kind == "PersistentVolume" else "default"
    return str(api.get("v1", kind, name, namespace).get("status", {}).get("phase"))


def test_pre_bound_pairs_bind_and_unbind_as_on_a_cluster() -> None:
    with KubeAPIServer() as api:
        api.create(pv("free"))
        assert phase(api, "PersistentVolume", "free") == "Available"
        api.create(pv("v1", claim="c1"))
        assert phase(api, "PersistentVolume", "v1") == "Available"  # waits for its claim
        api.create(pvc("c1", "v1"))
        assert phase(api, "PersistentVolumeClaim", "c1") == "Bound"
        assert phase(api, "PersistentVolume", "v1") == "Bound"
        claim = api.get("v1", "PersistentVolumeClaim", "c1", "default")
        volume = api.get("v1", "PersistentVolume", "v1")
        assert volume["spec"]["claimRef"]["uid"] == claim["metadata"]["uid"]
        assert claim["status"]["capacity"] == {"storage": "1Gi"}
        assert claim["status"]["accessModes"] == ["ReadOnlyMany"]
        # A claim naming a PV that is pre-bound to another claim stays Pending.
        api.create(pvc("c2", "v1"))
        assert phase(api, "PersistentVolumeClaim", "c2") == "Pending"
        # The claim goes: its PV is Released; the PV goes: a bound claim is Lost.
        api.delete("v1", "PersistentVolumeClaim", "c1", "default")
        assert phase(api, "PersistentVolume", "v1") == "Released"
        api.create(pv("v3", claim="c3"))
        api.create(pvc("c3", "v3"))
        api.delete("v1", "PersistentVolume", "v3")
        assert phase(api, "PersistentVolumeClaim", "c3") == "Lost"


def test_int_or_string_strings_are_checked_against_their_pattern() -> None:
    with KubeAPIServer() as api:
        crd = objects.crd("example.com", "Box")
        crd["spec"]["versions"][0]["schema"] = {
            "openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "size": {"x-kubernetes-int-or-string": True, "pattern": "^[0-9]+Gi$"}
                },
            }
        }
        api.create(crd)
        box: JSONObject = {
            "apiVersion": "example.com/v1",
            "kind": "Box",
            "metadata": {"name": "b", "namespace": "default"},
        }
        api.create({**box, "size": 5})
        api.delete("example.com/v1", "Box", "b", "default")
        api.create({**box, "size": "10Gi"})
        api.delete("example.com/v1", "Box", "b", "default")
        with pytest.raises(APIError) as refused:
            api.create({**box, "size": "10GG"})
        assert refused.value.code == 422 and "size in body should match" in str(refused.value)
