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
from pathlib import Path
from typing import Any

from .conftest import (
    VIEW_WATCHER,
    AgentProcess,
    Site,
    dataload,
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
        for _ in range(6):
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
    assert kills >= 3, "the agent was never killed while writing a file"
    verdict = json.loads(out.read_text())
    assert verdict["bad"] == []
    assert verdict["checks"] > len(images)
    assert not staging.exists() or not any(p for p in staging.iterdir())
