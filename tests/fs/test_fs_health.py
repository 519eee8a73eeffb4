"""Backend health: once a backend is unreachable, reads stop waiting on it until a probe says
it is back; directory scans are answered from one listing and read ahead across files."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fstestlib import KiB, SwitchableLocalBackend, pattern

from edgecache.errors import BackendUnavailableError
from edgecache.fs import EdgeCacheFileSystem

MakeFs = Callable[..., EdgeCacheFileSystem]


def backend_of(fs: EdgeCacheFileSystem) -> Any:
    return fs.backend


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for i in range(40):
        (root / f"f{i:03d}.bin").write_bytes(pattern(8 * KiB, seed=i))
    return root


def test_offline_backend_is_not_asked_again_until_a_probe_succeeds(
    make_fs: MakeFs, files: Path
) -> None:
    fs = make_fs("switchfile", block_size="4KiB", backend_probe_interval=0.3)
    backend: SwitchableLocalBackend = backend_of(fs)
    cached = str(files / "f000.bin")
    assert fs.cat_file(cached) == pattern(8 * KiB, seed=0)

    backend.online = False
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        fs.cat_file(str(files / "f001.bin"))
    assert not fs.health.online
    calls_when_offline = len(backend.calls) + len(backend.fetched)

    # Cached data and metadata come back at local speed; uncached data fails at once, and
    # neither asks the backend (no retry per read).
    started = time.perf_counter()
    for _ in range(50):
        assert fs.cat_file(cached) == pattern(8 * KiB, seed=0)
        with pytest.raises(BackendUnavailableError):
            fs.cat_file(str(files / "f002.bin"))
    assert time.perf_counter() - started < 2.0
    assert len(backend.calls) + len(backend.fetched) == calls_when_offline

    # The link comes back: the background probe notices and reads go to the backend again.
    backend.online = True
    deadline = time.monotonic() + 5
    while not fs.health.online and time.monotonic() < deadline:
        time.sleep(0.05)
        with contextlib.suppress(BackendUnavailableError):
            fs.cat_file(str(files / "f003.bin"))  # async operations keep the probe running
    assert fs.health.online
    assert fs.cat_file(str(files / "f001.bin")) == pattern(8 * KiB, seed=1)


def test_a_directory_scan_is_answered_from_one_listing(make_fs: MakeFs, files: Path) -> None:
    fs = make_fs("countfile", block_size="64KiB", scan_ahead_files=0)
    backend = backend_of(fs)
    for i in range(40):
        with fs.open(str(files / f"f{i:03d}.bin"), "rb") as f:
            assert f.read() == pattern(8 * KiB, seed=i)
    # One info; the second miss in the directory lists it, which answers for all 39 others.
    assert backend.calls.count("info") == 1
    assert backend.calls.count("ls") == 1


def test_reading_a_directory_in_name_order_reads_ahead_across_files(
    make_fs: MakeFs, files: Path
) -> None:
    fs = make_fs("countfile", block_size="64KiB", scan_ahead_files=8)
    backend = backend_of(fs)
    # f000 is read before the directory is listed (on f001's info miss); f001..f003 make
    # three opens in name order, so f004..f011 are fetched ahead.
    for i in range(4):
        with fs.open(str(files / f"f{i:03d}.bin"), "rb") as f:
            f.read()
    deadline = time.monotonic() + 5
    wanted = {str(files / f"f{i:03d}.bin") for i in range(4, 12)}
    while time.monotonic() < deadline and not wanted <= {p for p, _, _ in backend.fetched}:
        time.sleep(0.02)
    assert wanted <= {p for p, _, _ in backend.fetched}, "next files were not fetched ahead"
    fetched_before = len(backend.fetched)
    for i in range(4, 12):
        with fs.open(str(files / f"f{i:03d}.bin"), "rb") as f:
            assert f.read() == pattern(8 * KiB, seed=i)
    # Reading the files fetched ahead costs no new fetch of them.
    refetched = [p for p, _, _ in backend.fetched[fetched_before:] if p in wanted]
    assert refetched == []


def test_random_order_opens_do_not_read_ahead(make_fs: MakeFs, files: Path) -> None:
    fs = make_fs("countfile", block_size="64KiB", scan_ahead_files=8)
    backend = backend_of(fs)
    for i in (30, 4, 22, 9, 15, 1):
        with fs.open(str(files / f"f{i:03d}.bin"), "rb") as f:
            f.read()
    time.sleep(0.2)
    assert sorted({p for p, _, _ in backend.fetched}) == sorted(
        str(files / f"f{i:03d}.bin") for i in (30, 4, 22, 9, 15, 1)
    )


def test_concurrent_info_misses_in_one_directory_share_one_listing(
    make_fs: MakeFs, files: Path
) -> None:
    fs = make_fs("countfile", block_size="64KiB", scan_ahead_files=0)
    backend = backend_of(fs)
    paths = [str(files / f"f{i:03d}.bin") for i in range(40)]
    result = fs.cat(paths)
    assert result == {p: pattern(8 * KiB, seed=i) for i, p in enumerate(paths)}
    # All 40 infos miss at once; the listing they trigger is asked for once, not per file.
    assert backend.calls.count("ls") == 1
    assert backend.calls.count("info") <= 2


def test_iter_cat_keeps_order_batches_small_files_and_streams_large_ones(
    make_fs: MakeFs, files: Path
) -> None:
    big = files / "zz-big.bin"
    big.write_bytes(pattern(300 * KiB, seed=99))
    fs = make_fs("countfile", block_size="64KiB", scan_ahead_files=0)
    paths = [str(files / f"f{i:03d}.bin") for i in (5, 1, 30, 2)] + [str(big)]
    chunks = list(fs.iter_cat(paths, batch=3))
    expected = b"".join(pattern(8 * KiB, seed=i) for i in (5, 1, 30, 2)) + big.read_bytes()
    assert b"".join(chunks) == expected
    assert len(chunks) > 5, "the large file was not streamed in blocks"

    missing = [str(files / "f000.bin"), str(files / "nope.bin"), str(files / "f001.bin")]
    out = []
    with pytest.raises(FileNotFoundError):
        for chunk in fs.iter_cat(missing):
            out.append(chunk)
    assert out == [pattern(8 * KiB, seed=0)]  # the bytes before the failing path came out


def test_offline_a_directory_that_was_only_listed_still_answers_info_and_ls(
    make_fs: MakeFs, files: Path
) -> None:
    fs = make_fs("switchfile", block_size="64KiB")
    assert len(fs.ls(str(files))) == 40  # listed, its own info never asked for
    backend_of(fs).online = False
    offline = make_fs(
        "switchfile", block_size="64KiB", cache_dir=fs.settings.cache_dir, metadata_ttl=0
    )
    backend_of(offline).online = False
    assert offline.info(str(files))["type"] == "directory"
    assert len(offline.ls(str(files))) == 40
