"""split_tree: the listings cut out of one flat recursive listing equal what ``ls`` of each
directory gives (checked against fsspec's memory filesystem on random trees)."""

from __future__ import annotations

from fsspec.implementations.memory import MemoryFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecache.engine._tree import split_tree

_names = st.lists(
    st.lists(st.sampled_from(["a", "b", "c", ".z", "d0"]), min_size=1, max_size=4).map("/".join),
    min_size=1,
    max_size=25,
    unique=True,
)


def _tree_fs(files: list[str]) -> MemoryFileSystem:
    fs = MemoryFileSystem(skip_instance_cache=True)
    fs.store, fs.pseudo_dirs = {}, [""]
    for name in files:
        # A name that is also a directory of another name cannot be a file in a real tree.
        if any(other.startswith(name + "/") for other in files):
            continue
        fs.pipe_file(f"/root/{name}", name.encode())
    return fs


def _shape(entries: list[dict]) -> list[tuple[str, str]]:
    return [(e["name"], e["type"]) for e in entries]


@settings(max_examples=60, deadline=None)
@given(_names, st.booleans())
def test_listings_equal_ls_of_every_directory(files: list[str], with_dirs: bool) -> None:
    fs = _tree_fs(files)
    flat = fs.find("/root", withdirs=with_dirs, detail=True)
    tree = split_tree("/root", flat.values())
    directories = [p for p, i in fs.find("/root", withdirs=True, detail=True).items()]
    directories = [p for p in directories if fs.isdir(p)]
    assert sorted(tree.listings) == sorted(directories)
    for path, entries in tree.listings.items():
        assert _shape(entries) == sorted(_shape(fs.ls(path, detail=True)))
    assert tree.root_file is None


def test_directory_markers_mark_a_directory_but_are_no_entry() -> None:
    flat = [
        {"name": "bkt/t/empty/", "type": "file", "size": 0},
        {"name": "bkt/t/x/y", "type": "file", "size": 3},
        {"name": "bkt/t/x", "type": "directory", "size": 0, "StorageClass": "DIRECTORY"},
    ]
    tree = split_tree("bkt/t", flat)
    assert tree.listings == {
        "bkt/t": [
            {"name": "bkt/t/empty", "size": 0, "type": "directory"},
            {"name": "bkt/t/x", "type": "directory", "size": 0, "StorageClass": "DIRECTORY"},
        ],
        "bkt/t/empty": [],
        "bkt/t/x": [{"name": "bkt/t/x/y", "type": "file", "size": 3}],
    }


def test_a_root_that_is_a_file() -> None:
    tree = split_tree("bkt/f", [{"name": "bkt/f", "type": "file", "size": 1}])
    assert tree.listings == {} and tree.root_file == {"name": "bkt/f", "type": "file", "size": 1}


def test_entries_outside_the_root_are_ignored() -> None:
    flat = [{"name": "bkt/tree2/a", "type": "file"}, {"name": "bkt/tree/a", "type": "file"}]
    assert _shape(split_tree("bkt/tree", flat).listings["bkt/tree"]) == [("bkt/tree/a", "file")]
