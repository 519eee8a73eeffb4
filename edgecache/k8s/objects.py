"""edgecache's own Kubernetes objects: group, kinds, labels, the CSI driver, the agents' reports.

The contract between the controller (cloud), the node agent (every pool node) and the manifests,
kept in one place so the three cannot drift apart (no I/O here)::

    Dataset + EdgeCacheRuntime  --controller-->  PersistentVolume  (CSI driver CSI_DRIVER,
                                                  volumeHandle volume_handle(...), pinned to
                                                  the Dataset's nodeAffinity) + PVC of the
                                                  Dataset's name, bound to it
    agent on each pool node     --writes------>  CacheReport <dataset>.<node> (its own object:
                                                  no two writers ever touch one status)
    controller                  --aggregates-->  Dataset.status.cacheStates, DataLoad.status

docs/controller.md describes every field; the agent (issue #12) implements the report side.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgecache.errors import quoted

__all__ = [
    "API_VERSION",
    "CACHE_REPORT",
    "CONTROLLER_USER_AGENT",
    "CSI_DRIVER",
    "DATALOAD",
    "DATASET",
    "FINALIZER",
    "GROUP",
    "LABEL_DATASET",
    "LABEL_DATASET_NAMESPACE",
    "NODEPOOL_LABEL",
    "RUNTIME",
    "VERSION",
    "Kind",
    "is_dns_label",
    "is_dns_subdomain",
    "parse_volume_handle",
    "persistent_volume_name",
    "placement_id",
    "report_name",
    "volume_handle",
]

GROUP = "data.edgecache.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


@dataclass(frozen=True)
class Kind:
    """One resource kind: what REST paths and ``kubectl`` need to reach it."""

    kind: str
    plural: str
    group: str = GROUP
    version: str = VERSION
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


DATASET = Kind("Dataset", "datasets")
RUNTIME = Kind("EdgeCacheRuntime", "edgecacheruntimes")
DATALOAD = Kind("DataLoad", "dataloads")
CACHE_REPORT = Kind("CacheReport", "cachereports")
"""Written by the node agent only: one per (Dataset, node), in the Dataset's namespace."""

NODEPOOL_LABEL = "apps.openyurt.io/nodepool"
"""OpenYurt's nodepool label on Nodes; Datasets pin themselves to pools through it."""

FINALIZER = "data.edgecache.io/volumes"
"""On every Dataset the controller handles: removed once its PV, PVC and reports are gone."""

LABEL_DATASET = "data.edgecache.io/dataset"
"""On the PV, the PVC and the CacheReports of a Dataset: the Dataset's name."""
LABEL_DATASET_NAMESPACE = "data.edgecache.io/dataset-namespace"
"""On the (cluster-scoped) PV: the Dataset's namespace."""

CSI_DRIVER = "csi.edgecache.io"
"""The CSI driver the node agent serves; the controller's PVs name it."""

CONTROLLER_USER_AGENT = "edgecache-controller/0.1"
"""The hub records by User-Agent prefix: ``edgecache-controller`` is among its defaults."""

_MAX_NAME = 253  # DNS-1123 subdomain
_MAX_LABEL = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_label(name: str) -> bool:
    """Kubernetes' rule for a namespace: a DNS-1123 label (a-z, 0-9, '-'; at most 63)."""
    return len(name) <= _MAX_LABEL and _DNS_LABEL.fullmatch(name) is not None


def is_dns_subdomain(name: str) -> bool:
    """Kubernetes' rule for an object name: a DNS-1123 subdomain (labels joined by '.').

    Neither rule lets ``.``, ``..``, ``/`` or an empty part through, so a valid name is always
    safe as one path component.
    """
    return len(name) <= _MAX_NAME and _DNS_SUBDOMAIN.fullmatch(name) is not None


def _digest(*parts: str, length: int = 8) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:length]


def placement_id(dataset_uid: str, node_selector_terms: Sequence[Mapping[str, Any]]) -> str:
    """8 hex digits naming one placement of one Dataset (its uid and its node affinity).

    A change of affinity gives a new id, hence a new PV (PV affinity is immutable): the old PV
    stays for the pods still using it. A Dataset deleted and created again (new uid) never
    inherits a PV that is still terminating.
    """
    canonical = json.dumps(list(node_selector_terms), sort_keys=True, separators=(",", ":"))
    return _digest(dataset_uid, canonical)


def _bounded(name: str, *parts: str) -> str:
    """``name`` if it is a valid length, else its head plus a digest of the whole."""
    if len(name) <= _MAX_NAME:
        return name
    return f"{name[: _MAX_NAME - 9].rstrip('.-')}-{_digest(name, *parts)}"


def persistent_volume_name(namespace: str, name: str, placement: str) -> str:
    """The PV of one placement of Dataset ``namespace/name`` (PVs are cluster-scoped)."""
    return _bounded(f"edgecache-{namespace}-{name}-{placement}")


def volume_handle(namespace: str, name: str, placement: str) -> str:
    """The CSI ``volumeHandle``: ``<namespace>/<dataset>/<placement>``.

    Unique per PV (kubelet keys volumes by driver and handle), and it names the dataset, so the
    agent finds the view ``<root>/datasets/<namespace>/<dataset>/`` from it alone.
    """
    return f"{namespace}/{name}/{placement}"


def parse_volume_handle(handle: str) -> tuple[str, str]:
    """``(namespace, dataset name)`` of a :func:`volume_handle`; ``ValueError`` if malformed.

    Strict, because the agent turns the result into the path of a view: the namespace must be
    a DNS-1123 label and the name and placement DNS-1123 names, as Kubernetes itself requires,
    so no handle can name ``..``, an absolute path or anything outside ``<root>/datasets/``.
    """
    parts = handle.split("/")
    if (
        len(parts) != 3
        or not is_dns_label(parts[0])
        or not is_dns_subdomain(parts[1])
        or not is_dns_label(parts[2])
    ):
        raise ValueError(
            f"{quoted(handle)} is not an edgecache volume handle "
            "(<namespace>/<dataset>/<placement>, each a Kubernetes name)"
        )
    return parts[0], parts[1]


def report_name(dataset: str, node: str) -> str:
    """The CacheReport of ``node`` for Dataset ``dataset``: ``<dataset>.<node>``."""
    return _bounded(f"{dataset}.{node}", dataset, node)
