"""edgecache backend plugin for S3 and S3-compatible stores (``s3://``, ``s3a://``), on s3fs.

Registered in the ``edgecache.backends`` entry-point group, so ``edgecache::s3://bucket/key``
works once this distribution is installed. :class:`S3Backend` is the whole public surface;
``_options`` maps native and Fluid-style keys onto s3fs, ``_backend`` versions, fetches and
translates errors.
"""

from __future__ import annotations

from edgecache_s3._backend import S3Backend

__all__ = ["S3Backend"]
