"""``python -m edgecache_testservers.oss``: the OSS test server on its own (benchmarks, demos)."""

from __future__ import annotations

import argparse
import asyncio
import signal

from ._server import OSSServer


def _credential(text: str) -> tuple[str, str]:
    key, sep, secret = text.partition(":")
    if not sep or not key or not secret:
        raise argparse.ArgumentTypeError("expected ACCESS_KEY_ID:SECRET")
    return key, secret


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m edgecache_testservers.oss", description=__doc__
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="listen port (default: a free one)")
    parser.add_argument(
        "--credentials",
        type=_credential,
        action="append",
        default=[],
        metavar="AK:SK",
        help="an accepted access key id and secret (repeatable; default: the test pair)",
    )
    parser.add_argument(
        "--bucket", action="append", default=[], help="create this bucket (repeatable)"
    )
    parser.add_argument("--region", default="cn-hangzhou", help="reported bucket region")
    return parser.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    server = OSSServer(
        host=args.host,
        port=args.port,
        credentials=dict(args.credentials) or None,
        region=args.region,
    )
    for bucket in args.bucket:
        server.create_bucket(bucket)
    await server.astart()
    print(f"oss listening on {server.endpoint}", flush=True)
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, done.set)
    await done.wait()
    await server.astop()


def main(argv: list[str] | None = None) -> None:
    asyncio.run(_serve(_parse(argv)))


if __name__ == "__main__":
    main()
