"""The node agent process: follow the API, keep each placed Dataset's view, report, serve health.

::

    local state (node labels, objects, view manifests)   read first: serve with no API answer
    Node <node-name>  --GET every node_refresh_seconds-->  labels (apps.openyurt.io/nodepool)
    Informers: Datasets, EdgeCacheRuntimes, DataLoads  (list + watch, through the edge hub)
      -> placement: the Datasets whose nodeAffinity selects this Node's labels
      -> one worker per placed Dataset:
           pending DataLoad runs (status.run) first: prefetch library -> cache -> view
           DatasetView.sync: the mounts' files into the view (verified, renamed, quota)
           CacheReport -> ReportSender (queued while offline)
           again on any event of the Dataset, its runtime or DataLoads, and every metadata TTL
      -> a Dataset no longer placed here (deleted, moved): its worker stops, its view is removed
    /healthz /readyz /metrics                              aiohttp on health_address

:meth:`Agent.ready_view` is the CSI service's :class:`~edgecache.agent._csi.ViewResolver`: it
answers from memory (the views and their manifests), never from the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from edgecache.agent._copies import ViewCopies
from edgecache.agent._dataloads import pending_run, run_dataload
from edgecache.agent._reports import ReportSender, report_for
from edgecache.agent._room import ViewRoom
from edgecache.agent._settings import AgentSettings
from edgecache.agent._state import read_json, remove_stale_temporaries, write_json
from edgecache.agent._view import DatasetView, MountSource, Quota
from edgecache.config import CacheSettings, StoreSettings
from edgecache.dataset import DataLoad, Dataset, EdgeCacheRuntime, SpecError, parse_resource
from edgecache.engine import ReadPlan
from edgecache.errors import ConfigError, TierUnavailableError, ViewNotReadyError
from edgecache.fs import EdgeCacheFileSystem
from edgecache.k8s.api import NODE, Kube, KubeError, KubeUnavailableError
from edgecache.k8s.informer import Informer, object_key
from edgecache.k8s.nodes import term_matches
from edgecache.k8s.objects import DATALOAD, DATASET, RUNTIME, Kind
from edgecache.k8s.probes import ProbeServer, start_probe_server
from edgecache.k8s.secrets import mount_secrets
from edgecache.metrics import (
    AGENT_API_ONLINE,
    AGENT_DATALOAD_RUNS,
    AGENT_VIEW_BYTES,
    AGENT_VIEWS,
    AGENT_WATCH_RESTARTS,
)

__all__ = ["AGENT_USER_AGENT", "Agent"]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]
Key = tuple[str, str]

AGENT_USER_AGENT = "edgecache-agent/0.1"
"""The hub records by User-Agent prefix: ``edgecache-agent`` is among its defaults."""

_KINDS: dict[str, Kind] = {"datasets": DATASET, "runtimes": RUNTIME, "dataloads": DATALOAD}


@dataclass
class _Placed:
    """A Dataset placed on this node, parsed, with what its worker needs."""

    obj: JSONObject
    dataset: Dataset
    runtime: EdgeCacheRuntime | None
    problem: str = ""
    deleting: bool = False
    """Being deleted: the view keeps serving the pods that still use its volume (PVC
    protection holds the deletion until they end), but is no longer updated or reported."""


def quota_of(runtime: EdgeCacheRuntime, *, pinned: bool) -> Quota:
    """The capacity a runtime gives its Dataset on each node: its SSD/HDD levels' quotas (its
    MEM levels' when it has no disk level), with the first disk level's watermarks."""
    disk = [level for level in runtime.levels if level.mediumtype != "MEM"]
    levels = disk or list(runtime.levels)
    capacity = sum(sum(level.quotas) for level in levels)
    high = next((level.high for level in levels if level.high is not None), 0.95)
    low = next((level.low for level in levels if level.low is not None), min(0.85, high))
    return Quota(capacity, high=high, low=low, pinned=pinned)


class Agent:
    """One node agent. ``await run(stop)`` until ``stop`` is set, then :meth:`close`."""

    def __init__(self, settings: AgentSettings, api_client: Any) -> None:
        self.settings = settings
        self.kube = Kube(
            api_client,
            request_timeout_seconds=settings.request_timeout_seconds,
            field_manager="edgecache-agent",
        )
        self.reports = ReportSender(
            self.kube,
            interval_seconds=settings.report_interval_seconds,
            retry_seconds=settings.report_retry_seconds,
        )
        self.views: dict[Key, DatasetView] = {}
        self.copies = ViewCopies()
        """Which view file holds which object version (the pool serves blocks from them)."""
        self.room = ViewRoom(self._shares)
        """Room for a view the node's cache refuses, from other views over their share."""
        self.placed: dict[Key, _Placed] = {}
        self.node_labels: dict[str, str] | None = None
        self.known: dict[str, dict[Key, JSONObject]] = {kind: {} for kind in _KINDS}
        self.informers: dict[str, Informer] = {}
        self._workers: dict[Key, asyncio.Task[None]] = {}
        self._wakes: dict[Key, asyncio.Event] = {}
        self._sources: dict[Key, tuple[str, list[MountSource]]] = {}
        self._changed = asyncio.Event()
        self._touched: set[Key] = set()
        """Datasets an event concerned since the last placement: their workers are woken."""
        self._all_touched = True
        """Every worker is woken (at start, and when the Node's labels change)."""
        self._saved_objects = ""
        self._held_store: StoreSettings | None = None
        """The cache directory's store settings last applied (None: not yet)."""
        self._node_answered = False
        self._probes: ProbeServer | None = None
        self.health_url = ""
        self.started = asyncio.Event()

    # --- the CSI service's resolver ------------------------------------------------------------
    def ready_view(self, namespace: str, dataset: str) -> pathlib.Path:
        """The view directory of ``namespace/dataset`` once it can be published (see
        :class:`~edgecache.agent._csi.ViewResolver`); ViewNotReadyError saying why otherwise."""
        key = (namespace, dataset)
        node = self.settings.node_name
        placed = self.placed.get(key)
        view = self.views.get(key)
        if placed is None or view is None:
            raise ViewNotReadyError(
                f"Dataset {namespace}/{dataset} is not placed on node {node} (unknown to its "
                f"agent, or its nodeAffinity does not select this node's nodepool)"
            )
        if placed.problem:
            raise ViewNotReadyError(f"Dataset {namespace}/{dataset}: {placed.problem}")
        if not view.complete:
            raise ViewNotReadyError(
                f"the view of Dataset {namespace}/{dataset} on node {node} is not ready: "
                f"{view.message or 'loading'}"
            )
        return view.path

    # --- the pool's block holder ----------------------------------------------------------------
    def held_block(self, plan: ReadPlan, index: int) -> bytes | None:
        """Block ``index`` of ``plan`` from the view file holding exactly that object version
        (views drop their blocks from the cache once copied), for the pool's peers; None if no
        view holds it. Called in a worker thread: reads only what the views already hold."""
        return self.copies.read_block(plan, index)

    # --- local state -----------------------------------------------------------------------------
    @property
    def _objects_file(self) -> pathlib.Path:
        return self.settings.state_dir / "objects.json"

    @property
    def _node_file(self) -> pathlib.Path:
        return self.settings.state_dir / "node.json"

    def _load_state(self) -> None:
        remove_stale_temporaries(self.settings.state_dir)
        node = read_json(self._node_file)
        if isinstance(node, dict) and isinstance(node.get("labels"), dict):
            self.node_labels = {str(k): str(v) for k, v in node["labels"].items()}
        saved = read_json(self._objects_file)
        if isinstance(saved, dict):
            for kind in _KINDS:
                for obj in saved.get(kind) or []:
                    self.known[kind][object_key(obj)] = obj
        views = self.settings.state_dir / "views"
        if views.is_dir():
            for manifest in views.glob("*/*.json"):
                key = (manifest.parent.name, manifest.stem)
                self.views[key] = self._new_view(key)

    def _new_view(self, key: Key) -> DatasetView:
        return DatasetView(self.settings, *key, copies=self.copies, room=self.room)

    def _quota(self, key: Key) -> Quota | None:
        """The share of the node's cache the Dataset's runtime gives it now (None: no
        runtime); pinned when a DataLoad of it asks to pin."""
        placed = self.placed.get(key)
        if placed is None or placed.runtime is None:
            return None
        pinned = any((o.get("spec") or {}).get("pin") is True for o in self._dataloads_of(key))
        return quota_of(placed.runtime, pinned=pinned)

    def _shares(self) -> list[tuple[DatasetView, Quota]]:
        """Every placed view with its share (:class:`ViewRoom`)."""
        return [
            (view, quota)
            for key, view in self.views.items()
            if (quota := self._quota(key)) is not None
        ]

    def _save_objects(self) -> None:
        placed = set(self.placed)
        keep: dict[str, list[JSONObject]] = {
            "datasets": [self.known["datasets"][k] for k in placed if k in self.known["datasets"]],
            "runtimes": [self.known["runtimes"][k] for k in placed if k in self.known["runtimes"]],
            "dataloads": [
                obj for obj in self.known["dataloads"].values() if self._dataload_key(obj) in placed
            ],
        }
        text = json.dumps(keep, sort_keys=True)
        if text != self._saved_objects:  # status updates of other objects change nothing here
            write_json(self._objects_file, keep)
            self._saved_objects = text

    @staticmethod
    def _dataload_key(obj: JSONObject) -> Key:
        # Read before the spec is validated (parse_resource): any part may be of any type (a
        # DataLoad whose spec.dataset was a number stopped the agent, found by fuzzing).
        spec = obj.get("spec")
        ref = spec.get("dataset") if isinstance(spec, Mapping) else None
        ref = ref if isinstance(ref, Mapping) else {}
        meta = obj.get("metadata")
        namespace = ref.get("namespace") or (
            meta.get("namespace") if isinstance(meta, Mapping) else ""
        )
        return str(namespace or ""), str(ref.get("name") or "")

    # --- health ----------------------------------------------------------------------------------
    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.node_labels is None:
            return web.Response(status=503, text="the Node's labels are not known yet\n")
        ready = sum(1 for v in self.views.values() if v.complete)
        return web.Response(text=f"ok: {ready} of {len(self.placed)} views ready\n")

    async def _start_health(self) -> None:
        self._probes = await start_probe_server(
            self.settings.health_address, healthz=self._healthz, readyz=self._readyz
        )
        self.health_url = self._probes.url

    # --- observation -----------------------------------------------------------------------------
    def _on_change(self, kind: str, old: JSONObject | None, new: JSONObject | None) -> None:
        # Called from the informer's first list too (its cache is the fresh list by then).
        self.known[kind] = dict(self.informers[kind].cache)
        for obj in (old, new):
            if obj is not None:
                self._touched.add(
                    self._dataload_key(obj) if kind == "dataloads" else object_key(obj)
                )
        self._changed.set()

    async def _watch_node(self) -> None:
        while True:
            try:
                node = await self.kube.get(NODE, self.settings.node_name)
            except (KubeError, KubeUnavailableError) as exc:
                AGENT_API_ONLINE.set(0)
                log.info("reading Node %s failed: %s", self.settings.node_name, exc)
            else:
                AGENT_API_ONLINE.set(1)
                if node is not None and not self._node_answered:
                    self._node_answered = True
                    self._changed.set()  # absence in the informers now means gone
                if node is None:
                    log.warning("Node %s does not exist", self.settings.node_name)
                else:
                    labels = dict((node.get("metadata") or {}).get("labels") or {})
                    if labels != self.node_labels:
                        self.node_labels = labels
                        write_json(self._node_file, {"labels": labels})
                        self._all_touched = True
                        self._changed.set()
            await asyncio.sleep(self.settings.node_refresh_seconds)

    # --- placement -------------------------------------------------------------------------------
    def _place(self) -> None:
        """Recompute which Datasets are placed here; start and stop their workers."""
        labels = self.node_labels
        placed: dict[Key, _Placed] = {}
        if labels is not None:
            for key, obj in self.known["datasets"].items():
                try:
                    dataset = parse_resource(obj)
                except SpecError as exc:
                    log.info("ignoring Dataset %s/%s: %s", *key, exc)
                    continue
                assert isinstance(dataset, Dataset)
                if not any(term_matches(term, labels) for term in dataset.node_selector_terms):
                    continue
                runtime, problem = None, ""
                runtime_obj = self.known["runtimes"].get(key)
                if runtime_obj is None:
                    problem = f"no EdgeCacheRuntime {key[1]} in namespace {key[0]}"
                else:
                    try:
                        parsed = parse_resource(runtime_obj)
                        assert isinstance(parsed, EdgeCacheRuntime)
                        runtime = parsed
                    except SpecError as exc:
                        problem = str(exc)
                deleting = bool((obj.get("metadata") or {}).get("deletionTimestamp"))
                placed[key] = _Placed(obj, dataset, runtime, problem, deleting)
        for key in set(self.placed) - set(placed):
            self._retire(key, remove_view=self._observed_everything())
        self.placed = placed
        for key in placed:
            if key not in self._workers:
                self._wakes[key] = asyncio.Event()
                self._workers[key] = asyncio.create_task(self._serve(key), name=f"view-{key}")
            elif self._all_touched or key in self._touched:
                self._wakes[key].set()
        self._touched.clear()
        self._all_touched = False
        # Views left from Datasets this node no longer serves (deleted while we were down).
        if self._observed_everything():
            for key in set(self.views) - set(placed):
                self._retire(key, remove_view=True)
        self._save_objects()
        self._count_views()

    def _observed_everything(self) -> bool:
        """The API answered every list and the Node: absence means gone, not unknown."""
        return (
            self._node_answered
            and bool(self.informers)
            and all(i.synced.is_set() for i in self.informers.values())
        )

    def _retire(self, key: Key, *, remove_view: bool) -> None:
        task = self._workers.pop(key, None)
        if task is not None:
            task.cancel()
        self._wakes.pop(key, None)
        self._sources.pop(key, None)
        if remove_view:
            view = self.views.pop(key, None)
            if view is not None:
                log.info(
                    "Dataset %s/%s left node %s: removing its view", *key, self.settings.node_name
                )
                view.remove()
            self.reports.forget(key[0], key[1], self.settings.node_name)

    def _count_views(self) -> None:
        ready = sum(1 for k in self.placed if k in self.views and self.views[k].complete)
        AGENT_VIEWS.labels("ready").set(ready)
        AGENT_VIEWS.labels("not_ready").set(len(self.placed) - ready)
        AGENT_VIEW_BYTES.set(sum(v.cached_bytes for v in self.views.values()))

    # --- one Dataset -----------------------------------------------------------------------------
    async def _mount_sources(self, key: Key, placed: _Placed) -> list[MountSource]:
        """Filesystems for the Dataset's mounts (Secrets fetched from the API); the last ones
        stay in use while the API cannot answer."""
        assert placed.runtime is not None
        fingerprint = json.dumps(
            [placed.obj.get("spec"), (self.known["runtimes"].get(key) or {}).get("spec")],
            sort_keys=True,
            default=str,
        )
        store = self.directory_store()
        fingerprint += repr(store)
        cached = self._sources.get(key)
        if cached is not None and cached[0] == fingerprint:
            return cached[1]
        settings = self._cache_settings(placed.runtime, store)
        sources = []
        for mount in placed.dataset.mounts:
            options: dict[str, Any] = dict(mount.backend_options())
            if mount.encrypt_options:
                try:
                    resolver = await asyncio.to_thread(
                        mount_secrets, self.kube, mount, placed.dataset.namespace
                    )
                except (KubeError, KubeUnavailableError) as exc:
                    if cached is not None:
                        return cached[1]
                    raise OSError(f"reading the Secrets of {mount.mount_point}: {exc}") from exc
                options["secret_resolver"] = resolver
                options["secret_namespace"] = placed.dataset.namespace
            fs = EdgeCacheFileSystem(
                mount.protocol, options, settings=settings, skip_instance_cache=True
            )
            sources.append(MountSource(mount, fs))
        self._sources[key] = (fingerprint, sources)
        return sources

    def directory_store(self) -> StoreSettings:
        """The node's cache directory (``--cache-dir``, which wins over a level's ``path``):
        one quota, the sum of the capacities the placed runtimes give their Datasets, for the
        views, the DataLoads' blocks and the ``edgecache::`` readers on the node; the agent's
        MEM bound, the sum of their MEM levels (the default when none has one); watermarks,
        compression and eviction policy of the first placed runtime (by namespace/name)."""
        runtimes = [p.runtime for _, p in sorted(self.placed.items()) if p.runtime is not None]
        quotas = [quota_of(r, pinned=False) for r in runtimes]
        options: dict[str, Any] = {
            "cache_dir": str(self.settings.cache_dir),
            "ssd_quota": max(sum(q.capacity_bytes for q in quotas), 1),
        }
        mem = [sum(lv.quotas) for r in runtimes for lv in r.levels if lv.mediumtype == "MEM"]
        if mem:
            options["mem_quota"] = sum(mem)
        if quotas:
            options["ssd_high"], options["ssd_low"] = quotas[0].high, quotas[0].low
            if runtimes[0].compression is not None:
                options["compression"] = runtimes[0].compression
            if runtimes[0].eviction_policy is not None:
                options["eviction_policy"] = runtimes[0].eviction_policy
        return CacheSettings.from_options(options).store

    def _cache_settings(self, runtime: EdgeCacheRuntime, store: StoreSettings) -> CacheSettings:
        """The runtime's block size over the node's cache directory ``store``."""
        settings = CacheSettings(store=store, metadata_ttl=self.settings.metadata_ttl_seconds)
        if runtime.block_size is None:
            return settings
        return CacheSettings.from_options({"block_size": runtime.block_size}, base=settings)

    async def _hold_cache_dir(self, sources: list[MountSource]) -> None:
        """Give the node's cache directory the quota the placed runtimes add up to now (also
        after a runtime changed while the agent runs), for every process on it, and drop the
        charges of views this agent no longer has (a view removed while it was down)."""
        if not sources:
            return
        store = sources[0].fs.engine.store
        wanted = self.directory_store()
        views = {view.charge_name for view in self.views.values()}

        def hold() -> None:
            if wanted != self._held_store:
                store.apply(wanted, for_every_process=True)
                self._held_store = wanted
                log.info(
                    "cache directory %s: quota %d bytes (high %g, low %g) for every process; "
                    "MEM %d bytes, eviction policy %s",
                    wanted.cache_dir,
                    wanted.ssd_quota,
                    wanted.ssd_high,
                    wanted.ssd_low,
                    wanted.mem_quota,
                    wanted.eviction_policy,
                )
            for name in store.blocks.charges():
                if name.startswith("view:") and name not in views:
                    store.blocks.charge(name, 0)

        try:
            await asyncio.to_thread(hold)
        except (TierUnavailableError, ConfigError) as exc:
            log.warning("cache directory %s: quota not applied: %s", wanted.cache_dir, exc)

    def _dataloads_of(self, key: Key) -> list[JSONObject]:
        return sorted(
            (o for o in self.known["dataloads"].values() if self._dataload_key(o) == key),
            key=lambda o: str((o.get("metadata") or {}).get("name")),
        )

    def _dataload_waiting(self, key: Key, view: DatasetView) -> bool:
        return any(pending_run(o, view) is not None for o in self._dataloads_of(key))

    async def _serve(self, key: Key) -> None:
        wake = self._wakes[key]
        while True:
            wake.clear()
            try:
                await self._serve_once(key)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one Dataset's failure never stops the agent
                log.exception("serving Dataset %s/%s failed", *key)
                view = self.views.get(key)
                if view is not None:
                    view.message = f"the agent failed: {exc}"
            self._count_views()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.metadata_ttl_seconds):
                    await wake.wait()

    async def _serve_once(self, key: Key) -> None:
        placed = self.placed.get(key)
        if placed is None or placed.deleting:
            return
        view = self.views.get(key)
        if view is None:
            view = self.views[key] = self._new_view(key)
        view.uid = str((placed.obj.get("metadata") or {}).get("uid") or view.uid)
        if placed.runtime is None:
            self._report(key, view, placed)
            return
        dataloads = self._dataloads_of(key)
        quota = self._quota(key)
        assert quota is not None  # placed with a runtime
        try:
            sources = await self._mount_sources(key, placed)
        except Exception as exc:
            view.message = f"cannot read the mounts: {exc}"
            self._report(key, view, placed, quota)
            return
        await self._hold_cache_dir(sources)
        pending = [(o, run) for o in dataloads if (run := pending_run(o, view)) is not None]
        if pending and not view.wanted:
            with contextlib.suppress(Exception):
                view.wanted, view.plans = await view.listing(sources)
        for obj, run in pending:
            try:
                dataload = parse_resource(obj)
            except SpecError:
                continue
            assert isinstance(dataload, DataLoad)
            entry = await run_dataload(
                dataload,
                obj,
                run,
                view,
                placed.dataset,
                capacity_bytes=quota.capacity_bytes,
                on_progress=lambda: self._report(key, view, placed, quota),
            )
            AGENT_DATALOAD_RUNS.labels(entry["phase"]).inc()
        wake = self._wakes.get(key)
        await view.sync(sources, quota, interrupted=lambda: self._dataload_waiting(key, view))
        self._report(key, view, placed, quota)
        if wake is not None and self._dataload_waiting(key, view):
            wake.set()

    def _report(
        self, key: Key, view: DatasetView, placed: _Placed, quota: Quota | None = None
    ) -> None:
        uid = str((placed.obj.get("metadata") or {}).get("uid") or "")
        live = {str((o.get("metadata") or {}).get("uid")) for o in self._dataloads_of(key)}
        message = placed.problem or view.message
        report = report_for(
            namespace=key[0],
            dataset=key[1],
            dataset_uid=uid,
            node=self.settings.node_name,
            cache={
                "cachedBytes": view.cached_bytes,
                "capacityBytes": quota.capacity_bytes if quota else 0,
                "cachedFiles": len(view.files),
                "hits": view.hits,
                "misses": view.misses,
            },
            view={"ready": view.complete and not placed.problem, "message": message},
            data_loads=[dict(e) for u, e in sorted(view.loads.items()) if u in live],
        )
        self.reports.submit(report)

    # --- the process -----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        self.settings.views_dir.mkdir(parents=True, exist_ok=True)
        self.settings.state_dir.mkdir(parents=True, exist_ok=True)
        self._load_state()
        await self._start_health()
        background = [
            asyncio.create_task(self.reports.run(), name="reports"),
            asyncio.create_task(self._watch_node(), name="node"),
        ]
        for kind, kind_obj in _KINDS.items():
            informer = Informer(
                self.kube,
                kind_obj,
                on_change=lambda old, new, kind=kind: self._on_change(kind, old, new),  # type: ignore[misc]
                restarts=AGENT_WATCH_RESTARTS,
            )
            self.informers[kind] = informer
            informer.start()
        self._place()  # from local state: views it had serve at once
        self.started.set()
        try:
            while not stop.is_set():
                stopping = asyncio.ensure_future(stop.wait())
                changed = asyncio.ensure_future(self._changed.wait())
                await asyncio.wait({stopping, changed}, return_when=asyncio.FIRST_COMPLETED)
                stopping.cancel()
                changed.cancel()
                if stop.is_set():
                    break
                self._changed.clear()
                self._place()
        finally:
            for informer in self.informers.values():
                informer.stop()
            tasks = [*self._workers.values(), *background]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for view in self.views.values():
                with contextlib.suppress(OSError):
                    view.save()
            if self._probes is not None:
                await self._probes.close()
            for informer in self.informers.values():
                await informer.join(1.0)

    def close(self) -> None:
        """Close the agent's Kubernetes client, after :meth:`run` and after everything it was
        lent to (the pool's Leases: a node that stops deletes its Lease through it)."""
        self.kube.close()
