"""Kubernetes helpers shared by the edge hub, the node agent, the controller and the test API
server: how to connect to an API server, and how to filter objects like one.

Connecting (one implementation for every component; flags ``--server URL | --kubeconfig FILE |
in-cluster``)::

    options       the click flags            -> ConnectionFlags.resolve()
    resolve       flags, then kubeconfig, then in-cluster   -> ConnectionSettings (connection)
    kubeconfig    a kubeconfig's current context;  incluster: the pod's service account
    credentials   TokenSource: the bearer token now (token files rotate)
    tls           client_ssl_context: CA, verification, client certificate
    official      the ``kubernetes`` package's Configuration / ApiClient from the same settings
    health        HealthMonitor: probes + request failures, hysteresis, online/offline switches

Filtering: :mod:`.selectors` (label and field selectors, as the API server parses them).
Our own objects: :mod:`.objects` (group, kinds, labels, CSI driver, report names: the contract
between controller, agent and manifests).
"""

from __future__ import annotations

from edgecache.k8s.connection import ConnectionSettings
from edgecache.k8s.credentials import TokenSource
from edgecache.k8s.health import HealthMonitor, HealthSettings
from edgecache.k8s.incluster import SERVICE_ACCOUNT_DIR, apply_in_cluster, in_cluster, pod_namespace
from edgecache.k8s.kubeconfig import apply_kubeconfig
from edgecache.k8s.official import official_api_client, official_configuration
from edgecache.k8s.options import ConnectionFlags, connection_options
from edgecache.k8s.resolve import resolve_connection
from edgecache.k8s.tls import client_ssl_context

__all__ = [
    "SERVICE_ACCOUNT_DIR",
    "ConnectionFlags",
    "ConnectionSettings",
    "HealthMonitor",
    "HealthSettings",
    "TokenSource",
    "apply_in_cluster",
    "apply_kubeconfig",
    "client_ssl_context",
    "connection_options",
    "in_cluster",
    "official_api_client",
    "official_configuration",
    "pod_namespace",
    "resolve_connection",
]
