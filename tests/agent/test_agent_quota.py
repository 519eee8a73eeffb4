"""One quota for the node: the agent's views and the block cache of ``edgecache::`` readers on
the same cache directory, counted together (bytes on disk), a runtime changed while the agent
runs reaching the cache without a restart, and one Dataset's view taking the room its runtime
promises from another's view over its share.

``edgecache agent`` and the readers are real subprocesses; the readers open files the way a
pod does (``fsspec.open("edgecache::file://...")`` per file, asking for a far larger quota).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from edgecache_testservers.kubeapi import KubeAPIServer

from edgecache.k8s.objects import API_VERSION

from .conftest import EDGECACHE, AgentProcess, dataload, dataset, report, runtime, tree, wait_for

KiB = 1024
QUOTA = 512 * KiB

_READER = r"""
import json, os, sys
import fsspec

cache_dir, view, source = sys.argv[1], sys.argv[2], sys.argv[3]

def on_disk(top):
    total = 0
    for root, _dirs, names in os.walk(top):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass  # evicted or replaced meanwhile
    return total

most = 0
for name in sorted(os.listdir(source)):
    with fsspec.open(
        f"edgecache::file://{source}/{name}",
        "rb",
        edgecache={"cache_dir": cache_dir, "ssd_quota": "100MiB", "mem_quota": 0},
    ) as f:
        data = f.read()
    assert data == open(os.path.join(source, name), "rb").read()
    most = max(most, on_disk(os.path.join(cache_dir, "blocks")) + on_disk(view))
