"""An ``edgecache::`` reader in its own process, as in a pod on a node (the pool's agent
reached through EDGECACHE_POOL_AGENT): reads each URL through ``fsspec.open`` and prints, as
JSON, each file's sha256 and how many blocks peers (its agent) served.

    python pod_reader.py '{"urls": [...], "options": {"s3": {...}, "edgecache": {...}}}'
"""

from __future__ import annotations

import hashlib
import json
import sys

import fsspec

from edgecache.metrics import REGISTRY


def main() -> None:
    job = json.loads(sys.argv[1])
    digests = {}
    for url in job["urls"]:
        with fsspec.open(url, "rb", **job["options"]) as f:
            digests[url] = hashlib.sha256(f.read()).hexdigest()
    hits = REGISTRY.get_sample_value("edgecache_peer_hits_total") or 0.0
    print(json.dumps({"sha256": digests, "peer_hits": hits}))


if __name__ == "__main__":
    main()
