"""find/glob over S3 (moto): the same names as plain s3fs, from one flat listing, and every level
of the tree answered from the metadata cache afterwards (offline too)."""

from __future__ import annotations

from typing import Any

import fsspec
import pytest
import s3fs
from s3testlib import put

NAMES = [
    ".zgroup",
    "a0/.zarray",
    "a0/.zattrs",
    "a0/0/0",
    "a0/0/1",
    "a0/1/0",
    "a1/.zarray",
    "a1/3/4",
    "a1/3/5/deep",
    "top.txt",
]


@pytest.fixture
def tree(client: Any, prefix: str) -> str:
    for name in NAMES:
        put(client, f"{prefix}/tree/{name}", name.encode())
    put(client, f"{prefix}/treeish", b"a sibling whose name starts like the tree")
    return f"{prefix}/tree"


def _edgecache(s3_options: dict[str, Any], cache_dir: str) -> Any:
    return fsspec.filesystem(
        "edgecache",
        target_protocol="s3",
        target_options=s3_options,
        cache_dir=cache_dir,
        skip_instance_cache=True,
    )


@pytest.mark.parametrize("url", [False, True], ids=["path", "s3-url"])
def test_find_and_glob_give_what_s3fs_gives(
    tree: str, s3_options: dict[str, Any], tmp_path: Any, url: bool
) -> None:
    plain = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    root = f"s3://{tree}" if url else tree
    calls: list[tuple[str, dict[str, Any]]] = [
        ("find", {}),
        ("find", {"withdirs": True}),
        ("find", {"maxdepth": 1}),
        ("find", {"maxdepth": 2, "withdirs": True}),
    ]
    patterns = ["**/.zarray", "*/.zarray", "a*/*/*", "a1/**/deep", "*", "a?/.z*"]
    for i, (method, kwargs) in enumerate(calls):
        fs = _edgecache(s3_options, str(tmp_path / f"c{i}"))  # cold every time
        assert getattr(fs, method)(root, **kwargs) == getattr(plain, method)(root, **kwargs)
    for i, pattern in enumerate(patterns):
        fs = _edgecache(s3_options, str(tmp_path / f"g{i}"))
        assert fs.glob(f"{root}/{pattern}") == plain.glob(f"{root}/{pattern}"), pattern
    detail = _edgecache(s3_options, str(tmp_path / "d")).find(root, withdirs=True, detail=True)
    plain_detail = plain.find(root, withdirs=True, detail=True)
    assert {k: v["type"] for k, v in detail.items()} == {
        k: v["type"] for k, v in plain_detail.items()
    }
    assert {k: v["size"] for k, v in detail.items()} == {
        k: v["size"] for k, v in plain_detail.items()
    }


def test_after_find_every_level_is_answered_from_the_cache(
    tree: str, client: Any, s3_options: dict[str, Any], tmp_path: Any
) -> None:
    fs = _edgecache(s3_options, str(tmp_path / "c"))
    plain = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    assert fs.find(tree) == plain.find(tree)
    directories = sorted({f"{tree}/{n}".rsplit("/", 1)[0] for n in NAMES})
    expected = {d: sorted(plain.ls(d, detail=False)) for d in directories}
    # Remove the objects behind edgecache's back: within the metadata TTL, every level is
    # still answered from what the one listing stored (no level was listed by itself).
    bucket, _, key = tree.partition("/")
    for name in NAMES:
        client.delete_object(Bucket=bucket, Key=f"{key}/{name}")
    assert plain.invalidate_cache() is None and plain.find(tree) == []
    for directory, names in expected.items():
        assert sorted(fs.ls(directory, detail=False)) == names
        assert fs.info(directory)["type"] == "directory"
    for name in NAMES:
        assert fs.info(f"{tree}/{name}")["size"] == len(name.encode())
    # A second filesystem on the same cache directory (another process) sees them too.
    again = _edgecache(s3_options, str(tmp_path / "c"))
    assert sorted(again.ls(f"{tree}/a0", detail=False)) == expected[f"{tree}/a0"]


@pytest.mark.parametrize(
    "pattern", ["*", "**", "**/.zarray", "a?/.z*", "a1/*/", "a0/0/*"], ids=lambda p: p
)
def test_url_patterns_through_fsspec_match_what_s3fs_matches(
    tree: str, s3_options: dict[str, Any], tmp_path: Any, pattern: str
) -> None:
    """``fsspec.open_files("edgecache::s3://...*")`` and ``fs.glob("s3://...")`` as users write
    them: the names and bytes s3fs gives (a URL pattern once matched nothing)."""
    options = {"s3": dict(s3_options), "edgecache": {"cache_dir": str(tmp_path / "c")}}
    url = f"s3://{tree}/{pattern}"
    plain = fsspec.open_files(url, "rb", **s3_options)
    assert plain, "the pattern must match something for the test to mean anything"
    ours = fsspec.open_files(f"edgecache::{url}", "rb", **options)
    assert [f.path for f in ours] == [f.path for f in plain]
    for mine, theirs in zip(ours, plain, strict=True):
        with mine as a, theirs as b:
            assert a.read() == b.read()
    fs, _ = fsspec.url_to_fs(f"edgecache::s3://{tree}", **options)
    s3 = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    assert fs.glob(url) == s3.glob(url)
    assert fs.glob(f"edgecache::{url}") == s3.glob(url)


def test_expand_path_and_open_of_urls_name_each_object_once(
    tree: str, s3_options: dict[str, Any], tmp_path: Any
) -> None:
    options = {"s3": dict(s3_options), "edgecache": {"cache_dir": str(tmp_path / "c")}}
    fs, _ = fsspec.url_to_fs(f"edgecache::s3://{tree}", **options)
    s3 = s3fs.S3FileSystem(**s3_options, skip_instance_cache=True)
    root = f"s3://{tree}/a1"
    assert fs.expand_path(root, recursive=True) == s3.expand_path(root, recursive=True)
    assert fs._strip_protocol(f"edgecache::{root}/.zarray") == f"{tree}/a1/.zarray"
    with fsspec.open(f"edgecache::{root}/.zarray", "rb", **options) as f:
        assert f.read() == b"a1/.zarray"
    with fsspec.open(f"edgecache::{root}/3/5/deep", "rb", **options) as f:
        assert f.path == f"{tree}/a1/3/5/deep"
