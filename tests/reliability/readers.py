"""A reader process of the reliability suite: reads objects through ``fsspec.open`` with the
edgecache protocol, as a user's process does, and prints one line per read: ``OK <url>``,
``BAD <url>`` (bytes that are no whole version, or not the expected ones) or ``ERR <url>
<exception type>`` (a clear error, allowed while objects change).

    python readers.py CACHE_DIR BLOCK_SIZE SECONDS URL...       (version mode: loop for SECONDS)
    python readers.py CACHE_DIR BLOCK_SIZE --expect FILE.json    (each URL's sha256 given)
    python readers.py CACHE_DIR BLOCK_SIZE --until STOP FILE.json
        (flap mode: read every URL again and again until the file STOP exists, a failed read
        printed as ``ERR <url> <type> clear|unclear``; then a last pass in which each URL is
        retried for up to 30 s and printed as ``FINAL OK|BAD|ERR <url>``)

``--options JSON`` first adds storage options: ``{"edgecache": {...}, "s3": {...}}``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import fsspec

sys.path.insert(0, str(Path(__file__).parent))
from versions import parse_version

from edgecache.errors import BackendUnavailableError


def read(url: str, storage: dict[str, Any]) -> bytes:
    with fsspec.open("edgecache::" + url, **storage) as f:
        data: bytes = f.read()
    return data


def read_until(stop: Path, expected: dict[str, str], storage: dict[str, Any]) -> None:
    """Flap mode: every read exact or a clear error while the link flaps, then all exact."""
    while not stop.exists():
        for url, digest in expected.items():
            try:
                data = read(url, storage)
            except Exception as exc:
                clear = "clear" if isinstance(exc, BackendUnavailableError) else "unclear"
                print(f"ERR {url} {type(exc).__name__} {clear} {exc!r:.300}", flush=True)
                continue
            ok = hashlib.sha256(data).hexdigest() == digest
            print(("OK " if ok else "BAD ") + url, flush=True)
    for url, digest in expected.items():
        deadline = time.monotonic() + 30
        while True:
            try:
                data = read(url, storage)
            except BackendUnavailableError as exc:
                if time.monotonic() < deadline:
                    time.sleep(0.1)
                    continue
                print(f"FINAL ERR {url} {exc!r:.300}", flush=True)
                break
            ok = hashlib.sha256(data).hexdigest() == digest
            print(("FINAL OK " if ok else "FINAL BAD ") + url, flush=True)
            break


def main() -> None:
    args = sys.argv[1:]
    extra: dict[str, Any] = {}
    if args[0] == "--options":
        extra, args = json.loads(args[1]), args[2:]
    cache_dir, block_size, *rest = args
    options: dict[str, Any] = {"cache_dir": cache_dir, "block_size": block_size}
    options.update(extra.pop("edgecache", {}))
    storage = {"edgecache": options, **extra}
    if rest[0] == "--until":
        read_until(Path(rest[1]), json.loads(Path(rest[2]).read_text()), storage)
        return
    if rest[0] == "--expect":
        expected: dict[str, str] = json.loads(Path(rest[1]).read_text())
        for url, digest in expected.items():
            ok = hashlib.sha256(read(url, storage)).hexdigest() == digest
            print(("OK " if ok else "BAD ") + url, flush=True)
        return
    options["metadata_ttl"] = 0  # every open asks for the current version
    deadline = time.monotonic() + float(rest[0])
    while time.monotonic() < deadline:
        for url in rest[1:]:
            try:
                data = read(url, storage)
            except Exception as exc:  # a replaced object may fail clearly, never silently
                print(f"ERR {url} {type(exc).__name__}", flush=True)
                continue
            name = url.rsplit("/", 1)[1]
            print(("OK " if parse_version(name, data) is not None else "BAD ") + url, flush=True)


if __name__ == "__main__":
    main()
