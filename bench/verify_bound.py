"""The ceiling of a verified warm read on this machine: what issue #9's ">= 0.85x raw" asks of
the SSD tier, measured without edgecache.

Every byte the SSD tier returns is hashed (xxh3-64, per 64 KiB segment) after it is read from
disk. This script times, on one file in the page cache, for each read size: a plain
``f.read(n)`` (the bench's raw reader), a bare ``os.pread(n)``, and ``os.pread(n)`` followed by
xxh3 of each 64 KiB segment of it (the least a verified read can do), plus xxh3 alone on data
in the CPU's cache, and whether two threads hashing at once run faster than one (they do not
when the hash holds the GIL)::

    .venv/bin/python bench/verify_bound.py            # 128 MiB, best of 7

The ratio "pread + xxh3 / raw" is the bound of any verified read in one Python thread; the
read path's own work (file object, engine, block lookup) comes on top of it.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

import xxhash

MiB = 1024 * 1024
SEGMENT = 64 * 1024
SIZES = (4 * MiB, MiB, SEGMENT)


def best(runs: int, work: object) -> float:
    assert callable(work)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=128, help="file size, MiB")
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    size = args.size * MiB
    with tempfile.TemporaryDirectory() as work:
        path = os.path.join(work, "data")
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        fd = os.open(path, os.O_RDONLY)
        try:
            print(f"{args.size} MiB in the page cache, best of {args.runs}, GB/s")
            print(f"{'read size':>9} | {'f.read':>7} | {'pread':>7} | {'pread+xxh3':>10} | bound")
            for n in SIZES:

                def raw(n: int = n) -> None:
                    with open(path, "rb", buffering=0) as f:
                        while f.read(n):
                            pass

                def bare(n: int = n) -> None:
                    for offset in range(0, size, n):
                        os.pread(fd, n, offset)

                def verified(n: int = n) -> None:
                    for offset in range(0, size, n):
                        # Released before the next read, as a reader's buffer is: holding two
                        # 4 MiB buffers makes malloc map fresh memory for each (page faults).
                        with memoryview(os.pread(fd, n, offset)) as view:
                            for o in range(0, n, SEGMENT):
                                xxhash.xxh3_64_intdigest(view[o : o + SEGMENT])

                t_raw, t_bare, t_verified = (best(args.runs, w) for w in (raw, bare, verified))
                gbs = [size / t / 1e9 for t in (t_raw, t_bare, t_verified)]
                print(
                    f"{n // 1024:>6} KiB | {gbs[0]:7.1f} | {gbs[1]:7.1f} | {gbs[2]:10.1f} | "
                    f"{t_raw / t_verified:.2f}x raw"
                )
        finally:
            os.close(fd)
    block = os.urandom(MiB)
    rounds = 400
    one = best(3, lambda: [xxhash.xxh3_64_intdigest(block) for _ in range(rounds)])
    print(f"xxh3-64 of 1 MiB in the CPU's cache: {rounds * MiB / one / 1e9:.1f} GB/s")

    def two_threads() -> None:
        threads = [
            threading.Thread(
                target=lambda: [xxhash.xxh3_64_intdigest(block) for _ in range(rounds // 2)]
            )
            for _ in range(2)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    both = best(3, two_threads)
    print(
        f"the same work in two threads: {one / both:.2f}x the speed of one "
        "(1.0: the hash holds the GIL; 2.0 would take both cores)"
    )


if __name__ == "__main__":
    main()
