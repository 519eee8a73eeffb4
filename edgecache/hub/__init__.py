"""edgecache.hub."""
