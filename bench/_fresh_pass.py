"""One pass over warm small files in a process of its own: ``cache_bench.py``'s fresh-process
readers (a DataLoader worker of a new epoch, a script run again, a CLI call).

Run by ``cache_bench.py``, not by hand::

    python bench/_fresh_pass.py READER CACHE_DIR FILES_DIR

READER is ``raw``, ``filecache``, ``edgecache`` (one filesystem object), or either cache with
``-open`` (``fsspec.open`` per file); the files of FILES_DIR are read in name order. Prints
one JSON line: the pass's seconds (from before the filesystem is made, so a cache's start-up
counts, to after the last file; the imports are made before, as a program has them before it
reads) and the bytes read.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import fsspec


def main() -> int:
    reader, cache_dir, files_dir = sys.argv[1:]
    paths = [os.path.join(files_dir, name) for name in sorted(os.listdir(files_dir))]
    protocol = reader.removesuffix("-open")
    option = {"filecache": "cache_storage", "edgecache": "cache_dir"}.get(protocol)
    if protocol != "raw":
        fsspec.get_filesystem_class(protocol)  # imported, not timed
    started = time.perf_counter()
    open_file: Callable[[str], Any]
    if protocol == "raw":
        open_file = lambda p: open(p, "rb")  # noqa: E731, SIM115
    elif reader.endswith("-open"):
        options = {protocol: {option: cache_dir}}
        open_file = lambda p: fsspec.open(f"{protocol}::file://{p}", "rb", **options).open()  # noqa: E731
    else:
        fs = fsspec.filesystem(protocol, target_protocol="file", **{option: cache_dir})
        open_file = lambda p: fs.open(p, "rb")  # noqa: E731
    total = 0
    for path in paths:
        with open_file(path) as f:
            total += len(f.read())
    seconds = time.perf_counter() - started
    print(json.dumps({"seconds": seconds, "bytes": total}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
