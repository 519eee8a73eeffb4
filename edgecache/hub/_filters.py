"""Response filters: rewrite what clients receive (and what is recorded) for this edge node.

A filter says which requests it applies to and rewrites one object; :class:`FilterChain` applies
the matching filters to whole answers (a single object or every item of a list) and to each event
of a watch stream. Only requests some filter applies to are parsed, so the plain proxy path stays
a byte copy.

The one filter shipped is :class:`NodePoolTopologyFilter` (OpenYurt's service topology): an
EndpointSlice keeps only the endpoints on nodes of this node's nodepool, so kube-proxy and CoreDNS
at the edge route to local backends instead of across the WAN. If no endpoint of a slice is in the
pool, the slice is left whole, so that a service without local backends still works.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from edgecache.hub._requestinfo import RequestInfo

__all__ = ["FilterChain", "NodePoolTopologyFilter", "ResponseFilter"]


class ResponseFilter(Protocol):
    """One response filter."""

    name: str

    def applies(self, info: RequestInfo) -> bool:
        """Whether answers to this request go through the filter."""
        ...

    def filter_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Return the object as the client should see it (may be the same object)."""
        ...


class FilterChain:
    """The filters configured for this hub."""

    def __init__(self, filters: Sequence[ResponseFilter] = ()) -> None:
        self.filters = list(filters)

    def for_request(self, info: RequestInfo) -> list[ResponseFilter]:
        return [f for f in self.filters if f.applies(info)]

    @staticmethod
    def _apply(filters: Sequence[ResponseFilter], obj: dict[str, Any]) -> dict[str, Any]:
        for response_filter in filters:
            obj = response_filter.filter_object(obj)
        return obj

    def filter_body(self, filters: Sequence[ResponseFilter], body: bytes) -> bytes:
        """Filter a GET or LIST answer (JSON); anything unparsable passes unchanged."""
        try:
            obj = json.loads(body)
        except ValueError:
            return body
        if not isinstance(obj, dict):
            return body
        if isinstance(obj.get("items"), list):
            obj["items"] = [
                self._apply(filters, item) if isinstance(item, dict) else item
                for item in obj["items"]
            ]
        else:
            obj = self._apply(filters, obj)
        return json.dumps(obj, separators=(",", ":")).encode()

    def filter_event(self, filters: Sequence[ResponseFilter], line: bytes) -> bytes:
        """Filter one watch event line (without its newline)."""
        try:
            event = json.loads(line)
        except ValueError:
            return line
        if not isinstance(event, dict) or not isinstance(event.get("object"), dict):
            return line
        if event.get("type") in ("ERROR", "BOOKMARK"):
            return line
        event["object"] = self._apply(filters, event["object"])
        return json.dumps(event, separators=(",", ":")).encode()


class NodePoolTopologyFilter:
    """Keep EndpointSlice endpoints whose node is in this node's nodepool."""

    name = "nodepool-topology"

    def __init__(self, pool_nodes: Callable[[], frozenset[str] | None]) -> None:
        #: Returns the node names of the pool, or None while membership is unknown.
        self._pool_nodes = pool_nodes

    def applies(self, info: RequestInfo) -> bool:
        return (
            info.group == "discovery.k8s.io"
            and info.resource == "endpointslices"
            and info.verb in ("get", "list", "watch")
            and not info.subresource
        )

    def filter_object(self, obj: dict[str, Any]) -> dict[str, Any]:
        nodes = self._pool_nodes()
        endpoints = obj.get("endpoints")
        if nodes is None or not isinstance(endpoints, list):
            return obj
        kept = [
            endpoint
            for endpoint in endpoints
            if not isinstance(endpoint, dict)
            or not endpoint.get("nodeName")
            or endpoint.get("nodeName") in nodes
        ]
        if not kept or len(kept) == len(endpoints):
            return obj
        return {**obj, "endpoints": kept}
