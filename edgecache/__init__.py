"""edgecache: a nodepool-scoped tiered cache behind an fsspec filesystem, plus an edge hub."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
