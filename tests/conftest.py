"""Shared fixtures for the edgecache test suite."""
