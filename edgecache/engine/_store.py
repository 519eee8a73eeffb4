"""Store: what one cache directory holds, opened once per process and shared by its engines.

The tiered block cache (MEM + SSD tiers, index) and the metadata cache (infos and listings) of a
directory are one object each per process, whatever backend or read settings a filesystem uses:
two filesystems on one directory with different ``metadata_ttl`` or ``block_size`` see each
other's writes and blocks. Keyed by the directory's real path in :mod:`edgecache.engine._registry`.
The store settings in effect (quotas, watermarks, compression, eviction policy) are those of the
first opener in the process, until :meth:`Store.apply` changes them on the open store (the node
agent follows its runtimes while it runs).
"""

from __future__ import annotations

import os

from edgecache.cache import TieredCache
from edgecache.config import CacheSettings, StoreSettings
from edgecache.engine._metadata import METADATA_NAME, MetadataCache

__all__ = ["Store"]


class Store:
    """The tiered block cache and the metadata cache of one cache directory."""

    def __init__(self, settings: CacheSettings) -> None:
        self.directory = os.path.realpath(settings.store.cache_dir)
        """Real path of the cache directory (the registry's key)."""
        self.settings = settings
        metadata = os.path.join(settings.store.cache_dir, METADATA_NAME)
        self.blocks = TieredCache(settings, databases=[metadata])
        self.metadata = MetadataCache(metadata, ttl_seconds=settings.metadata.ttl_seconds)
        self.closed = False

    def apply(self, store: StoreSettings, *, for_every_process: bool = False) -> None:
        """Use ``store`` from now on (:meth:`~edgecache.cache.TieredCache.apply`): its SSD
        quotas, watermarks and compression, its MEM bound and eviction policy; with
        ``for_every_process`` the SSD quotas are also the directory's limits for every process
        on it."""
        self.blocks.apply(store, for_every_process=for_every_process)
        self.settings = self.blocks.settings

    def flush(self) -> None:
        """Write pending counters and hits to the index."""
        self.blocks.flush()

    def close(self) -> None:
        """Flush and close both caches; engines on this store are closed with it."""
        if self.closed:
            return
        self.closed = True
        self.blocks.close()
        self.metadata.close()

    def __repr__(self) -> str:
        return f"<Store {self.directory}>"
