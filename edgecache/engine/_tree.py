"""Directory listings of a whole tree from one flat recursive listing (``find``/``glob``).

An object store lists everything below a prefix in one request per thousand keys when it is
asked without a delimiter, where walking the tree costs one request per directory, one level at
a time (a zarr store of 400 objects: ~40 round trips instead of one). The read engine asks the
backend for that flat listing and hands it here; :func:`split_tree` cuts it into the listing of
every directory it covers, as the backend's ``ls`` would have returned them, so the metadata
cache can store them all and answer later ``ls``/``info``/``find`` calls of any level (and do
so offline).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from edgecache.engine._metadata import parent_of

__all__ = ["Tree", "split_tree"]


@dataclass(frozen=True, slots=True)
class Tree:
    """What one flat listing below ``root`` says."""

    root: str
    """The directory listed (no trailing slash)."""
    listings: dict[str, list[dict[str, Any]]]
    """Every directory at or below ``root`` -> its entries, sorted by name, as ``ls`` gives
    them (directories as entries of their parent, directory marker objects left out)."""
    root_file: dict[str, Any] | None = None
    """The info of ``root`` when it is a file, not a directory (then ``listings`` is empty)."""


def _directory(name: str) -> dict[str, Any]:
    return {"name": name, "size": 0, "type": "directory"}


def split_tree(root: str, entries: Iterable[Mapping[str, Any]]) -> Tree:
    """Cut the entries of a flat recursive listing below ``root`` (files, and the directories
    the backend reports, in any order) into per-directory listings.

    Directories that only appear as the ancestors of an entry are listed as well (an object
    store has no directory objects); a key ending in ``/`` (a "directory marker" some tools
    create) says its directory exists but is no entry of it, as the stores' own listings treat
    it. When the backend described a directory, its own info is used for the directory's entry.
    """
    root = root.rstrip("/")
    below = root + "/" if root else ""
    files: dict[str, dict[str, Any]] = {}
    dirs: dict[str, dict[str, Any]] = {}
    for entry in entries:
        info = dict(entry)
        name = str(info.get("name", ""))
        if name.endswith("/"):
            name = name.rstrip("/")
            if name.startswith(below) or name == root:
                dirs.setdefault(name, _directory(name))
            continue
        if name == root:
            if info.get("type") == "directory":
                dirs[root] = info
            else:
                return Tree(root, {}, info)
            continue
        if not name.startswith(below):
            continue
        if info.get("type") == "directory":
            dirs[name] = info
        else:
            files[name] = info
    # Every ancestor up to the root is a directory, described or not.
    for name in [*files, *dirs]:
        parent = parent_of(name)
        while len(parent) > len(root) and parent not in dirs:
            dirs[parent] = _directory(parent)
            parent = parent_of(parent)
    listings: dict[str, list[dict[str, Any]]] = {root: []}
    listings.update((name, []) for name in dirs if name != root)
    for name, info in [*files.items(), *dirs.items()]:
        if name != root:
            listings[parent_of(name)].append(info)
    for children in listings.values():
        children.sort(key=lambda info: str(info["name"]))
    return Tree(root, listings)
