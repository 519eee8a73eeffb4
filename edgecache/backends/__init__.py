"""edgecache.backends."""