print(json.dumps({"most": most, "blocks": on_disk(os.path.join(cache_dir, "blocks"))}))
"""


def _read_through_the_cache(agent: AgentProcess, view: Path, source: Path) -> dict[str, int]:
    """A reader process on the agent's cache directory (what a pod with the host cache mounted
    does); returns the most bytes blocks + view held after any of its reads, and its blocks."""
    proc = subprocess.run(
        [sys.executable, "-c", _READER, str(agent.cache_dir), str(view), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, int] = json.loads(proc.stdout)
    return result


def _ssd_stats(cache_dir: Path) -> dict[str, Any]:
    """The SSD tier's figures as a fresh ``edgecache stats --json`` process reports them."""
    stats = subprocess.run(
        [EDGECACHE, "stats", "--json", "--cache-dir", str(cache_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    ssd: dict[str, Any] = json.loads(stats.stdout)["tiers"]["ssd"]
    return ssd


def _bytes_under(top: Path) -> int:
    return sum(p.stat().st_size for p in top.rglob("*") if p.is_file())


def _write(directory: Path, count: int, size: int, prefix: str) -> dict[str, bytes]:
    directory.mkdir(parents=True, exist_ok=True)
    files = {f"{prefix}{i}.bin": os.urandom(size) for i in range(count)}
    for rel, data in files.items():
        (directory / rel).write_bytes(data)
    return files


def test_views_and_edgecache_readers_on_the_node_share_one_quota(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    ds = tmp_path / "bucket" / "dataset"
    files = _write(ds, 4, 64 * KiB, "f")
    others = tmp_path / "bucket" / "others"
    _write(others, 10, 64 * KiB, "o")
    cluster.create(dataset("images", f"file://{ds}"))
    cluster.create(runtime("images", quota="512Ki", high="0.9", low="0.5"))
    cluster.create(dataload("keep", "images", pin=True))
    a1 = AgentProcess(tmp_path, "a1", cluster.url, metadata_ttl=0.5).start()
    agents.append(a1)
    view = a1.view("images")
    wait_for(
        lambda: (r := report(cluster, "images", "a1")) and r["spec"]["view"]["ready"],
        what="the view",
    )
    assert tree(view) == files
    # A reader asking for 100 MiB is held to the node's 512 KiB, the view's bytes counted.
    read = _read_through_the_cache(a1, view, others)
    assert read["most"] <= QUOTA, read
    assert read["blocks"] > 0  # it did cache what fits beside the view
    assert tree(view) == files  # readers never evict a view (pinned or not)
    # The view grows past the high watermark with the reader's blocks: they are evicted for it.
    files.update(_write(ds, 2, 64 * KiB, "g"))
    wait_for(lambda: tree(view) == files, what="the grown view")
    blocks = _bytes_under(a1.cache_dir / "blocks")
    assert blocks < read["blocks"], (blocks, read)
    assert blocks + _bytes_under(view) <= QUOTA
    ssd = _ssd_stats(a1.cache_dir)
    assert ssd["quota_bytes"] == QUOTA  # the agent's limit, for any process
    assert ssd["charged_bytes"] == sum(len(d) for d in files.values())


def _metric(url: str, name: str) -> float | None:
    with urllib.request.urlopen(url + "/metrics", timeout=5) as answer:
        for line in answer.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return None


def test_a_runtime_changed_while_the_agent_runs_reaches_its_cache(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    ds = tmp_path / "bucket"
    files = _write(ds, 2, 256 * KiB, "f")
    spec = runtime("images", quota="1Mi")["spec"]
    cluster.create(dataset("images", f"file://{ds}"))
    cluster.create(runtime("images", quota="1Mi") | {"spec": {**spec, "blockSize": "64Ki"}})
    a1 = AgentProcess(tmp_path, "a1", cluster.url, metadata_ttl=0.5).start()
    agents.append(a1)
    first = wait_for(
        lambda: (r := report(cluster, "images", "a1")) and r["spec"]["view"]["ready"] and r,
        what="the view",
    )
    assert first["spec"]["cache"]["misses"] == 2 * 4  # 256 KiB files in 64 KiB blocks
    quota = 'edgecache_cache_quota_bytes{tier="ssd"}'
    mem = 'edgecache_cache_quota_bytes{tier="mem"}'
    policy = 'edgecache_cache_eviction_policy{{policy="{1}",tier="{0}"}}'.format
    assert _metric(a1.health_url, quota) == 1 << 20
    assert _metric(a1.health_url, mem) == 256 << 20  # no MEM level: the default
    assert _metric(a1.health_url, policy("ssd", "s3fifo")) == 1
    # A new quota, block size, MEM level (the agent's MEM bound) and eviction policy.
    changed = runtime("images", quota="2Mi")["spec"] | {"blockSize": "32Ki"}
    changed["tieredstore"]["levels"].append({"mediumtype": "MEM", "quota": "3Mi"})
    changed["evictionPolicy"] = "lru"
    cluster.patch(
        "data.edgecache.io/v1alpha1", "EdgeCacheRuntime", "images", {"spec": changed}, "default"
    )
    wait_for(lambda: _metric(a1.health_url, quota) == 2 << 20, what="the new quota")
    assert _metric(a1.health_url, mem) == 3 << 20
    for tier in ("mem", "ssd"):
        assert _metric(a1.health_url, policy(tier, "lru")) == 1
        assert _metric(a1.health_url, policy(tier, "s3fifo")) == 0
    files.update(_write(ds, 1, 256 * KiB, "g"))
    after = wait_for(
        lambda: (
            (r := report(cluster, "images", "a1"))
            and r["spec"]["cache"]["cachedFiles"] == 3
            and r["spec"]["view"]["ready"]
            and r
        ),
        what="the new file in the view",
    )
    assert tree(a1.view("images")) == files
    assert after["spec"]["cache"]["misses"] == 2 * 4 + 8  # the new file in 32 KiB blocks
    assert after["spec"]["cache"]["capacityBytes"] == 2 << 20
    assert _ssd_stats(a1.cache_dir)["quota_bytes"] == 2 << 20
    assert a1.alive()


def _view_state(api: KubeAPIServer, name: str) -> dict[str, object]:
    got = report(api, name, "a1")
    return got["spec"] if got else {}


def test_a_view_takes_the_room_its_runtime_promises_from_a_view_over_its_share(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    big = tmp_path / "bucket" / "big"
    big_files = _write(big, 6, 64 * KiB, "b")
    cluster.create(dataset("big", f"file://{big}"))
    cluster.create(runtime("big", quota="1Mi"))
    a1 = AgentProcess(tmp_path, "a1", cluster.url, metadata_ttl=0.5).start()
    agents.append(a1)
    wait_for(lambda: (s := _view_state(cluster, "big")) and s["view"]["ready"], what="big's view")
    assert tree(a1.view("big")) == big_files
    # big's mount can no longer be read, so its own passes cannot evict it, and then its share
    # is lowered to 128 KiB: it holds 384 KiB, 256 KiB over its share.
    unreadable = dataset("big", "nosuch://bucket/big")["spec"]
    cluster.patch(API_VERSION, "Dataset", "big", {"spec": unreadable}, "default")
    wait_for(
        lambda: "cannot read the mounts" in str(_view_state(cluster, "big").get("view")),
        what="big's mount failing",
    )
    lowered = runtime("big", quota="128Ki")["spec"]
    cluster.patch(API_VERSION, "EdgeCacheRuntime", "big", {"spec": lowered}, "default")
    wait_for(
        lambda: (s := _view_state(cluster, "big")) and s["cache"]["capacityBytes"] == 128 * KiB,
        what="big's lowered share",
    )
    newest = ("b1.bin", "b3.bin", "b4.bin")
    for i, rel in enumerate(sorted(big_files)):  # b1, b3 and b4 read last
        os.utime(a1.view("big") / rel, (2_000_000 + (100 + i if rel in newest else i), 1_000_000))
    # small's 320 KiB fit its 384 KiB share, not beside big's 384 KiB in the node's 512 KiB.
    small = tmp_path / "bucket" / "small"
    small_files = _write(small, 5, 64 * KiB, "s")
    cluster.create(dataset("small", f"file://{small}"))
    cluster.create(runtime("small", quota="384Ki"))
    wait_for(
        lambda: (s := _view_state(cluster, "small")) and s["view"]["ready"], what="small's view"
    )
    assert tree(a1.view("small")) == small_files
    # small needed 192 KiB more than was free: big gave up its three least recently read files.
    assert tree(a1.view("big")) == {rel: big_files[rel] for rel in newest}
    ssd = _ssd_stats(a1.cache_dir)
    assert ssd["quota_bytes"] == QUOTA
    assert ssd["charged_bytes"] == (5 + 3) * 64 * KiB
