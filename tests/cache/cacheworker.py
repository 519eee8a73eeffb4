"""A process that uses a shared cache directory, for the multi-process and crash tests.

Usage: ``python cacheworker.py MODE CONFIG_JSON``, where the JSON holds ``settings`` (keyword
arguments of :func:`cachetestlib.settings`), ``objects`` (``[path, size, compressible]``) and
mode-specific fields. Object bytes are regenerated from their paths, so the worker checks what
it reads against the true source without being sent it.

* ``read``: wait for ``go_path`` to exist, read every object once in a seeded random order,
  write ``{"ok": ..., "bad": [...]}`` to ``out_path``.
* ``hang``: start reading the first object with a fetch that logs itself, then never returns
  (so the worker holds the block's cross-process lock until it is killed).
* ``fill``: print ``ready``, then read random objects forever under the (small) quota, pinning
  and unpinning now and then; exit 3 at once if a read is not exact. The crash test kills it;
  with ``steps`` it stops by itself after that many operations.
* ``count``: read every object once (misses), print ``done``, then wait to be killed without
  flushing or closing the cache (what a killed process's counters look like).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sys
import time

from cachetestlib import ObjectSpec, Source, read_object, settings

from edgecache.cache import TieredCache
from edgecache.errors import PinError, TemporaryError


def main() -> int:
    mode, config = sys.argv[1], json.loads(sys.argv[2])
    specs = [ObjectSpec(p, n, bool(c)) for p, n, c in config["objects"]]
    source = Source.of(specs, log_path=config.get("log_path"))
    source.delay_seconds = config.get("delay_seconds", 0.0)
    cache = TieredCache(settings(**config["settings"]))
    if mode == "read":
        return _read(cache, source, specs, config)
    if mode == "hang":
        return asyncio.run(_hang(cache, source, specs))
    if mode == "fill":
        return asyncio.run(_fill(cache, source, specs, config))
    if mode == "count":
        for spec in specs:
            asyncio.run(read_object(cache, source, spec.path))
        print("done", flush=True)
        time.sleep(3600)
        return 0
    raise SystemExit(f"unknown mode {mode}")


def _read(cache: TieredCache, source: Source, specs: list[ObjectSpec], config: dict) -> int:
    print("ready", flush=True)
    while not os.path.exists(config["go_path"]):
        time.sleep(0.0005)
    order = list(specs)
    random.Random(config["seed"]).shuffle(order)

    async def run() -> list[str]:
        bad = []
        for s in order:
            if await read_object(cache, source, s.path) != s.data():
                bad.append(s.path)
        return bad

    bad = asyncio.run(run())
    cache.close()
    with open(config["out_path"], "w") as f:
        json.dump({"ok": not bad, "bad": bad}, f)
    return 0


async def _hang(cache: TieredCache, source: Source, specs: list[ObjectSpec]) -> int:
    key = source.keys(specs[0].path)[0]

    async def fetch() -> bytes:
        source.record(key)
        await asyncio.sleep(3600)
        return source.block(key)

    print("ready", flush=True)
    await cache.get(key, fetch)
    return 0


async def _fill(cache: TieredCache, source: Source, specs: list[ObjectSpec], config: dict) -> int:
    rng = random.Random(config["seed"])
    print("ready", flush=True)
    steps = config.get("steps")  # None: until killed
    while steps is None or steps > 0:
        if steps is not None:
            steps -= 1
        roll = rng.random()
        if roll < 0.02:
            with contextlib.suppress(PinError, TemporaryError):
                cache.pin(
                    "p", backend=source.backend, prefix=rng.choice(specs).path, reserve_bytes=1
                )
        elif roll < 0.04:
            with contextlib.suppress(TemporaryError):  # the tier may be out of service
                cache.unpin("p")
        elif roll < 0.06:
            cache.invalidate(source.keys(rng.choice(specs).path))
        else:
            s = rng.choice(specs)
            if await read_object(cache, source, s.path) != s.data():
                print(f"MISMATCH {s.path}", flush=True)
                return 3
    cache.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
