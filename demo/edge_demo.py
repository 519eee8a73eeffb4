"""The edge scenario, end to end, on this machine alone: an OSS bucket in "the cloud", a slow WAN
link to "the edge site", and edgecache at the site.

Starts the OSS test server (signatures checked) and, in front of it, the WAN emulator
(30 ms RTT, 100 Mbit/s), both as separate processes on 127.0.0.1. Seeds a small dataset straight
into the bucket, then drives the real ``edgecache`` command as a site would:

1. list the dataset over the WAN;
2. read it cold (every block crosses the WAN once) and warm (local, a new process);
3. cut the WAN link: listing and reading the data still work, from the cache; an object that
   was never read fails at once with a clear "unreachable" error;
4. print the cache's own report.

Run it with ``scripts/demo`` (which installs everything first). Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import oss2  # type: ignore[import-untyped]

ACCESS_KEY, SECRET = "demo-access-key", "demo-secret-key-value"
BUCKET = "factory-data"
RTT_MS, MBIT = 30, 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"a demo service exited early ({process.args})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"a demo service did not start: {process.args}")


def step(title: str) -> None:
    print(f"\n== {title}", flush=True)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="edgecache-edge-demo-"))
    cache = work / "cache"
    services: list[subprocess.Popen[bytes]] = []
    py = sys.executable
    try:
        oss_port, wan_port = free_port(), free_port()
        oss = subprocess.Popen(
            [
                py,
                "-m",
                "edgecache_testservers.oss",
                "--port",
                str(oss_port),
                "--credentials",
                f"{ACCESS_KEY}:{SECRET}",
                "--bucket",
                BUCKET,
            ],
            stdout=subprocess.DEVNULL,
        )
        services.append(oss)
        wait_for_port(oss_port, oss)
        wan = subprocess.Popen(
            [
                py,
                "-m",
                "edgecache_testservers.wan",
                "--upstream",
                f"127.0.0.1:{oss_port}",
                "--port",
                str(wan_port),
                "--rtt-ms",
                str(RTT_MS),
                "--mbit",
                str(MBIT),
            ],
            stdout=subprocess.DEVNULL,
        )
        services.append(wan)
        wait_for_port(wan_port, wan)

        step(
            f"the cloud: an OSS bucket with 200 images (16 KiB) and a 32 MiB shard; the site "
            f"reaches it over a {RTT_MS} ms / {MBIT} Mbit/s WAN"
        )
        bucket = oss2.Bucket(oss2.Auth(ACCESS_KEY, SECRET), f"http://127.0.0.1:{oss_port}", BUCKET)
        images = {f"images/{i:04d}.jpg": os.urandom(16 * 1024) for i in range(200)}
        for key, data in images.items():
            bucket.put_object(key, data)
        shard = os.urandom(32 * 1024 * 1024)
        bucket.put_object("train/shard-000.bin", shard)

        env = {**os.environ, "EDGECACHE_CACHE_DIR": str(cache), "DEMO_OSS_SECRET": SECRET}
        options = [
            "-o",
            f"endpoint=http://127.0.0.1:{wan_port}",
            "-o",
            f"key={ACCESS_KEY}",
            # The secret comes from the environment, never from the command line.
            "-o",
            "secret=env://DEMO_OSS_SECRET",
            "-o",
            "probe_timeout=2",
        ]

        def edgecache(*args: str, quiet: bool = False) -> tuple[float, bytes]:
            started = time.perf_counter()
            backend = options if args[0] != "stats" else []
            proc = subprocess.run(
                [py, "-m", "edgecache", *args, *backend],
                env=env,
                capture_output=True,
                timeout=300,
            )
            elapsed = time.perf_counter() - started
            if proc.returncode != 0 and not quiet:
                sys.stderr.write(proc.stderr.decode())
                raise SystemExit(f"edgecache {args[0]} failed ({proc.returncode})")
            if quiet:
                last = proc.stderr.decode().strip().splitlines()[-1]
                print(f"   exit {proc.returncode}: {last}")
            return elapsed, proc.stdout

        image_urls = [f"oss://{BUCKET}/{k}" for k in images]
        shard_url = f"oss://{BUCKET}/train/shard-000.bin"
        payload_mib = (sum(len(b) for b in images.values()) + len(shard)) / 2**20

        step("the site lists the bucket through edgecache (listings are cached)")
        _, out = edgecache("ls", "-l", f"oss://{BUCKET}/train/")
        print(out.decode().rstrip())

        step(f"cold read of the images and the shard ({payload_mib:.1f} MiB) over the WAN")
        cold, out = edgecache("cat", *image_urls, shard_url)
        assert out == b"".join(images.values()) + shard, "cold read returned wrong bytes"
        link_mib_s = MBIT / 8 * 1e6 / 2**20
        print(
            f"   {cold:.1f} s ({payload_mib / cold:.1f} MiB/s; the link carries "
            f"{link_mib_s:.1f} MiB/s)"
        )

        step("warm read, a new process: served from the SSD tier, every block checksummed")
        warm, out = edgecache("cat", *image_urls, shard_url)
        assert out == b"".join(images.values()) + shard, "warm read returned wrong bytes"
        print(f"   {warm:.2f} s ({cold / warm:.0f}x faster than cold)")

        step("the WAN link goes down")
        wan.send_signal(signal.SIGTERM)
        wan.wait(timeout=10)
        _, out = edgecache("ls", f"oss://{BUCKET}/images/", "--json", "--set", "metadata_ttl=0")
        print(f"   ls of images/ still answers: {out.decode().count('name')} entries")
        offline, out = edgecache("cat", shard_url, "--set", "metadata_ttl=0")
        assert out == shard, "offline read returned wrong bytes"
        print(f"   cat of the shard still works: {len(out) / 2**20:.0f} MiB in {offline:.2f} s")
        print("   an object the site never read:")
        edgecache("cat", f"oss://{BUCKET}/never-read.bin", "--set", "metadata_ttl=0", quiet=True)

        step("what the cache did (summed over every process that used it)")
        _, out = edgecache("stats")
        print(out.decode().rstrip())
        keep = os.environ.get("EDGECACHE_DEMO_KEEP") == "1"
        print(
            f"\nThe demo's cache is in {work}/cache"
            + ("." if keep else " and is removed now (EDGECACHE_DEMO_KEEP=1 keeps it).")
        )
    finally:
        for process in services:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=10)
        if os.environ.get("EDGECACHE_DEMO_KEEP") != "1":
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
