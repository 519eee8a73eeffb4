"""The edge hub: a local Kubernetes API proxy that keeps an edge node working offline.

Flow of a request (one module each)::

    _proxy        aiohttp app every request enters (HTTP, or HTTPS with client certificates)
      _requestinfo  what is asked (verb, group/version/resource, namespace, name, selector)
      online  -> _upstream   forward (failover; connection, TLS, token from edgecache.k8s)
                 _filters    response filters (nodepool topology; pool from _nodepool)
                 _recording  record GET/LIST/WATCH/discovery answers   -> _store (sqlite WAL)
      offline -> _offline    answer from _store (edgecache.k8s.selectors), Status: _status
    k8s.health    probes + request-failure evidence, hysteresis; a switch ends _watches
    _config       settings;  _server: wiring, /healthz /readyz /metrics;  command: ``edgecache hub``
"""

from __future__ import annotations

from edgecache.hub._config import (
    DEFAULT_COMPONENTS,
    FilterSettings,
    HealthSettings,
    HubSettings,
    ListenSettings,
    OfflineSettings,
    RecordingSettings,
    UpstreamSettings,
)
from edgecache.hub._server import HubServer
from edgecache.hub._store import HubStore
from edgecache.hub._upstream import UpstreamUnavailableError

__all__ = [
    "DEFAULT_COMPONENTS",
    "FilterSettings",
    "HealthSettings",
    "HubServer",
    "HubSettings",
    "HubStore",
    "ListenSettings",
    "OfflineSettings",
    "RecordingSettings",
    "UpstreamSettings",
    "UpstreamUnavailableError",
]
