"""The resource table: which group/version/resources the test API server serves.

Built-in resources are one line each in :data:`BUILTIN_RESOURCES`; custom resources are added and
removed by the store when a ``CustomResourceDefinition`` is written or deleted. Discovery, routing
and the store all read this one registry, so a resource that is registered is served everywhere.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class PrinterColumn:
    """One column of ``kubectl get`` output (a CRD's ``additionalPrinterColumns`` entry)."""

    name: str
    json_path: str
    type: str = "string"


@dataclass(frozen=True)
class ResourceType:
    """One served resource: where it lives in the URL space and how it is named."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    """Whether ``<plural>/status`` is a subresource: main-resource writes then keep ``.status``."""
    printer_columns: tuple[PrinterColumn, ...] = ()
    from_crd: str | None = field(default=None, compare=False)
    """The name of the CRD that registered this resource, ``None`` for built-ins."""
    has_scale: bool = False
    """Whether ``<plural>/scale`` serves an ``autoscaling/v1 Scale`` over ``spec.replicas``."""
    schema: dict[str, Any] | None = field(default=None, compare=False, hash=False, repr=False)
    """A CRD version's ``openAPIV3Schema``: custom resources are defaulted, pruned, validated."""
    selectable_fields: frozenset[str] = field(default=frozenset(), compare=False)
    """A CRD version's ``selectableFields`` as field paths (``spec.color`` for the JSON path
    ``.spec.color``): with metadata.name/namespace, the field selectors it accepts."""

    @property
    def key(self) -> tuple[str, str, str]:
        """``(group, version, plural)``, the routing key."""
        return (self.group, self.version, self.plural)

    @property
    def group_resource(self) -> tuple[str, str]:
        """``(group, plural)``: objects are stored once per group resource, not per version."""
        return (self.group, self.plural)

    @property
    def api_version(self) -> str:
        """``apiVersion`` as written in objects: ``v1`` or ``apps/v1``."""
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


# One line per built-in resource, under its [apiVersion]. scope: ns (namespaced) or cluster; short
# names comma-separated ("-" for none); flags: status / scale subresources, the "all" category.
_BUILTIN_TABLE = """
[v1]
namespaces                 Namespace                 cluster  ns        status
nodes                      Node                      cluster  no        status
pods                       Pod                       ns       po        status,all
services                   Service                   ns       svc       status,all
endpoints                  Endpoints                 ns       ep        -
configmaps                 ConfigMap                 ns       cm        -
secrets                    Secret                    ns       -         -
events                     Event                     ns       ev        -
serviceaccounts            ServiceAccount            ns       sa        -
persistentvolumes          PersistentVolume          cluster  pv        status
persistentvolumeclaims     PersistentVolumeClaim     ns       pvc       status
limitranges                LimitRange                ns       limits    -
resourcequotas             ResourceQuota             ns       quota     status
[discovery.k8s.io/v1]
endpointslices             EndpointSlice             ns       -         -
[apps/v1]
deployments                Deployment                ns       deploy    status,scale,all
daemonsets                 DaemonSet                 ns       ds        status,all
statefulsets               StatefulSet               ns       sts       status,scale,all
replicasets                ReplicaSet                ns       rs        status,scale,all
[batch/v1]
jobs                       Job                       ns       -         status,all
cronjobs                   CronJob                   ns       cj        status,all
[coordination.k8s.io/v1]
leases                     Lease                     ns       -         -
[storage.k8s.io/v1]
storageclasses             StorageClass              cluster  sc        -
csidrivers                 CSIDriver                 cluster  -         -
csinodes                   CSINode                   cluster  -         -
[policy/v1]
poddisruptionbudgets       PodDisruptionBudget       ns       pdb       status
[networking.k8s.io/v1]
networkpolicies            NetworkPolicy             ns       netpol    -
ingresses                  Ingress                   ns       ing       status
[scheduling.k8s.io/v1]
priorityclasses            PriorityClass             cluster  pc        -
[rbac.authorization.k8s.io/v1]
roles                      Role                      ns       -         -
rolebindings               RoleBinding               ns       -         -
clusterroles               ClusterRole               cluster  -         -
clusterrolebindings        ClusterRoleBinding        cluster  -         -
[apiextensions.k8s.io/v1]
customresourcedefinitions  CustomResourceDefinition  cluster  crd,crds  status
"""


def _parse_table(table: str) -> tuple[ResourceType, ...]:
    resources = []
    group = version = ""
    for line in table.strip().splitlines():
        if line.startswith("["):
            group, _, version = line.strip("[]").rpartition("/")
            continue
        plural, kind, scope, short, flags = line.split()
        flag_set = set(flags.split(","))
        resources.append(
            ResourceType(
                group,
                version,
                plural,
                kind,
                namespaced=scope == "ns",
                short_names=() if short == "-" else tuple(short.split(",")),
                categories=("all",) if "all" in flag_set else (),
                has_status="status" in flag_set,
                has_scale="scale" in flag_set,
            )
        )
    return tuple(resources)


BUILTIN_RESOURCES: tuple[ResourceType, ...] = _parse_table(_BUILTIN_TABLE)

CRD_GROUP_RESOURCE = ("apiextensions.k8s.io", "customresourcedefinitions")
NAMESPACE_GROUP_RESOURCE = ("", "namespaces")


def resources_from_crd(crd: dict[str, Any]) -> list[ResourceType]:
    """The resources a CRD serves: one per ``spec.versions[]`` entry with ``served: true``."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    group = str(spec.get("group", ""))
    plural = str(names.get("plural", ""))
    kind = str(names.get("kind", ""))
    namespaced = spec.get("scope", "Namespaced") == "Namespaced"
    name = str((crd.get("metadata") or {}).get("name", ""))
    found: list[ResourceType] = []
    for version in spec.get("versions") or []:
        if not version.get("served", True):
            continue
        columns = tuple(
            PrinterColumn(
                str(c.get("name", "")), str(c.get("jsonPath", "")), str(c.get("type", "string"))
            )
            for c in version.get("additionalPrinterColumns") or []
        )
        found.append(
            ResourceType(
                group,
                str(version.get("name", "")),
                plural,
                kind,
                namespaced,
                tuple(names.get("shortNames") or ()),
                tuple(names.get("categories") or ()),
                "status" in (version.get("subresources") or {}),
                columns,
                name,
                schema=(version.get("schema") or {}).get("openAPIV3Schema"),
                selectable_fields=frozenset(
                    str(f.get("jsonPath", "")).removeprefix(".")
                    for f in version.get("selectableFields") or []
                ),
            )
        )
    return found


class ResourceRegistry:
    """Thread-safe lookup of served resources, in registration order (discovery order)."""

    def __init__(self, resources: Iterable[ResourceType] = BUILTIN_RESOURCES) -> None:
        self._lock = threading.Lock()
        self._by_key: dict[tuple[str, str, str], ResourceType] = {}
        for resource in resources:
            self._by_key[resource.key] = resource

    def lookup(self, group: str, version: str, plural: str) -> ResourceType | None:
        with self._lock:
            return self._by_key.get((group, version, plural))

    def by_kind(self, api_version: str, kind: str) -> ResourceType | None:
        """The resource for an object's ``apiVersion`` and ``kind`` (used when seeding objects)."""
        group, _, version = api_version.rpartition("/")
        with self._lock:
            for resource in self._by_key.values():
                if (resource.group, resource.version, resource.kind) == (group, version, kind):
                    return resource
        return None

    def all(self) -> list[ResourceType]:
        with self._lock:
            return list(self._by_key.values())

    def versions_of(self, group: str, plural: str) -> list[ResourceType]:
        with self._lock:
            return [r for r in self._by_key.values() if r.group_resource == (group, plural)]

    def register_crd(self, crd: dict[str, Any]) -> None:
        """Serve (or re-serve, after an update) the resources of a CRD."""
        name = str((crd.get("metadata") or {}).get("name", ""))
        with self._lock:
            for key in [k for k, r in self._by_key.items() if r.from_crd == name]:
                del self._by_key[key]
            for resource in resources_from_crd(crd):
                self._by_key.setdefault(resource.key, resource)

    def unregister_crd(self, name: str) -> None:
        with self._lock:
            for key in [k for k, r in self._by_key.items() if r.from_crd == name]:
                del self._by_key[key]
