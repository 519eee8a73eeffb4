"""DataLoads: runs start once the Dataset is Bound; the agents' per-run progress is summed
exactly over the pool; failed paths are kept; bad schedules get a condition."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.kubeapi.fixtures import run_kubectl

from edgecache.controller import Controller
from edgecache.k8s.objects import API_VERSION

from .conftest import cache_report, condition, dataset, eventually, get, runtime

JSONObject = dict[str, Any]


def dataload(name: str, dataset_name: str, **spec: Any) -> JSONObject:
    return {
        "apiVersion": API_VERSION,
        "kind": "DataLoad",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"dataset": {"name": dataset_name, "namespace": "default"}, **spec},
    }


def load_status(api: KubeAPIServer, name: str) -> JSONObject:
    return get(api, "DataLoad", name).get("status") or {}


def put_progress(
    api: KubeAPIServer, ds: JSONObject, node: str, load: JSONObject, **entry: Any
) -> None:
    """What an agent does: (re)write its report with this run's progress."""
    report = cache_report(
        ds,
        node,
        dataLoads=[
            {"name": load["metadata"]["name"], "uid": load["metadata"]["uid"], "run": 1, **entry}
        ],
    )
    api.put({**report, "metadata": {**report["metadata"]}})


async def test_a_load_goes_pending_loading_complete_with_exact_progress(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    load = cluster.create(dataload("warm", "imgs", target=[{"path": "/train"}], pin=True))
    pending = await eventually(lambda: load_status(cluster, "warm").get("phase"))
    assert pending == "Pending"
    assert (
        "Dataset default/imgs does not exist"
        in condition(get(cluster, "DataLoad", "warm"))["message"]
    )  # type: ignore[index]
    cluster.create(dataset("imgs", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("imgs"))
    await eventually(lambda: load_status(cluster, "warm").get("run") == 1, what="run 1 started")
    ds = get(cluster, "Dataset", "imgs")
    assert ds["status"]["phase"] == "Bound"
    status = load_status(cluster, "warm")
    assert status["phase"] == "Pending" and status["progress"] == "0.0%"

    put_progress(
        cluster,
        ds,
        "a1",
        load,
        phase="Loading",
        filesTotal=10,
        filesDone=4,
        bytesTotal=1000,
        bytesDone=300,
    )
    status = await eventually(
        lambda: (s := load_status(cluster, "warm")).get("phase") == "Loading" and s
    )
    assert status["progress"] == "30.0%"  # a2 has not reported: it counts as nothing done
    put_progress(
        cluster,
        ds,
        "a2",
        load,
        phase="Loading",
        filesTotal=10,
        filesDone=10,
        bytesTotal=1000,
        bytesDone=1000,
    )
    status = await eventually(
        lambda: (s := load_status(cluster, "warm")).get("bytesDone") == 1300 and s
    )
    assert (status["filesTotal"], status["filesDone"]) == (20, 14)
    assert (status["bytesTotal"], status["bytesDone"]) == (2000, 1300)
    assert status["progress"] == "65.0%"
    out = await asyncio.to_thread(run_kubectl, cluster.url, "get", "dataloads")
    header, row = out.stdout.splitlines()
    assert header.split() == ["NAME", "DATASET", "PHASE", "PROGRESS", "AGE"]
    assert row.split()[:-1] == ["warm", "imgs", "Loading", "65.0%"]
    assert [n["nodeName"] for n in status["nodes"]] == ["a1", "a2"]
    put_progress(
        cluster,
        ds,
        "a1",
        load,
        phase="Complete",
        filesTotal=10,
        filesDone=10,
        bytesTotal=1000,
        bytesDone=1000,
    )
    put_progress(
        cluster,
        ds,
        "a2",
        load,
        phase="Complete",
        filesTotal=10,
        filesDone=10,
        bytesTotal=1000,
        bytesDone=1000,
    )
    status = await eventually(
        lambda: (s := load_status(cluster, "warm")).get("phase") == "Complete" and s
    )
    assert status["progress"] == "100.0%" and status["completionTime"]
    assert status["failedPaths"] == []
    # A report from a run that is not the current one is not counted.
    stale = cache_report(ds, "a1", dataLoads=[{"name": "warm", "run": 7, "phase": "Failed"}])
    cluster.put(stale)
    await eventually(lambda: load_status(cluster, "warm")["nodes"][0]["phase"] == "Pending")
    assert load_status(cluster, "warm")["phase"] == "Loading"


async def test_failed_paths_make_the_load_failed_and_are_listed(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    cluster.create(dataset("imgs", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("imgs"))
    load = cluster.create(dataload("warm", "imgs"))
    await eventually(lambda: load_status(cluster, "warm").get("run") == 1)
    ds = get(cluster, "Dataset", "imgs")
    put_progress(
        cluster,
        ds,
        "a1",
        load,
        phase="Failed",
        filesTotal=3,
        filesDone=2,
        bytesTotal=30,
        bytesDone=20,
        failedPaths=["/b.jpg"],
    )
    put_progress(
        cluster,
        ds,
        "a2",
        load,
        phase="Failed",
        filesTotal=3,
        filesDone=1,
        bytesTotal=30,
        bytesDone=10,
        failedPaths=["/c.jpg", "/b.jpg"],
    )
    status = await eventually(
        lambda: (s := load_status(cluster, "warm")).get("phase") == "Failed" and s
    )
    assert status["failedPaths"] == ["/b.jpg", "/c.jpg"]
    assert status["progress"] == "50.0%"
    ready = condition(get(cluster, "DataLoad", "warm"))
    assert (
        ready is not None and ready["status"] == "False" and "2 failed path(s)" in ready["message"]
    )


async def test_cron_loads_are_scheduled_and_bad_schedules_are_reported(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    cluster.create(dataset("imgs", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("imgs"))
    cluster.create(dataload("nightly", "imgs", policy="Cron", schedule="0 3 * * *"))
    cluster.create(dataload("broken", "imgs", policy="Cron", schedule="61 * * * *"))
    status = await eventually(
        lambda: (s := load_status(cluster, "nightly")).get("nextScheduleTime") and s
    )
    assert status["nextScheduleTime"].endswith("T03:00:00Z")
    assert status["run"] == 0 and status["phase"] == "Pending"
    broken = await eventually(lambda: condition(get(cluster, "DataLoad", "broken")))
    assert broken["reason"] == "InvalidSpec"
    assert broken["message"].startswith(
        "DataLoad broken: spec.schedule: '61 * * * *' is not a valid cron expression"
    )
    assert load_status(cluster, "broken")["phase"] == "Failed"
