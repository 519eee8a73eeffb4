"""Status numbers from the agents' CacheReports: exact sums, then Fluid's display strings.

Pure functions over plain objects; the reconcilers call them and write what they return.

Definitions (docs/controller.md repeats them for users):

- the pool is the set of nodes the Dataset's affinity selects now; a report counts when its name
  is ``report_name(dataset, node)`` for a pool node and its ``datasetUID`` (if given) is the
  Dataset's; a pool node without a report counts as zero;
- ``cached``, ``cacheCapacity``, hits and misses: sums over the pool's reports;
- ``cachedPercentage`` = cached / (ufsTotal x pool nodes): every node of the pool holds its own
  view, so 100% means every node holds all of the data;
- ``cacheHitRatio`` = hits / (hits + misses);
- a DataLoad run is Pending until a pool node reports it, Loading while any pool node has not
  finished it, then Failed if any node failed, else Complete; its progress is bytes done over
  bytes total summed over the pool (files when no bytes are known).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgecache.k8s.objects import report_name

__all__ = [
    "MAX_FAILED_PATHS",
    "CacheSummary",
    "LoadSummary",
    "NodeCache",
    "NodeLoad",
    "fluid_bytes",
    "percent",
    "set_condition",
    "summarise_cache",
    "summarise_load",
]

JSONObject = dict[str, Any]
MAX_FAILED_PATHS = 100
"""Failed paths kept in a DataLoad's status (objects have a size limit); the count is exact."""
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def fluid_bytes(size: int) -> str:
    """``52.18MiB``: Fluid's size format (go-units ``BytesSize``: 4 significant digits)."""
    value = float(size)
    unit = 0
    while value >= 1024 and unit < len(_BINARY_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{value:.4g}{_BINARY_UNITS[unit]}"


def percent(part: float, whole: float) -> str:
    """``12.5%`` (Fluid's one decimal); 0 of 0 is ``0.0%``."""
    return f"{(100.0 * part / whole) if whole else 0.0:.1f}%"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def _reports_by_node(
    dataset: str, dataset_uid: str, pool: Sequence[str], reports: Iterable[Mapping[str, Any]]
) -> dict[str, Mapping[str, Any]]:
    wanted = {report_name(dataset, node): node for node in pool}
    out: dict[str, Mapping[str, Any]] = {}
    for report in reports:
        node = wanted.get(str((report.get("metadata") or {}).get("name", "")))
        spec = report.get("spec") or {}
        if node is None or spec.get("dataset") != dataset or spec.get("nodeName") != node:
            continue
        uid = spec.get("datasetUID")
        if uid and dataset_uid and uid != dataset_uid:
            continue  # a report about an earlier Dataset of the same name
        out[node] = spec
    return out


@dataclass(frozen=True)
class NodeCache:
    node: str
    reported: bool
    cached_bytes: int = 0
    capacity_bytes: int = 0
    hits: int = 0
    misses: int = 0
    view_ready: bool = False
    report_time: str = ""

    def status(self) -> JSONObject:
        out: JSONObject = {
            "nodeName": self.node,
            "reported": self.reported,
            "cachedBytes": self.cached_bytes,
            "capacityBytes": self.capacity_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "viewReady": self.view_ready,
        }
        if self.report_time:
            out["reportTime"] = self.report_time
        return out


@dataclass(frozen=True)
class CacheSummary:
    nodes: tuple[NodeCache, ...]

    @property
    def cached_bytes(self) -> int:
        return sum(n.cached_bytes for n in self.nodes)

    @property
    def capacity_bytes(self) -> int:
        return sum(n.capacity_bytes for n in self.nodes)

    @property
    def hits(self) -> int:
        return sum(n.hits for n in self.nodes)

    @property
    def misses(self) -> int:
        return sum(n.misses for n in self.nodes)

    def cache_states(self, ufs_total_bytes: int | None) -> JSONObject:
        """Fluid's ``status.cacheStates``."""
        states: JSONObject = {
            "cached": fluid_bytes(self.cached_bytes),
            "cacheCapacity": fluid_bytes(self.capacity_bytes),
            "cacheHitRatio": percent(self.hits, self.hits + self.misses),
        }
        if ufs_total_bytes is not None:
            states["cachedPercentage"] = percent(
                self.cached_bytes, ufs_total_bytes * len(self.nodes)
            )
        return states

    def status(self) -> JSONObject:
        """The exact numbers (``status.cache``)."""
        return {
            "cachedBytes": self.cached_bytes,
            "capacityBytes": self.capacity_bytes,
            "hits": self.hits,
            "misses": self.misses,
            "nodes": [n.status() for n in self.nodes],
        }


def summarise_cache(
    dataset: str, dataset_uid: str, pool: Sequence[str], reports: Iterable[Mapping[str, Any]]
) -> CacheSummary:
    """The pool's cache state for one Dataset, from the reports of its namespace."""
    by_node = _reports_by_node(dataset, dataset_uid, pool, reports)
    nodes = []
    for node in sorted(pool):
        spec = by_node.get(node)
        if spec is None:
            nodes.append(NodeCache(node, reported=False))
            continue
        cache = spec.get("cache") or {}
        nodes.append(
            NodeCache(
                node,
                reported=True,
                cached_bytes=_int(cache.get("cachedBytes")),
                capacity_bytes=_int(cache.get("capacityBytes")),
                hits=_int(cache.get("hits")),
                misses=_int(cache.get("misses")),
                view_ready=(spec.get("view") or {}).get("ready") is True,
                report_time=str(spec.get("reportTime") or ""),
            )
        )
    return CacheSummary(tuple(nodes))


@dataclass(frozen=True)
class NodeLoad:
    node: str
    phase: str  # Pending (not reported), Loading, Complete, Failed
    files_total: int = 0
    files_done: int = 0
    bytes_total: int = 0
    bytes_done: int = 0
    failed_paths: tuple[str, ...] = ()

    def status(self) -> JSONObject:
        return {
            "nodeName": self.node,
            "phase": self.phase,
            "filesTotal": self.files_total,
            "filesDone": self.files_done,
            "bytesTotal": self.bytes_total,
            "bytesDone": self.bytes_done,
            "failedPaths": list(self.failed_paths[:MAX_FAILED_PATHS]),
        }


@dataclass(frozen=True)
class LoadSummary:
    nodes: tuple[NodeLoad, ...]
    failed_paths: tuple[str, ...] = field(default=())

    @property
    def phase(self) -> str:
        phases = {n.phase for n in self.nodes}
        if not self.nodes or phases == {"Pending"}:
            return "Pending"
        if phases & {"Pending", "Loading"}:
            return "Loading"
        return "Failed" if "Failed" in phases else "Complete"

    def total(self, what: str) -> int:
        return sum(getattr(n, what) for n in self.nodes)

    @property
    def progress(self) -> str:
        if self.phase == "Complete":
            return "100.0%"
        bytes_total = self.total("bytes_total")
        if bytes_total:
            return percent(self.total("bytes_done"), bytes_total)
        return percent(self.total("files_done"), self.total("files_total"))

    def status(self) -> JSONObject:
        return {
            "phase": self.phase,
            "progress": self.progress,
            "filesTotal": self.total("files_total"),
            "filesDone": self.total("files_done"),
            "bytesTotal": self.total("bytes_total"),
            "bytesDone": self.total("bytes_done"),
            "failedPaths": list(self.failed_paths[:MAX_FAILED_PATHS]),
            "nodes": [n.status() for n in self.nodes],
        }


def summarise_load(
    *,
    dataload: str,
    dataload_uid: str,
    run: int,
    dataset: str,
    dataset_uid: str,
    pool: Sequence[str],
    reports: Iterable[Mapping[str, Any]],
) -> LoadSummary:
    """Progress of run ``run`` of a DataLoad over the pool of its Dataset."""
    by_node = _reports_by_node(dataset, dataset_uid, pool, reports)
    nodes = []
    failed: set[str] = set()
    for node in sorted(pool):
        entry: Mapping[str, Any] | None = None
        for item in (by_node.get(node) or {}).get("dataLoads") or []:
            if not isinstance(item, Mapping) or item.get("name") != dataload:
                continue
            if item.get("uid") and dataload_uid and item.get("uid") != dataload_uid:
                continue
            if item.get("run") == run:
                entry = item
        if entry is None:
            nodes.append(NodeLoad(node, "Pending"))
            continue
        paths = tuple(sorted({str(p) for p in entry.get("failedPaths") or []}))
        failed.update(paths)
        phase = entry.get("phase")
        nodes.append(
            NodeLoad(
                node,
                phase if phase in ("Loading", "Complete", "Failed") else "Loading",
                files_total=_int(entry.get("filesTotal")),
                files_done=_int(entry.get("filesDone")),
                bytes_total=_int(entry.get("bytesTotal")),
                bytes_done=_int(entry.get("bytesDone")),
                failed_paths=paths,
            )
        )
    return LoadSummary(tuple(nodes), tuple(sorted(failed)))


def set_condition(
    conditions: Sequence[Mapping[str, Any]] | None,
    *,
    type_: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[JSONObject]:
    """``conditions`` with ``type_`` set; its ``lastTransitionTime`` moves only when the
    status changes (so an unchanged verdict writes nothing)."""
    out: list[JSONObject] = []
    previous: Mapping[str, Any] | None = None
    for condition in conditions or []:
        if condition.get("type") == type_:
            previous = condition
        else:
            out.append(dict(condition))
    transition = now
    if previous is not None and previous.get("status") == status:
        transition = str(previous.get("lastTransitionTime") or now)
    out.append(
        {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": message,
            "lastTransitionTime": transition,
            "observedGeneration": generation,
        }
    )
    out.sort(key=lambda c: (c.get("type") != "Ready", str(c.get("type"))))
    return out
