"""The controller process: leader election, observation, queueing, reconciling, health.

::

    LeaderElector.acquire()                      (standby until this replica holds the Lease)
      -> Informers (Datasets, runtimes, DataLoads, CacheReports, Nodes, PVs, PVCs): list + watch
      -> on_change: the keys an event concerns -> WorkQueue (dedup, one worker per key, backoff)
      -> workers: DatasetReconciler / DataLoadReconciler, reading the informers' caches
      -> resync: every key again each ``resync_seconds`` (level-triggered: a lost event or an
         unwatched change, such as a Secret, is caught up)
    LeaderElector.hold() returns (lease lost) -> everything above stops; campaign again

``/healthz`` (the process runs), ``/readyz`` (the API answers; a leader also has synced caches)
and ``/metrics`` are served by aiohttp on ``health_address`` whether leading or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from edgecache.controller._dataloads import DataLoadReconciler
from edgecache.controller._datasets import DatasetReconciler
from edgecache.controller._leader import LeaderElector, LeaderSettings
from edgecache.controller._listing import MountLister
from edgecache.controller._queue import WorkQueue
from edgecache.k8s.api import (
    NODE,
    PERSISTENT_VOLUME,
    PERSISTENT_VOLUME_CLAIM,
    Kube,
    KubeError,
    KubeUnavailableError,
)
from edgecache.k8s.informer import Informer, object_key
from edgecache.k8s.objects import (
    CACHE_REPORT,
    DATALOAD,
    DATASET,
    LABEL_DATASET,
    LABEL_DATASET_NAMESPACE,
    RUNTIME,
)
from edgecache.k8s.probes import ProbeServer, start_probe_server
from edgecache.metrics import (
    CONTROLLER_DATASETS,
    CONTROLLER_RECONCILE_SECONDS,
    CONTROLLER_RECONCILES,
    CONTROLLER_WATCH_RESTARTS,
)

__all__ = ["Cluster", "Controller", "ControllerSettings"]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]
Key = tuple[str, str]


@dataclass
class ControllerSettings:
    """Everything ``edgecache controller`` can be told; tests shorten the intervals."""

    leader: LeaderSettings = field(default_factory=LeaderSettings)
    health_address: str = "0.0.0.0:10268"
    """host:port of /healthz, /readyz, /metrics (all interfaces: kubelet probes the pod IP)."""
    workers: int = 4
    """Objects reconciled at once; each reconcile is a few API calls, so a few suffice."""
    resync_seconds: float = 300.0
    """Every object is reconciled again this often even without events (level-triggered)."""
    recheck_seconds: float = 30.0
    """A Dataset with a problem that no watch reports (a missing Secret) is checked again."""
    backoff_base_seconds: float = 0.5
    """First delay after a failed reconcile; doubles per failure of the same object."""
    backoff_max_seconds: float = 300.0
    listing_refresh_seconds: float = 300.0
    """How often each Dataset's mounts are listed again for ufsTotal/fileNum."""
    listing_retry_seconds: float = 30.0
    """How soon a failed listing is tried again (the backend or a Secret may be back)."""
    cache_dir: str | None = None
    """Cache directory of the filesystem that lists mounts (None: a private temporary one)."""
    request_timeout_seconds: float = 30.0


class Cluster:
    """What the reconcilers see: the API client and the informers' caches."""

    def __init__(self, kube: Kube, lister: MountLister, on_change: Any) -> None:
        self.kube = kube
        self.lister = lister

        def informer(kind: Any, selector: str | None = None) -> Informer:
            return Informer(
                kube,
                kind,
                label_selector=selector,
                on_change=lambda old, new: on_change(kind, old, new),
                restarts=CONTROLLER_WATCH_RESTARTS,
            )

        self.datasets = informer(DATASET)
        self.runtimes = informer(RUNTIME)
        self.dataloads = informer(DATALOAD)
        self.reports = informer(CACHE_REPORT)
        self.nodes = informer(NODE)
        self.volumes = informer(PERSISTENT_VOLUME, LABEL_DATASET)
        self.claims = informer(PERSISTENT_VOLUME_CLAIM, LABEL_DATASET)

    @property
    def informers(self) -> list[Informer]:
        return [
            self.datasets,
            self.runtimes,
            self.dataloads,
            self.reports,
            self.nodes,
            self.volumes,
            self.claims,
        ]


