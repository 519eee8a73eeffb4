"""Server-side printing: ``meta.k8s.io/v1 Table`` responses for ``kubectl get``.

kubectl asks for ``application/json;as=Table;g=meta.k8s.io;v=v1`` and prints the server's columns.
Built-ins get Name and Age (pods, namespaces and nodes a few of the familiar columns besides);
custom resources get Name and their CRD's ``additionalPrinterColumns`` (simple ``.a.b[0].c`` paths).
Rows carry the object's metadata (``includeObject=Metadata``), as the API server does by default.
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


Column = tuple[str, str, Callable[[JSONObject], Any], int]
"""``(title, type, cell, priority)``: kubectl shows priority > 0 columns only with ``-o wide``."""
_EXTRA: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        ("Ready", "string", _pod_ready, 0),
        ("Status", "string", _pod_status, 0),
        ("Restarts", "integer", _pod_restarts, 0),
    ],
    ("", "namespaces"): [
        ("Status", "string", lambda o: (o.get("status") or {}).get("phase", ""), 0)
    ],
    ("", "nodes"): [("Status", "string", _node_status, 0)],
}
_WIDE: dict[tuple[str, str], list[Column]] = {
    ("", "pods"): [
        ("IP", "string", lambda o: (o.get("status") or {}).get("podIP") or "<none>", 1),
        ("Node", "string", lambda o: (o.get("spec") or {}).get("nodeName") or "<none>", 1),
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
    name: Column = ("Name", "string", lambda o: (o.get("metadata") or {}).get("name", ""), 0)
    age: Column = (
        "Age",
        "string",
        lambda o: human_age((o.get("metadata") or {}).get("creationTimestamp")),
        0,
    )
    if resource.printer_columns:
        return [name, *(_crd_column(c) for c in resource.printer_columns)]
    key = resource.group_resource
    return [name, *_EXTRA.get(key, []), age, *_WIDE.get(key, [])]


def _partial(obj: JSONObject) -> JSONObject:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata") or {},
    }


def render_table(
    resource: ResourceType, objects: list[JSONObject], *, resource_version: str | None
) -> JSONObject:
    """A ``Table`` of ``objects`` with the resource's columns."""
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
            {"cells": [cell(obj) for _, _, cell, _ in columns], "object": _partial(obj)}
            for obj in objects
        ],
    }
    return table
