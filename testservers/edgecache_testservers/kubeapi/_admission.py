"""Create strategies: what the API server does to a new object before storing it.

The store calls these on every client create: the kind and apiVersion are checked against the
URL, the status of resources with a status subresource is reset (pods start ``Pending``,
namespaces ``Active``), services get a cluster IP, secrets a type, and a CRD is checked and
reported ``Established`` at once (there is no controller to wait for).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from . import _status
from ._resources import CRD_GROUP_RESOURCE, NAMESPACE_GROUP_RESOURCE, ResourceType

JSONObject = dict[str, Any]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_kind(resource: ResourceType, obj: JSONObject) -> None:
    """Fill a missing ``kind``/``apiVersion``; 400 if they name another resource."""
    kind = obj.get("kind") or resource.kind
    if kind != resource.kind:
        raise _status.bad_request(
            f"the object provided is of kind {kind}, but the request is for {resource.kind}"
        )
    api_version = obj.get("apiVersion") or resource.api_version
    group = str(api_version).rpartition("/")[0]
    if group != resource.group:
        raise _status.bad_request(
            f"the API version in the data ({api_version}) does not match the expected "
            f"API version "
            f"({resource.api_version})"
        )
    obj["kind"] = kind
    obj["apiVersion"] = api_version


def admit_new(resource: ResourceType, obj: JSONObject, cluster_ips: Iterator[int]) -> None:
    """What the API server's create strategies do to a new object."""
    if resource.has_status:
        obj.pop("status", None)
    group_resource = resource.group_resource
    if group_resource == NAMESPACE_GROUP_RESOURCE:
        obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
        obj["status"] = {"phase": "Active"}
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = obj["metadata"][
            "name"
        ]
    elif group_resource == ("", "secrets"):
        obj.setdefault("type", "Opaque")
    elif group_resource == ("", "pods"):
        obj["status"] = {"phase": "Pending", "qosClass": "BestEffort"}
    elif group_resource == ("", "services"):
        spec = obj.setdefault("spec", {})
        if spec.get("type") != "ExternalName" and not spec.get("clusterIP"):
            index = next(cluster_ips)
            spec["clusterIP"] = f"10.96.{index // 250}.{index % 250 + 1}"
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("type", "ClusterIP")
        obj["status"] = {"loadBalancer": {}}
    elif group_resource == CRD_GROUP_RESOURCE:
        accept_crd(obj)


def accept_crd(obj: JSONObject) -> None:
    """Check a CRD and mark it accepted and ``Established``, as apiextensions does."""
    _validate_crd(obj)
    names = obj["spec"]["names"]
    names.setdefault("singular", str(names["kind"]).lower())
    names.setdefault("listKind", f"{names['kind']}List")
    obj["status"] = {
        "acceptedNames": dict(names),
        "storedVersions": [v["name"] for v in obj["spec"]["versions"] if v.get("storage")],
        "conditions": [
            _condition("NamesAccepted", "NoConflicts", "no conflicts found"),
            _condition(
                "Established",
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        ],
    }


def _validate_crd(obj: JSONObject) -> None:
    spec = obj.get("spec") or {}
    names = spec.get("names") or {}
    name = (obj.get("metadata") or {}).get("name", "")
    for field, value in (
        ("spec.group", spec.get("group")),
        ("spec.names.plural", names.get("plural")),
        ("spec.names.kind", names.get("kind")),
        ("spec.versions", spec.get("versions")),
    ):
        if not value:
            raise _status.invalid(
                "CustomResourceDefinition",
                "apiextensions.k8s.io",
                name,
                field,
                "Required value",
            )
    if name != f"{names['plural']}.{spec['group']}":
        raise _status.invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            name,
            "metadata.name",
            'Invalid value: must be spec.names.plural+"."+spec.group',
        )


def _condition(kind: str, reason: str, message: str) -> JSONObject:
    return {
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastTransitionTime": now_rfc3339(),
    }
