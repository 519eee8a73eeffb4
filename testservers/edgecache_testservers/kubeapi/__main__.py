"""``python -m edgecache_testservers.kubeapi``: the test API server standalone (the demo uses it).

Prints one line, ``kubeapi listening on URL``, once it serves; with ``--tls-dir`` a second line
gives the CA file for clients. Stops cleanly on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path
from typing import Any

import yaml

from . import objects
from ._server import KubeAPIServer


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m edgecache_testservers.kubeapi", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    parser.add_argument(
        "--token", action="append", default=[], help="accepted bearer token (repeatable)"
    )
    parser.add_argument(
        "--allow-anonymous", action="store_true", help="serve requests without a token"
    )
    parser.add_argument(
        "--tls-dir", type=Path, help="serve HTTPS; write a test CA and certificates here"
    )
    parser.add_argument(
        "--bookmark-interval", type=float, default=60.0, help="seconds between bookmarks"
    )
    parser.add_argument(
        "--seed-pods", type=int, default=0, help="create this many pods in 'default'"
    )
    parser.add_argument(
        "--seed", type=Path, action="append", default=[], help="YAML/JSON objects to store at start"
    )
    return parser.parse_args(argv)


def _documents(path: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for document in yaml.safe_load_all(path.read_text()):
        if (
            isinstance(document, dict)
            and document.get("kind", "").endswith("List")
            and "items" in document
        ):
            found.extend(document["items"])
        elif isinstance(document, dict):
            found.append(document)
    return found


async def _serve(args: argparse.Namespace) -> None:
    tls: Any = False
    if args.tls_dir is not None:
        from ._tls import PKI

        tls = PKI.create(args.tls_dir, host=args.host)
    server = KubeAPIServer(
        host=args.host,
        port=args.port,
        tokens=args.token or None,
        allow_anonymous=args.allow_anonymous,
        bookmark_interval_seconds=args.bookmark_interval,
        tls=tls,
    )
    for path in args.seed:
        for obj in _documents(path):
            server.put(obj)  # CRDs come first in a file, so later objects find their resource
    if args.seed_pods:
        server.seed(objects.pods(args.seed_pods))
    await server.astart()
    print(f"kubeapi listening on {server.url}", flush=True)
    if server.pki is not None:
        print(f"kubeapi certificate authority {server.pki.ca_cert}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    await done.wait()
    await server.astop(abort=False)


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_parse(argv)))


if __name__ == "__main__":
    main()
