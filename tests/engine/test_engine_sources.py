"""The block-source seam: sources added to an engine are asked before the backend, in order;
one that skips (``SourceSkipped``) hands the block to the next, and the backend is last."""

from __future__ import annotations

from pathlib import Path

import fsspec

from edgecache.engine import ReadPlan, SourceSkipped

KiB = 1024


class PeerStub:
    """A pool peer as the engine sees it: it holds some blocks, and skips the rest."""

    name = "peer"

    def __init__(self, blocks: dict[int, bytes]) -> None:
        self.blocks = blocks
        self.asked: list[int] = []

    async def fetch(self, plan: ReadPlan, index: int) -> bytes:
        self.asked.append(index)
        if index not in self.blocks:
            raise SourceSkipped(f"block {index} is not on this peer")
        return self.blocks[index]


def test_a_source_serves_what_it_holds_and_the_backend_the_rest(tmp_path: Path) -> None:
    data = bytes(range(256)) * 64  # 16 KiB: four 4 KiB blocks
    path = tmp_path / "obj.bin"
    path.write_bytes(data)
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="file",
        cache_dir=str(tmp_path / "cache"),
        block_size="4KiB",
        readahead_blocks=0,
        skip_instance_cache=True,
    )
    # The peer's copies are marked so that the test sees where each block came from.
    peer = PeerStub({1: b"P" * 4 * KiB, 3: b"Q" * 4 * KiB})
    fs.engine.add_source(peer)
    expected = data[: 4 * KiB] + b"P" * 4 * KiB + data[8 * KiB : 12 * KiB] + b"Q" * 4 * KiB
    assert fs.cat_file(str(path)) == expected
    assert sorted(peer.asked) == [0, 1, 2, 3]
    # What the peer served is the peer's bytes, not backend (WAN) bytes.
    assert fs.cache.backend_fetches == 2
    fs.engine.flush()
    tiers = fs.cache.stats()["tiers"]
    assert tiers["backend"]["bytes_fetched"] == 8 * KiB
    assert tiers["peer"]["bytes_fetched"] == 8 * KiB
    # Cached now: neither the peer nor the backend is asked again.
    assert fs.cat_file(str(path)) == expected
    assert sorted(peer.asked) == [0, 1, 2, 3]
    fs.engine.close()
