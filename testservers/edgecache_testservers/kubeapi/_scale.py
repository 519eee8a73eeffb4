"""The ``scale`` subresource: an ``autoscaling/v1 Scale`` view of a workload's ``spec.replicas``.

Served for deployments, statefulsets and replicasets (``kubectl scale``). Reads project the object;
writes change only ``spec.replicas`` of the object underneath, through the store's normal update.
"""

from __future__ import annotations

from typing import Any

from . import _status

JSONObject = dict[str, Any]
SCALE_KIND = {"group": "autoscaling", "version": "v1", "kind": "Scale"}


def _selector(obj: JSONObject) -> str:
    labels = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def to_scale(obj: JSONObject) -> JSONObject:
    """The ``Scale`` of a workload object."""
    meta = obj.get("metadata") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            key: meta[key]
            for key in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if key in meta
        },
        "spec": {"replicas": int((obj.get("spec") or {}).get("replicas", 1))},
        "status": {
            "replicas": int((obj.get("status") or {}).get("replicas", 0)),
            "selector": _selector(obj),
        },
    }


def replicas_of(scale: Any) -> int:
    """``spec.replicas`` of a Scale body, 422 if missing or negative."""
    replicas = (
        ((scale or {}).get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
    )
    if not isinstance(replicas, int) or replicas < 0:
        raise _status.APIError(
            422,
            "Invalid",
            f'Scale.autoscaling "" is invalid: spec.replicas: Invalid value: {replicas!r}',
        )
    return replicas
