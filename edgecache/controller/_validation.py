"""Is a Dataset usable? Its spec (through :mod:`edgecache.dataset`), then what only the cluster
knows: its runtime, its Secrets, backends for its protocols, nodes for its affinity.

Each rule lives once: field syntax and Fluid compatibility in :mod:`edgecache.dataset` (the CLI
uses the same), protocols in the backend registry; here only the rules that need the cluster or
that the controller adds (a Dataset it places must name a pool; a runtime must have a tier).
A failed check is a :class:`Problem` whose message names the object and the field path, ready
for a ``Ready=False`` condition; nothing here raises anything else for a bad object.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from edgecache.backends import check_protocol
from edgecache.dataset import Dataset, EdgeCacheRuntime, SpecError, parse_resource
from edgecache.errors import BackendNotInstalledError, ConfigError, label, quoted
from edgecache.k8s.nodes import matching_nodes, pool_summary
from edgecache.k8s.objects import NODEPOOL_LABEL

__all__ = ["Checked", "Problem", "SecretLookup", "check_dataset", "check_runtime"]

JSONObject = dict[str, Any]
_MAX_WANTED_CHARS = 400
SecretLookup = Callable[[str, str], Awaitable[Mapping[str, Any] | None]]
"""``lookup(namespace, name)`` -> the Secret object, or None when it does not exist."""


class Problem(Exception):
    """Why a Dataset cannot be served: ``reason`` (CamelCase) and a message naming the field."""

    def __init__(self, reason: str, message: str, *, phase: str = "Failed") -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.phase = phase


@dataclass(frozen=True)
class Checked:
    """A Dataset that passed every check, its runtime, and the nodes of its pool."""

    dataset: Dataset
    runtime: EdgeCacheRuntime
    pool: tuple[str, ...]


def _where(obj: Mapping[str, Any]) -> str:
    return f"{obj.get('kind', 'object')} {(obj.get('metadata') or {}).get('name', '?')}"


def check_runtime(obj: Mapping[str, Any]) -> EdgeCacheRuntime:
    """Parse an EdgeCacheRuntime; it must give the cache at least one tier."""
    try:
        resource = parse_resource(obj)
    except SpecError as exc:
        raise Problem("InvalidRuntime", str(exc)) from exc
    assert isinstance(resource, EdgeCacheRuntime)
    if not resource.levels:
        raise Problem(
            "InvalidRuntime",
            f"{_where(obj)}: spec.tieredstore.levels: required; give at least one cache tier, "
            "e.g. {mediumtype: SSD, path: /var/lib/edgecache/cache, quota: 10Gi}",
        )
    return resource


async def _check_secrets(obj: Mapping[str, Any], dataset: Dataset, lookup: SecretLookup) -> None:
    where = _where(obj)
    for i, mount in enumerate(dataset.mounts):
        for j, (option, ref) in enumerate(mount.encrypt_options):
            field = f"spec.mounts[{i}].encryptOptions[{j}].valueFrom.secretKeyRef"
            secret = await lookup(dataset.namespace, ref.name)
            if secret is None:
                raise Problem(
                    "SecretNotFound",
                    f"{where}: {field}.name: Secret {dataset.namespace}/{label(ref.name)} (for "
                    f"{label(option)}) does not exist",
                )
            keys = {**(secret.get("data") or {}), **(secret.get("stringData") or {})}
            if ref.key not in keys:
                have = ", ".join(label(k) for k in sorted(keys)[:20]) or "none"
                raise Problem(
                    "SecretKeyNotFound",
                    f"{where}: {field}.key: Secret {dataset.namespace}/{label(ref.name)} has no "
                    f"key {quoted(ref.key)} (for {label(option)}); its keys: {have}",
                )


def _check_placement(
    obj: Mapping[str, Any], dataset: Dataset, nodes: Sequence[Mapping[str, Any]]
) -> tuple[str, ...]:
    where = _where(obj)
    field = "spec.nodeAffinity.required.nodeSelectorTerms"
    if not dataset.node_selector_terms:
        raise Problem(
            "NoAffinity",
            f"{where}: {field}: required; pin the Dataset to a nodepool, e.g. matchExpressions "
            f"[{{key: {NODEPOOL_LABEL}, operator: In, values: [my-pool]}}]",
        )
    for i, term in enumerate(dataset.node_selector_terms):
        if not term:
            raise Problem(
                "InvalidAffinity",
                f"{where}: {field}[{i}]: no matchExpressions (an empty term matches no node)",
            )
    pool = matching_nodes(dataset.node_selector_terms, nodes)
    if not pool:
        wanted = " or ".join(
            "; ".join(
                f"{label(r.key)} {r.operator} [{', '.join(label(v) for v in r.values)}]".strip()
                for r in term
            )
            for term in dataset.node_selector_terms
        )
        if len(wanted) > _MAX_WANTED_CHARS:  # thousands of values: the message stays a line
            wanted = wanted[: _MAX_WANTED_CHARS - 3] + "..."
        raise Problem(
            "NoMatchingNodes",
            f"{where}: {field}: no node matches ({wanted}); nodepools with nodes: "
            f"{pool_summary(nodes)}",
        )
    return tuple(pool)


async def check_dataset(
    obj: Mapping[str, Any],
    *,
    runtime: Mapping[str, Any] | None,
    nodes: Sequence[Mapping[str, Any]],
    lookup_secret: SecretLookup,
) -> Checked:
    """Every check, in the order a user fixes things; the first failure is raised."""
    try:
        resource = parse_resource(obj)
    except SpecError as exc:
        raise Problem("InvalidSpec", str(exc)) from exc
    assert isinstance(resource, Dataset)
    for i, mount in enumerate(resource.mounts):
        try:
            check_protocol(mount.protocol)
        except (BackendNotInstalledError, ConfigError) as exc:
            raise Problem(
                "UnknownProtocol", f"{_where(obj)}: spec.mounts[{i}].mountPoint: {exc}"
            ) from exc
    pool = _check_placement(obj, resource, nodes)
    if runtime is None:
        raise Problem(
            "RuntimeNotFound",
            f"{_where(obj)}: no EdgeCacheRuntime {resource.name} in namespace "
            f"{resource.namespace} (a Dataset is cached by the runtime of the same name)",
            phase="NotBound",
        )
    parsed_runtime = check_runtime(runtime)
    await _check_secrets(obj, resource, lookup_secret)
    return Checked(resource, parsed_runtime, pool)
