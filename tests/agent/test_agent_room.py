"""In-process: views of three Datasets on one node's cache. A view that needs the room its
runtime promises takes it from another view over its own share (its runtime's quota was lowered
and its mount cannot be listed, so its own pass cannot evict it), least recently read first;
never from a pinned view, never a file the view does not list, never a file a view is in the
middle of replacing. (The same rule through ``edgecache agent``: test_agent_quota.py.)"""

from __future__ import annotations

import os
from pathlib import Path

from edgecache.agent._room import ViewRoom
from edgecache.agent._settings import AgentSettings
from edgecache.agent._view import DatasetView, MountSource, Quota
from edgecache.config import StoreSettings
from edgecache.dataset import Mount
from edgecache.fs import EdgeCacheFileSystem

from .conftest import tree

KiB = 1024
FILE = 64 * KiB


def _files(directory: Path, count: int) -> dict[str, bytes]:
    directory.mkdir(parents=True)
    files = {f"f{i}.bin": os.urandom(FILE) for i in range(count)}
    for name, data in files.items():
        (directory / name).write_bytes(data)
    return files


async def test_a_view_takes_its_promised_room_from_views_over_their_share(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    fs = EdgeCacheFileSystem(
        "file", {}, cache_dir=str(cache), block_size="64KiB", skip_instance_cache=True
    )
    # The node's quota: the sum of the three shares, A 384 KiB, B 64 KiB, C 64 KiB.
    shares = {"a": Quota(384 * KiB), "b": Quota(FILE), "c": Quota(FILE, pinned=True)}
    fs.engine.store.apply(
        StoreSettings(cache_dir=str(cache), ssd_quota=512 * KiB), for_every_process=True
    )
    settings = AgentSettings(node_name="n1", root=tmp_path / "root", cache_dir=cache)
    views = {name: DatasetView(settings, "default", name) for name in shares}
    room = ViewRoom(lambda: [(views[n], q) for n, q in shares.items()])
    for view in views.values():
        view.room = room
    data = {name: _files(tmp_path / name, n) for name, n in (("a", 5), ("b", 6), ("c", 2))}

    def source(name: str) -> list[MountSource]:
        return [
            MountSource(Mount(mount_point=f"file://{tmp_path / name}", name=name, path="/"), fs)
        ]

    # B and C loaded while their runtimes gave them more (together the whole quota).
    await views["c"].sync(source("c"), Quota(4 * FILE, pinned=True))
    await views["b"].sync(source("b"), Quota(8 * FILE))
    assert tree(views["b"].path) == data["b"] and tree(views["c"].path) == data["c"]
    newest = "f3.bin"
    for i, rel in enumerate(sorted(data["b"])):  # read in name order, f3.bin read last
        os.utime(views["b"].path / rel, (2_000_000 + (10 if rel == newest else i), 1_000_000))
    (views["b"].path / "not-ours.txt").write_bytes(b"left by someone else")
    # A's 320 KiB fit its share but not beside B's 384 KiB and C's 128 KiB.
    result = await views["a"].sync(source("a"), shares["a"])
    assert views["a"].complete and result.failed == {}, (result, views["a"].message)
    assert tree(views["a"].path) == data["a"]
    # B gave up its least recently read files, down to its share; C (pinned) nothing.
    assert set(views["b"].files) == {newest}
    assert (views["b"].path / newest).read_bytes() == data["b"][newest]
    assert (views["b"].path / "not-ours.txt").read_bytes() == b"left by someone else"
    assert not views["b"].complete
    assert tree(views["c"].path) == data["c"]
    charges = fs.engine.blocks.charges()
    assert charges == {
        views["a"].charge_name: 5 * FILE,
        views["b"].charge_name: FILE,
        views["c"].charge_name: 2 * FILE,
    }


async def test_a_file_a_view_is_replacing_is_never_taken_for_another_views_room(
    tmp_path: Path,
) -> None:
    cache = tmp_path / "cache"
    fs = EdgeCacheFileSystem(
        "file",
        {},
        cache_dir=str(cache),
        block_size="64KiB",
        metadata_ttl=0,  # B's next pass sees the change at once
        skip_instance_cache=True,
    )
    # The node's quota, 384 KiB: A's share 256 KiB, B's 128 KiB (lowered while B ran a pass
    # with the 512 KiB it had before, so B is over its share by 128 KiB).
    shares = {"a": Quota(4 * FILE), "b": Quota(2 * FILE)}
    fs.engine.store.apply(
        StoreSettings(cache_dir=str(cache), ssd_quota=6 * FILE), for_every_process=True
    )
    settings = AgentSettings(node_name="n1", root=tmp_path / "root", cache_dir=cache)
    views = {name: DatasetView(settings, "default", name) for name in shares}
    room = ViewRoom(lambda: [(views[n], q) for n, q in shares.items()])
    data = {name: _files(tmp_path / name, n) for name, n in (("a", 2), ("b", 4))}

    def source(name: str) -> list[MountSource]:
        return [
            MountSource(Mount(mount_point=f"file://{tmp_path / name}", name=name, path="/"), fs)
        ]

    await views["a"].sync(source("a"), shares["a"])
    await views["b"].sync(source("b"), Quota(8 * FILE))
    assert tree(views["b"].path) == data["b"]  # the node's quota is full: A 2, B 4 files
    replaced = "f0.bin"
    for i, rel in enumerate(sorted(data["b"])):  # f0.bin, the one B replaces, read least lately
        os.utime(views["b"].path / rel, (2_000_000 + i, 1_000_000))
    data["b"][replaced] = os.urandom(2 * FILE)  # changed upstream: B's next pass replaces it
    (tmp_path / "b" / replaced).write_bytes(data["b"][replaced])
    seen: list[tuple[bool, set[str]]] = []

    async def a_asks_first(asking: DatasetView, need: int) -> int:
        # The node has no room for the file B is replacing; A's request for the room it was
        # promised reached the room first (the room takes one request at a time).
        freed = await room(views["a"], 2 * FILE)
        seen.append(((views["b"].path / replaced).is_file(), set(views["b"].files)))
        return freed + await room(asking, need)

    views["b"].room = a_asks_first
    result = await views["b"].sync(source("b"), Quota(8 * FILE))
    assert result.failed == {} and result.replaced == 1, (result, views["b"].message)
    # While B replaced it, its old copy stayed in the view: B's other least recently read
    # files gave A its room.
    assert seen == [(True, {replaced, "f3.bin"})]
    assert tree(views["b"].path) == {r: data["b"][r] for r in (replaced, "f3.bin")}
    charges = fs.engine.blocks.charges()
    assert charges == {views["a"].charge_name: 2 * FILE, views["b"].charge_name: 3 * FILE}
