"""Discovery documents: ``/version``, ``/api``, ``/apis`` and the per-group-version resource lists.

Generated from the resource registry, so a CRD appears in discovery as soon as it is created.
Both discovery protocols are served: the legacy one (``APIVersions``, ``APIGroupList``,
``APIResourceList``) and aggregated discovery (``APIGroupDiscoveryList``, apidiscovery.k8s.io/v2),
which kubectl 1.30+ asks for first through its ``Accept`` header.
"""

from __future__ import annotations

from typing import Any

from ._resources import ALL_VERBS, ResourceRegistry, ResourceType
from ._scale import SCALE_KIND

JSONObject = dict[str, Any]
AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
STATUS_VERBS = ["get", "patch", "update"]


def wants_aggregated(accept: str) -> bool:
    """Whether the client's ``Accept`` header asks for aggregated discovery v2."""
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if {"g=apidiscovery.k8s.io", "v=v2", "as=APIGroupDiscoveryList"} <= params:
            return True
    return False


def version_info(major: str = "1", minor: str = "32") -> JSONObject:
    return {
        "major": major,
        "minor": minor,
        "gitVersion": f"v{major}.{minor}.0-edgecache-test",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def _group_versions(registry: ResourceRegistry) -> dict[str, list[str]]:
    """Group name to its versions, in registration order (the first is preferred)."""
    groups: dict[str, list[str]] = {}
    for resource in registry.all():
        versions = groups.setdefault(resource.group, [])
        if resource.version not in versions:
            versions.append(resource.version)
    return groups


def core_versions(server_address: str) -> JSONObject:
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}
        ],
    }


def _api_group(name: str, versions: list[str]) -> JSONObject:
    entries = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": entries, "preferredVersion": entries[0]}


def group_list(registry: ResourceRegistry) -> JSONObject:
    groups = [
        _api_group(name, versions) for name, versions in _group_versions(registry).items() if name
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def api_group(registry: ResourceRegistry, group: str) -> JSONObject | None:
    versions = _group_versions(registry).get(group)
    if not group or not versions:
        return None
    return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(group, versions)}


def _served(registry: ResourceRegistry, group: str, version: str) -> list[ResourceType]:
    return [r for r in registry.all() if (r.group, r.version) == (group, version)]


def resource_list(registry: ResourceRegistry, group: str, version: str) -> JSONObject | None:
    served = _served(registry, group, version)
    if not served:
        return None
    resources: list[JSONObject] = []
    for r in served:
        entry: JSONObject = {
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": list(ALL_VERBS),
        }
        if r.short_names:
            entry["shortNames"] = list(r.short_names)
        if r.categories:
            entry["categories"] = list(r.categories)
        resources.append(entry)
        if r.has_status:
            resources.append(
                {
                    "name": f"{r.plural}/status",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "kind": r.kind,
                    "verbs": STATUS_VERBS,
                }
            )
        if r.has_scale:
            resources.append(
                {
                    "name": f"{r.plural}/scale",
                    "singularName": "",
                    "namespaced": r.namespaced,
                    "group": "autoscaling",
                    "version": "v1",
                    "kind": "Scale",
                    "verbs": STATUS_VERBS,
                }
            )
    group_version = f"{group}/{version}" if group else version
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }


def _discovery_resource(r: ResourceType) -> JSONObject:
    kind = {"group": r.group, "version": r.version, "kind": r.kind}
    entry: JSONObject = {
        "resource": r.plural,
        "responseKind": kind,
        "scope": "Namespaced" if r.namespaced else "Cluster",
        "singularResource": r.singular,
        "verbs": list(ALL_VERBS),
    }
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    subresources: list[JSONObject] = []
    if r.has_status:
        subresources.append({"subresource": "status", "responseKind": kind, "verbs": STATUS_VERBS})
    if r.has_scale:
        subresources.append(
            {"subresource": "scale", "responseKind": SCALE_KIND, "verbs": STATUS_VERBS}
        )
    if subresources:
        entry["subresources"] = subresources
    return entry


def aggregated(registry: ResourceRegistry, *, core: bool) -> JSONObject:
    """``APIGroupDiscoveryList`` for ``/api`` (``core=True``) or ``/apis``."""
    items: list[JSONObject] = []
    for name, versions in _group_versions(registry).items():
        if (name == "") != core:
            continue
        items.append(
            {
                "metadata": {"name": name, "creationTimestamp": None},
                "versions": [
                    {
                        "version": v,
                        "resources": [_discovery_resource(r) for r in _served(registry, name, v)],
                        "freshness": "Current",
                    }
                    for v in versions
                ],
            }
        )
    return {
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    }
