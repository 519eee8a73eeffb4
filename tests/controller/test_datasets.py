"""Datasets against the API test server with a running controller: placement, moves, deletion,
status numbers from real listings and from agents' reports."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import yaml
from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.kubeapi.fixtures import run_kubectl

from edgecache.controller import Controller
from edgecache.controller._status import fluid_bytes
from edgecache.k8s.objects import CSI_DRIVER, FINALIZER, LABEL_DATASET, NODEPOOL_LABEL

from .conftest import (
    MANIFESTS,
    cache_report,
    condition,
    dataset,
    eventually,
    get,
    pool_affinity,
    runtime,
    volumes,
)

JSONObject = dict[str, Any]


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def phase(api: KubeAPIServer, name: str) -> str | None:
    return (get(api, "Dataset", name).get("status") or {}).get("phase")


def rewritten_seed_demo() -> list[JSONObject]:
    """The seed demo as a Fluid user rewrites it (apiVersion and the runtime kind only): the
    example in manifests/ (test_manifests checks it against the original)."""
    text = (MANIFESTS / "examples/openyurt-fluid-demo.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


async def test_seed_demo_gets_a_pv_and_pvc_pinned_to_its_pool(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    docs = rewritten_seed_demo()
    dataset_doc = next(d for d in docs if d["kind"] == "Dataset")
    pool = dataset_doc["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0][
        "matchExpressions"
    ][0]["values"][0]
    # The demo's OSS endpoint is a public one: point it at a closed local port so the listing
    # fails fast (and offline) while everything else is exercised as written.
    dataset_doc["spec"]["mounts"][0]["options"]["fs.oss.endpoint"] = "http://127.0.0.1:9"
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "edge-1", "labels": {NODEPOOL_LABEL: pool}},
        }
    )
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "mysecret", "namespace": "default"},
            "stringData": {"fs.oss.accessKeyId": "id", "fs.oss.accessKeySecret": "secret"},
        }
    )
    # As a user does it: kubectl apply of the file (Dataset, runtime and the ResNet pod).
    demo = tmp_path / "demo.yaml"
    demo.write_text(yaml.safe_dump_all(docs))
    await asyncio.to_thread(run_kubectl, cluster.url, "apply", "-f", str(demo))
    await eventually(lambda: phase(cluster, "images") == "Bound", what="Dataset images Bound")
    ds = get(cluster, "Dataset", "images")
    assert FINALIZER in ds["metadata"]["finalizers"]
    (pv,) = volumes(cluster)
    pvc = get(cluster, "PersistentVolumeClaim", "images")
    assert pv["spec"]["nodeAffinity"]["required"] == dataset_doc["spec"]["nodeAffinity"]["required"]
    assert pv["spec"]["csi"]["driver"] == CSI_DRIVER
    assert pv["spec"]["csi"]["volumeHandle"].startswith("default/images/")
    assert pv["spec"]["accessModes"] == ["ReadOnlyMany"] == pvc["spec"]["accessModes"]
    assert pv["spec"]["claimRef"]["name"] == "images"
    assert pvc["spec"]["volumeName"] == pv["metadata"]["name"]
    assert pvc["status"]["phase"] == "Bound" and pv["status"]["phase"] == "Bound"
    status = ds["status"]
    assert status["nodepool"] == pool
    assert condition(ds)["status"] == "True"  # type: ignore[index]
    assert status["cache"]["nodes"] == [
        {
            "nodeName": "edge-1",
            "reported": False,
            "cachedBytes": 0,
            "capacityBytes": 0,
            "hits": 0,
            "misses": 0,
            "viewReady": False,
        }
    ]
    listed = await eventually(lambda: condition(get(cluster, "Dataset", "images"), "UFSListed"))
    assert listed["status"] == "False" and "127.0.0.1:9" in listed["message"]
    # The pod of the demo mounts the claim by the Dataset's name.
    pod = next(d for d in docs if d["kind"] == "Pod")
    assert (
        pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]
    )


async def test_ufs_total_and_file_count_come_from_listing_the_mounts(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    files = {"a/1.jpg": b"x" * 1000, "a/2.jpg": b"y" * 2500, "b/c/3.bin": os.urandom(70_000)}
    make_tree(tmp_path / "data", files)
    cluster.create(dataset("imgs", f"file://{tmp_path / 'data'}"))
    cluster.create(runtime("imgs"))
    ds = await eventually(
        lambda: (d := get(cluster, "Dataset", "imgs")).get("status", {}).get("fileNum") and d
    )
    total = sum(len(v) for v in files.values())
    assert ds["status"]["fileNum"] == "3"
    assert ds["status"]["ufsTotalBytes"] == total
    assert ds["status"]["ufsTotal"] == fluid_bytes(total) == "71.78KiB"
    assert condition(ds, "UFSListed")["message"] == f"3 files, {total} bytes"  # type: ignore[index]


async def test_status_sums_the_pool_reports_exactly(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    make_tree(tmp_path / "d", {"f": b"z" * 4096})
    cluster.create(dataset("sums", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("sums"))
    await eventually(lambda: phase(cluster, "sums") == "Bound")
    ds = get(cluster, "Dataset", "sums")
    reports = {
        "a1": {"cachedBytes": 4096, "capacityBytes": 10 * 2**30, "hits": 30, "misses": 10},
        "a2": {"cachedBytes": 1024, "capacityBytes": 5 * 2**30, "hits": 7, "misses": 53},
    }
    for node, cache in reports.items():
        cluster.create(cache_report(ds, node, cache=cache, view={"ready": node == "a1"}))
    # Not counted: a node of another pool, and a report about an earlier Dataset of that name.
    cluster.create(cache_report(ds, "b1", cache={"cachedBytes": 999, "hits": 999}))
    stale = cache_report(ds, "a2", uid="0000-old")
    stale["metadata"]["name"] = "sums.a2-old"
    cluster.create(stale)

    def summed() -> JSONObject | None:
        status = get(cluster, "Dataset", "sums").get("status") or {}
        cache = status.get("cache") or {}
        return status if cache.get("hits") == 37 and status.get("ufsTotalBytes") else None

    status = await eventually(summed, what="reports summed")
    cached, capacity, hits, misses = 4096 + 1024, 15 * 2**30, 30 + 7, 10 + 53
    assert status["cache"]["cachedBytes"] == cached
    assert status["cache"]["capacityBytes"] == capacity
    assert status["cache"]["misses"] == misses
    assert status["cacheStates"] == {
        "cached": fluid_bytes(cached),
        "cacheCapacity": "15GiB",
        "cachedPercentage": f"{100 * cached / (4096 * 2):.1f}%",  # 2 pool nodes x 4096 bytes
        "cacheHitRatio": f"{100 * hits / (hits + misses):.1f}%",
    }
    assert status["cacheStates"]["cachedPercentage"] == "62.5%"
    assert status["cacheStates"]["cacheHitRatio"] == "37.0%"
    by_node = {n["nodeName"]: n for n in status["cache"]["nodes"]}
    assert set(by_node) == {"a1", "a2"}
    assert by_node["a1"]["viewReady"] is True and by_node["a2"]["viewReady"] is False
    # A report changes: the status follows.
    cluster.patch(
        "data.edgecache.io/v1alpha1",
        "CacheReport",
        "sums.a2",
        {"spec": {"cache": {"cachedBytes": 4096}}},
        "default",
    )
    await eventually(
        lambda: (
            get(cluster, "Dataset", "sums")["status"]["cacheStates"]["cachedPercentage"] == "100.0%"
        )
    )


async def test_affinity_change_moves_the_volume_and_keeps_the_old_claim_for_running_pods(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    cluster.create(dataset("mv", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("mv"))
    await eventually(lambda: phase(cluster, "mv") == "Bound")
    (old_pv,) = volumes(cluster)
    # A pod uses the claim: Kubernetes' PVC protection keeps it while the pod runs (the test
    # server has no such controller, so the test plays its part with the same finalizer).
    cluster.patch(
        "v1",
        "PersistentVolumeClaim",
        "mv",
        {"metadata": {"finalizers": ["kubernetes.io/pvc-protection"]}},
        "default",
    )
    cluster.patch(
        "data.edgecache.io/v1alpha1",
        "Dataset",
        "mv",
        {"spec": {"nodeAffinity": pool_affinity("pool-b")}},
        "default",
    )
    moving = await eventually(
        lambda: (
            (c := condition(get(cluster, "Dataset", "mv"))) and c["reason"] == "VolumeMoving" and c
        )
    )
    assert old_pv["metadata"]["name"] in moving["message"]
    claim = get(cluster, "PersistentVolumeClaim", "mv")
    assert claim["metadata"].get("deletionTimestamp")  # deleted, held by the running pod
    assert claim["spec"]["volumeName"] == old_pv["metadata"]["name"]
    names = {pv["metadata"]["name"] for pv in volumes(cluster)}
    assert len(names) == 2 and old_pv["metadata"]["name"] in names  # the old PV stays too
    # The pod ends: the claim goes, a new one binds to the new PV, the old PV is removed.
    cluster.patch(
        "v1", "PersistentVolumeClaim", "mv", {"metadata": {"finalizers": None}}, "default"
    )
    await eventually(lambda: phase(cluster, "mv") == "Bound" and len(volumes(cluster)) == 1)
    (new_pv,) = volumes(cluster)
    assert new_pv["metadata"]["name"] != old_pv["metadata"]["name"]
    values = new_pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][
        0
    ]["values"]
    assert values == ["pool-b"]
    claim = get(cluster, "PersistentVolumeClaim", "mv")
    assert claim["spec"]["volumeName"] == new_pv["metadata"]["name"]
    ds = get(cluster, "Dataset", "mv")
    assert ds["status"]["nodepool"] == "pool-b"
    assert [n["nodeName"] for n in ds["status"]["cache"]["nodes"]] == ["b1"]


async def test_deleting_the_dataset_removes_everything_it_created(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    cluster.create(dataset("gone", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("gone"))
    await eventually(lambda: phase(cluster, "gone") == "Bound")
    ds = get(cluster, "Dataset", "gone")
    cluster.create(cache_report(ds, "a1", cache={"cachedBytes": 1}))
    cluster.delete("data.edgecache.io/v1alpha1", "Dataset", "gone", "default")

    def all_gone() -> bool:
        datasets = cluster.list_objects("data.edgecache.io/v1alpha1", "Dataset", "default")
        claims = cluster.list_objects("v1", "PersistentVolumeClaim", "default")
        reports = cluster.list_objects("data.edgecache.io/v1alpha1", "CacheReport", "default")
        return not (datasets or claims or reports or volumes(cluster))

    await eventually(all_gone, what="Dataset, PVC, PV and reports removed")


async def test_a_claim_of_the_same_name_that_is_not_ours_is_never_touched(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    (tmp_path / "d").mkdir()
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": "taken", "namespace": "default"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        }
    )
    cluster.create(dataset("taken", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("taken"))
    ready = await eventually(
        lambda: (
            (c := condition(get(cluster, "Dataset", "taken")))
            and c["reason"] == "ClaimConflict"
            and c
        )
    )
    assert (
        "PersistentVolumeClaim default/taken exists and is not managed by edgecache"
        in ready["message"]
    )
    claim = get(cluster, "PersistentVolumeClaim", "taken")
    assert LABEL_DATASET not in (claim["metadata"].get("labels") or {})
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]


async def test_kubectl_get_datasets_shows_the_fluid_columns(
    cluster: KubeAPIServer, controller: Controller, tmp_path: Path
) -> None:
    make_tree(tmp_path / "d", {"f": b"q" * 2048})
    cluster.create(dataset("cols", f"file://{tmp_path / 'd'}"))
    cluster.create(runtime("cols"))
    await eventually(lambda: get(cluster, "Dataset", "cols").get("status", {}).get("fileNum"))
    ds = get(cluster, "Dataset", "cols")
    cluster.create(
        cache_report(
            ds, "a1", cache={"cachedBytes": 2048, "capacityBytes": 2**30, "hits": 3, "misses": 1}
        )
    )
    await eventually(
        lambda: get(cluster, "Dataset", "cols")["status"]["cacheStates"]["cached"] == "2KiB"
    )
    out = await asyncio.to_thread(run_kubectl, cluster.url, "get", "datasets")
    header, row = out.stdout.splitlines()
    assert header.split() == [
        "NAME",
        "PHASE",
        "NODEPOOL",
        "UFS",
        "TOTAL",
        "CACHED",
        "CACHE",
        "CAPACITY",
        "CACHED%",
        "HIT%",
        "AGE",
    ]
    assert row.split()[:-1] == ["cols", "Bound", "pool-a", "2KiB", "2KiB", "1GiB", "50.0%", "75.0%"]


async def test_the_seed_demo_lists_its_oss_mount_with_the_secret_from_the_api(
    cluster: KubeAPIServer, controller: Controller
) -> None:
    """ufsTotal/fileNum through the OSS plugin, signed with the credentials of the Secret the
    demo's encryptOptions name (resolved from the API, never from files), exact; a wrong key in
    the Secret is a UFSListed=False condition, never a count of zero."""
    from edgecache_testservers.oss import OSSServer

    docs = rewritten_seed_demo()
    ds, rt = (next(d for d in docs if d["kind"] == k) for k in ("Dataset", "EdgeCacheRuntime"))
    sizes = {
        "images/images/cat.jpg": 1234,
        "images/images/dog.jpg": 56_789,
        "images/images/sub/x.jpg": 10,
        "images/other/no.jpg": 999,
    }
    with OSSServer(credentials={"AKID-demo": "SK-demo"}) as oss:
        oss.create_bucket("test-fluid")
        for key, size in sizes.items():
            oss.put_object("test-fluid", key, b"i" * size)
        ds["spec"]["mounts"][0]["options"]["fs.oss.endpoint"] = oss.endpoint
        ds["spec"]["nodeAffinity"] = pool_affinity("pool-a")
        for doc in (ds, rt):
            doc["metadata"]["namespace"] = "default"
        cluster.create(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": "mysecret", "namespace": "default"},
                "stringData": {
                    "fs.oss.accessKeyId": "AKID-demo",
                    "fs.oss.accessKeySecret": "wrong",
                },
            }
        )
        cluster.create(ds)
        cluster.create(rt)
        refused = await eventually(
            lambda: condition(get(cluster, "Dataset", "images"), "UFSListed"), timeout_seconds=20
        )
        assert refused["status"] == "False"
        assert "fileNum" not in get(cluster, "Dataset", "images")["status"]
        cluster.patch(
            "v1",
            "Secret",
            "mysecret",
            {"stringData": {"fs.oss.accessKeySecret": "SK-demo"}},
            "default",
        )
        # A failed listing is tried again (after listing_retry_seconds: 0.5 s here).
        listed = await eventually(
            lambda: (s := get(cluster, "Dataset", "images")["status"]).get("fileNum") and s,
            timeout_seconds=20,
        )
    expected = sum(v for k, v in sizes.items() if k.startswith("images/images/"))
    assert listed["fileNum"] == "3" and listed["ufsTotalBytes"] == expected
    assert listed["ufsTotal"] == fluid_bytes(expected)
