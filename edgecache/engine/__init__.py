"""The read engine: the node-level read path, one per process per cache directory and backend.

Place in the data path::

    EdgeCacheFileSystem / EdgeCacheFile / prefetch / CLI / (agent, pool)
      --> engine_for(settings, protocol, options) --> ReadEngine
            plan(path) -> ReadPlan            metadata: MetadataCache -> backend
            read(plan, start, end)            blocks: TieredCache -> block sources -> backend
            read_cached(plan, start, end)     the cache tiers only, no event loop
            missing_blocks / fetch / fetch_ahead / materialise / pin / write / forget

Public API (everything else in this package is private)::

    engine_for, open_engines, backend_options      the registry (one engine per key)
    when_engine_opens                              a hook on every engine (the pool's peers)
    ReadEngine                                     plans, reads, writes through
    ReadPlan                                       one object version cut into blocks
    BlockSource, SourceSkipped, BackendSource      the seam where pool peers plug in
    Priority, fetch_priority, as_background,       who a fetch is for (WAN QoS, carried by
      current_priority, PRIORITY_HEADER              context), the peer request's header,
    LinkScheduler                                  and the link's scheduler
    CachedInfo, Store                              what the metadata answers; a directory's caches
    MetadataCache, BackendHealth                   a directory's metadata; an engine's link state
"""

from __future__ import annotations

from edgecache.engine._engine import ReadEngine
from edgecache.engine._health import BackendHealth
from edgecache.engine._metadata import CachedInfo, MetadataCache
from edgecache.engine._plan import ReadPlan
from edgecache.engine._qos import (
    PRIORITY_HEADER,
    LinkScheduler,
    Priority,
    as_background,
    current_priority,
    fetch_priority,
)
from edgecache.engine._registry import backend_options, engine_for, open_engines, when_engine_opens
from edgecache.engine._sources import BackendSource, BlockSource, SourceSkipped
from edgecache.engine._store import Store

__all__ = [
    "PRIORITY_HEADER",
    "BackendHealth",
    "BackendSource",
    "BlockSource",
    "CachedInfo",
    "LinkScheduler",
    "MetadataCache",
    "Priority",
    "ReadEngine",
    "ReadPlan",
    "SourceSkipped",
    "Store",
    "as_background",
    "backend_options",
    "current_priority",
    "engine_for",
    "fetch_priority",
    "open_engines",
    "when_engine_opens",
]
