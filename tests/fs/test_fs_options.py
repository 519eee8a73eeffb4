"""The ways users reach edgecache (URL chaining, ``fsspec.filesystem``) and its storage options.

Option names and units are the ones fixed in the design (section 2.3); an unknown name is refused
with a :class:`ConfigError` that names it, never ignored.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fsspec.core import OpenFile
from fstestlib import close_fs

from edgecache.errors import ConfigError
from edgecache.fs import EdgeCacheFileSystem

MiB = 1024**2

MakeFs = Callable[..., EdgeCacheFileSystem]


@pytest.fixture
def opened() -> Iterator[list[OpenFile]]:
    """OpenFiles whose edgecache filesystems are closed at teardown."""
    files: list[OpenFile] = []
    yield files
    for of in files:
        close_fs(of.fs)


def blocks_on_disk(cache_dir: str) -> list[str]:
    return [
        os.path.join(d, name)
        for d, _, names in os.walk(os.path.join(cache_dir, "blocks"))
        for name in names
    ]


def test_url_chaining_over_file(data_dir: Path, tmp_path: Path, opened: list[OpenFile]) -> None:
    (data_dir / "x").write_bytes(b"hello edge")
    cache_dir = str(tmp_path / "cache")
    of = fsspec.open(f"edgecache::file://{data_dir}/x", edgecache={"cache_dir": cache_dir})
    opened.append(of)
    with of as f:
        assert f.read() == b"hello edge"
    assert isinstance(of.fs, EdgeCacheFileSystem)
    assert of.fs.settings.cache_dir == cache_dir
    assert of.fs.backend.protocol == "file"
    assert blocks_on_disk(cache_dir)


def test_url_chaining_over_memory(
    clean_memory: None, tmp_path: Path, opened: list[OpenFile]
) -> None:
    fsspec.filesystem("memory").pipe_file("/x", b"in memory")
    of = fsspec.open("edgecache::memory://x", edgecache={"cache_dir": str(tmp_path / "cache")})
    opened.append(of)
    with of as f:
        assert f.read() == b"in memory"
    assert of.fs.backend.protocol == "memory"


def test_url_chaining_passes_target_options(
    data_dir: Path, tmp_path: Path, opened: list[OpenFile]
) -> None:
    url = f"edgecache::file://{data_dir}/new/deeper/x"
    of = fsspec.open(
        url, "wb", edgecache={"cache_dir": str(tmp_path / "cache")}, file={"auto_mkdir": True}
    )
    opened.append(of)
    with of as f:
        f.write(b"written")
    assert (data_dir / "new" / "deeper" / "x").read_bytes() == b"written"
    with fsspec.open(url, edgecache={"cache_dir": str(tmp_path / "cache")}) as f:
        assert f.read() == b"written"


def test_filesystem_with_target_protocol(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "x").write_bytes(b"via filesystem()")
    fs = fsspec.filesystem(
        "edgecache", target_protocol="file", target_options={}, cache_dir=str(tmp_path / "cache")
    )
    try:
        assert isinstance(fs, EdgeCacheFileSystem)
        assert fs.cat_file(str(data_dir / "x")) == b"via filesystem()"
        assert fs.cat_file(f"file://{data_dir}/x") == b"via filesystem()"
        assert fs.settings.cache_dir == str(tmp_path / "cache")
    finally:
        close_fs(fs)


def test_filesystem_is_registered_with_fsspec() -> None:
    assert fsspec.get_filesystem_class("edgecache") is EdgeCacheFileSystem


ALL_OPTIONS: dict[str, Any] = {
    "block_size": "1MiB",
    "mem_quota": "64MiB",
    "ssd_quota": "2Gi",
    "ssd_high": "90%",
    "ssd_low": 0.8,
    "compression": "LZ4",
    "metadata_ttl": "5",
}
EXPECTED = {
    "block_size": MiB,
    "mem_quota": 64 * MiB,
    "ssd_quota": 2 * 1024**3,
    "ssd_high": 0.9,
    "ssd_low": 0.8,
    "compression": "lz4",
    "metadata_ttl": 5.0,
}


def test_every_option_accepted_with_units_as_keywords(make_fs: MakeFs, data_dir: Path) -> None:
    fs = make_fs("file", **ALL_OPTIONS)
    assert {name: getattr(fs.settings, name) for name in EXPECTED} == EXPECTED
    (data_dir / "x").write_bytes(b"x" * 3000)
    assert fs.cat_file(str(data_dir / "x")) == b"x" * 3000


def test_every_option_accepted_with_units_in_url_options(
    data_dir: Path, tmp_path: Path, opened: list[OpenFile]
) -> None:
    (data_dir / "x").write_bytes(b"x" * 3000)
    options = {"cache_dir": str(tmp_path / "cache"), **ALL_OPTIONS, "compression": "none"}
    of = fsspec.open(f"edgecache::file://{data_dir}/x", edgecache=options)
    opened.append(of)
    with of as f:
        assert f.read() == b"x" * 3000
    assert {name: getattr(of.fs.settings, name) for name in EXPECTED} == {
        **EXPECTED,
        "compression": "none",
    }
    assert of.fs.settings.block_size == MiB


def test_plain_byte_counts_are_accepted(make_fs: MakeFs) -> None:
    fs = make_fs("file", block_size=65536, mem_quota=str(8 * MiB), ssd_quota=10**9)
    assert (fs.settings.block_size, fs.settings.mem_quota) == (65536, 8 * MiB)
    assert fs.settings.ssd_quota == 10**9


def test_unknown_option_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="blocksize"):
        fsspec.filesystem(
            "edgecache",
            target_protocol="file",
            cache_dir=str(tmp_path / "cache"),
            blocksize="4MiB",
            skip_instance_cache=True,
        )


def test_unknown_option_in_url_options_is_refused_by_name(data_dir: Path, tmp_path: Path) -> None:
    (data_dir / "x").write_bytes(b"x")
    with pytest.raises(ConfigError, match="metadata_tll"):
        fsspec.open(
            f"edgecache::file://{data_dir}/x",
            edgecache={"cache_dir": str(tmp_path / "cache"), "metadata_tll": 5},
        ).open()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("block_size", "big"),
        ("mem_quota", "12 parsecs"),
        ("ssd_high", "150%"),
        ("compression", "zstd"),
        ("metadata_ttl", "soon"),
        ("metadata_ttl", -1),
    ],
)
def test_bad_option_value_names_the_option(tmp_path: Path, name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        fsspec.filesystem(
            "edgecache",
            target_protocol="file",
            cache_dir=str(tmp_path / "cache"),
            skip_instance_cache=True,
            **{name: value},
        )


def test_open_files_expands_a_glob_through_edgecache(
    data_dir: Path, tmp_path: Path, opened: list[OpenFile]
) -> None:
    for i in range(3):
        (data_dir / f"f{i}.bin").write_bytes(bytes([i]) * 10)
    (data_dir / "skip.txt").write_bytes(b"not matched")
    files = fsspec.open_files(
        f"edgecache::file://{data_dir}/*.bin", edgecache={"cache_dir": str(tmp_path / "cache")}
    )
    opened.extend(files[:1])
    assert [f.path for f in files] == [f"{data_dir}/f{i}.bin" for i in range(3)]
    for i, of in enumerate(files):
        assert isinstance(of.fs, EdgeCacheFileSystem)
        with of as f:
            assert f.read() == bytes([i]) * 10
