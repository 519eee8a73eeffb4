"""The agent's CacheReports: what this node holds of each Dataset, queued until the API takes it.

Place in the flow::

    DatasetView + DataLoad runs --report_for()--> CacheReport <dataset>.<node> (docs/controller.md)
      --ReportSender.submit()--> latest report per Dataset, pending
      --sender loop--> GET, then POST (new) or PUT (with its resourceVersion)
                       failure (offline: the hub answers writes with 503; unreachable) ->
                       kept, tried again after ``report_retry_seconds``

Only the newest report of a Dataset is kept: the numbers are absolute (bytes held, cumulative
hits), so a report sent late replaces every one that was never sent. Writes of one Dataset are
at least ``report_interval_seconds`` apart while progress changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from edgecache.k8s.api import Kube, KubeError, KubeUnavailableError
from edgecache.k8s.objects import API_VERSION, CACHE_REPORT, DATASET, LABEL_DATASET, report_name
from edgecache.metrics import AGENT_API_ONLINE, AGENT_REPORT_WRITES, AGENT_REPORTS_PENDING

__all__ = ["ReportSender", "report_for"]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]
Key = tuple[str, str]


def report_for(
    *,
    namespace: str,
    dataset: str,
    dataset_uid: str,
    node: str,
    cache: JSONObject,
    view: JSONObject,
    data_loads: list[JSONObject],
) -> JSONObject:
    """The CacheReport object of ``node`` for one Dataset (the schema of docs/controller.md)."""
    metadata: JSONObject = {
        "name": report_name(dataset, node),
        "namespace": namespace,
        "labels": {LABEL_DATASET: dataset},
    }
    if dataset_uid:
        metadata["ownerReferences"] = [
            {"apiVersion": API_VERSION, "kind": DATASET.kind, "name": dataset, "uid": dataset_uid}
        ]
    return {
        "apiVersion": API_VERSION,
        "kind": CACHE_REPORT.kind,
        "metadata": metadata,
        "spec": {
            "dataset": dataset,
            "datasetUID": dataset_uid,
            "nodeName": node,
            "reportTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cache": cache,
            "view": view,
            "dataLoads": data_loads,
        },
    }


def _same(a: JSONObject, b: JSONObject) -> bool:
    """Equal but for the report time."""
    strip = {**a["spec"], "reportTime": ""}, {**b["spec"], "reportTime": ""}
    return strip[0] == strip[1] and a["metadata"] == b["metadata"]


class ReportSender:
    """Writes the newest report of each Dataset; keeps what fails until the API is back."""

    def __init__(
        self, kube: Kube, *, interval_seconds: float = 2.0, retry_seconds: float = 2.0
    ) -> None:
        self.kube = kube
        self.interval_seconds = interval_seconds
        self.retry_seconds = retry_seconds
        self.pending: dict[Key, JSONObject] = {}
        self._sent: dict[Key, JSONObject] = {}
        self._sent_at: dict[Key, float] = {}
        self._wake = asyncio.Event()
        self.sent_once = asyncio.Event()

    def submit(self, report: JSONObject) -> None:
        meta = report["metadata"]
        key = (meta["namespace"], meta["name"])
        last = self._sent.get(key)
        if last is not None and _same(last, report) and key not in self.pending:
            return
        self.pending[key] = report
        AGENT_REPORTS_PENDING.set(len(self.pending))
        self._wake.set()

    def forget(self, namespace: str, dataset: str, node: str) -> None:
        """The Dataset left this node: send nothing more for it (the controller deletes it)."""
        key = (namespace, report_name(dataset, node))
        self.pending.pop(key, None)
        self._sent.pop(key, None)
        AGENT_REPORTS_PENDING.set(len(self.pending))

    async def run(self) -> None:
        """Send pending reports until cancelled."""
        while True:
            delay = self.interval_seconds
            for key in list(self.pending):
                wait = self._sent_at.get(key, 0.0) + self.interval_seconds - time.monotonic()
                if wait > 0:
                    delay = min(delay, wait)
                    continue
                report = self.pending[key]
                try:
                    await self._write(report)
                except (KubeUnavailableError, KubeError) as exc:
                    if isinstance(exc, KubeError) and exc.status < 500 and exc.status != 429:
                        if exc.status != 409:  # 409: a concurrent write; the next one wins
                            log.warning("CacheReport %s/%s refused: %s", *key, exc)
                            self.pending.pop(key, None)
                    else:
                        AGENT_API_ONLINE.set(0)
                    AGENT_REPORT_WRITES.labels("retry").inc()
                    delay = min(delay, self.retry_seconds)
                    break  # the API is not taking writes now: try again after the delay
                AGENT_API_ONLINE.set(1)
                AGENT_REPORT_WRITES.labels("ok").inc()
                self._sent[key] = report
                self._sent_at[key] = time.monotonic()
                if self.pending.get(key) is report:
                    del self.pending[key]
                self.sent_once.set()
            AGENT_REPORTS_PENDING.set(len(self.pending))
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay if self.pending else None):
                    await self._wake.wait()

    async def _write(self, report: JSONObject) -> None:
        meta = report["metadata"]
        current = await self.kube.get(CACHE_REPORT, meta["name"], meta["namespace"])
        if current is None:
            await self.kube.create(CACHE_REPORT, report)
            return
        body = {
            **report,
            "metadata": {**meta, "resourceVersion": current["metadata"].get("resourceVersion")},
        }
        await self.kube.replace(CACHE_REPORT, body)
