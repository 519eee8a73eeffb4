"""The PersistentVolume and PersistentVolumeClaim a Dataset gets (pure: objects in, objects out).

One PV per placement (Dataset uid + affinity), pre-bound to the PVC of the Dataset's name in its
namespace, which is what pods mount. The PV's ``nodeAffinity`` is the Dataset's, so the
scheduler puts pods using the claim on the pool's nodes, where the agent serves the view through
the CSI driver. Both are read-only (``ReadOnlyMany``): the view is plain read-only files; writes
go to the object store through ``edgecache::`` URLs.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from edgecache.k8s.objects import (
    CSI_DRIVER,
    LABEL_DATASET,
    LABEL_DATASET_NAMESPACE,
    persistent_volume_name,
    placement_id,
    volume_handle,
)

__all__ = [
    "ANNOTATION_PLACEMENT",
    "STORAGE_CLASS",
    "VOLUME_CAPACITY",
    "Placement",
    "desired_claim",
    "desired_volume",
]

JSONObject = dict[str, Any]

STORAGE_CLASS = "edgecache"
"""Set on both PV and PVC, so a cluster's default StorageClass never captures the claim."""
VOLUME_CAPACITY = "100Pi"
"""Nominal: the view holds what the dataset holds; a claim asks no more than this (as Fluid)."""
ANNOTATION_PLACEMENT = "data.edgecache.io/placement"
ACCESS_MODES = ["ReadOnlyMany"]


class Placement:
    """Where one Dataset is placed now: its PV's name and handle, derived from uid + affinity."""

    def __init__(self, dataset: Mapping[str, Any]) -> None:
        meta = dataset["metadata"]
        self.namespace = str(meta.get("namespace") or "default")
        self.name = str(meta["name"])
        self.uid = str(meta.get("uid") or "")
        self.terms: list[JSONObject] = copy.deepcopy(
            ((dataset.get("spec") or {}).get("nodeAffinity") or {})
            .get("required", {})
            .get("nodeSelectorTerms")
            or []
        )
        self.id = placement_id(self.uid, self.terms)
        self.volume_name = persistent_volume_name(self.namespace, self.name, self.id)
        self.handle = volume_handle(self.namespace, self.name, self.id)


def desired_volume(placement: Placement) -> JSONObject:
    """The PV of ``placement``: CSI, read-only, pinned to the affinity, pre-bound to the PVC."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": placement.volume_name,
            "labels": {
                LABEL_DATASET: placement.name,
                LABEL_DATASET_NAMESPACE: placement.namespace,
                "app.kubernetes.io/managed-by": "edgecache-controller",
            },
            "annotations": {ANNOTATION_PLACEMENT: placement.id},
        },
        "spec": {
            "capacity": {"storage": VOLUME_CAPACITY},
            "accessModes": list(ACCESS_MODES),
            "volumeMode": "Filesystem",
            # Retain: deleting the PV never touches data (there is none in it: it is a view).
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": STORAGE_CLASS,
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": placement.namespace,
                "name": placement.name,
            },
            "csi": {
                "driver": CSI_DRIVER,
                "volumeHandle": placement.handle,
                "readOnly": True,
                "volumeAttributes": {
                    "datasetNamespace": placement.namespace,
                    "datasetName": placement.name,
                    "datasetUID": placement.uid,
                },
            },
            "nodeAffinity": {"required": {"nodeSelectorTerms": copy.deepcopy(placement.terms)}},
        },
    }


def desired_claim(placement: Placement) -> JSONObject:
    """The PVC pods mount: the Dataset's name, bound to the placement's PV, owned by the
    Dataset (so the garbage collector removes it too if the finalizer is ever bypassed)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": placement.name,
            "namespace": placement.namespace,
            "labels": {
                LABEL_DATASET: placement.name,
                "app.kubernetes.io/managed-by": "edgecache-controller",
            },
            "annotations": {ANNOTATION_PLACEMENT: placement.id},
            "ownerReferences": [
                {
                    "apiVersion": "data.edgecache.io/v1alpha1",
                    "kind": "Dataset",
                    "name": placement.name,
                    "uid": placement.uid,
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        },
        "spec": {
            "accessModes": list(ACCESS_MODES),
            "volumeMode": "Filesystem",
            "storageClassName": STORAGE_CLASS,
            "volumeName": placement.volume_name,
            "resources": {"requests": {"storage": VOLUME_CAPACITY}},
        },
    }
