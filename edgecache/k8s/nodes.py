"""Which nodes a Dataset's ``nodeAffinity`` selects: the pool whose agents cache it.

Kubernetes node-selector semantics: the terms are ORed, the expressions of a term ANDed; an
empty term matches no node; ``Gt``/``Lt`` compare the label as an integer. The controller uses
this to resolve the pool's nodes (whose CacheReports count) and to tell an affinity that no
node satisfies; the node agent to tell whether a Dataset is placed on its own node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from edgecache.k8s.objects import NODEPOOL_LABEL

if TYPE_CHECKING:  # the Dataset model sits above this package; only its type is needed
    from edgecache.dataset import NodeSelectorRequirement

__all__ = ["matching_nodes", "pool_summary", "term_matches"]

JSONObject = dict[str, Any]


def _requirement_matches(req: NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    present = req.key in labels
    value = labels.get(req.key, "")
    if req.operator == "In":
        return present and value in req.values
    if req.operator == "NotIn":
        return not present or value not in req.values
    if req.operator == "Exists":
        return present
    if req.operator == "DoesNotExist":
        return not present
    if req.operator in ("Gt", "Lt") and present:
        try:
            left, right = int(value), int(req.values[0])
        except (ValueError, IndexError):
            return False
        return left > right if req.operator == "Gt" else left < right
    return False


def term_matches(term: Iterable[NodeSelectorRequirement], labels: Mapping[str, str]) -> bool:
    """One node selector term against a node's labels (an empty term matches nothing)."""
    requirements = list(term)
    return bool(requirements) and all(_requirement_matches(r, labels) for r in requirements)


def _labels(node: Mapping[str, Any]) -> Mapping[str, str]:
    labels = (node.get("metadata") or {}).get("labels") or {}
    return labels if isinstance(labels, Mapping) else {}


def matching_nodes(
    terms: Iterable[Iterable[NodeSelectorRequirement]], nodes: Iterable[Mapping[str, Any]]
) -> list[str]:
    """Names of the ``nodes`` the terms select, sorted."""
    term_list = [list(t) for t in terms]
    names = [
        str(node["metadata"]["name"])
        for node in nodes
        if any(term_matches(term, _labels(node)) for term in term_list)
    ]
    return sorted(names)


def pool_summary(nodes: Iterable[Mapping[str, Any]]) -> str:
    """``hangzhou (2), beijing (1)``: the nodepools that have nodes, for messages."""
    counts = Counter(_labels(node).get(NODEPOOL_LABEL, "") for node in nodes)
    named = sorted((pool, n) for pool, n in counts.items() if pool)
    text = ", ".join(f"{pool} ({n})" for pool, n in named)
    unpooled = counts.get("", 0)
    if unpooled:
        text = f"{text}, " if text else ""
        text += f"{unpooled} node(s) without {NODEPOOL_LABEL}"
    return text or "no nodes at all"
