"""The agent as users run it (``edgecache agent`` subprocesses) against the API test server,
with ``file://`` mounts: views appear with exact bytes, follow changes and deletions, report."""

from __future__ import annotations

import os
from pathlib import Path

from edgecache_testservers.kubeapi import KubeAPIServer

from .conftest import (
    AgentProcess,
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
