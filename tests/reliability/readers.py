"""A reader process of the reliability suite: reads objects through ``fsspec.open`` with the
edgecache protocol, as a user's process does, and prints one line per read: ``OK <url>``,
``BAD <url>`` (bytes that are no whole version, or not the expected ones) or ``ERR <url>
<exception type>`` (a clear error, allowed while objects change).

    python readers.py CACHE_DIR BLOCK_SIZE SECONDS URL...       (version mode: loop for SECONDS)
    python readers.py CACHE_DIR BLOCK_SIZE --expect FILE.json    (each URL's sha256 given)
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import fsspec

sys.path.insert(0, str(Path(__file__).parent))
from conftest import parse_version


def read(url: str, options: dict[str, object]) -> bytes:
    with fsspec.open("edgecache::" + url, edgecache=options) as f:
        data: bytes = f.read()
    return data


def main() -> None:
    cache_dir, block_size, *rest = sys.argv[1:]
    options: dict[str, object] = {"cache_dir": cache_dir, "block_size": block_size}
    if rest[0] == "--expect":
        expected: dict[str, str] = json.loads(Path(rest[1]).read_text())
        for url, digest in expected.items():
            ok = hashlib.sha256(read(url, options)).hexdigest() == digest
            print(("OK " if ok else "BAD ") + url, flush=True)
        return
    options["metadata_ttl"] = 0  # every open asks for the current version
    deadline = time.monotonic() + float(rest[0])
    while time.monotonic() < deadline:
        for url in rest[1:]:
            try:
                data = read(url, options)
            except Exception as exc:  # a replaced object may fail clearly, never silently
                print(f"ERR {url} {type(exc).__name__}", flush=True)
                continue
            name = url.rsplit("/", 1)[1]
            print(("OK " if parse_version(name, data) is not None else "BAD ") + url, flush=True)


if __name__ == "__main__":
    main()
