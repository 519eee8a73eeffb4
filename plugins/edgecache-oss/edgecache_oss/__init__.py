"""edgecache backend plugin for Aliyun OSS (``oss://``), on ossfs's async filesystem.

Registered in the ``edgecache.backends`` entry-point group, so ``edgecache::oss://bucket/key``
works once this distribution is installed. :class:`OSSBackend` is the whole public surface;
``_options`` maps native and Fluid-style keys, ``_filesystem`` adjusts ossfs (ETags, bounded and
retried requests), ``_backend`` versions, fetches and translates errors.
"""

from __future__ import annotations

from edgecache_oss._backend import OSSBackend

__all__ = ["OSSBackend"]
