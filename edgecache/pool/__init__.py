"""edgecache.pool."""
