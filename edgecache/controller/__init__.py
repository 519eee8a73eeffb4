"""The Dataset controller (``edgecache controller``): Datasets, EdgeCacheRuntimes and DataLoads
in, PVs and PVCs pinned to nodepools and exact status out. See docs/controller.md.

Stages (one module each): ``_informer`` (list + watch into caches) -> ``_queue`` (dedup,
backoff) -> ``_datasets`` / ``_dataloads`` (reconcile) over ``_validation``, ``_volumes``,
``_status``, ``_listing`` (pure or narrow helpers); ``_leader`` (Lease), ``_kube`` (the official
client's transport), ``_controller`` (wiring, health), ``command`` (the CLI).
"""

from __future__ import annotations

from edgecache.controller._controller import Controller, ControllerSettings
from edgecache.controller._leader import LeaderSettings

__all__ = ["Controller", "ControllerSettings", "LeaderSettings"]
