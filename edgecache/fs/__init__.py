"""edgecache.fs."""
