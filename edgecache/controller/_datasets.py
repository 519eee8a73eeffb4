"""Reconciling one Dataset: validate, place (PV + PVC), clean up, and write true status.

Idempotent and level-triggered: it reads the cached state of the cluster, makes at most the
writes needed to bring it to what the spec asks, and writes status only when it changed. The
steps, in order:

1. deleted (``deletionTimestamp``): remove the PVC, then the PVs, then the agents' reports;
   drop our finalizer once nothing is left (pods still using the PVC keep it, and so the
   Dataset, until they end);
2. our finalizer is added before anything is created;
3. :func:`~edgecache.controller._validation.check_dataset`; a :class:`Problem` becomes
   ``Ready=False`` with its message, and what exists is left alone (a spec error never takes a
   working volume away);
4. the placement's PV exists; the PVC of the Dataset's name is bound to it. After an affinity
   change the old PVC is deleted (pods using it keep it until they end, by Kubernetes' PVC
   protection), then created again bound to the new PV; old PVs go once no claim uses them;
5. status: phase, the Ready condition, ufsTotal/fileNum from the last listing, cacheStates
   from the pool's reports.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from edgecache.controller._status import fluid_bytes, set_condition, summarise_cache
from edgecache.controller._validation import Checked, Problem, check_dataset, check_runtime
from edgecache.controller._volumes import Placement, desired_claim, desired_volume
from edgecache.k8s.api import (
    PERSISTENT_VOLUME,
    PERSISTENT_VOLUME_CLAIM,
    SECRET,
    KubeError,
    status_patch,
)
from edgecache.k8s.objects import (
    CACHE_REPORT,
    DATASET,
    FINALIZER,
    LABEL_DATASET,
    LABEL_DATASET_NAMESPACE,
    RUNTIME,
)

if TYPE_CHECKING:
    from edgecache.controller._controller import Cluster

__all__ = ["DatasetReconciler", "now_rfc3339"]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]
Key = tuple[str, str]


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class VolumeState:
    phase: str
    reason: str
    message: str
    volume: JSONObject


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _labels(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return _meta(obj).get("labels") or {}


class DatasetReconciler:
    """Brings one Dataset (by key) to its spec; see the module docstring for the steps."""

    def __init__(self, cluster: Cluster, *, recheck_seconds: float) -> None:
        self.cluster = cluster
        self.kube = cluster.kube
        self.recheck_seconds = recheck_seconds

    # --- what we own ------------------------------------------------------------------------
    def _volumes(self, namespace: str, name: str) -> list[JSONObject]:
        return sorted(
            (
                pv
                for pv in self.cluster.volumes.objects()
                if _labels(pv).get(LABEL_DATASET) == name
                and _labels(pv).get(LABEL_DATASET_NAMESPACE) == namespace
            ),
            key=lambda pv: str(_meta(pv).get("name")),
        )

    def _claim(self, namespace: str, name: str) -> JSONObject | None:
        return self.cluster.claims.cache.get((namespace, name))

    def _reports(self, namespace: str, name: str) -> list[JSONObject]:
        return [
            report
            for (ns, _), report in self.cluster.reports.cache.items()
            if ns == namespace and (report.get("spec") or {}).get("dataset") == name
        ]

    async def _lookup_secret(self, namespace: str, name: str) -> Mapping[str, Any] | None:
        return await self.kube.get(SECRET, name, namespace)

    # --- the reconcile ----------------------------------------------------------------------
    async def reconcile(self, key: Key) -> tuple[str, float | None]:
        """Returns (result for metrics, seconds until it should be looked at again or None)."""
        obj = self.cluster.datasets.cache.get(key)
        if obj is None:
            self.cluster.lister.forget(key)
            return "ok", None
        if _meta(obj).get("deletionTimestamp"):
            return await self._finalize(obj)
        obj = await self._ensure_finalizer(obj)
        runtime = self.cluster.runtimes.cache.get(key)
        try:
            checked = await check_dataset(
                obj,
                runtime=runtime,
                nodes=self.cluster.nodes.objects(),
                lookup_secret=self._lookup_secret,
            )
            await self._runtime_status(runtime, None)
            state = await self._ensure_volumes(obj, checked)
        except Problem as problem:
            if problem.reason != "RuntimeNotFound":
                await self._runtime_status(runtime, problem)
            await self._write_status(obj, self._problem_status(obj, problem))
            # Secrets and backends are not watched: look again after a while.
            return "invalid", self.recheck_seconds
        status = self._status(obj, checked, state)
        await self._write_status(obj, status)
        listed = next((c for c in status["conditions"] if c["type"] == "UFSListed"), None)
        if listed is not None and listed["status"] == "False":
            return "ok", self.cluster.lister.retry_seconds  # list again when it may work
        return "ok", None

    async def _ensure_finalizer(self, obj: JSONObject) -> JSONObject:
        finalizers = list(_meta(obj).get("finalizers") or [])
        if FINALIZER in finalizers:
            return obj
        meta = _meta(obj)
        return await self.kube.patch(
            DATASET,
            str(meta["name"]),
            {
                "metadata": {
                    "finalizers": [*finalizers, FINALIZER],
                    "resourceVersion": meta.get("resourceVersion"),
                }
            },
            namespace=str(meta.get("namespace")),
        )

    async def _finalize(self, obj: JSONObject) -> tuple[str, float | None]:
        meta = _meta(obj)
        namespace, name = str(meta.get("namespace")), str(meta["name"])
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return "ok", None
        waiting: list[str] = []
        claim = self._claim(namespace, name)
        if claim is not None and _labels(claim).get(LABEL_DATASET) == name:
            if not _meta(claim).get("deletionTimestamp"):
                await self.kube.delete(PERSISTENT_VOLUME_CLAIM, name, namespace)
            waiting.append(f"PersistentVolumeClaim {namespace}/{name} (pods may still use it)")
        else:
            for pv in self._volumes(namespace, name):
                if not _meta(pv).get("deletionTimestamp"):
                    await self.kube.delete(PERSISTENT_VOLUME, str(_meta(pv)["name"]))
                waiting.append(f"PersistentVolume {_meta(pv)['name']}")
        for report in self._reports(namespace, name):
            await self.kube.delete(CACHE_REPORT, str(_meta(report)["name"]), namespace)
            waiting.append(f"CacheReport {_meta(report)['name']}")
        if waiting:
            message = f"Dataset {name} is being deleted; waiting for: {', '.join(waiting)}"
            status = dict(obj.get("status") or {})
            status["conditions"] = set_condition(
                status.get("conditions"),
                type_="Ready",
                status="False",
                reason="Deleting",
                message=message,
                generation=int(meta.get("generation") or 0),
                now=now_rfc3339(),
            )
            await self._write_status(obj, status)
            return "ok", self.recheck_seconds
        await self.kube.patch(
            DATASET,
            name,
            {
                "metadata": {
                    "finalizers": [f for f in finalizers if f != FINALIZER],
                    "resourceVersion": meta.get("resourceVersion"),
                }
            },
            namespace=namespace,
        )
        self.cluster.lister.forget((namespace, name))
        return "ok", None

    async def _create(self, kind: Any, obj: JSONObject) -> None:
        try:
            await self.kube.create(kind, obj)
        except KubeError as exc:
            if exc.status != 409:  # already there: our cache was behind
                raise

    async def _ensure_volumes(self, obj: JSONObject, checked: Checked) -> VolumeState:
        placement = Placement(obj)
        namespace, name = placement.namespace, placement.name
        volumes = self._volumes(namespace, name)
        if not any(_meta(pv).get("name") == placement.volume_name for pv in volumes):
            await self._create(PERSISTENT_VOLUME, desired_volume(placement))
        claim = self._claim(namespace, name)
        pool = ", ".join(checked.dataset.nodepools) or "the selected nodes"
        where = f"PersistentVolumeClaim {namespace}/{name}"
        if claim is not None and _labels(claim).get(LABEL_DATASET) != name:
            raise Problem(
                "ClaimConflict",
                f"Dataset {name}: {where} exists and is not managed by edgecache (no label "
                f"{LABEL_DATASET}); delete it or give the Dataset another name",
            )
        if claim is None:
            try:
                await self.kube.create(PERSISTENT_VOLUME_CLAIM, desired_claim(placement))
            except KubeError as exc:
                if exc.status != 409:
                    raise
                # Ours would be in the cache (it watches our label): this one may not be ours.
                claim = await self.kube.get(PERSISTENT_VOLUME_CLAIM, name, namespace)
        if claim is not None and _labels(claim).get(LABEL_DATASET) != name:
            raise Problem(
                "ClaimConflict",
                f"Dataset {name}: {where} exists and is not managed by edgecache (no label "
                f"{LABEL_DATASET}); delete it or give the Dataset another name",
            )
        bound_to = str(((claim or {}).get("spec") or {}).get("volumeName") or "")
        if claim is None:
            state = (
                "NotBound",
                "WaitingForBinding",
                f"{where} created; waiting for it to bind to PersistentVolume "
                f"{placement.volume_name}",
            )
        elif bound_to != placement.volume_name:
            if not _meta(claim).get("deletionTimestamp"):
                await self.kube.delete(PERSISTENT_VOLUME_CLAIM, name, namespace)
            state = (
                "NotBound",
                "VolumeMoving",
                f"the node affinity changed: {where} (bound to PersistentVolume "
                f"{bound_to}) is replaced by one bound to {placement.volume_name}; pods "
                "still using the old claim keep it until they end",
            )
        elif _meta(claim).get("deletionTimestamp"):
            state = (
                "NotBound",
                "ClaimTerminating",
                f"{where} is being deleted (pods still use it); it is created again "
                "once it is gone",
            )
        elif ((claim.get("status") or {}).get("phase")) == "Bound":
            state = (
                "Bound",
                "Bound",
                f"{where} is bound to PersistentVolume {placement.volume_name}, pinned "
                f"to {pool} ({len(checked.pool)} node(s))",
            )
        else:
            phase = (claim.get("status") or {}).get("phase") or "Pending"
            state = (
                "NotBound",
                "WaitingForBinding",
                f"{where} is {phase}; waiting for it to bind to PersistentVolume "
                f"{placement.volume_name}",
            )
        previous = []
        for pv in volumes:
            pv_name = str(_meta(pv).get("name"))
            if pv_name in (placement.volume_name, bound_to):
                if pv_name == bound_to and pv_name != placement.volume_name:
                    previous.append(pv_name)
                continue
            if not _meta(pv).get("deletionTimestamp"):
                await self.kube.delete(PERSISTENT_VOLUME, pv_name)
        volume: JSONObject = {
            "persistentVolumeName": placement.volume_name,
            "persistentVolumeClaimName": name,
        }
        if previous:
            volume["previousVolumeNames"] = previous
        return VolumeState(*state, volume=volume)

    # --- status -----------------------------------------------------------------------------
    def _problem_status(self, obj: JSONObject, problem: Problem) -> JSONObject:
        current = obj.get("status") or {}
        status = {k: v for k, v in current.items() if k not in ("phase", "observedGeneration")}
        generation = int(_meta(obj).get("generation") or 0)
        status["phase"] = problem.phase
        status["observedGeneration"] = generation
        status["conditions"] = set_condition(
            current.get("conditions"),
            type_="Ready",
            status="False",
            reason=problem.reason,
            message=problem.message,
            generation=generation,
            now=now_rfc3339(),
        )
        return status

    def _status(self, obj: JSONObject, checked: Checked, state: VolumeState) -> JSONObject:
        meta = _meta(obj)
        key = (str(meta.get("namespace")), str(meta["name"]))
        generation = int(meta.get("generation") or 0)
        now = now_rfc3339()
        current = obj.get("status") or {}
        status: JSONObject = {
            "phase": state.phase,
            "observedGeneration": generation,
            "nodepool": ",".join(checked.dataset.nodepools),
            "volume": state.volume,
        }
        conditions = set_condition(
            current.get("conditions"),
            type_="Ready",
            status="True" if state.phase == "Bound" else "False",
            reason=state.reason,
            message=state.message,
            generation=generation,
            now=now,
        )
        listing = self.cluster.lister.result(key, checked.dataset)
        total: int | None = None
        if listing is not None and not listing.error:
            total = listing.total_bytes
            status["ufsTotal"] = fluid_bytes(listing.total_bytes)
            status["ufsTotalBytes"] = listing.total_bytes
            status["fileNum"] = str(listing.files)
        elif "ufsTotalBytes" in current:  # keep the last good numbers while a listing fails
            total = int(current["ufsTotalBytes"])
            for name in ("ufsTotal", "ufsTotalBytes", "fileNum"):
                if name in current:
                    status[name] = current[name]
        if listing is not None:
            conditions = set_condition(
                conditions,
                type_="UFSListed",
                status="False" if listing.error else "True",
                reason="ListFailed" if listing.error else "Listed",
                message=(
                    f"listing the mounts failed: {listing.error}"
                    if listing.error
                    else f"{listing.files} files, {listing.total_bytes} bytes"
                ),
                generation=generation,
                now=now,
            )
        status["conditions"] = conditions
        summary = summarise_cache(
            key[1],
            str(meta.get("uid") or ""),
            checked.pool,
            self._reports(*key),
        )
        status["cacheStates"] = summary.cache_states(total)
        status["cache"] = summary.status()
        return status

    async def _write_status(self, obj: JSONObject, status: JSONObject) -> None:
        patch = status_patch(obj.get("status") or {}, status)
        if not patch:
            return
        meta = _meta(obj)
        await self.kube.patch(
            DATASET,
            str(meta["name"]),
            {"status": patch},
            namespace=str(meta.get("namespace")),
            subresource="status",
        )

    async def _runtime_status(self, runtime: JSONObject | None, problem: Problem | None) -> None:
        if runtime is None:
            return
        if problem is not None and problem.reason != "InvalidRuntime":
            return  # the runtime itself is fine; the Dataset says what is wrong
        if problem is None:
            try:
                check_runtime(runtime)
            except Problem as exc:
                problem = exc
        meta = _meta(runtime)
        generation = int(meta.get("generation") or 0)
        current = runtime.get("status") or {}
        status = {
            "observedGeneration": generation,
            "conditions": set_condition(
                current.get("conditions"),
                type_="Ready",
                status="False" if problem else "True",
                reason=problem.reason if problem else "Valid",
                message=problem.message if problem else "the tiered store is valid",
                generation=generation,
                now=now_rfc3339(),
            ),
        }
        patch = status_patch(current, status)
        if not patch:
            return
        try:
            await self.kube.patch(
                RUNTIME,
                str(meta["name"]),
                {"status": patch},
                namespace=str(meta.get("namespace")),
                subresource="status",
            )
        except KubeError as exc:
            # An object stored before its CRD's schema tightened may refuse any write (422):
            # the Dataset's condition still says what is wrong.
            if exc.status != 422:
                raise
            log.info("cannot write the status of EdgeCacheRuntime %s: %s", meta["name"], exc)
