"""The edge hub: a local Kubernetes API proxy that keeps an edge node working offline.

Flow of a request (one module each)::

    _proxy        aiohttp app every request enters
      _requestinfo  what is asked (verb, group/version/resource, namespace, name, selector)
      online  -> _upstream   forward (failover, TLS, token) -> _filters -> client
                 _recording  record GET/LIST/WATCH/discovery answers   -> _store (sqlite WAL)
      offline -> _offline    answer GET/LIST/WATCH from _store, 503 for writes, 401 for strangers
    _health       probe + request-failure evidence, hysteresis; a switch ends _watches
    _server       wiring, /healthz /readyz /metrics;  command: ``edgecache hub``
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
