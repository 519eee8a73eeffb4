"""Link behaviour over an emulated WAN: how long a cut, a restore and a hung link cost a reader.

Not a test: numbers for bench/README.md. Everything goes through ``fsspec.open`` with a fresh URL
per file (as a training loop or pandas does), over the project's WAN emulator in front of moto
(in this process, like the tests; these are latency measurements, not throughput ones).

    .venv/bin/python bench/link_bench.py [--rtt-ms 30 --mbit 100] [--json FILE]

Measured:
- cut (reset): time from the cut to the first failing uncached read, and the cost of a cached
  read while cut;
- restore: time from the restore to the first successful uncached read (a read every 50 ms);
- hung link (blackhole): after the metadata TTL, the time to open and read a cached file, for the
  first file and the ones after it, and the time an uncached read takes to fail (at once, and
  when a probe is due and the read waits for it).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from typing import Any

import boto3
import fsspec
from edgecache_testservers.wan import WANEmulator, WANProfile
from moto.server import ThreadedMotoServer

KEY, SECRET, BUCKET = "edge", "edge-secret", "link-bench"
SIZE = 64 * 1024


def _timed(action: Callable[[], Any]) -> tuple[float, BaseException | None]:
    started = time.perf_counter()
    try:
        action()
    except Exception as exc:  # the outcome is part of the measurement
        return time.perf_counter() - started, exc
    return time.perf_counter() - started, None


class Link:
    def __init__(self, wan: WANEmulator, cache_dir: str, *, one_object: bool, **cache: Any) -> None:
        self.wan = wan
        self.storage_options = {
            "s3": {"endpoint_url": wan.endpoint, "key": KEY, "secret": SECRET},
            "edgecache": {"cache_dir": cache_dir, **cache},
        }
        self.fs = None
        if one_object:
            self.fs = fsspec.filesystem(
                "edgecache",
                target_protocol="s3",
                target_options=self.storage_options["s3"],
                **self.storage_options["edgecache"],
            )

    def read(self, name: str) -> bytes:
        if self.fs is not None:
            return bytes(self.fs.cat_file(f"s3://{BUCKET}/{name}"))
        url = f"edgecache::s3://{BUCKET}/{name}"
        options = {k: dict(v) for k, v in self.storage_options.items()}
        with fsspec.open(url, "rb", **options) as f:
            data: bytes = f.read()
        return data


def cut_and_restore(link: Link, prefix: str, files: int) -> dict[str, Any]:
    for i in range(files):
        link.read(f"{prefix}/warm{i}")
    link.wan.cut("reset")
    cut_at = time.perf_counter()
    first_failure, error = _timed(lambda: link.read(f"{prefix}/cold-a"))
    first_failure = time.perf_counter() - cut_at
    failing = [_timed(lambda i=i: link.read(f"{prefix}/cold-b{i}")) for i in range(5)]
    cached = [_timed(lambda i=i: link.read(f"{prefix}/warm{i}")) for i in range(files)]
    time.sleep(0.5)  # the link stays down a moment, as an outage would
    link.wan.restore()
    restored_at = time.perf_counter()
    attempts = 0
    while True:
        attempts += 1
        _, exc = _timed(lambda n=attempts: link.read(f"{prefix}/cold-c{n}"))
        if exc is None:
            break
        if time.perf_counter() - restored_at > 120:
            raise RuntimeError("no successful read within 120 s of the restore")
        time.sleep(0.05)
    return {
        "cut_to_first_failure_s": round(first_failure, 3),
        "first_failure": type(error).__name__ if error else None,
        "uncached_while_cut_s": [round(t, 4) for t, _ in failing],
        "uncached_while_cut_failed": all(e is not None for _, e in failing),
        "cached_while_cut_s": [round(t, 4) for t, _ in cached],
        "cached_while_cut_failed": [e is not None for _, e in cached],
        "restore_to_first_success_s": round(time.perf_counter() - restored_at, 3),
        "reads_until_success": attempts,
    }


def hung_link(link: Link, prefix: str, files: int, ttl: float) -> dict[str, Any]:
    for i in range(files):
        link.read(f"{prefix}/hung{i}")
    time.sleep(ttl + 0.2)  # past the metadata TTL: opening a file asks the backend again
    link.wan.cut("blackhole")
    try:
        cached = [_timed(lambda i=i: link.read(f"{prefix}/hung{i}")) for i in range(files)]
        uncached = [_timed(lambda i=i: link.read(f"{prefix}/hung-cold{i}")) for i in range(2)]
        time.sleep(1.1)  # a probe is due now: the next uncached read waits for it
        uncached_probing = _timed(lambda: link.read(f"{prefix}/hung-cold2"))
    finally:
        link.wan.restore()
    return {
        "cached_after_ttl_s": [round(t, 3) for t, _ in cached],
        "cached_after_ttl_failed": [e is not None for _, e in cached],
        "uncached_s": [round(t, 3) for t, _ in uncached],
        "uncached_errors": [str(e)[:300] if e else None for _, e in uncached],
        "uncached_with_probe_due_s": round(uncached_probing[0], 3),
        "uncached_with_probe_due_failed": uncached_probing[1] is not None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rtt-ms", type=float, default=30)
    parser.add_argument("--mbit", type=float, default=100)
    parser.add_argument("--files", type=int, default=4, help="cached files per scenario")
    parser.add_argument("--ttl", type=float, default=2.0, help="metadata_ttl, seconds")
    parser.add_argument("--only", choices=("cut", "hung"), default=None)
    parser.add_argument(
        "--one-object",
        action="store_true",
        help="read through one fsspec.filesystem object instead of fsspec.open per file",
    )
    parser.add_argument("--json", default=None, help="write the results here too")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's request log
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        os.environ.pop(name, None)

    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    client.create_bucket(Bucket=BUCKET)
    prefix = f"run-{uuid.uuid4().hex[:8]}"
    names = [f"warm{i}" for i in range(args.files)] + [f"hung{i}" for i in range(args.files)]
    names += ["cold-a"] + [f"cold-b{i}" for i in range(5)]
    names += [f"cold-c{i}" for i in range(1, 400)] + ["hung-cold0", "hung-cold1", "hung-cold2"]
    for name in names:
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=os.urandom(SIZE))

    results: dict[str, Any] = {
        "rtt_ms": args.rtt_ms,
        "mbit": args.mbit,
        "file_bytes": SIZE,
        "api": "fsspec.filesystem" if args.one_object else "fsspec.open per file",
    }
    profile = WANProfile(rtt_ms=args.rtt_ms, mbit=args.mbit)
    try:
        with WANEmulator(endpoint, profile) as wan, tempfile.TemporaryDirectory() as tmp:
            if args.only in (None, "cut"):
                link = Link(
                    wan, os.path.join(tmp, "cut"), one_object=args.one_object, metadata_ttl=60
                )
                results["cut_restore"] = cut_and_restore(link, prefix, args.files)
                print(json.dumps(results["cut_restore"]), file=sys.stderr)
            if args.only in (None, "hung"):
                link = Link(
                    wan,
                    os.path.join(tmp, "hung"),
                    one_object=args.one_object,
                    metadata_ttl=args.ttl,
                )
                results["hung"] = hung_link(link, prefix, args.files, args.ttl)
                print(json.dumps(results["hung"]), file=sys.stderr)
    finally:
        moto.stop()
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