def _labels(obj: JSONObject | None) -> dict[str, str]:
    return dict(((obj or {}).get("metadata") or {}).get("labels") or {})


class Controller:
    """One controller replica. ``await run(stop)`` until ``stop`` is set."""

    def __init__(self, settings: ControllerSettings, api_client: Any) -> None:
        self.settings = settings
        self.kube = Kube(api_client, request_timeout_seconds=settings.request_timeout_seconds)
        self.elector = LeaderElector(self.kube, settings.leader)
        self.cluster: Cluster | None = None
        self.queue: WorkQueue | None = None
        self._cache_dir = settings.cache_dir
        self._temp: tempfile.TemporaryDirectory[str] | None = None
        self._probes: ProbeServer | None = None
        self.health_url = ""
        self.started = asyncio.Event()

    # --- health -----------------------------------------------------------------------------
    def _ready(self) -> tuple[bool, str]:
        cluster = self.cluster
        if not self.settings.leader.enabled or self.elector.is_leader:
            if cluster is None or not all(i.synced.is_set() for i in cluster.informers):
                return False, "leader, caches not synced yet"
            return True, "leader, caches synced"
        if not self.elector.reachable:
            return False, "standby, API server not reachable"
        return True, f"standby (leader: {self.elector.holder or 'none'})"

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        ready, why = self._ready()
        return web.Response(status=200 if ready else 503, text=why + "\n")

    async def _start_health(self) -> None:
        self._probes = await start_probe_server(
            self.settings.health_address, healthz=self._healthz, readyz=self._readyz
        )
        self.health_url = self._probes.url

    # --- events -> keys ---------------------------------------------------------------------
    def _enqueue_dataset(self, key: Key) -> None:
        assert self.queue is not None and self.cluster is not None
        self.queue.add(("Dataset", *key))
        for dl_key, dataload in self.cluster.dataloads.cache.items():
            ref = (dataload.get("spec") or {}).get("dataset") or {}
            namespace = ref.get("namespace") or dl_key[0]
            if (namespace, ref.get("name")) == key:
                self.queue.add(("DataLoad", *dl_key))

    def _on_change(self, kind: Any, old: JSONObject | None, new: JSONObject | None) -> None:
        if self.queue is None:
            return
        obj = new or old or {}
        key = object_key(obj)
        if kind is DATASET or kind is RUNTIME:
            self._enqueue_dataset(key)
        elif kind is DATALOAD:
            self.queue.add(("DataLoad", *key))
        elif kind is CACHE_REPORT:
            self._enqueue_dataset((key[0], str((obj.get("spec") or {}).get("dataset") or "")))
        elif kind is PERSISTENT_VOLUME_CLAIM:
            self._enqueue_dataset(key)
        elif kind is PERSISTENT_VOLUME:
            labels = _labels(obj)
            self._enqueue_dataset(
                (labels.get(LABEL_DATASET_NAMESPACE, ""), labels.get(LABEL_DATASET, ""))
            )
        elif kind is NODE:
            if old is not None and new is not None and _labels(old) == _labels(new):
                return  # status heartbeats: the pool did not change
            assert self.cluster is not None
            for dataset_key in list(self.cluster.datasets.cache):
                self._enqueue_dataset(dataset_key)

    def _listed(self, key: Hashable) -> None:
        if self.queue is not None:
            self.queue.add(("Dataset", *key))  # type: ignore[misc]

    # --- work -------------------------------------------------------------------------------
    async def _worker(self, datasets: DatasetReconciler, dataloads: DataLoadReconciler) -> None:
        assert self.queue is not None
        queue = self.queue
        while True:
            item = await queue.get()
            kind: str
            namespace: str
            name: str
            kind, namespace, name = item  # type: ignore[misc]
            started = time.monotonic()
            try:
                reconciler = datasets if kind == "Dataset" else dataloads
                result, again = await reconciler.reconcile((namespace, name))
                queue.forget(item)
                if again is not None:
                    queue.add_after(item, again)
            except asyncio.CancelledError:
                raise
            except (KubeError, KubeUnavailableError) as exc:
                result = "error"
                delay = queue.retry(item)
                log.info("%s %s/%s: %s; retry in %.1f s", kind, namespace, name, exc, delay)
            except Exception:  # a bug on one object must not stop the others
                result = "error"
                delay = queue.retry(item)
                log.exception("%s %s/%s failed; retry in %.1f s", kind, namespace, name, delay)
            finally:
                queue.done(item)
            CONTROLLER_RECONCILES.labels(kind, result).inc()
            if kind == "Dataset":
                self._count_phases()
            CONTROLLER_RECONCILE_SECONDS.labels(kind).observe(time.monotonic() - started)

    async def _resync(self) -> None:
        assert self.cluster is not None
        while True:
            await asyncio.sleep(self.settings.resync_seconds)
            for key in list(self.cluster.datasets.cache):
                self._enqueue_dataset(key)
            for key in list(self.cluster.dataloads.cache):
                assert self.queue is not None
                self.queue.add(("DataLoad", *key))
            self._count_phases()

    def _count_phases(self) -> None:
        assert self.cluster is not None
        counts: dict[str, int] = {"NotBound": 0, "Bound": 0, "Failed": 0}
        for dataset in self.cluster.datasets.objects():
            phase = str((dataset.get("status") or {}).get("phase") or "NotBound")
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            CONTROLLER_DATASETS.labels(phase).set(count)

    async def _lead(self) -> None:
        """Observe and reconcile until cancelled."""
        assert self._cache_dir is not None
        self.queue = WorkQueue(
            base_delay_seconds=self.settings.backoff_base_seconds,
            max_delay_seconds=self.settings.backoff_max_seconds,
        )
        lister = MountLister(
            self.kube,
            cache_dir=self._cache_dir,
            refresh_seconds=self.settings.listing_refresh_seconds,
            retry_seconds=self.settings.listing_retry_seconds,
            on_done=self._listed,
        )
        self.cluster = cluster = Cluster(self.kube, lister, self._on_change)
        tasks: list[asyncio.Task[None]] = []
        try:
            for informer in cluster.informers:
                informer.start()
            await asyncio.gather(*(i.synced.wait() for i in cluster.informers))
            log.warning("caches synced; reconciling")
            datasets = DatasetReconciler(cluster, recheck_seconds=self.settings.recheck_seconds)
            dataloads = DataLoadReconciler(cluster)
            tasks = [
                asyncio.create_task(self._worker(datasets, dataloads))
                for _ in range(self.settings.workers)
            ]
            tasks.append(asyncio.create_task(self._resync()))
            self._count_phases()
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            for informer in cluster.informers:
                informer.stop()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)
            self.queue.close()
            lister.close()
            self.cluster = None
            self.queue = None

    async def run(self, stop: asyncio.Event) -> None:
        """Serve health, campaign, lead; return (releasing the Lease) once ``stop`` is set."""
        if self._cache_dir is None:
            self._temp = tempfile.TemporaryDirectory(prefix="edgecache-controller-")
            self._cache_dir = self._temp.name
        await self._start_health()
        self.started.set()
        stopping = asyncio.create_task(stop.wait())
        try:
            while not stop.is_set():
                if self.settings.leader.enabled:
                    campaign = asyncio.create_task(self.elector.acquire())
                    await asyncio.wait({campaign, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    if stop.is_set():
                        campaign.cancel()
                        break
                lead = asyncio.create_task(self._lead())
                waits: set[asyncio.Task[Any]] = {lead, stopping}
                hold = None
                if self.settings.leader.enabled:
                    hold = asyncio.create_task(self.elector.hold())
                    waits.add(hold)
                await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                lead.cancel()
                if hold is not None:
                    hold.cancel()
                with contextlib.suppress(BaseException):
                    await lead
                if lead.done() and not lead.cancelled() and lead.exception() is not None:
                    log.error("reconciling stopped: %s; starting again", lead.exception())
                    await asyncio.sleep(1.0)  # never a tight restart loop
        finally:
            stopping.cancel()
            await self.elector.release()
            if self._probes is not None:
                await self._probes.close()
            self.kube.close()
            if self._temp is not None:
                self._temp.cleanup()
