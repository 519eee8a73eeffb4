"""The real `edgecache` CLI with one extra backend, ``slowfile``: local files read at a crawl
(50 ms per block), so a test can interrupt a prefetch while it is loading."""

from __future__ import annotations

import asyncio
import sys

from edgecache.backends import register_backend
from edgecache.backends.local import LocalBackend
from edgecache.cli import main


class SlowLocalBackend(LocalBackend):
    protocols = ("slowfile",)

    async def fetch_range(self, path: str, start: int, end: int, version: str) -> bytes:
        await asyncio.sleep(0.05)
        return await super().fetch_range(path, start, end, version)


if __name__ == "__main__":
    register_backend("slowfile", SlowLocalBackend)
    sys.argv[0] = "edgecache"
    main()
