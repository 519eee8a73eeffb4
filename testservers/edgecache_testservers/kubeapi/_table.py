"""Server-side printing: ``meta.k8s.io/v1 Table`` responses for ``kubectl get``.

kubectl asks for ``application/json;as=Table;g=meta.k8s.io;v=v1`` and prints the server's columns.
Built-ins get kubectl's familiar columns (pods, nodes, services, deployments...) or Name and Age;
custom resources get Name and their CRD's ``additionalPrinterColumns`` (simple ``.a.b[0].c`` paths).
Rows carry the object's metadata unless ``includeObject`` asks for the whole object or none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from ._resources import PrinterColumn, ResourceType

JSONObject = dict[str, Any]
TABLE_MEDIA = "application/json;as=Table;v=v1;g=meta.k8s.io"
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def wants_table(accept: str) -> bool:
    for part in accept.split(","):
        params = {p.strip() for p in part.split(";")[1:]}
        if {"as=Table", "g=meta.k8s.io"} <= params and ("v=v1" in params or "v=v1beta1" in params):
            return True
    return False


def human_age(timestamp: str | None, *, now: datetime | None = None) -> str:
    """kubectl's short duration format: ``45s``, ``3m12s``, ``2h``, ``5d``."""
    if not timestamp:
        return "<unknown>"
    try:
        then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int(((now or datetime.now(UTC)) - then).total_seconds()))
    minutes, hours = seconds // 60, seconds // 3600
    if seconds < 120:
        return f"{seconds}s"
    if minutes < 10:
        return f"{minutes}m{seconds % 60}s" if seconds % 60 else f"{minutes}m"
    if hours < 3:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    return f"{hours // 24}d"


def json_path(obj: Any, path: str) -> Any:
    """A simple JSONPath (``.status.phase``, ``.spec.items[0].name``); ``None`` if absent."""
    current = obj
    for key, index in _PATH_PART.findall(path.strip().lstrip("{").rstrip("}")):
        if key:
            if not isinstance(current, dict) or key not in current:
                return None
            current = current[key]
        else:
            if not isinstance(current, list) or int(index) >= len(current):
                return None
            current = current[int(index)]
    return current


Column = tuple[str, str, Callable[[JSONObject], Any], int]
"""``(title, type, cell, priority)``: kubectl shows priority > 0 columns only with ``-o wide``."""


def _at(path: str, default: Any = "<none>") -> Callable[[JSONObject], Any]:
    def cell(obj: JSONObject) -> Any:
        value = json_path(obj, path)
        return default if value is None or value == "" else value

    return cell


def _pod_ready(pod: JSONObject) -> str:
    containers = (pod.get("spec") or {}).get("containers") or []
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return f"{sum(1 for s in statuses if s.get('ready'))}/{len(containers)}"


def _pod_status(pod: JSONObject) -> str:
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "Terminating"
    return str((pod.get("status") or {}).get("phase", ""))


def _pod_restarts(pod: JSONObject) -> int:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return sum(int(s.get("restartCount", 0)) for s in statuses)


