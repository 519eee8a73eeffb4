"""The peer block server over real HTTP (in-process, a ``file`` backend), and the hashing and
settings it relies on."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import fsspec
import pytest

from edgecache.cache import decode_block_bytes
from edgecache.engine import ReadPlan
from edgecache.errors import ConfigError
from edgecache.pool import (
    ACCEPT_COMPRESSION_HEADER,
    BLOCKS_PATH,
    FORWARDED_HEADER,
    ONLY_CACHED_HEADER,
    Member,
    PoolNode,
    PoolSettings,
    owner_of,
    parse_member,
    ranked,
)

KiB = 1024
BLOCK = 64 * KiB


@pytest.fixture
def served(tmp_path: Path) -> tuple[Any, str, bytes]:
    """A cached object (one compressible block, one random) and its filesystem."""
    data = b"compressible " * (BLOCK // 13 + 1)
    data = data[:BLOCK] + bytes(range(256)) * (BLOCK // 256 // 2)
    path = tmp_path / "obj.bin"
    path.write_bytes(data)
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="file",
        cache_dir=str(tmp_path / "cache"),
        block_size=BLOCK,
        readahead_blocks=0,
        skip_instance_cache=True,
    )
    assert fs.cat_file(str(path)) == data
    return fs, str(path), data


@pytest.fixture
async def node(tmp_path: Path, served: Any) -> AsyncIterator[PoolNode]:
    token = tmp_path / "token"
    token.write_text("s3cret-token\n")
    settings = PoolSettings(node_name="n1", listen="127.0.0.1:0", token_file=str(token))
    async with PoolNode(settings) as started:
        yield started


async def block_request(
    node: PoolNode, plan: ReadPlan, index: int, headers: dict[str, str]
) -> tuple[int, bytes]:
    key = plan.key(index)
    query = {
        "backend": plan.backend,
        "path": plan.path,
        "version": plan.version,
        "size": str(plan.size),
        "block_size": str(plan.block_size),
        "index": str(index),
    }
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(
            f"http://{node.me.address}{BLOCKS_PATH}{key.digest}", params=query, headers=headers
        ) as response,
    ):
        return response.status, await response.read()


async def test_no_token_or_a_wrong_one_gets_401_and_nothing_else(
    node: PoolNode, served: Any
) -> None:
    fs, path, data = served
    plan = await fs.engine.plan(path, block_size=BLOCK, ttl=60)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        status, body = await block_request(node, plan, 1, headers)
        assert status == 401
        assert data[BLOCK : BLOCK + 64] not in body and len(body) < 64
    async with aiohttp.ClientSession() as session:
        for url in ("/v1/ping", "/anything/else"):
            async with session.get(f"http://{node.me.address}{url}") as response:
                assert response.status == 401


async def test_the_right_token_gets_the_verified_block_lz4_when_asked(
    node: PoolNode, served: Any
) -> None:
    fs, path, data = served
    plan = await fs.engine.plan(path, block_size=BLOCK, ttl=60)
    auth = {"Authorization": "Bearer s3cret-token", FORWARDED_HEADER: "1"}
    plain_status, plain = await block_request(node, plan, 0, auth)
    packed_status, packed = await block_request(
        node, plan, 0, {**auth, ACCEPT_COMPRESSION_HEADER: "lz4"}
    )
    assert plain_status == packed_status == 200
    assert len(packed) < len(plain) // 4 < BLOCK  # LZ4 pays on this block, and is sent
    for frame in (plain, packed):
        assert (
            decode_block_bytes(frame, digest=plan.key(0).digest, max_raw_len=BLOCK)
            == (data[:BLOCK])
        )
    status, frame = await block_request(node, plan, 1, auth)
    assert status == 200
    assert decode_block_bytes(frame, digest=plan.key(1).digest, max_raw_len=BLOCK) == data[BLOCK:]


async def test_another_version_or_a_wrong_digest_is_refused(node: PoolNode, served: Any) -> None:
    fs, path, _ = served
    plan = await fs.engine.plan(path, block_size=BLOCK, ttl=60)
    auth = {"Authorization": "Bearer s3cret-token", FORWARDED_HEADER: "1"}
    key = plan.key(0)
    other = ReadPlan(plan.backend, plan.path, "another-version", plan.size, BLOCK)
    async with aiohttp.ClientSession() as session:
        # The digest of one version with the query of another: 400, never the block.
        query = {
            "backend": other.backend,
            "path": other.path,
            "version": other.version,
            "size": str(other.size),
            "block_size": str(BLOCK),
            "index": "0",
        }
        url = f"http://{node.me.address}{BLOCKS_PATH}{key.digest}"
        async with session.get(url, params=query, headers=auth) as response:
            assert response.status == 400
    # Another version named consistently is not held: only-cached says 404.
    status, _ = await block_request(node, other, 0, {**auth, ONLY_CACHED_HEADER: "1"})
    assert status == 404


def test_rendezvous_moves_only_the_blocks_of_a_member_that_leaves() -> None:
    members = [Member(f"node-{i}", f"127.0.0.1:{9000 + i}") for i in range(4)]
    digests = [f"{i:032x}" for i in range(2000)]
    before = {d: owner_of(d, members) for d in digests}
    after = {d: owner_of(d, members[:3]) for d in digests}
    moved = [d for d in digests if before[d] != after[d]]
    assert moved and all(before[d] == members[3] for d in moved)
    counts = {m: sum(1 for d in digests if before[d] == m) for m in members}
    assert all(400 < c < 600 for c in counts.values()), counts  # about 1/4 each
    # The same answer whatever order a node lists its members in.
    assert all(owner_of(d, list(reversed(members))) == before[d] for d in digests[:100])
    assert all(ranked(d, members)[0] == before[d] for d in digests[:100])


def test_static_entries_and_settings_mistakes() -> None:
    assert parse_member("a=127.0.0.1:1") == Member("a", "127.0.0.1:1")
    assert parse_member("127.0.0.1:2") == Member("127.0.0.1:2", "127.0.0.1:2")
    for bad in ("nohost", "x=127.0.0.1:notaport", "=127.0.0.1:1", "127.0.0.1:70000"):
        with pytest.raises(ConfigError):
            parse_member(bad)
    with pytest.raises(ConfigError, match="token"):
        PoolNode(PoolSettings(node_name="n", listen="127.0.0.1:0"))
