"""edgecache.testing."""
