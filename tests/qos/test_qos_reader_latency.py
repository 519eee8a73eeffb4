"""A reader's block latency while a DataLoad (prefetch) shares the thin WAN link with it, in the
same process and from another process on the same cache directory (a pod's ``edgecache::``
reader next to the agent's DataLoad).

The reader's p50 block latency while loading must stay within one block time (at the emulated
link rate) of its idle p50, measured in the same test. Without QoS the reader shares the link
with four background blocks and its p50 grows by about four block times: run with
``EDGECACHE_TEST_QOS=off`` to see these tests fail.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from qoslib import BLOCK, BLOCK_SECONDS, Load, Site, block_latencies, cache_options, make_fs, p50

# Runs alone (conftest.py): latencies measured against an idle baseline.
pytestmark = pytest.mark.exclusive

READER_BLOCKS = 8
LOAD_FILES = 40
"""Files of two blocks each: about 17 s of the link alone, longer than any loaded phase."""


def put_data(site: Site) -> None:
    for name in ("idle", "loaded"):
        site.put(f"reader/{name}.bin", os.urandom(READER_BLOCKS * BLOCK))
    for i in range(LOAD_FILES):
        site.put(f"load/part{i:02d}.bin", os.urandom(2 * BLOCK))


def reader_process(site: Site, key: str, options: dict[str, Any]) -> list[float]:
    job = {
        "moto": site.moto_endpoint,
        "wan": site.wan.endpoint,
        "bucket": site.bucket,
        "key": key,
        "blocks": READER_BLOCKS,
        "options": options,
    }
    script = Path(__file__).with_name("qos_reader.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, str(script), json.dumps(job)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    latencies: list[float] = json.loads(done.stdout)
    return latencies


def assert_within_one_block(idle: list[float], loaded: list[float]) -> None:
    assert p50(loaded) <= p50(idle) + BLOCK_SECONDS, (
        f"reader p50 {p50(loaded):.3f} s while loading, {p50(idle):.3f} s idle; one block "
        f"takes {BLOCK_SECONDS:.3f} s on the link (idle {idle}, loaded {loaded})"
    )


def test_a_reader_keeps_its_idle_latency_while_a_dataload_runs_in_its_process(
    site: Site, tmp_path: Path
) -> None:
    put_data(site)
    options = cache_options(str(tmp_path / "cache"))
    idle = block_latencies(site, "reader/idle.bin", options, READER_BLOCKS)
    fs = make_fs(site, options)
    with Load(fs, site.url("load")) as load:
        assert load.loading.wait(60), "the DataLoad never started"
        loaded = block_latencies(site, "reader/loaded.bin", options, READER_BLOCKS)
        assert load.report is None, "the DataLoad ended before the reader: nothing was shared"
    assert_within_one_block(idle, loaded)


def test_a_reader_in_another_process_keeps_its_idle_latency_while_a_dataload_runs(
    site: Site, tmp_path: Path
) -> None:
    put_data(site)
    options = cache_options(str(tmp_path / "cache"))
    idle = reader_process(site, "reader/idle.bin", options)
    fs = make_fs(site, options)
    with Load(fs, site.url("load")) as load:
        assert load.loading.wait(60), "the DataLoad never started"
        loaded = reader_process(site, "reader/loaded.bin", options)
        assert load.report is None, "the DataLoad ended before the reader: nothing was shared"
    assert_within_one_block(idle, loaded)
