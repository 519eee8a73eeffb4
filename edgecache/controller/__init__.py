"""edgecache.controller."""
