"""A peer's block request carries its asker's priority (``X-EdgeCache-Priority``): the owner
fetches on the asker's behalf as background or foreground, as the asker's own fetch would."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import fsspec
import pytest

from edgecache.cache import decode_block_bytes
from edgecache.engine import (
    PRIORITY_HEADER,
    Priority,
    ReadPlan,
    SourceSkipped,
    current_priority,
    fetch_priority,
    open_engines,
)
from edgecache.pool import (
    ACCEPT_KEEPALIVE_HEADER,
    BLOCKS_PATH,
    FORWARDED_HEADER,
    KEEPALIVE,
    PoolNode,
    PoolSettings,
)

# Runs alone (conftest.py): priorities measured on the clock.
pytestmark = pytest.mark.exclusive

BLOCK = 64 * 1024
TOKEN = "qos-peer-token"


class PriorityRecorder:
    """A block source that notes the priority of each fetch and leaves it to the next."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[Priority] = []

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        self.seen.append(current_priority())
        raise SourceSkipped("recording only")


def query(plan: ReadPlan, index: int) -> dict[str, str]:
    return {
        "backend": plan.backend,
        "path": plan.path,
        "version": plan.version,
        "size": str(plan.size),
        "block_size": str(plan.block_size),
        "index": str(index),
    }


@pytest.fixture
def served(tmp_path: Path) -> tuple[Any, str]:
    path = tmp_path / "obj.bin"
    path.write_bytes(bytes(range(256)) * (4 * BLOCK // 256))
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="file",
        cache_dir=str(tmp_path / "cache"),
        block_size=BLOCK,
        skip_instance_cache=True,
    )
    return fs, str(path)


@pytest.fixture
async def node(tmp_path: Path, served: Any) -> AsyncIterator[PoolNode]:
    token = tmp_path / "token"
    token.write_text(TOKEN)
    settings = PoolSettings(node_name="n1", listen="127.0.0.1:0", token_file=str(token))
    async with PoolNode(settings) as started:
        yield started


async def test_the_owner_fetches_with_the_priority_the_asker_sent(
    node: PoolNode, served: Any
) -> None:
    fs, path = served
    recorder = PriorityRecorder()
    plan = await fs.engine.plan(path, block_size=BLOCK, ttl=60)
    # The node serves a backend with one of the process's engines of that identity (earlier
    # tests' too): record on each.
    for engine in open_engines():
        if engine.identity == plan.backend:
            engine.add_source(recorder)
    sent = [{PRIORITY_HEADER: "background"}, {PRIORITY_HEADER: "foreground"}, {}]
    async with aiohttp.ClientSession(auto_decompress=False) as session:
        for index, extra in enumerate(sent):
            headers = {"Authorization": f"Bearer {TOKEN}", FORWARDED_HEADER: "1", **extra}
            url = f"http://{node.me.address}{BLOCKS_PATH}{plan.key(index).digest}"
            async with session.get(url, params=query(plan, index), headers=headers) as r:
                assert r.status == 200
                await r.read()
    assert recorder.seen == [Priority.BACKGROUND, Priority.FOREGROUND, Priority.FOREGROUND]


async def test_the_asker_sends_its_priority(node: PoolNode) -> None:
    assert node.request_headers()[PRIORITY_HEADER] == "foreground"
    with fetch_priority(Priority.BACKGROUND):
        headers = node.request_headers()
    assert headers[PRIORITY_HEADER] == "background"
    assert headers["Authorization"] == f"Bearer {TOKEN}"


class HeldBack:
    """A block source that holds each fetch until released (an owner whose background block
    waits for its turn on the link), then leaves it to the next source."""

    name = "held-back"

    def __init__(self) -> None:
        self.release = threading.Event()

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        await asyncio.to_thread(self.release.wait, 30)
        raise SourceSkipped("released")


async def test_an_owner_that_waits_for_its_turn_keeps_the_asker_waiting_with_keepalives(
    node: PoolNode, served: Any
) -> None:
    fs, path = served
    held = HeldBack()
    plan = await fs.engine.plan(path, block_size=BLOCK, ttl=60)
    for engine in open_engines():
        if engine.identity == plan.backend:
            engine.add_source(held)
    headers = {
        "Authorization": f"Bearer {TOKEN}",
        FORWARDED_HEADER: "1",
        PRIORITY_HEADER: "background",
        ACCEPT_KEEPALIVE_HEADER: "1",
    }
    url = f"http://{node.me.address}{BLOCKS_PATH}{plan.key(3).digest}"
    try:
        async with (
            aiohttp.ClientSession(auto_decompress=False) as session,
            session.get(url, params=query(plan, 3), headers=headers) as r,
        ):
            assert r.status == 200
            # Silence would make the asker give up and fetch the block itself: the owner says
            # it is alive while its fetch is held back.
            first = await asyncio.wait_for(r.content.readany(), timeout=10)
            assert first.strip(KEEPALIVE) == b""
            held.release.set()
            frame = (first + await r.read()).lstrip(KEEPALIVE)
    finally:
        held.release.set()
    data = decode_block_bytes(frame, digest=plan.key(3).digest, max_raw_len=BLOCK)
    assert data == (bytes(range(256)) * (4 * BLOCK // 256))[3 * BLOCK :]
