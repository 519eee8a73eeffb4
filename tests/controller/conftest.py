"""Fixtures for the controller tests: the API test server with our CRDs, a controller on the
test's event loop, and builders for Datasets, runtimes, reports and nodes.

``cluster`` is a threaded :class:`KubeAPIServer` with every CRD of ``manifests/crds`` created
and two pools of nodes (``pool-a``: a1, a2; ``pool-b``: b1). ``controller`` runs one
:class:`Controller` (no leader election) against it with short intervals; ``eventually`` polls
the server's store until a condition holds (the store is in memory: a poll costs microseconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import TEST_BOOKMARK_INTERVAL_SECONDS
from edgecache_testservers.waiting import eventually as eventually
from kubernetes import client as k8s

from edgecache.controller import Controller, ControllerSettings, LeaderSettings
from edgecache.k8s.objects import API_VERSION, NODEPOOL_LABEL, report_name

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"
JSONObject = dict[str, Any]


def seed_demo() -> Path | None:
    """The seed demo in shared/reference (beside the checkout, or beside its worktree)."""
    for base in (ROOT.parent, ROOT.parent.parent):
        path = base / "shared/reference/openyurt-fluid-demo.yaml"
        if path.exists():
            return path
    return None


def crd_documents() -> list[JSONObject]:
    return [yaml.safe_load(p.read_text()) for p in sorted((MANIFESTS / "crds").glob("*.yaml"))]


@pytest.fixture
def cluster() -> Iterator[KubeAPIServer]:
    with KubeAPIServer(bookmark_interval_seconds=TEST_BOOKMARK_INTERVAL_SECONDS) as api:
        for crd in crd_documents():
            api.create(crd)
        for name, pool in (("a1", "pool-a"), ("a2", "pool-a"), ("b1", "pool-b")):
            api.create(objects.node(name, labels={NODEPOOL_LABEL: pool}))
        yield api


def api_client(url: str) -> Any:
    configuration = k8s.Configuration()
    configuration.host = url
    configuration.connection_pool_maxsize = 32
    return k8s.ApiClient(configuration)


def fast_settings(tmp_path: Path, **leader: Any) -> ControllerSettings:
    return ControllerSettings(
        leader=LeaderSettings(enabled=bool(leader), lease_namespace="default", **leader),
        health_address="127.0.0.1:0",
        resync_seconds=5.0,
        recheck_seconds=0.5,
        listing_retry_seconds=0.5,
        backoff_base_seconds=0.05,
        backoff_max_seconds=1.0,
        cache_dir=str(tmp_path / "controller-cache"),
    )


@pytest.fixture
async def controller(cluster: KubeAPIServer, tmp_path: Path) -> AsyncIterator[Controller]:
    ctl = Controller(fast_settings(tmp_path), api_client(cluster.url))
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    await asyncio.wait_for(ctl.started.wait(), 10)
    try:
        yield ctl
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


def pool_affinity(*pools: str) -> JSONObject:
    return {
        "required": {
            "nodeSelectorTerms": [
                {
                    "matchExpressions": [
                        {"key": NODEPOOL_LABEL, "operator": "In", "values": list(pools)}
                    ]
                }
            ]
        }
    }


def dataset(name: str, mount_point: str, *, pool: str = "pool-a", **spec: Any) -> JSONObject:
    body: JSONObject = {
        "mounts": [{"mountPoint": mount_point, "name": name}],
        "nodeAffinity": pool_affinity(pool),
    }
    body.update(spec)
    return {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": {"name": name, "namespace": "default"},
        "spec": body,
    }


def runtime(
    name: str, *, quota: str = "10Gi", levels: list[JSONObject] | None = None
) -> JSONObject:
    if levels is None:
        levels = [{"mediumtype": "SSD", "path": "/mnt/cache", "quota": quota, "high": "0.9"}]
    return {
        "apiVersion": API_VERSION,
        "kind": "EdgeCacheRuntime",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"tieredstore": {"levels": levels}},
    }


def cache_report(
    dataset_obj: JSONObject, node: str, *, uid: str | None = None, **fields: Any
) -> JSONObject:
    """A CacheReport as the node agent writes it."""
    meta = dataset_obj["metadata"]
    spec: JSONObject = {
        "dataset": meta["name"],
        "datasetUID": meta.get("uid") if uid is None else uid,
        "nodeName": node,
        "reportTime": "2026-01-01T00:00:00Z",
    }
    spec.update(copy.deepcopy(fields))
    return {
        "apiVersion": API_VERSION,
        "kind": "CacheReport",
        "metadata": {"name": report_name(meta["name"], node), "namespace": meta["namespace"]},
        "spec": spec,
    }


def get(api: KubeAPIServer, kind: str, name: str, namespace: str | None = "default") -> JSONObject:
    api_version = "v1" if kind in ("PersistentVolume", "PersistentVolumeClaim") else API_VERSION
    return api.get(api_version, kind, name, namespace if kind != "PersistentVolume" else None)


def volumes(api: KubeAPIServer) -> list[JSONObject]:
    return api.list_objects("v1", "PersistentVolume")


def condition(obj: JSONObject, type_: str = "Ready") -> JSONObject | None:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item.get("type") == type_:
            return dict(item)
    return None
