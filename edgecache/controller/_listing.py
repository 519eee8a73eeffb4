"""``status.ufsTotal`` and ``fileNum``: listing a Dataset's mounts through the engine.

Each mount is listed with the public fsspec API of edgecache
(``fsspec.filesystem("edgecache", target_protocol=..., target_options=...)`` and
``find(detail=True)``), so the controller reads a mount exactly as the agent and users do,
through the same backends, options and Secrets (resolved from the API, never from files).
Listings can take long over a WAN: they run on their own threads, at most one per Dataset at a
time, and a finished one wakes the Dataset's reconcile; a reconcile only reads the last result.
A result is refreshed every ``refresh_seconds``, or at once when the mounts change.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Hashable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import fsspec

from edgecache.dataset import Dataset
from edgecache.k8s.api import Kube
from edgecache.k8s.secrets import mount_secrets

__all__ = ["Listing", "MountLister"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Listing:
    """What one listing of all mounts found (or why it failed)."""

    fingerprint: str
    total_bytes: int = 0
    files: int = 0
    error: str = ""
    finished_at: float = 0.0


def _fingerprint(dataset: Dataset) -> str:
    return json.dumps(
        [(m.mount_point, m.path, m.backend_options()) for m in dataset.mounts], sort_keys=True
    )


class MountLister:
    """Lists mounts in the background; :meth:`result` gives the newest result for a Dataset."""

    def __init__(
        self,
        kube: Kube,
        *,
        cache_dir: str,
        refresh_seconds: float = 300.0,
        retry_seconds: float = 30.0,
        threads: int = 2,
        on_done: Callable[[Hashable], None],
    ) -> None:
        self.kube = kube
        self.cache_dir = cache_dir
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self.on_done = on_done
        self._results: dict[Hashable, Listing] = {}
        self._running: set[Hashable] = set()
        self._executor = ThreadPoolExecutor(threads, thread_name_prefix="list-mounts")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def forget(self, key: Hashable) -> None:
        self._results.pop(key, None)

    def result(self, key: Hashable, dataset: Dataset) -> Listing | None:
        """The last listing of ``dataset``'s current mounts (None: none yet); starts a new one
        when there is none, it is stale, or the mounts changed."""
        fingerprint = _fingerprint(dataset)
        current = self._results.get(key)
        if current is not None and current.fingerprint != fingerprint:
            current = None
        # A failed listing is tried again sooner: the backend or a Secret may be back.
        refresh = (
            min(self.refresh_seconds, self.retry_seconds)
            if current and current.error
            else self.refresh_seconds
        )
        stale = current is None or time.time() - current.finished_at >= refresh
        if stale and key not in self._running:
            self._running.add(key)
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self._executor, self._list, dataset, fingerprint)
            future.add_done_callback(lambda f: self._finished(key, f))
        return current

    def _finished(self, key: Hashable, future: asyncio.Future[Listing]) -> None:
        self._running.discard(key)
        if future.cancelled():
            return
        self._results[key] = future.result()
        self.on_done(key)

    def _list(self, dataset: Dataset, fingerprint: str) -> Listing:
        total = files = 0
        try:
            for mount in dataset.mounts:
                options: dict[str, Any] = {
                    **mount.backend_options(),
                    "secret_resolver": mount_secrets(self.kube, mount, dataset.namespace),
                    "secret_namespace": dataset.namespace,
                }
                fs = fsspec.filesystem(
                    "edgecache",
                    target_protocol=mount.protocol,
                    target_options=options,
                    cache_dir=self.cache_dir,
                    metadata_ttl=0,
                    skip_instance_cache=True,
                )
                # on_error="raise": fsspec's walk otherwise omits what it cannot list, and an
                # unreachable backend would read as an empty mount (ufsTotal 0B: a lie).
                found = fs.find(mount.url(), detail=True, on_error="raise")
                for info in found.values():
                    if info.get("type") != "directory":
                        files += 1
                        total += int(info.get("size") or 0)
        except Exception as exc:  # any backend failure is a status message, never a crash
            log.info("listing %s/%s failed: %s", dataset.namespace, dataset.name, exc)
            return Listing(
                fingerprint, error=str(exc) or type(exc).__name__, finished_at=time.time()
            )
        return Listing(fingerprint, total, files, finished_at=time.time())
