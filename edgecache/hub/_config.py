"""Hub settings: the first thing built, read by every other hub module.

Settings are nested dataclasses grouped by concern (upstream, health, offline serving, recording,
filters, listening); the upstream connection and health settings are the shared ones of
:mod:`edgecache.k8s`. Every field has a default and says its unit and why the default was chosen.
``edgecache hub`` fills them from flags; tests build them directly with short intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgecache.k8s.connection import ConnectionSettings
from edgecache.k8s.health import HealthSettings

__all__ = [
    "DEFAULT_COMPONENTS",
    "FilterSettings",
    "HealthSettings",
    "HubSettings",
    "ListenSettings",
    "OfflineSettings",
    "RecordingSettings",
    "UpstreamSettings",
]

#: Components recorded when ``--components`` is not given: what an edge node needs to keep its
#: workloads running (kubelet, kube-proxy, DNS, the CNI), edgecache's own agent and controller,
#: and the operator's kubectl so that an operator can still look around while the WAN is down.
DEFAULT_COMPONENTS: frozenset[str] = frozenset(
    {
        "kubelet",
        "kube-proxy",
        "coredns",
        "flannel",
        "flanneld",
        "edgecache-agent",
        "edgecache-controller",
        "kubectl",
    }
)


@dataclass
class UpstreamSettings(ConnectionSettings):
    """How the hub reaches the cloud kube-apiserver(s): the connection every edgecache component
    uses (servers, CA, identity, token or token file, timeouts), plus what only the proxy needs.

    The token (or token file) is added only for clients that present no credentials of their
    own; the client certificate is the hub's own identity.
    """

    #: Ask the upstream for gzip: halves WAN bytes for large lists; decoded in the hub.
    gzip: bool = True


@dataclass
class OfflineSettings:
    """How requests are answered from the store while the upstream is unreachable."""

    #: Seconds between BOOKMARK events on offline watches (clients that asked for bookmarks).
    #: Shorter than client-go's 5-10 minute watch timeouts, so the stream visibly stays alive.
    bookmark_interval_seconds: float = 10.0


@dataclass
class RecordingSettings:
    """What the hub records while online."""

    #: Components (User-Agent prefix, lower case) whose GET/LIST/WATCH results are recorded;
    #: None records every component (``--components '*'``).
    components: frozenset[str] | None = DEFAULT_COMPONENTS
    #: Components allowed to have Secrets recorded on disk (kubelet mounts them into pods);
    #: for everyone else Secrets are proxied but never written to the store.
    secret_components: frozenset[str] = frozenset({"kubelet"})
    #: Responses larger than this many bytes are proxied but not recorded (memory bound).
    max_response_bytes: int = 256 * 1024 * 1024
    #: Bytes of answers waiting for the store's writer thread beyond which further (non-watch)
    #: answers are not recorded: a slow disk must not turn into unbounded memory use.
    max_queued_bytes: int = 512 * 1024 * 1024
    #: Seconds between flushes of recorded watch events to the store (batches writes).
    watch_flush_seconds: float = 0.05
    #: Seconds after which a recorded list or raw answer that nothing refreshed (no new list,
    #: no watch event) is forgotten, so one-off queries do not pile up. Expiry runs only while
    #: online: offline, old answers are all there is. A week outlives any WAN outage we plan for.
    retention_seconds: float = 7 * 24 * 3600


@dataclass
class FilterSettings:
    """Response filters applied to what clients receive (and what is recorded)."""

    #: The node's nodepool; when set, EndpointSlices keep only endpoints in this pool.
    nodepool: str | None = None
    #: Node label that names a node's pool (OpenYurt's convention).
    nodepool_label: str = "apps.openyurt.io/nodepool"
    #: Seconds between refreshes of the pool's node list from the upstream.
    node_refresh_seconds: float = 60.0


@dataclass
class ListenSettings:
    """Where the hub listens. Loopback by default: the hub answers with node credentials."""

    #: host:port of the API proxy (port 0 picks a free port; tests use that).
    address: str = "127.0.0.1:10261"
    #: host:port of /healthz, /readyz and /metrics.
    health_address: str = "127.0.0.1:10267"
    #: PEM certificate and key to serve the API proxy over HTTPS (None: plain HTTP, loopback).
    #: Over HTTPS, clients can authenticate with client certificates and kubectl sends tokens.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    #: CA that signs the client certificates the hub accepts (the cluster's client CA).
    client_ca_file: str | None = None


@dataclass
class HubSettings:
    """Everything ``edgecache hub`` is configured with."""

    #: Directory holding the store (``hub.sqlite`` and its WAL).
    cache_dir: Path = Path(".")
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    offline: OfflineSettings = field(default_factory=OfflineSettings)
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    filters: FilterSettings = field(default_factory=FilterSettings)
    listen: ListenSettings = field(default_factory=ListenSettings)
