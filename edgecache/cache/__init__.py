"""edgecache.cache."""
