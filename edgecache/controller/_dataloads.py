"""Reconciling one DataLoad: start runs (once, or on its cron schedule), sum the agents' progress.

The controller does not load anything: the agents of the Dataset's pool do, for the run number
the controller writes in ``status.run``. A run starts when the Dataset is Bound (``Once``: run 1;
``Cron``: one run per schedule slot, UTC; a slot that comes while a run is still loading is
skipped, as a CronJob with ``concurrencyPolicy: Forbid``). The agents report each run's progress
in their CacheReports; :func:`~edgecache.controller._status.summarise_load` turns the pool's
reports into the phase (Pending -> Loading -> Complete or Failed), progress and failed paths.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cronsim import CronSim, CronSimError

from edgecache.controller._datasets import now_rfc3339
from edgecache.controller._status import LoadSummary, set_condition, summarise_load
from edgecache.dataset import DataLoad, Dataset, SpecError, parse_resource
from edgecache.k8s.api import status_patch
from edgecache.k8s.nodes import matching_nodes
from edgecache.k8s.objects import DATALOAD

if TYPE_CHECKING:
    from edgecache.controller._controller import Cluster

__all__ = ["DataLoadReconciler"]

JSONObject = dict[str, Any]
Key = tuple[str, str]
_TIME = "%Y-%m-%dT%H:%M:%SZ"


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, _TIME).replace(tzinfo=UTC)
    except ValueError:
        return None


class DataLoadReconciler:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.kube = cluster.kube

    async def reconcile(self, key: Key) -> tuple[str, float | None]:
        obj = self.cluster.dataloads.cache.get(key)
        if obj is None or _meta(obj).get("deletionTimestamp"):
            return "ok", None
        meta = _meta(obj)
        generation = int(meta.get("generation") or 0)
        current = obj.get("status") or {}
        status: JSONObject = {k: v for k, v in current.items()}
        status["observedGeneration"] = generation
        status.setdefault("run", 0)
        try:
            load = parse_resource(obj)
            assert isinstance(load, DataLoad)
            schedule = self._schedule(load)
        except SpecError as exc:
            status["phase"] = "Failed"
            self._condition(status, "False", "InvalidSpec", str(exc), generation)
            await self._write(obj, status)
            return "invalid", None
        dataset_obj = self.cluster.datasets.cache.get((load.dataset_namespace, load.dataset))
        where = f"Dataset {load.dataset_namespace}/{load.dataset}"
        if dataset_obj is None or (dataset_obj.get("status") or {}).get("phase") != "Bound":
            if status["run"] == 0:
                status["phase"] = "Pending"
            phase = (dataset_obj or {}).get("status", {}).get("phase") or "not created"
            message = (
                f"{where} does not exist"
                if dataset_obj is None
                else f"waiting for {where} to be Bound (it is {phase})"
            )
            self._condition(status, "False", "DatasetNotBound", message, generation)
            await self._write(obj, status)
            return "ok", None
        dataset = parse_resource(dataset_obj)
        assert isinstance(dataset, Dataset)
        pool = matching_nodes(dataset.node_selector_terms, self.cluster.nodes.objects())
        now = datetime.now(UTC)
        requeue: float | None = None
        if load.policy == "Once":
            if status["run"] == 0:
                status["run"] = 1
                status["startTime"] = now_rfc3339()
        else:
            assert schedule is not None
            last = _parse_time(status.get("lastScheduleTime")) or _parse_time(
                meta.get("creationTimestamp")
            )
            slot = next(CronSim(schedule, last or now))
            if slot <= now:
                status["lastScheduleTime"] = slot.strftime(_TIME)
                running = self._summary(load, obj, dataset_obj, int(status["run"]), pool)
                if status["run"] == 0 or running.phase in ("Complete", "Failed"):
                    status["run"] = int(status["run"]) + 1
                    status["startTime"] = now_rfc3339()
                    status.pop("completionTime", None)
                slot = next(CronSim(schedule, max(slot, now)))
            status["nextScheduleTime"] = slot.strftime(_TIME)
            requeue = max(0.5, (slot - now).total_seconds())
        if status["run"] == 0:
            status["phase"] = "Pending"
            message = f"first run at {status['nextScheduleTime']}"
            self._condition(status, "False", "Scheduled", message, generation)
            await self._write(obj, status)
            return "ok", requeue
        summary = self._summary(load, obj, dataset_obj, int(status["run"]), pool)
        status.update(summary.status())
        if summary.phase in ("Complete", "Failed"):
            status.setdefault("completionTime", now_rfc3339())
        else:
            status.pop("completionTime", None)
        failed = summary.total("files_total") and summary.failed_paths
        message = (
            f"run {status['run']}: {summary.phase} on {len(pool)} node(s) of {where}, "
            f"{summary.total('files_done')}/{summary.total('files_total')} files, "
            f"{summary.total('bytes_done')}/{summary.total('bytes_total')} bytes"
            + (f", {len(summary.failed_paths)} failed path(s)" if failed else "")
        )
        self._condition(
            status,
            "False" if summary.phase == "Failed" else "True",
            summary.phase,
            message,
            generation,
        )
        await self._write(obj, status)
        return "ok", requeue

    def _schedule(self, load: DataLoad) -> str | None:
        if load.policy != "Cron":
            return None
        try:
            CronSim(load.schedule, datetime.now(UTC))
        except CronSimError as exc:
            raise SpecError(
                f"DataLoad {load.name}: spec.schedule: {load.schedule!r} is not a valid cron "
                f"expression ({exc}); e.g. '0 6 * * *' (minute hour day month weekday, UTC)"
            ) from exc
        return load.schedule

    def _summary(
        self, load: DataLoad, obj: JSONObject, dataset_obj: JSONObject, run: int, pool: list[str]
    ) -> LoadSummary:
        reports = [
            report
            for (ns, _), report in self.cluster.reports.cache.items()
            if ns == load.dataset_namespace
        ]
        return summarise_load(
            dataload=load.name,
            dataload_uid=str(_meta(obj).get("uid") or ""),
            run=run,
            dataset=load.dataset,
            dataset_uid=str(_meta(dataset_obj).get("uid") or ""),
            pool=pool,
            reports=reports,
        )

    def _condition(
        self, status: JSONObject, value: str, reason: str, message: str, generation: int
    ) -> None:
        status["conditions"] = set_condition(
            status.get("conditions"),
            type_="Ready",
            status=value,
            reason=reason,
            message=message,
            generation=generation,
            now=now_rfc3339(),
        )

    async def _write(self, obj: JSONObject, status: JSONObject) -> None:
        patch = status_patch(obj.get("status") or {}, status)
        if not patch:
            return
        meta = _meta(obj)
        await self.kube.patch(
            DATALOAD,
            str(meta["name"]),
            {"status": patch},
            namespace=str(meta.get("namespace")),
            subresource="status",
        )