def _node_status(node: JSONObject) -> str:
    for condition in (node.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return "Ready" if condition.get("status") == "True" else "NotReady"
    return "Unknown"


def _node_roles(node: JSONObject) -> str:
    labels = (node.get("metadata") or {}).get("labels") or {}
    prefix = "node-role.kubernetes.io/"
    roles = sorted(key[len(prefix) :] for key in labels if key.startswith(prefix))
    return ",".join(roles) or "<none>"


def _ports(service: JSONObject) -> str:
    ports = (service.get("spec") or {}).get("ports") or []
    shown = [f"{p.get('port')}/{p.get('protocol', 'TCP')}" for p in ports]
    return ",".join(shown) or "<none>"


def _data_count(obj: JSONObject) -> int:
    return len(obj.get("data") or {}) + len(obj.get("binaryData") or {})


def _replicas_ready(obj: JSONObject) -> str:
    ready = (obj.get("status") or {}).get("readyReplicas", 0)
    return f"{ready}/{(obj.get('spec') or {}).get('replicas', 1)}"


_ACCESS_MODES = {
    "ReadWriteOnce": "RWO",
    "ReadOnlyMany": "ROX",
    "ReadWriteMany": "RWX",
    "ReadWriteOncePod": "RWOP",
}


def _access_modes(obj: JSONObject) -> str:
    modes = (obj.get("spec") or {}).get("accessModes") or []
    return ",".join(_ACCESS_MODES.get(m, m) for m in modes)


_NAME: Column = ("Name", "string", lambda o: (o.get("metadata") or {}).get("name", ""), 0)
_AGE: Column = (
    "Age",
    "string",
    lambda o: human_age((o.get("metadata") or {}).get("creationTimestamp")),
    0,
)
# The columns kube-apiserver prints for the common built-ins; the rest get Name and Age.
_COLUMNS: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        _NAME,
        ("Ready", "string", _pod_ready, 0),
        ("Status", "string", _pod_status, 0),
        ("Restarts", "integer", _pod_restarts, 0),
        _AGE,
        ("IP", "string", _at(".status.podIP"), 1),
        ("Node", "string", _at(".spec.nodeName"), 1),
    ],
    ("", "namespaces"): [_NAME, ("Status", "string", _at(".status.phase", ""), 0), _AGE],
    ("", "nodes"): [
        _NAME,
        ("Status", "string", _node_status, 0),
        ("Roles", "string", _node_roles, 0),
        _AGE,
        ("Version", "string", _at(".status.nodeInfo.kubeletVersion", ""), 0),
    ],
    ("", "services"): [
        _NAME,
        ("Type", "string", _at(".spec.type", "ClusterIP"), 0),
        ("Cluster-IP", "string", _at(".spec.clusterIP"), 0),
        ("External-IP", "string", lambda o: "<none>", 0),
        ("Port(s)", "string", _ports, 0),
        _AGE,
    ],
    ("", "configmaps"): [_NAME, ("Data", "integer", _data_count, 0), _AGE],
    ("", "secrets"): [
        _NAME,
        ("Type", "string", _at(".type", ""), 0),
        ("Data", "integer", _data_count, 0),
        _AGE,
    ],
    ("", "persistentvolumeclaims"): [
        _NAME,
        ("Status", "string", _at(".status.phase", "Pending"), 0),
        ("Volume", "string", _at(".spec.volumeName", ""), 0),
        ("Capacity", "string", _at(".status.capacity.storage", ""), 0),
        ("Access Modes", "string", _access_modes, 0),
        ("StorageClass", "string", _at(".spec.storageClassName"), 0),
        _AGE,
    ],
    ("apps", "deployments"): [
        _NAME,
        ("Ready", "string", _replicas_ready, 0),
        ("Up-to-date", "integer", _at(".status.updatedReplicas", 0), 0),
        ("Available", "integer", _at(".status.availableReplicas", 0), 0),
        _AGE,
    ],
    ("apps", "daemonsets"): [
        _NAME,
        ("Desired", "integer", _at(".status.desiredNumberScheduled", 0), 0),
        ("Current", "integer", _at(".status.currentNumberScheduled", 0), 0),
        ("Ready", "integer", _at(".status.numberReady", 0), 0),
        ("Up-to-date", "integer", _at(".status.updatedNumberScheduled", 0), 0),
        ("Available", "integer", _at(".status.numberAvailable", 0), 0),
        _AGE,
    ],
    ("coordination.k8s.io", "leases"): [
        _NAME,
        ("Holder", "string", _at(".spec.holderIdentity", ""), 0),
        _AGE,
    ],
}


def _crd_column(column: PrinterColumn) -> Column:
    def cell(obj: JSONObject) -> Any:
        value = json_path(obj, column.json_path)
        if column.type == "date" and isinstance(value, str):
            return human_age(value)
        return value if value is not None else ""

    return (column.name, "string" if column.type == "date" else column.type, cell, 0)


def _columns(resource: ResourceType) -> list[Column]:
    if resource.printer_columns:
        return [_NAME, *(_crd_column(c) for c in resource.printer_columns)]
    return _COLUMNS.get(resource.group_resource, [_NAME, _AGE])


def _partial(obj: JSONObject) -> JSONObject:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def _row_object(obj: JSONObject, include: str) -> JSONObject | None:
    if include == "Object":
        return obj
    if include == "None":
        return None
    return _partial(obj)


def render_table(
    resource: ResourceType,
    objects: list[JSONObject],
    *,
    resource_version: str | None,
    include_object: str = "Metadata",
) -> JSONObject:
    """A ``Table`` of ``objects`` with the resource's columns.

    ``include_object`` is the request's ``includeObject``: each row carries the object's metadata
    (``Metadata``, the default), the whole object (``Object``) or nothing (``None``).
    """
    columns = _columns(resource)
    table: JSONObject = {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {} if resource_version is None else {"resourceVersion": resource_version},
        "columnDefinitions": [
            {
                "name": title,
                "type": kind,
                "format": "name" if title == "Name" else "",
                "description": "",
                "priority": priority,
            }
            for title, kind, _, priority in columns
        ],
        "rows": [
            {
                "cells": [cell(obj) for _, _, cell, _ in columns],
                "object": _row_object(obj, include_object),
            }
            for obj in objects
        ],
    }
    return table
