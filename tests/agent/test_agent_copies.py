"""In-process: one DatasetView over a ``file://`` mount. Its files are the node's copy of the
objects: their blocks leave the block cache, and blocks of a view file are read from the view
(what the pool serves to peers), even with the object gone upstream."""

from __future__ import annotations

import os
from pathlib import Path

from edgecache.agent._copies import ViewCopies
from edgecache.agent._settings import AgentSettings
from edgecache.agent._view import DatasetView, MountSource, Quota
from edgecache.dataset import Mount
from edgecache.fs import EdgeCacheFileSystem

from .conftest import tree


async def test_view_files_are_the_only_copy_and_serve_their_blocks(tmp_path: Path) -> None:
    source = tmp_path / "data"
    source.mkdir()
    data = os.urandom(300_000)
    (source / "x.bin").write_bytes(data)
    fs = EdgeCacheFileSystem(
        "file", {}, cache_dir=str(tmp_path / "cache"), block_size="64KiB", skip_instance_cache=True
    )
    copies = ViewCopies()
    settings = AgentSettings(node_name="n1", root=tmp_path / "root", cache_dir=tmp_path / "cache")
    view = DatasetView(settings, "default", "d", copies=copies)
    mount = Mount(mount_point=f"file://{source}", name="d", path="/")
    result = await view.sync([MountSource(mount, fs)], Quota(1 << 30))
    assert result.added == 1 and view.complete
    assert tree(view.path) == {"x.bin": data}
    plan = view.plans["x.bin"]
    # Stored once: the blocks read to build the file left the block cache.
    assert fs.engine.missing_blocks(plan) == list(plan.blocks())
    assert view.misses == plan.block_count and view.hits == 0
    # The object goes away upstream; its blocks still come from the view file.
    os.rename(source / "x.bin", tmp_path / "elsewhere")
    assert copies.read_block(plan, 1) == data[65536:131072]
    assert copies.read_block(plan, plan.block_count - 1) == data[4 * 65536 :]
    # A restarted agent (a new view object) knows the copies from its manifest.
    again = ViewCopies()
    DatasetView(settings, "default", "d", copies=again)
    assert again.holds(plan) == view.path / "x.bin"
