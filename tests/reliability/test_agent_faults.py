"""The node agent under faults at volume (issue #15): ``edgecache agent`` processes, behind the
edge hub with the Kubernetes API and S3 test servers behind WAN emulators (the end-to-end site
of tests/agent), SIGKILLed at random points again and again while they materialise a view and
run DataLoads, some of them restarted with the WAN cut. A watcher process scans the view all
the while. Afterwards: no partial or temporary file was ever visible in the view, every view
file's bytes are its object's, every DataLoad completed, the block cache's usage accounting
matches the bytes on disk, and the agent restarts offline from its local state alone."""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.conftest import (
    VIEW_WATCHER,
    AgentProcess,
    Site,
    dataload,
    health,
    report,
    runtime,
    tree,
    wait_for,
)
from cachetestlib import audit

from edgecache.config import CacheSettings

BLOCK = "128KiB"
BLOCK_BYTES = 128 * 1024


def objects(rng: random.Random, prefix: str, count: int) -> dict[str, bytes]:
    """``count`` objects of 1 byte to 3 blocks (odd tails, several blocks each, some one)."""
    return {
        f"{prefix}/f{i:02d}.bin": rng.randbytes(rng.randint(1, 3 * BLOCK_BYTES))
        for i in range(count)
    }


def loads_complete(site: Site, names: list[str]) -> bool:
    """Every DataLoad in ``names`` Complete in the node's report."""
    found = report(site.api, "images", "a1")
    entries = {e["name"]: e for e in (found or {}).get("spec", {}).get("dataLoads", [])}
    return all(entries.get(n, {}).get("phase") == "Complete" for n in names)


def test_agent_killed_at_random_points_while_loading(
    site: Site, agents: list[AgentProcess], tmp_path: Path, reliability: Any
) -> None:
    rng = random.Random(1512)
    rounds = reliability.scale(ci=2, long=40)
    # The dataset at first, then one batch per round, each with its DataLoad: every round has
    # a view to complete and a DataLoad to run when it is killed.
    first = objects(rng, "base", 10)
    batches = [objects(rng, f"batch{i:02d}", 3) for i in range(rounds)]
    everything = {**first, **{k: v for batch in batches for k, v in batch.items()}}
    expected = tmp_path / "expected.json"
    digests = {k: hashlib.sha256(v).hexdigest() for k, v in everything.items()}
    expected.write_text(json.dumps(digests))
    site.put_s3(first)
    site.api.create(site.s3_dataset())
    spec = runtime("images")
    spec["spec"]["blockSize"] = BLOCK
    site.api.create(spec)

    probe = site.agent()
    view, staging = probe.view("images"), probe.root / ".edgecache-agent" / "staging"
    stop_file, verdict_file = tmp_path / "stop-watching", tmp_path / "watcher.json"
    watch = (view, expected, stop_file, verdict_file)
    watcher = subprocess.Popen([sys.executable, "-c", VIEW_WATCHER, *map(str, watch)])
    kills = offline_rounds = kills_while_writing = 0
    load_names = []
    try:
        for i, batch in enumerate(batches):
            site.put_s3(batch)
            load_names.append(f"load-{i:02d}")
            site.api.create(dataload(load_names[-1], "images", f"/batch{i:02d}", pin=i % 2 == 1))
            offline = i % 3 == 1  # a third of the rounds start with the WAN down
            if offline:
                site.cut()
                offline_rounds += 1
            agent = site.agent(metadata_ttl=0.5).start()
            if offline:
                # Started with the WAN down, it serves what it held from its local state.
                wait_for(lambda a=agent: "views ready" in health(a.health_url + "/readyz"))
            if rng.random() < 0.5:
                # Killed while a file is being written (a staging file exists), if one is soon.
                with contextlib.suppress(AssertionError):
                    wait_for(lambda: any(staging.glob("*.tmp")), timeout_seconds=5)
                    kills_while_writing += 1
                wait_a_little = rng.uniform(0.0, 0.15)
            else:
                wait_a_little = rng.uniform(0.0, 2.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                assert agent.process is not None
                agent.process.wait(wait_a_little)  # a random point, not a synchronisation
            if agent.alive():
                kills += 1
            agent.kill()
            if offline:
                site.restore()
            reliability.iterations += 1

        # Started once more, online: the view completes and every DataLoad completes.
        agent = site.agent().start()
        agents.append(agent)
        wait_for(lambda: tree(view) == everything, what="the whole view", timeout_seconds=120)
        wait_for(lambda: loads_complete(site, load_names), what="every DataLoad Complete")
    finally:
        stop_file.touch()
        watcher.wait(60)
    verdict = json.loads(verdict_file.read_text())
    reliability.faults_injected = kills + offline_rounds
    reliability.reads_checked = verdict["checks"] + len(everything)
    reliability.wrong_bytes = len(verdict["bad"])
    reliability.notes.update(
        kills=kills, kills_while_writing=kills_while_writing, offline_restarts=offline_rounds
    )
    assert verdict["bad"] == [], verdict["bad"]
    assert verdict["checks"] > len(first)
    assert kills >= rounds // 2, "the agent was hardly ever killed while it worked"

    # Restarted with the WAN down: ready from local state, the view whole, nothing fetched.
    assert agent.stop() == 0
    site.cut()
    before = site.wan_bytes_down()
    agent = site.agent().start()
    agents.append(agent)
    wait_for(lambda: "1 of 1 views ready" in health(agent.health_url + "/readyz"))
    held = tree(view)
    reliability.data_lost = len(set(everything) - set(held))
    assert held == everything
    assert agent.stop() == 0
    assert site.wan_bytes_down() == before
    assert not staging.exists() or not any(staging.iterdir()), list(staging.iterdir())

    # The block cache accounts for exactly what its directory holds.
    state = audit(CacheSettings(cache_dir=str(agent.cache_dir), block_size=BLOCK_BYTES))
    state.assert_consistent(allow_orphan_rows=True)
    reliability.notes["orphan_rows"] = len(state.orphan_rows)
    blocks = [p for p in (agent.cache_dir / "blocks").rglob("*") if p.is_file()]
    reliability.notes["block_files_left"] = len(blocks)
