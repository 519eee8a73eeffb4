"""A reader in its own process (a pod next to the agent): reads one object block by block
through ``fsspec.open("edgecache::s3://...")`` and prints each block's latency as JSON.

    python qos_reader.py '{"moto": ..., "wan": ..., "bucket": ..., "key": ..., "blocks": N,
                           "options": {...}}'
"""

from __future__ import annotations

import json
import sys

from qoslib import Site, block_latencies


class _Endpoint:
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint


def main() -> None:
    job = json.loads(sys.argv[1])
    site = Site(job["moto"], job["bucket"], _Endpoint(job["wan"]))  # type: ignore[arg-type]
    print(json.dumps(block_latencies(site, job["key"], job["options"], job["blocks"])))


if __name__ == "__main__":
    main()
