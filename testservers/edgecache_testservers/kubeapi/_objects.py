"""Builders for the objects tests seed most: pods, nodes, namespaces, CRDs and their objects.

Plain dicts, as the API carries them; pass them to ``KubeAPIServer.seed``/``put``/``create``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

JSONObject = dict[str, Any]


def pod(
    name: str,
    namespace: str = "default",
    *,
    labels: Mapping[str, str] | None = None,
    node_name: str | None = None,
    phase: str = "Running",
    image: str = "registry.k8s.io/pause:3.9",
) -> JSONObject:
    """A one-container pod; ``put``/``seed`` keep ``phase``, ``create`` resets it to Pending."""
    spec: JSONObject = {"containers": [{"name": "main", "image": image}]}
    if node_name:
        spec["nodeName"] = node_name
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {})},
        "spec": spec,
        "status": {"phase": phase},
    }


def pods(
    count: int,
    namespace: str = "default",
    *,
    prefix: str = "pod",
    nodes: int = 10,
    labels: Mapping[str, str] | None = None,
) -> Iterator[JSONObject]:
    """``count`` pods spread over ``nodes`` nodes (``node-0``...), labelled ``app=<prefix>``."""
    for index in range(count):
        yield pod(
            f"{prefix}-{index:05d}",
            namespace,
            labels={"app": prefix, **(labels or {})},
            node_name=f"node-{index % nodes}" if nodes else None,
        )


def namespace(name: str, *, labels: Mapping[str, str] | None = None) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": dict(labels or {})},
    }


def node(name: str, *, labels: Mapping[str, str] | None = None, ready: bool = True) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def config_map(
    name: str, namespace: str = "default", data: Mapping[str, str] | None = None
) -> JSONObject:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": dict(data or {}),
    }


def crd(
    group: str,
    kind: str,
    plural: str | None = None,
    *,
    namespaced: bool = True,
    versions: tuple[str, ...] = ("v1",),
    status_subresource: bool = True,
    printer_columns: tuple[tuple[str, str, str], ...] = (),
) -> JSONObject:
    """A CustomResourceDefinition; ``printer_columns`` are ``(name, type, jsonPath)`` triples."""
    plural = plural or kind.lower() + "s"
    version_entries = []
    for index, version in enumerate(versions):
        entry: JSONObject = {
            "name": version,
            "served": True,
            "storage": index == 0,
            "schema": {
                "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
            },
        }
        if status_subresource:
            entry["subresources"] = {"status": {}}
        if printer_columns:
            entry["additionalPrinterColumns"] = [
                {"name": n, "type": t, "jsonPath": p} for n, t, p in printer_columns
            ]
        version_entries.append(entry)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}"},
        "spec": {
            "group": group,
            "names": {
                "plural": plural,
                "singular": kind.lower(),
                "kind": kind,
                "listKind": f"{kind}List",
            },
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": version_entries,
        },
    }
