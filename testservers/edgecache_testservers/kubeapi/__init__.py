"""An in-process Kubernetes API server for tests and the demo (``edgecache_testservers.kubeapi``).

No kube-apiserver can run on our build machines, yet the edge hub, the controller and the agent
must be tested against real API semantics. This package serves the Kubernetes REST API over real
HTTP on 127.0.0.1 with an in-memory store: monotonic resourceVersions, list and watch with replay
and 410 Gone, bookmarks and WatchList initial events, label and field selectors, pagination,
CRDs with their schemas, owner-reference garbage collection, ``Status`` errors, discovery (legacy
and aggregated), OpenAPI v3 and server-side tables for kubectl, gzip, HTTPS and client certificates.
Tests control it: bearer-token auth, injected faults, a request log, stop and start on one port.

Layers, bottom up: ``_status`` (errors), ``_resources`` (the resource table) -> selectors
(``edgecache.k8s.selectors``), ``rbac`` (RBAC-style rules per user),
``_patch``/``_strategic``, ``_admission``, ``_validation``, ``_schema`` (CRD schemas), ``_owners``
(garbage collection), ``_history`` (resourceVersions, events) -> ``_store`` (state, writes) ->
``_watch``, ``_discovery``, ``_openapi``, ``_table``, ``_scale``, ``_protobuf`` -> ``_handlers``
(HTTP routing) -> ``_faults`` (auth, faults, request log), ``_tls`` -> ``_server``.
``fixtures`` holds the pytest fixture and client helpers; ``rbac`` the rules tests give users
(``KubeAPIServer(authorization={"alice": rbac.ADMIN, "bob": rbac.DISCOVERY})``).
"""

from __future__ import annotations

from . import _objects as objects
from ._faults import Fault, RecordedRequest
from ._resources import ResourceType
from ._server import KubeAPIServer
from ._status import APIError

__all__ = ["APIError", "Fault", "KubeAPIServer", "RecordedRequest", "ResourceType", "objects"]
