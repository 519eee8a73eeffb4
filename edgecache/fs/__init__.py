"""The fsspec layer: ``edgecache::<url>`` and ``fsspec.filesystem("edgecache", ...)``.

Registered as the fsspec protocol ``edgecache`` through the ``fsspec.specs`` entry point.
"""

from __future__ import annotations

from edgecache.fs._file import EdgeCacheFile
from edgecache.fs._filesystem import EdgeCacheFileSystem
from edgecache.fs.prefetch import PrefetchProgress, PrefetchReport, prefetch, run_prefetch

__all__ = [
    "EdgeCacheFile",
    "EdgeCacheFileSystem",
    "PrefetchProgress",
    "PrefetchReport",
    "prefetch",
    "run_prefetch",
]
