"""Hit ratio of LRU vs S3-FIFO (the default policy) on synthetic block-access traces.

Command::

    .venv/bin/python bench/eviction_bench.py            # all traces, ~1 min on 2 cores
    .venv/bin/python bench/eviction_bench.py --quick    # smaller traces

Traces (seeded, so every run sees the same accesses; each row is the mean over 3 seeds):

* ``scan-mix``: a hot set of 2,000 blocks read with Zipf(0.9) popularity (80% of accesses),
  interleaved with one-off sequential scans of blocks that are never read again (20%), the
  pattern of a training job sharing a node with batch exports. 100,000 accesses; cache sizes
  of 5, 10 and 20% of the distinct blocks (about 0.5x, 1x and 2x the hot set).
* ``zipf``: pure Zipf popularity over 20,000 blocks, cache 10% of them.
* ``loop``: a sequential loop over 12,000 blocks, repeated, with a 10,000-block cache (LRU's
  worst case: every access misses).

The policies run on :class:`~edgecache.cache.eviction.MemoryPolicyStore` exactly as the MEM tier
drives them (same admit / touch / evict calls, one unit per block). Then one smaller scan-mix
trace goes through the real SSD tier (:class:`~edgecache.cache.TieredCache` with a zero MEM
quota: sqlite index, block files, batched hit recording) to show that the persisted policy
gives the same hit ratio as the in-memory one on the same trace.
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from _common import print_table, ratio, scratch_dir, write_results

from edgecache.cache import BlockKey, TieredCache
from edgecache.cache.eviction import EvictionPolicy, LRUPolicy, MemoryPolicyStore, S3FIFOPolicy
from edgecache.config import CacheSettings

POLICIES: dict[str, type[EvictionPolicy]] = {"lru": LRUPolicy, "s3fifo": S3FIFOPolicy}


# --- traces ------------------------------------------------------------------------------------
def zipf_weights(n: int, alpha: float) -> list[float]:
    """Cumulative Zipf(alpha) weights over ranks 1..n (for ``random.choices(cum_weights=)``)."""
    return list(itertools.accumulate(1.0 / (rank**alpha) for rank in range(1, n + 1)))


def scan_mix_trace(
    *,
    accesses: int,
    hot_keys: int,
    hot_share: float,
    scan_length: int,
    alpha: float,
    seed: int,
) -> list[str]:
    """Zipf hot set interleaved with sequential one-off scans of fresh keys."""
    rng = random.Random(seed)
    cum = zipf_weights(hot_keys, alpha)
    hot_ids = list(range(hot_keys))
    rng.shuffle(hot_ids)  # popularity rank is not key order
    hot = rng.choices(hot_ids, cum_weights=cum, k=accesses)
    trace: list[str] = []
    scan_file, scan_pos = 0, 0
    for i in range(accesses):
        if rng.random() < hot_share:
            trace.append(f"hot/{hot[i]}")
        else:
            trace.append(f"scan{scan_file}/{scan_pos}")
            scan_pos += 1
            if scan_pos == scan_length:
                scan_file, scan_pos = scan_file + 1, 0
    return trace


def zipf_trace(*, accesses: int, keys: int, alpha: float, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = list(range(keys))
    rng.shuffle(ids)
    return [f"z/{k}" for k in rng.choices(ids, cum_weights=zipf_weights(keys, alpha), k=accesses)]


def loop_trace(*, loops: int, keys: int) -> list[str]:
    return [f"loop/{k}" for _ in range(loops) for k in range(keys)]


# --- simulation --------------------------------------------------------------------------------
def simulate(policy: EvictionPolicy, trace: Sequence[str], capacity: int) -> float:
    """Hit ratio of ``policy`` with room for ``capacity`` blocks, driven like the MEM tier."""
    store = MemoryPolicyStore()
    hits = 0
    for key in trace:
        if key in store:
            hits += 1
            store.touch(policy, key)
            continue
        overflow = store.total_bytes() + 1 - capacity
        if overflow > 0:
            policy.evict(store, overflow)
        queue, freq = policy.admit(store, key)
        store.insert(key, 1, queue, freq)
    return hits / len(trace)


def run_ssd_tier(
    policy_name: str,
    trace: Sequence[str],
    capacity: int,
    block_size: int,
    *,
    flush_each: bool = False,
) -> tuple[float, float, int]:
    """Replay ``trace`` through a real TieredCache whose MEM tier holds nothing.

    Returns (hit ratio, seconds, blocks the SSD index holds at the end). A miss stores the block
    (``put``, as a fill does); a hit is ``get_cached`` served from a verified block file. The
    tier records hits in batches (every 512 hits or 1 s); ``flush_each`` writes each hit to the
    index at once instead, which shows what the batching costs the policy.
    """
    from edgecache.cache._blockfile import uncompressed_file_bytes

    stored = uncompressed_file_bytes(block_size)  # compression "none": every file this size
    payload = os.urandom(block_size)
    with scratch_dir("eviction") as cache_dir:
        settings = CacheSettings(
            cache_dir=cache_dir,
            block_size=block_size,
            mem_quota=0,
            ssd_quota=capacity * stored,
            # Evict one block at a time, as the MEM tier and simulate() do, so the two runs
            # differ only in where the policy state lives.
            ssd_high=1.0,
            ssd_low=1.0,
            compression="none",
            eviction_policy=policy_name,
        )
        cache = TieredCache(settings)
        keys = {k: BlockKey("bench", k, "v1", 0, block_size) for k in set(trace)}
        hits = 0
        started = time.perf_counter()
        for name in trace:
            key = keys[name]
            if cache.get_cached(key) is not None:
                hits += 1
                if flush_each:
                    cache.flush()
            else:
                cache.put(key, payload)
        elapsed = time.perf_counter() - started
        blocks = sum(u.blocks for u in cache.ssd.usage())
        cache.close()
    return hits / len(trace), elapsed, blocks


def simulate_ssd_rule(policy: EvictionPolicy, trace: Sequence[str], capacity: int) -> float:
    """:func:`simulate` with the SSD tier's eviction arithmetic at high = low = 1.0.

    The SSD index evicts ``used + size - min(low * quota, quota - size)``: one block more than
    the overflow, so the tier holds ``capacity - 1`` blocks right after an eviction. Replaying
    that rule in memory isolates what is left: where the policy's state lives.
    """
    store = MemoryPolicyStore()
    hits = 0
    for key in trace:
        if key in store:
            hits += 1
            store.touch(policy, key)
            continue
        used = store.total_bytes()
        if used + 1 > capacity:
            policy.evict(store, used + 1 - (capacity - 1))
        queue, freq = policy.admit(store, key)
        store.insert(key, 1, queue, freq)
    return hits / len(trace)


# --- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller traces (a smoke run)")
    parser.add_argument("--seed", type=int, default=20261123, help="first RNG seed")
    parser.add_argument("--seeds", type=int, default=3, help="traces per row (seed, seed+1...)")
    args = parser.parse_args(argv)
    scale = 0.2 if args.quick else 1.0
    seed = args.seed

    seeds = [seed + i for i in range(args.seeds)]
    results: dict[str, object] = {"seeds": seeds, "quick": args.quick, "traces": []}
    rows = []

    def measure(
        trace_name: str,
        make_trace: Callable[[int], list[str]],
        capacity_of: Callable[[int], int],
        params: dict[str, object],
    ) -> None:
        """Both policies on the trace of every seed; mean hit ratios, min..max of their ratio."""
        per_seed = []
        for s in seeds:
            trace = make_trace(s)
            distinct = len(set(trace))
            capacity = capacity_of(distinct)
            hit = {name: simulate(cls(), trace, capacity) for name, cls in POLICIES.items()}
            per_seed.append(
                {
                    "seed": s,
                    "accesses": len(trace),
                    "distinct_blocks": distinct,
                    "cache_blocks": capacity,
                    "hit_ratio": hit,
                    "s3fifo_over_lru": ratio(hit["s3fifo"], hit["lru"]),
                }
            )
        mean = {n: statistics.fmean(r["hit_ratio"][n] for r in per_seed) for n in POLICIES}
        rels = [r["s3fifo_over_lru"] for r in per_seed]
        if any(r is None for r in rels):
            shown: object = "inf (LRU 0)"
        else:
            lo, hi = min(rels), max(rels)
            shown = f"{statistics.fmean(rels):.2f} ({lo:.2f}..{hi:.2f})"
        first = per_seed[0]
        capacity, distinct = first["cache_blocks"], first["distinct_blocks"]
        rows.append(
            [
                trace_name,
                f"{first['accesses']:,}",
                f"{distinct:,}",
                f"{capacity:,} ({100 * capacity / distinct:.0f}%)",
                mean["lru"],
                mean["s3fifo"],
                shown,
            ]
        )
        results["traces"].append(  # type: ignore[attr-defined]
            {
                "trace": trace_name,
                "params": params,
                "mean_hit_ratio": mean,
                "s3fifo_over_lru_mean": None if None in rels else statistics.fmean(rels),
                "runs": per_seed,
            }
        )

    # (a) scan-mix at three cache sizes: 5% / 10% / 20% of the distinct blocks, which with
    # 100k accesses is about half, once and twice the hot set.
    mix_params: dict[str, object] = {
        "accesses": int(100_000 * scale),
        "hot_keys": 2000,
        "hot_share": 0.8,
        "scan_length": 1000,
        "alpha": 0.9,
    }
    for share in (0.05, 0.10, 0.20):
        measure(
            f"scan-mix, cache {share:.0%}",
            lambda s: scan_mix_trace(seed=s, **mix_params),  # type: ignore[arg-type]
            lambda d, share=share: int(d * share),  # type: ignore[misc]
            mix_params,
        )

    # (b) pure Zipf.
    zipf_params: dict[str, object] = {
        "accesses": int(500_000 * scale),
        "keys": 20_000,
        "alpha": 0.9,
    }
    measure(
        "zipf a=0.9, cache 10%",
        lambda s: zipf_trace(seed=s, **zipf_params),  # type: ignore[arg-type]
        lambda d: 2000,
        zipf_params,
    )

    # (c) a loop larger than the cache (deterministic: one seed is enough, the others repeat it).
    loop_params = {"loops": 10 if not args.quick else 4, "keys": 12_000}
    measure(
        "loop 12k, cache 10k",
        lambda s: loop_trace(**loop_params),
        lambda d: 10_000,
        loop_params,  # type: ignore[arg-type]
    )

    print_table(
        f"Hit ratio by policy (MemoryPolicyStore, one unit per block; mean of {len(seeds)} seeds)",
        [
            "trace",
            "accesses",
            "distinct",
            "cache blocks",
            "LRU",
            "S3-FIFO",
            "S3-FIFO/LRU (min..max)",
        ],
        rows,
    )

    # One smaller scan-mix trace through the real SSD tier, against the in-memory policy.
    ssd_params = {
        # A fifth of the in-memory scan-mix, so the 10% cache is again about the hot set.
        "accesses": int(20_000 * (0.5 if args.quick else 1.0)),
        "hot_keys": 400,
        "hot_share": 0.8,
        "scan_length": 200,
        "alpha": 0.9,
        "seed": seed + 1,
    }
    ssd_trace = scan_mix_trace(**ssd_params)  # type: ignore[arg-type]
    ssd_distinct = len(set(ssd_trace))
    capacity = int(ssd_distinct * 0.10)
    block_size = 4096
    ssd_rows = []
    ssd_results = []
    for name, cls in POLICIES.items():
        mem_ratio = simulate(cls(), ssd_trace, capacity)
        rule_ratio = simulate_ssd_rule(cls(), ssd_trace, capacity)
        tier_ratio, seconds, blocks = run_ssd_tier(name, ssd_trace, capacity, block_size)
        flushed_ratio, _, _ = run_ssd_tier(name, ssd_trace, capacity, block_size, flush_each=True)
        ssd_rows.append(
            [
                name,
                mem_ratio,
                rule_ratio,
                flushed_ratio,
                tier_ratio,
                f"{blocks}/{capacity}",
                1e6 * seconds / len(ssd_trace),
            ]
        )
        ssd_results.append(
            {
                "policy": name,
                "hit_ratio_memory_store": mem_ratio,
                "hit_ratio_memory_store_ssd_rule": rule_ratio,
                "hit_ratio_ssd_tier": tier_ratio,
                "hit_ratio_ssd_tier_hits_flushed_each_access": flushed_ratio,
                "ssd_blocks_at_end": blocks,
                "seconds": seconds,
                "us_per_access": 1e6 * seconds / len(ssd_trace),
            }
        )
    by_name = {r["policy"]: r for r in ssd_results}
    ssd_rel = ratio(
        by_name["s3fifo"]["hit_ratio_ssd_tier"],  # type: ignore[arg-type]
        by_name["lru"]["hit_ratio_ssd_tier"],  # type: ignore[arg-type]
    )
    print_table(
        f"Real SSD tier vs in-memory policy: scan-mix, {len(ssd_trace):,} accesses, "
        f"{ssd_distinct:,} distinct, cache {capacity} blocks of {block_size} B (10%), "
        f"MEM quota 0",
        [
            "policy",
            "memory store",
            "memory, SSD rule",
            "SSD, hits unbatched",
            "SSD tier",
            "blocks held",
            "µs/access",
        ],
        ssd_rows,
    )
    print(f"S3-FIFO/LRU through the SSD tier: {ssd_rel:.2f}x")
    results["ssd_tier"] = {
        "params": ssd_params,
        "distinct_blocks": ssd_distinct,
        "cache_blocks": capacity,
        "block_size": block_size,
        "runs": ssd_results,
        "s3fifo_over_lru": ssd_rel,
    }
    write_results("eviction_bench", results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
