"""The "ResNet pod": an inference-like reader, run as its own process for each phase.

It reads a random sample of the dataset's images in random order (the same sample, seeded, in
every phase), checks each one against the manifest, and spends a fixed amount of CPU time per
image (the model's forward pass, scaled down). It reads either a node's view (``--view DIR``:
plain files, what a pod mounting the Dataset's PVC sees) or straight from the cloud
(``--oss ENDPOINT``: ossfs over the WAN, what a site without a cache does today).

Prints one JSON line: images read, bytes, seconds, and the keys that failed or came back wrong.
Exit status 0 only if every image was read with the right bytes.

    python -m edgedemo.reader --manifest M.json --count 150 --view /node-1/datasets/default/images
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edgedemo.imageset import BUCKET, PREFIX, Manifest, digest


def sample(manifest: Manifest, count: int, seed: int = 7) -> list[str]:
    images = manifest.images
    return random.Random(seed).sample(images, min(count, len(images)))


def infer(data: bytes, cpu_seconds: float) -> int:
    """Busy for ``cpu_seconds`` of this process's CPU time: a fixed cost per image, whatever
    the machine's load, so the phases differ only by how the bytes arrive."""
    deadline = time.process_time() + cpu_seconds
    acc = 0
    while time.process_time() < deadline:
        for byte in data[:4096:64]:
            acc = (acc * 31 + byte) & 0xFFFFFFFF
    return acc


def view_opener(root: Path) -> Callable[[str], bytes]:
    def read(key: str) -> bytes:
        with open(root / key, "rb") as f:
            return f.read()

    return read


def cloud_opener(endpoint: str, key_id: str, secret: str) -> Callable[[str], bytes]:
    import fsspec

    options = {"endpoint": endpoint, "key": key_id, "secret": secret}

    def read(key: str) -> bytes:
        # One fsspec.open per image, as a training or inference loop does it.
        with fsspec.open(f"oss://{BUCKET}/{PREFIX}{key}", "rb", **options) as f:
            data: bytes = f.read()
            return data

    return read


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edgedemo.reader", description=__doc__)
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--cpu-ms", type=float, default=4.0)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--view", type=Path, help="a node's view of the Dataset")
    source.add_argument("--oss", metavar="ENDPOINT", help="read the bucket straight over the WAN")
    parser.add_argument("--key-id", default="")
    parser.add_argument("--secret-env", default="DEMO_OSS_SECRET")
    args = parser.parse_args(argv)

    manifest = Manifest.load(args.manifest)
    if args.view is not None:
        read = view_opener(args.view)
    else:
        read = cloud_opener(args.oss, args.key_id, os.environ.get(args.secret_env, ""))
    keys = sample(manifest, args.count)
    failed: list[str] = []
    wrong: list[str] = []
    total = 0
    started = time.perf_counter()
    for key in keys:
        try:
            data = read(key)
        except Exception as exc:
            failed.append(f"{key}: {type(exc).__name__}: {exc}"[:300])
            continue
        total += len(data)
        if (len(data), digest(data)) != manifest.files[key]:
            wrong.append(key)
        infer(data, args.cpu_ms / 1000)
    seconds = time.perf_counter() - started
    result = {
        "images": len(keys) - len(failed),
        "asked": len(keys),
        "bytes": total,
        "seconds": seconds,
        "failed": failed[:10],
        "failed_count": len(failed),
        "wrong": wrong[:10],
        "wrong_count": len(wrong),
    }
    print(json.dumps(result), flush=True)
    return 0 if not failed and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
