"""Hub settings: the first thing built, read by every other hub module.

Settings are nested dataclasses grouped by concern (upstream, health, offline serving, recording,
filters, listening). Every field has a default and says its unit and why the default was chosen.
``edgecache hub`` fills them from flags; tests build them directly with short intervals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
class UpstreamSettings:
    """How the hub reaches the cloud kube-apiserver(s)."""

    #: Base URLs of the upstream API servers, tried in order; the first that answers is used and
    #: the others take over when it stops answering (failover).
    servers: list[str] = field(default_factory=list)
    #: PEM file of the CA that signed the upstream serving certificate (None: system CAs).
    certificate_authority: str | None = None
    #: PEM client certificate and key the hub presents upstream (its own identity).
    client_certificate: str | None = None
    client_key: str | None = None
    #: Bearer token the hub adds for clients that present no credentials of their own.
    token: str | None = None
    #: File holding that token; re-read when it changes (projected service-account tokens rotate).
    token_file: str | None = None
    #: Skip TLS verification of the upstream (only for test clusters; never the default).
    insecure_skip_tls_verify: bool = False
    #: Seconds to wait for a TCP/TLS connection. Short, because a WAN that cannot connect within
    #: a few seconds is down for our purposes and the next server (or the store) should answer.
    connect_timeout_seconds: float = 3.0
    #: Seconds without data before a non-watch request is given up (watches have no limit).
    read_timeout_seconds: float = 60.0
    #: Ask the upstream for gzip: halves WAN bytes for large lists; decoded in the hub.
    gzip: bool = True


@dataclass
class HealthSettings:
    """When the hub decides the upstream is down or back (hysteresis against a flapping WAN)."""

    #: Seconds between active probes of the upstream.
    probe_interval_seconds: float = 5.0
    #: Seconds a probe may take before it counts as a failure.
    probe_timeout_seconds: float = 3.0
    #: Consecutive failed observations (probes or proxied requests) before going offline.
    #: Three at 5 s tolerates a short WAN hiccup without dropping every watch.
    failures_to_offline: int = 3
    #: Consecutive successful probes before going back online; two avoids re-syncing every
    #: client against an upstream that answers once and then drops again.
    successes_to_online: int = 2
    #: Seconds the first probe may hold up serving when the store has data: an upstream that
    #: swallows packets (WAN down, no RST) must not delay offline answers after a restart.
    startup_probe_seconds: float = 0.5
    #: Path probed on the upstream; any answer below 500 (even 401/403) means "reachable".
    probe_path: str = "/readyz"


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
