"""A pool node as a real process for the pool tests: reads through ``fsspec.open`` per file and
serves its blocks to its peers, driven by JSON lines on stdin.

    python peer_process.py '{"name": .., "cache_dir": .., "token_file": .., "s3": {..}, ..}'

It prints ``{"event": "ready", "address": "127.0.0.1:PORT"}`` once its block server listens,
then answers each command line:

    {"cmd": "peers", "peers": ["NAME=HOST:PORT", ...]}   its view of the pool -> ok
    {"cmd": "list", "urls": [...]}                        list their directories (metadata) -> ok
    {"cmd": "read", "urls": [...]}     one "read" event per file (sha256, or error and
                                       whether it is clear), then done
    {"cmd": "stats"}                                      what its server answered, peer counters
    {"cmd": "quit"}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
from typing import Any

import fsspec
from fsspec.asyn import get_loop

from edgecache.errors import BackendUnavailableError
from edgecache.metrics import REGISTRY
from edgecache.pool import Member, PeerTimeouts, PoolNode, PoolSettings, parse_member


def clear(exc: Exception) -> bool:
    """Whether a failed read says clearly why (the backend unreachable)."""
    return isinstance(exc, BackendUnavailableError)


def say(**event: Any) -> None:
    print(json.dumps(event), flush=True)


def main() -> None:
    config = json.loads(sys.argv[1])
    settings = PoolSettings(
        node_name=config["name"],
        listen="127.0.0.1:0",
        token_file=config["token_file"],
        timeouts=PeerTimeouts(**config.get("timeouts", {})),
    )
    node = PoolNode(settings)
    loop = get_loop()
    asyncio.run_coroutine_threadsafe(node.start(), loop).result()
    say(event="ready", address=node.me.address)
    options = {
        "s3": config["s3"],
        "edgecache": {"cache_dir": config["cache_dir"], "block_size": config["block_size"]},
    }
    for line in sys.stdin:
        command = json.loads(line)
        what = command["cmd"]
        if what == "peers":
            members = [parse_member(p) for p in command["peers"]]
            me = next((m for m in members if m.address == node.me.address), None)
            assert me is None or me == node.me, (me, node.me)
            node.membership.set_members([Member(m.name, m.address) for m in members])
            say(event="ok")
        elif what == "list":
            # A listing of each directory (no open: opening files in a row would start
            # fetching the next ones ahead, before the peers are ready).
            for url in command["urls"]:
                of = fsspec.open(url, "rb", **options)
                of.fs.ls(of.path.rsplit("/", 1)[0])
            say(event="ok")
        elif what == "read":
            for url in command["urls"]:
                try:
                    with fsspec.open(url, "rb", **options) as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                except Exception as exc:  # the cloud cut, say: the test judges the error
                    say(event="read", url=url, error=type(exc).__name__, clear=clear(exc))
                    continue
                say(event="read", url=url, sha256=digest)
            say(event="done")
        elif what == "stats":
            served = node.server.requests if node.server else {}
            say(
                event="stats",
                served=served,
                peer_hits=REGISTRY.get_sample_value("edgecache_peer_hits_total"),
                received=REGISTRY.get_sample_value("edgecache_peer_received_bytes_total"),
                sent=REGISTRY.get_sample_value("edgecache_peer_served_bytes_total"),
                asked={
                    result: REGISTRY.get_sample_value(
                        "edgecache_peer_requests_total", {"side": "asked", "result": result}
                    )
                    for result in ("hit", "miss", "timeout", "refused", "error", "corrupt")
                },
            )
        elif what == "quit":
            break
    asyncio.run_coroutine_threadsafe(node.stop(), loop).result()


if __name__ == "__main__":
    main()
