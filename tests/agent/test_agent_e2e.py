"""End to end: the Kubernetes API test server and the S3 (moto) and OSS test servers in the
"cloud" behind WAN emulators; on the "edge", an ``edgecache hub`` and ``edgecache agent``
processes; ``edgecache controller`` in the cloud. Views with exact bytes, a DataLoad's progress
and completion in the controller's status, upstream changes followed, a cut WAN, restarts that
download nothing, and SIGKILLs mid-load that never let a partial file show in the view."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.oss import OSSServer

from .conftest import (
    VIEW_WATCHER,
    AgentProcess,
    Site,
    dataload,
    dataset,
    get,
    health,
    objects_of,
    report,
    runtime,
    tree,
    wait_for,
)


def test_views_of_s3_and_oss_datasets_and_a_dataload_in_the_controllers_status(
    site: Site, agents: list[AgentProcess]
) -> None:
    images = objects_of(24, 120_000)
    site.put_s3(images)
    logs = {"day1/a.log": os.urandom(3000), "day2/b.log": b"line\n" * 100}
    for key, data in logs.items():
        site.oss.put_object("data", site.oss_prefix + key, data)
    site.api.create(site.s3_dataset())
    site.api.create(runtime("images"))
    site.api.create(site.oss_dataset())
    site.api.create(runtime("logs"))
    site.api.create(dataload("warmup", "images", "/"))
    # The controller starts run 1 once the Dataset is Bound: before any agent runs.
    wait_for(lambda: (get(site.api, "DataLoad", "warmup").get("status") or {}).get("run") == 1)
    seen: list[dict[str, Any]] = []
    watching = threading.Event()

    def watch_progress() -> None:
        while not watching.is_set():
            status = get(site.api, "DataLoad", "warmup").get("status") or {}
            if not seen or status != seen[-1]:
                seen.append(status)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch_progress, daemon=True)
    watcher.start()
    a1, a2 = site.agent("a1").start(), site.agent("a2").start()  # pool-a's two nodes
    agents.extend([a1, a2])
    for agent in (a1, a2):
        wait_for(lambda a=agent: tree(a.view("images")) == images, timeout_seconds=60)
        wait_for(lambda a=agent: tree(a.view("logs")) == logs, timeout_seconds=60)
    final = wait_for(
        lambda: (
            (s := get(site.api, "DataLoad", "warmup").get("status") or {}).get("phase")
            == "Complete"
            and s
        ),
        what="the DataLoad Complete",
        timeout_seconds=30,
    )
    watching.set()
    watcher.join(5)
    total = sum(len(d) for d in images.values())
    assert final["bytesTotal"] == final["bytesDone"] == 2 * total  # summed over the nodes
    assert final["filesTotal"] == final["filesDone"] == 2 * len(images)
    loading = [s for s in seen if s.get("phase") == "Loading"]
    assert any(0 < int(s.get("bytesDone") or 0) < 2 * total for s in loading), seen
    # The Dataset's status sums the agents' reports: every byte of each view, once.
    status = wait_for(
        lambda: (
            (s := get(site.api, "Dataset", "images").get("status") or {})
            .get("cache", {})
            .get("cachedBytes")
            == 2 * total
            and s
        ),
        what="the Dataset's cache status",
    )
    assert status["phase"] == "Bound"
    spec = report(site.api, "logs", "a1")
    assert spec is not None and spec["spec"]["view"] == {"ready": True, "message": ""}
    assert "edgecache_agent_views" in health(a1.health_url + "/metrics")


def test_the_view_follows_s3_objects_updated_and_deleted_upstream(
    site: Site, agents: list[AgentProcess]
) -> None:
    images = objects_of(5, 50_000)
    site.put_s3(images)
    site.api.create(site.s3_dataset())
    site.api.create(runtime("images"))
    a1 = site.agent().start()
    agents.append(a1)
    view = a1.view("images")
    wait_for(lambda: tree(view) == images, what="the first view", timeout_seconds=60)
    images["f001.bin"] = os.urandom(70_000)
    site.put_s3({"f001.bin": images["f001.bin"]})
    site.s3.delete_object(Bucket=site.bucket, Key="images/f002.bin")
    del images["f002.bin"]
    images["new/g.bin"] = b"added upstream"
    site.put_s3({"new/g.bin": images["new/g.bin"]})
    wait_for(lambda: tree(view) == images, what="the view after the changes", timeout_seconds=30)


def test_a_cut_wan_keeps_views_serving_and_restarts_download_nothing(
    site: Site, agents: list[AgentProcess]
) -> None:
    images = objects_of(8, 500_000)
    site.put_s3(images)
    site.api.create(site.s3_dataset())
    site.api.create(runtime("images"))
    a1 = site.agent().start()
    agents.append(a1)
    view = a1.view("images")
    wait_for(lambda: tree(view) == images, what="the view", timeout_seconds=60)
    wait_for(lambda: (r := report(site.api, "images", "a1")) and r["spec"]["view"]["ready"])

    # Restarted online: nothing is downloaded again (listings only).
    assert a1.stop() == 0
    before = site.wan_bytes_down()
    a1 = site.agent().start()
    agents.append(a1)
    started = time.time()
    wait_for(
        lambda: (
            (r := report(site.api, "images", "a1")) and _after(r["spec"]["reportTime"], started)
        ),
        what="a report from the restarted agent",
    )
    time.sleep(2.5)  # a few metadata TTLs: the agent lists the mount again and again
    assert tree(view) == images
    moved = site.wan_bytes_down() - before
    assert moved < 64 * 1024, f"{moved} bytes moved over the WAN after a restart"

    # The WAN goes silent: the view keeps serving, the agent keeps running.
    site.cut()
    time.sleep(1.5)
    assert tree(view) == images
    assert a1.alive()
    assert health(a1.health_url + "/healthz").startswith("ok")
    # Restarted while offline: it serves from its local state (the hub answers from its store).
    assert a1.stop() == 0
    a1 = site.agent().start()
    agents.append(a1)
    restarted = time.time()
    wait_for(lambda: "1 of 1 views ready" in health(a1.health_url + "/readyz"))
    assert tree(view) == images
    time.sleep(1.0)
    assert not _after(report(site.api, "images", "a1")["spec"]["reportTime"], restarted)
    # The link returns: the queued report is sent.
    site.restore()
    wait_for(
        lambda: _after(report(site.api, "images", "a1")["spec"]["reportTime"], restarted),
        what="the queued report",
        timeout_seconds=30,
    )
    assert site.wan_bytes_down() - before < 256 * 1024


def _after(stamp: str, when: float) -> bool:
    parsed = time.mktime(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    return parsed >= int(when)


def test_sigkill_mid_load_never_shows_a_partial_file(
    site: Site, agents: list[AgentProcess], tmp_path: Path
) -> None:
    images = objects_of(30, 150_000)
    site.put_s3(images)
    site.api.create(site.s3_dataset())
    site.api.create(runtime("images"))
    expected = tmp_path / "expected.json"
    expected.write_text(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in images.items()}))
    a1 = site.agent()
    view = a1.view("images")
    stop_file, out = tmp_path / "stop-watching", tmp_path / "watcher.json"
    watcher = subprocess.Popen(
        [sys.executable, "-c", VIEW_WATCHER, str(view), str(expected), str(stop_file), str(out)]
    )
    rng = random.Random(12)
    try:
        staging = a1.root / ".edgecache-agent" / "staging"
        kills = 0
        # Four rounds, at least two of them killed mid-file: the many-round version of this
        # loop is the reliability suite's (test_agent_faults.py, 40 rounds in its long mode).
        for _ in range(4):
            agent = site.agent().start()
            # Killed while a file is being written (a staging file exists), or soon after start.
            with contextlib.suppress(AssertionError):
                wait_for(lambda: any(staging.glob("*.tmp")), timeout_seconds=10)
                kills += 1
            time.sleep(rng.uniform(0.0, 0.2))
            agent.kill()
        a1 = site.agent().start()
        agents.append(a1)
        wait_for(lambda: tree(view) == images, what="the view after the kills", timeout_seconds=60)
    finally:
        stop_file.touch()
        watcher.wait(30)
    assert kills >= 2, "the agent was hardly ever killed while writing a file"
    verdict = json.loads(out.read_text())
    assert verdict["bad"] == []
    assert verdict["checks"] > len(images)
    assert not staging.exists() or not any(p for p in staging.iterdir())


def _in_pool_b(obj: dict[str, Any]) -> dict[str, Any]:
    """``obj`` placed on pool-b, whose one node (b1) makes a DataLoad Complete on its own."""
    obj["spec"]["nodeAffinity"] = dataset("x", "file:///", pool="pool-b")["spec"]["nodeAffinity"]
    return obj


def _load_status(api: KubeAPIServer, name: str) -> dict[str, Any]:
    return get(api, "DataLoad", name).get("status") or {}


def test_a_dataload_of_an_oss_dataset_completes_with_exact_bytes(
    site: Site, agents: list[AgentProcess]
) -> None:
    logs = objects_of(6, 90_000, prefix="day1/")
    for key, data in logs.items():
        site.oss.put_object("data", site.oss_prefix + key, data)
    site.api.create(_in_pool_b(site.oss_dataset()))
    site.api.create(runtime("logs"))
    site.api.create(dataload("warm", "logs", "/day1"))
    wait_for(lambda: _load_status(site.api, "warm").get("run") == 1, what="run 1 started")
    before = site.oss_link.bytes_down
    b1 = site.agent("b1").start()
    agents.append(b1)
    final = wait_for(
        lambda: (s := _load_status(site.api, "warm")).get("phase") == "Complete" and s,
        what="the OSS DataLoad Complete",
        timeout_seconds=60,
    )
    total = sum(len(d) for d in logs.values())
    assert final["filesTotal"] == final["filesDone"] == len(logs)
    assert final["bytesTotal"] == final["bytesDone"] == total
    assert tree(b1.view("logs")) == logs
    # Loaded once over the WAN (prefetched into the cache, materialised from it).
    moved = site.oss_link.bytes_down - before
    assert total <= moved < 1.2 * total, (moved, total)


def test_a_cron_dataload_runs_when_its_schedule_fires(
    site: Site, agents: list[AgentProcess]
) -> None:
    images = objects_of(3, 40_000)
    site.put_s3(images)
    site.api.create(_in_pool_b(site.s3_dataset()))
    site.api.create(runtime("images"))
    b1 = site.agent("b1").start()
    agents.append(b1)
    wait_for(lambda: tree(b1.view("images")) == images, what="the view", timeout_seconds=60)
    # A DataLoad made two minutes ago on an every-minute schedule: its slot has come.
    nightly = dataload("nightly", "images", "/")
    nightly["spec"].update(policy="Cron", schedule="* * * * *")
    made = time.gmtime(time.time() - 120)
    nightly["metadata"].update(
        uid=str(uuid.uuid4()), creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", made)
    )
    site.api.put(nightly)
    status = wait_for(
        lambda: (
            (s := _load_status(site.api, "nightly")).get("run", 0) >= 1
            and s.get("phase") == "Complete"
            and s
        ),
        what="a scheduled run Complete",
        timeout_seconds=30,
    )
    assert status["filesTotal"] == status["filesDone"] == len(images)
    assert status["lastScheduleTime"] <= time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    assert status["nextScheduleTime"] > time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    entry = wait_for(
        lambda: next(
            (
                e
                for e in (report(site.api, "images", "b1") or {"spec": {}})["spec"].get("dataLoads")
                or []
                if e["name"] == "nightly" and e["run"] == status["run"]
            ),
            None,
        ),
        what="b1's report of the run",
    )
    assert entry["phase"] == "Complete" and entry["failedPaths"] == []


def _corrupt_in_moto(bucket: str, key: str) -> None:
    """Flip the stored bytes of an S3 object in the in-process moto server, keeping its ETag,
    size and time (what a listing records): content no longer matching its MD5."""
    from moto.s3.models import s3_backends

    stored = s3_backends["123456789012"]["aws"].buckets[bucket].keys[key]
    etag = stored.etag  # computed now, kept when the value changes below
    data = bytearray(stored.value)
    data[len(data) // 2] ^= 0xFF
    stored.value = bytes(data)
    # Without the CRC it recorded at upload (botocore checks that first), only the ETag tells.
    stored.checksum_value = stored.checksum_algorithm = None
    assert stored.etag == etag


def _corrupt_in_oss(oss: OSSServer, bucket: str, key: str) -> None:
    """The same in the OSS test server (no CRC64 sent, so only the MD5 ETag can tell)."""
    import dataclasses

    stored = oss.head_object(bucket, key)
    data = bytearray(stored.data)
    data[len(data) // 2] ^= 0xFF
    oss.store.bucket(bucket).objects[key] = dataclasses.replace(
        stored, data=bytes(data), crc64=None
    )


def test_objects_not_matching_their_etag_never_appear_in_the_view(
    site: Site, agents: list[AgentProcess]
) -> None:
    images = objects_of(4, 60_000)
    site.put_s3(images)
    _corrupt_in_moto(site.bucket, "images/f001.bin")
    logs = objects_of(3, 50_000)
    for key, data in logs.items():
        site.oss.put_object("data", site.oss_prefix + key, data)
    _corrupt_in_oss(site.oss, "data", site.oss_prefix + "f002.bin")
    site.api.create(_in_pool_b(site.s3_dataset()))
    site.api.create(runtime("images"))
    site.api.create(_in_pool_b(site.oss_dataset()))
    site.api.create(runtime("logs"))
    b1 = site.agent("b1", metadata_ttl=0.5).start()
    agents.append(b1)
    good_images = {k: v for k, v in images.items() if k != "f001.bin"}
    good_logs = {k: v for k, v in logs.items() if k != "f002.bin"}
    for name, good in (("images", good_images), ("logs", good_logs)):
        spec = wait_for(
            lambda n=name: (
                (r := report(site.api, n, "b1"))
                and r["spec"]["view"]["message"].count("MD5")
                and r["spec"]
            ),
            what=f"the {name} report naming the MD5 mismatch",
            timeout_seconds=60,
        )
        assert spec["view"]["ready"] is False
        assert tree(b1.view(name)) == good
    time.sleep(1.5)  # several passes, each fetching and refusing the bad copy again
    assert tree(b1.view("images")) == good_images
    assert tree(b1.view("logs")) == good_logs
    assert not list((b1.root / ".edgecache-agent" / "staging").glob("*"))
