"""edgecache.agent."""
