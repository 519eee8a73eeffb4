"""DataLoad runs on this node: the controller says which run (``status.run``), the agent loads.

Place in the flow::

    DataLoad (spec.dataset = a Dataset placed here, status.run = N, not yet done here)
      -> target paths -> the view's files under them (from the view's last listing)
      -> files the view holds at their current version: done already (nothing fetched)
      -> the rest: edgecache.fs.prefetch (the prefetch library: N workers, block queue,
         progress) into the node's block cache, then materialised into the view from there
      -> an entry of the report's ``dataLoads``: run, phase, files/bytes total and done,
         failedPaths (paths inside the dataset)

A run's entry is kept in the view's manifest, so a finished run is not run again after a
restart, and an interrupted one (SIGKILL) is run again: what it had loaded is in the cache or
the view already and is not fetched twice.
"""

from __future__ import annotations

import logging
import posixpath
from collections.abc import Callable
from typing import Any

from edgecache.agent._view import DatasetView, SyncResult, WantedFile
from edgecache.dataset import DataLoad, Dataset
from edgecache.engine import ReadPlan
from edgecache.fs.prefetch import PrefetchProgress, prefetch

__all__ = ["pending_run", "run_dataload"]

log = logging.getLogger(__name__)
JSONObject = dict[str, Any]
_MAX_FAILED_PATHS = 100


def pending_run(obj: JSONObject, view: DatasetView) -> int | None:
    """The run of DataLoad ``obj`` this node has still to do, or None."""
    run = (obj.get("status") or {}).get("run")
    if not isinstance(run, int) or run < 1:
        return None
    uid = str((obj.get("metadata") or {}).get("uid") or "")
    done = view.loads.get(uid)
    if done is not None and done.get("run") == run and done.get("phase") in ("Complete", "Failed"):
        return None
    return run


def _under(relative: str, targets: list[str]) -> bool:
    path = "/" + relative
    return any(t == "/" or path == t or path.startswith(t.rstrip("/") + "/") for t in targets)


async def run_dataload(
    dataload: DataLoad,
    obj: JSONObject,
    run: int,
    view: DatasetView,
    dataset: Dataset,
    *,
    capacity_bytes: int,
    on_progress: Callable[[], None],
) -> JSONObject:
    """Run ``run`` of ``dataload`` into ``view``; returns (and records) its report entry."""
    meta = obj.get("metadata") or {}
    uid = str(meta.get("uid") or "")
    entry: JSONObject = {
        "name": dataload.name,
        "uid": uid,
        "run": run,
        "phase": "Loading",
        "filesTotal": 0,
        "filesDone": 0,
        "bytesTotal": 0,
        "bytesDone": 0,
        "failedPaths": [],
    }
    view.loads[uid] = entry
    targets = ["/" + t.strip("/") if t.strip("/") else "/" for t in dataload.targets]
    chosen = {r: w for r, w in view.wanted.items() if _under(r, targets)}
    failed: dict[str, str] = {}
    for target in targets:
        if target != "/" and not any(_under(r, [target]) for r in view.wanted):
            failed[target] = "not found in the dataset's mounts"
    entry["filesTotal"] = len(chosen)
    entry["bytesTotal"] = sum(view.plans[r].size for r in chosen)
    held = [r for r in chosen if view.holds(r, view.plans[r])]
    todo = [r for r in sorted(chosen) if r not in held]
    base_files, base_bytes = len(held), sum(view.plans[r].size for r in held)
    budget = capacity_bytes - view.cached_bytes
    fitting: list[str] = []
    for rel in todo:
        size = view.plans[rel].size - (view.files[rel].size if rel in view.files else 0)
        if size > budget:
            failed[rel] = f"does not fit in the dataset's quota of {capacity_bytes} bytes"
            continue
        budget -= size
        fitting.append(rel)

    def show(progress: PrefetchProgress) -> None:
        # Loaded into the node (cache), not in the view yet: counted as done once loaded.
        entry["filesDone"] = base_files + progress.files_done
        entry["bytesDone"] = base_bytes + progress.bytes_done
        on_progress()

    entry["filesDone"], entry["bytesDone"] = base_files, base_bytes
    on_progress()
    by_fs: dict[int, list[WantedFile]] = {}
    for rel in fitting:
        by_fs.setdefault(id(view.wanted[rel].source.fs), []).append(view.wanted[rel])
    for group in by_fs.values():
        fs = group[0].source.fs
        report = await prefetch(fs, [w.object_path for w in group], on_progress=show)
        back = {w.object_path: w.relative for w in group}
        for failure in report.failed:
            failed[back.get(failure.path, failure.path)] = failure.error
        base_files += report.files_done
        base_bytes += report.bytes_done
    items: list[tuple[WantedFile, ReadPlan]] = [
        (view.wanted[r], view.plans[r]) for r in fitting if r not in failed
    ]
    result = SyncResult()
    await view.materialise_many(items, result)
    failed.update(result.failed)
    done = [r for r in chosen if view.holds(r, view.plans[r])]
    entry["filesDone"] = len(done) + sum(1 for r in chosen if r in failed and r not in done)
    entry["bytesDone"] = sum(view.plans[r].size for r in done) + sum(
        view.plans[r].size for r in chosen if r in failed and r not in done
    )
    entry["failedPaths"] = sorted(posixpath.join("/", p) for p in failed)[:_MAX_FAILED_PATHS]
    entry["phase"] = "Failed" if failed else "Complete"
    log.info(
        "DataLoad %s/%s run %d on %s: %s (%d files, %d failed)",
        dataload.namespace,
        dataload.name,
        run,
        view,
        entry["phase"],
        len(chosen),
        len(failed),
    )
    view.save()
    on_progress()
    return entry
