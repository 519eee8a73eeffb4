"""The agent as users run it (``edgecache agent`` subprocesses) against the API test server,
with ``file://`` mounts: views appear with exact bytes, follow changes and deletions, report."""

from __future__ import annotations

import os
import time
from pathlib import Path

from edgecache_testservers.kubeapi import KubeAPIServer

from edgecache.k8s.objects import API_VERSION

from .conftest import (
    AgentProcess,
    dataload,
    dataset,
    report,
    runtime,
    tree,
    wait_for,
)


def _data(base: Path) -> dict[str, bytes]:
    files = {
        "a.bin": os.urandom(5000),
        "dir/b.txt": b"hello view\n",
        "dir/deeper/c.bin": os.urandom(300_000),
        "empty": b"",
    }
    for rel, data in files.items():
        (base / rel).parent.mkdir(parents=True, exist_ok=True)
        (base / rel).write_bytes(data)
    return files


def test_a_dataset_for_the_pool_becomes_a_view_with_exact_bytes_and_a_report(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    files = _data(source)
    created = cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url).start()
    b1 = AgentProcess(tmp_path, "b1", cluster.url).start()
    agents.extend([a1, b1])
    view = a1.view("images")
    wait_for(lambda: tree(view) == files, what="the view of a1")
    got = wait_for(
        lambda: (r := report(cluster, "images", "a1")) and r["spec"]["view"]["ready"] and r,
        what="a1's report",
    )
    spec = got["spec"]
    assert spec["datasetUID"] == created["metadata"]["uid"]
    assert spec["nodeName"] == "a1"
    assert spec["cache"]["cachedBytes"] == sum(len(d) for d in files.values())
    assert spec["cache"]["cachedFiles"] == len(files)
    assert spec["cache"]["capacityBytes"] == 1 << 30
    assert got["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    # Read-only files, no temporary names anywhere in the view.
    for path in view.rglob("*"):
        if path.is_file():
            assert path.stat().st_mode & 0o222 == 0, path
    # b1 is in pool-b: no view, no report.
    assert not b1.view("images").exists()
    assert report(cluster, "images", "b1") is None


def test_the_view_follows_changed_and_deleted_objects(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    files = _data(source)
    cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url, metadata_ttl=0.5).start()
    agents.append(a1)
    view = a1.view("images")
    wait_for(lambda: tree(view) == files, what="the first view")
    held = open(view / "a.bin", "rb")  # noqa: SIM115 - a reader holding the old file open
    old = files["a.bin"]
    files["a.bin"] = os.urandom(7000)
    (source / "a.bin").write_bytes(files["a.bin"])
    (source / "dir/b.txt").unlink()
    del files["dir/b.txt"]
    wait_for(lambda: tree(view) == files, what="the view after the change")
    assert held.read() == old
    held.close()


def test_a_dataset_moved_to_another_pool_leaves_the_node(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    files = _data(source)
    cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url).start()
    b1 = AgentProcess(tmp_path, "b1", cluster.url).start()
    agents.extend([a1, b1])
    wait_for(lambda: tree(a1.view("images")) == files, what="a1's view")
    moved = dataset("images", f"file://{source}", pool="pool-b")
    cluster.patch(
        "data.edgecache.io/v1alpha1", "Dataset", "images", {"spec": moved["spec"]}, "default"
    )
    wait_for(lambda: tree(b1.view("images")) == files, what="b1's view")
    wait_for(lambda: not a1.view("images").exists(), what="a1's view removed")


def _spec(api: KubeAPIServer, node: str = "a1") -> dict[str, object]:
    got = report(api, "images", node)
    return got["spec"] if got else {}


def test_a_dataset_larger_than_its_quota_is_reported_so_and_not_published(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    for i in range(6):
        (source / f"f{i}.bin").parent.mkdir(parents=True, exist_ok=True)
        (source / f"f{i}.bin").write_bytes(os.urandom(4096))
    cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images", quota="10Ki", high="0.9", low="0.5"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url).start()
    agents.append(a1)
    spec = wait_for(
        lambda: (s := _spec(cluster)) and "larger than its quota" in s["view"]["message"] and s,
        what="the over-quota report",
    )
    assert spec["view"]["ready"] is False
    assert "24576 bytes in 6 files, quota 10240 bytes" in spec["view"]["message"]
    held = tree(a1.view("images"))
    assert 0 < sum(len(d) for d in held.values()) <= 0.9 * 10240
    assert spec["cache"]["cachedBytes"] == sum(len(d) for d in held.values())
    assert spec["cache"]["capacityBytes"] == 10240


def test_a_lowered_quota_evicts_by_unlink_but_never_a_pinned_dataset(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    files = {f"f{i}.bin": os.urandom(4096) for i in range(6)}
    for rel, data in files.items():
        (source / rel).parent.mkdir(parents=True, exist_ok=True)
        (source / rel).write_bytes(data)
    cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images", quota="1Mi"))
    cluster.create(dataset("pinned", f"file://{source}"))
    cluster.create(runtime("pinned", quota="1Mi"))
    cluster.create(dataload("keep", "pinned", pin=True))
    a1 = AgentProcess(tmp_path, "a1", cluster.url, metadata_ttl=0.5).start()
    agents.append(a1)
    wait_for(lambda: tree(a1.view("images")) == files and tree(a1.view("pinned")) == files)
    held_open = open(a1.view("images") / "f0.bin", "rb")  # noqa: SIM115 - a reader
    for name in ("images", "pinned"):
        cluster.patch(
            "data.edgecache.io/v1alpha1",
            "EdgeCacheRuntime",
            name,
            {"spec": runtime(name, quota="16Ki", high="0.9", low="0.5")["spec"]},
            "default",
        )
    # 24 KiB > 0.9 x 16 KiB: the unpinned view is evicted to 8 KiB, then refilled to 14.4 KiB.
    wait_for(
        lambda: 0 < sum(len(d) for d in tree(a1.view("images")).values()) <= 0.9 * 16384,
        what="eviction",
    )
    assert held_open.read() == files["f0.bin"]  # unlinked under a reader: still readable
    held_open.close()
    time.sleep(1.5)  # several passes: the pinned view is never touched
    assert tree(a1.view("pinned")) == files
    spec = wait_for(
        lambda: (
            (r := report(cluster, "pinned", "a1"))
            and r["spec"]["cache"]["capacityBytes"] == 16384
            and r["spec"]
        ),
    )
    assert spec["cache"]["cachedBytes"] == 6 * 4096


def _text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as answer:
        return str(answer.read().decode())


def test_restarted_with_no_api_at_all_it_serves_its_views_from_local_state(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    files = _data(source)
    cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url).start()
    agents.append(a1)
    wait_for(lambda: (s := _spec(cluster)) and s["view"]["ready"], what="the first report")
    assert a1.stop() == 0
    cluster.stop()  # no API server, no hub: nothing answers
    offline = AgentProcess(tmp_path, "a1", cluster.url).start()
    agents.append(offline)
    assert "ok: 1 of 1 views ready" in _text(offline.health_url + "/readyz")
    assert tree(offline.view("images")) == files
    wait_for(
        lambda: "edgecache_agent_reports_pending 1.0" in _text(offline.health_url + "/metrics"),
        what="the report queued",
    )


def test_a_dataload_run_reports_progress_and_the_paths_it_could_not_load(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    files = _data(source)
    cluster.create(dataset("images", f"file://{source}"))
    cluster.create(runtime("images"))
    created = cluster.create(dataload("warm", "images", "/dir", "/nope"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url).start()
    agents.append(a1)
    wait_for(lambda: tree(a1.view("images")) == files, what="the view")
    # The controller's part: start run 1.
    cluster.patch(
        API_VERSION, "DataLoad", "warm", {"status": {"run": 1}}, "default", subresource="status"
    )
    spec = wait_for(
        lambda: (
            (s := _spec(cluster))
            and s.get("dataLoads")
            and s["dataLoads"][0]["phase"] != "Loading"
            and s
        ),
        what="the run's end",
    )
    (entry,) = spec["dataLoads"]
    dir_files = [k for k in files if k.startswith("dir/")]
    assert entry == {
        "name": "warm",
        "uid": created["metadata"]["uid"],
        "run": 1,
        "phase": "Failed",
        "filesTotal": len(dir_files),
        "filesDone": len(dir_files),
        "bytesTotal": sum(len(files[k]) for k in dir_files),
        "bytesDone": sum(len(files[k]) for k in dir_files),
        "failedPaths": ["/nope"],
    }


def test_a_dataset_being_deleted_keeps_its_view_until_it_is_gone(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    source = tmp_path / "bucket"
    files = _data(source)
    held = dataset("images", f"file://{source}")
    held["metadata"]["finalizers"] = ["test.edgecache.io/hold"]  # as a PVC in use holds it
    cluster.create(held)
    cluster.create(runtime("images"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url).start()
    agents.append(a1)
    wait_for(lambda: tree(a1.view("images")) == files, what="the view")
    cluster.delete(API_VERSION, "Dataset", "images", "default")
    time.sleep(1.5)  # the agent saw the deletionTimestamp: pods may still use the view
    assert tree(a1.view("images")) == files
    cluster.patch(API_VERSION, "Dataset", "images", {"metadata": {"finalizers": []}}, "default")
    wait_for(lambda: not a1.view("images").exists(), what="the view removed")
