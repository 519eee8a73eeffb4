"""Request classification: the first step for every request the hub receives.

Turns method, path and query into what the rest of the hub reasons about (verb, group, version,
resource, namespace, name, selectors), following the kube-apiserver's own RequestInfo rules, and
names the calling component from its User-Agent. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "READ_VERBS",
    "WRITE_VERBS",
    "RequestInfo",
    "canonical_selector",
    "component_of",
    "parse_request",
]

READ_VERBS = frozenset({"get", "list", "watch"})
WRITE_VERBS = frozenset({"create", "update", "patch", "delete", "deletecollection"})

# Sub-paths of a namespace that are the namespace's own subresources, not resources inside it.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_DISCOVERY_PREFIXES = ("/openapi/", "/version")


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What one request asks for, in Kubernetes terms."""

    #: get, list, watch, create, update, patch, delete, deletecollection; ``discovery`` for
    #: /api, /apis, /version and OpenAPI; ``nonresource`` for anything else (/healthz, /logs).
    verb: str
    group: str = ""
    version: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    label_selector: str = ""
    field_selector: str = ""

    @property
    def is_resource(self) -> bool:
        return self.verb not in ("discovery", "nonresource")

    @property
    def gvr(self) -> str:
        """``group/version/resource``; the core group is empty, so pods are ``/v1/pods``."""
        return f"{self.group}/{self.version}/{self.resource}"

    @property
    def selector(self) -> str:
        """The canonical list selector (label and field), the store's list key."""
        return canonical_selector(self.label_selector, self.field_selector)

    @property
    def read_scope(self) -> tuple[str, str, str, str]:
        """What a successful read shows, as (gvr, namespace, name, selector): one named object
        for a GET (name set, no selector), the objects a selector picks in a namespace (or
        cluster-wide, namespace "") for a LIST or WATCH (no name). Offline grants are kept and
        checked in these terms."""
        if self.verb == "get":
            return self.gvr, self.namespace, self.name, ""
        return self.gvr, self.namespace, "", self.selector


def _split_terms(selector: str) -> list[str]:
    """Split a selector on top-level commas (``in (a,b)`` keeps its inner commas)."""
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    terms.append("".join(current).strip())
    return [term for term in terms if term]


def canonical_selector(label_selector: str, field_selector: str) -> str:
    """One spelling per selector, so ``a=1,b=2`` and ``b=2, a=1`` share one store key."""
    labels = ",".join(sorted(_split_terms(label_selector)))
    fields = ",".join(sorted(_split_terms(field_selector)))
    if not labels and not fields:
        return ""
    return f"l={labels};f={fields}"


def component_of(user_agent: str) -> str:
    """The component that sent a request: the User-Agent up to the first ``/``, lower case.

    ``kubectl/v1.32.4 (linux/amd64) kubernetes/abc`` is ``kubectl``; ``kubelet/v1.30.1 ...`` is
    ``kubelet``. An empty User-Agent is ``unknown``.
    """
    head = user_agent.split("/", 1)[0].strip().lower()
    return head or "unknown"


def _is_true(value: str | None) -> bool:
    return value is not None and value.lower() in ("true", "1")


def parse_request(method: str, path: str, query: Mapping[str, str]) -> RequestInfo:
    """Classify one request (``path`` without the query string)."""
    parts = [part for part in path.split("/") if part]
    method = method.upper()
    if not parts:
        return RequestInfo(verb="nonresource")
    if parts[0] == "api":
        if len(parts) <= 2:
            return RequestInfo(verb="discovery")
        group, version, rest = "", parts[1], parts[2:]
    elif parts[0] == "apis":
        if len(parts) <= 3:
            return RequestInfo(verb="discovery")
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        if path.startswith(_DISCOVERY_PREFIXES):
            return RequestInfo(verb="discovery")
        return RequestInfo(verb="nonresource")

    legacy_watch = False
    if rest and rest[0] == "watch":
        legacy_watch = True
        rest = rest[1:]
        if not rest:
            return RequestInfo(verb="nonresource")
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""

    if method in ("GET", "HEAD"):
        if legacy_watch or _is_true(query.get("watch")):
            verb = "watch"
        elif name:
            verb = "get"
        else:
            verb = "list"
    elif method == "POST":
        verb = "create"
    elif method == "PUT":
        verb = "update"
    elif method == "PATCH":
        verb = "patch"
    elif method == "DELETE":
        verb = "delete" if name else "deletecollection"
    else:
        verb = method.lower()
    return RequestInfo(
        verb=verb,
        group=group,
        version=version,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
        label_selector=query.get("labelSelector", ""),
        field_selector=query.get("fieldSelector", ""),
    )
