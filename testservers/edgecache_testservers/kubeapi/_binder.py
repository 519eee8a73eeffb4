"""Static volume binding: the one part of kube-controller-manager's PV controller we emulate.

A PersistentVolume pre-bound to a claim (``spec.claimRef``) and that claim naming it
(``spec.volumeName``) become ``Bound`` together, as on a real cluster within a second; the PV
gets the claim's uid in its ``claimRef``. A claim whose volume is gone after binding is
``Lost``; a PV whose bound claim is gone is ``Released`` (its reclaim policy is not run); an
unclaimed PV is ``Available``. No dynamic provisioning: a claim without ``volumeName`` stays
``Pending``. The store calls :func:`volume_updates` after every write of a PV or PVC.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

JSONObject = dict[str, Any]
ObjectKey = tuple[str, str]
PV_GROUP_RESOURCE = ("", "persistentvolumes")
PVC_GROUP_RESOURCE = ("", "persistentvolumeclaims")


def _matches(claim_ref: Mapping[str, Any], pvc: Mapping[str, Any] | None) -> bool:
    if pvc is None:
        return False
    meta = pvc.get("metadata") or {}
    if (claim_ref.get("namespace"), claim_ref.get("name")) != (meta.get("namespace"), meta["name"]):
        return False
    return not claim_ref.get("uid") or claim_ref.get("uid") == meta.get("uid")


def volume_updates(
    volumes: Mapping[ObjectKey, JSONObject], claims: Mapping[ObjectKey, JSONObject]
) -> list[tuple[tuple[str, str], ObjectKey, JSONObject]]:
    """(group_resource, key, new object) for every PV and PVC whose binding state changed."""
    out: list[tuple[tuple[str, str], ObjectKey, JSONObject]] = []
    for key, pv in volumes.items():
        name = pv["metadata"]["name"]
        spec = pv.get("spec") or {}
        claim_ref = spec.get("claimRef") or {}
        pvc = claims.get((str(claim_ref.get("namespace") or ""), str(claim_ref.get("name") or "")))
        new = copy.deepcopy(pv)
        if not claim_ref:
            phase = "Available"
        elif _matches(claim_ref, pvc) and (pvc or {}).get("spec", {}).get("volumeName") == name:
            phase = "Bound"
            assert pvc is not None
            new["spec"]["claimRef"]["uid"] = pvc["metadata"].get("uid")
        elif claim_ref.get("uid") and not _matches(claim_ref, pvc):
            phase = "Released"
        else:
            phase = "Available"  # pre-bound, waiting for its claim
        new.setdefault("status", {})["phase"] = phase
        if new != pv:
            out.append((PV_GROUP_RESOURCE, key, new))
    for key, pvc in claims.items():
        spec = pvc.get("spec") or {}
        volume_name = spec.get("volumeName")
        claimed = volumes.get(("", str(volume_name))) if volume_name else None
        status: JSONObject = dict(pvc.get("status") or {})
        if claimed is not None and _matches((claimed.get("spec") or {}).get("claimRef") or {}, pvc):
            status["phase"] = "Bound"
            status["accessModes"] = list((claimed.get("spec") or {}).get("accessModes") or [])
            status["capacity"] = dict((claimed.get("spec") or {}).get("capacity") or {})
        elif volume_name and status.get("phase") in ("Bound", "Lost"):
            status = {"phase": "Lost"}
        else:
            status = {"phase": "Pending"}
        if status != (pvc.get("status") or {}):
            out.append((PVC_GROUP_RESOURCE, key, {**copy.deepcopy(pvc), "status": status}))
    return out
