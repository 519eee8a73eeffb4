"""The block read counters (``metrics.BlockReadCounts``): what ``/metrics`` shows of them, and
that a forked worker counts on its own even when its parent was counting at the fork."""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edgecache.metrics import BlockReadCounts


def _samples(counts: BlockReadCounts) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(counts)
    text = generate_latest(registry).decode()
    return {
        (sample.name, next(iter(sample.labels.values()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.name.endswith("_created")
    }


def test_hits_and_bytes_render_as_the_counters_they_replace() -> None:
    counts = BlockReadCounts(("mem", "ssd"), ("mem", "ssd", "peer", "backend"))
    counts.hit("mem", 100)
    counts.hit("mem", 50)
    counts.hit("ssd", 7)
    counts.served("backend", 4096)
    counts.served("peer", 1)
    assert _samples(counts) == {
        ("edgecache_cache_hits_total", "mem"): 2,
        ("edgecache_cache_hits_total", "ssd"): 1,
        ("edgecache_cache_read_bytes_total", "mem"): 150,
        ("edgecache_cache_read_bytes_total", "ssd"): 7,
        ("edgecache_cache_read_bytes_total", "peer"): 1,
        ("edgecache_cache_read_bytes_total", "backend"): 4096,
    }


def test_threads_lose_no_count() -> None:
    counts = BlockReadCounts(("mem",), ("mem",))

    def count() -> None:
        for _ in range(20_000):
            counts.hit("mem", 3)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = _samples(counts)
    assert samples[("edgecache_cache_hits_total", "mem")] == 80_000
    assert samples[("edgecache_cache_read_bytes_total", "mem")] == 240_000


def _count_in_child(counts: BlockReadCounts, out: Any) -> None:
    counts.hit("ssd", 1)  # would wait forever on a lock inherited held
    out.put(_samples(counts)[("edgecache_cache_hits_total", "ssd")])


def test_a_forked_worker_counts_though_its_parent_held_the_lock() -> None:
    counts = BlockReadCounts(("ssd",), ("ssd",))
    counts.hit("ssd", 1)
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    with counts._lock:  # a reader thread of the parent counting at the moment of the fork
        child = context.Process(target=_count_in_child, args=(counts, out))
        child.start()
    assert out.get(timeout=30) == 2  # the parent's count at the fork, and its own
    child.join(timeout=30)
    assert child.exitcode == 0
