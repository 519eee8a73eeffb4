"""Backend health: once a backend is unreachable, reads stop waiting on it until a probe says
it is back, for every filesystem instance at once (``fsspec.open`` per file); a read that needs
it probes by itself, so a returning link is used at once; directory scans are answered from one
listing and read ahead across files."""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import pytest
from fstestlib import HangingLocalBackend, KiB, SwitchableLocalBackend, pattern

from edgecache.errors import BackendUnavailableError
from edgecache.fs import EdgeCacheFileSystem
from edgecache.testing.backend_suite import OFFLINE_MISS

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


def test_read_ahead_starts_at_the_third_open_counting_the_one_before_the_listing(
    make_fs: MakeFs, files: Path
) -> None:
    fs = make_fs("countfile", block_size="64KiB", scan_ahead_files=8)
    backend = backend_of(fs)
    # f000 is opened before the directory is listed (on f001's miss) and still counts: the
    # third open starts the read-ahead of the eight files after it (a DataLoader worker waits
    # for one file fewer, round trip by round trip, before its read-ahead runs).
    for i in range(3):
        with fs.open(str(files / f"f{i:03d}.bin"), "rb") as f:
            assert f.read() == pattern(8 * KiB, seed=i)
    wanted = {str(files / f"f{i:03d}.bin") for i in range(3, 11)}
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not wanted <= {p for p, _, _ in backend.fetched}:
        time.sleep(0.02)
    assert wanted <= {p for p, _, _ in backend.fetched}, "next files were not fetched ahead"
    assert backend.calls.count("ls") == 1


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


# --- the link as users meet it: fsspec.open per file, one health for every instance ---------


def open_url(protocol: str, path: Path, cache_dir: Path, **cache: Any) -> Any:
    return fsspec.open(
        f"edgecache::{protocol}://{path}", "rb", edgecache={"cache_dir": str(cache_dir), **cache}
    )


def read_url(protocol: str, path: Path, cache_dir: Path, **cache: Any) -> bytes:
    with open_url(protocol, path, cache_dir, **cache) as f:
        data: bytes = f.read()
    return data


def test_a_hung_link_costs_one_timeout_for_every_fsspec_open_of_the_process(
    files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    settings = {"block_size": "4KiB", "metadata_ttl": 0.2, "backend_recheck_after": 60}
    for i in range(10):
        assert read_url("hangfile", files / f"f{i:03d}.bin", cache, **settings)
    time.sleep(0.3)  # past the TTL: every open below would ask the backend for the info again
    monkeypatch.setattr(HangingLocalBackend, "hung", True)
    monkeypatch.setattr(HangingLocalBackend, "waits", 0)
    for i in range(10):  # ten new filesystem instances
        assert read_url("hangfile", files / f"f{i:03d}.bin", cache, **settings) == pattern(
            8 * KiB, seed=i
        )
    # The first open waited for one timeout and took the backend offline for all of them.
    assert HangingLocalBackend.waits == 1
    with pytest.raises(BackendUnavailableError, match=OFFLINE_MISS):
        read_url("hangfile", files / "f020.bin", cache, **settings)
    assert HangingLocalBackend.waits == 1  # failed at once, without waiting on the link
    health = open_url("hangfile", files / "f000.bin", cache, **settings).fs.health
    assert not health.online


@pytest.mark.parametrize("revalidation", ["listing", "info"])
def test_a_revalidation_stops_waiting_once_another_request_finds_the_link_hung(
    files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, revalidation: str
) -> None:
    cache = tmp_path / "cache"
    settings = {"block_size": "4KiB", "metadata_ttl": 0.2, "backend_recheck_after": 60}
    for i in range(3):  # the third open lists the directory
        assert read_url("hangfile", files / f"f{i:03d}.bin", cache, **settings)
    if revalidation == "info":
        # A new engine (a new process, as far as it knows) on the same directory: its first
        # open in a directory asks for the file's info, which the metadata database knows.
        open_url("hangfile", files / "f000.bin", cache, **settings).fs.engine.close()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "g.bin").write_bytes(pattern(8 * KiB, seed=99))
    time.sleep(0.3)  # past the TTL
    monkeypatch.setattr(HangingLocalBackend, "hang_seconds", 3.0)
    monkeypatch.setattr(HangingLocalBackend, "hung", True)
    monkeypatch.setattr(HangingLocalBackend, "waits", 0)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        uncached = pool.submit(read_url, "hangfile", elsewhere / "g.bin", cache, **settings)
        time.sleep(2.0)
        # The cached file's revalidation hangs too, from 2 s to 5 s; the uncached read's own
        # request takes the backend offline at 3 s, and the revalidation stops waiting then.
        started = time.monotonic()
        assert read_url("hangfile", files / "f001.bin", cache, **settings) == pattern(
            8 * KiB, seed=1
        )
        waited = time.monotonic() - started
        with pytest.raises(BackendUnavailableError, match=OFFLINE_MISS):
            uncached.result()
    assert waited < 2.0, f"the cached file waited {waited:.2f} s on a link known to be down"
    # The uncached read's request and the revalidation, nothing else, on this engine's link.
    backend = open_url("hangfile", files / "f001.bin", cache, **settings).fs.backend
    assert len(backend.hung_on) == 2, backend.hung_on


def test_a_link_that_comes_back_is_used_by_the_very_next_read(
    files: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    # The background probe would come too late to matter: only the read itself can notice.
    settings = {"block_size": "4KiB", "backend_recheck_after": 0.3, "backend_probe_interval": 60}
    assert read_url("switchfile", files / "f000.bin", cache, **settings)
    monkeypatch.setattr(SwitchableLocalBackend, "online", False)
    with pytest.raises(BackendUnavailableError, match="not cached"):
        read_url("switchfile", files / "f001.bin", cache, **settings)
    assert read_url("switchfile", files / "f000.bin", cache, **settings)  # cached: served
    health = open_url("switchfile", files / "f000.bin", cache, **settings).fs.health

    monkeypatch.setattr(SwitchableLocalBackend, "online", True)
    time.sleep(0.3)  # the age rule: the last probe (the failure above) is now old enough
    assert not health.online  # nothing but the next read can bring it back
    assert read_url("switchfile", files / "f001.bin", cache, **settings) == pattern(8 * KiB, seed=1)
    assert health.online


def test_concurrent_misses_while_offline_share_one_probe(
    make_fs: MakeFs, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = make_fs(
        "switchfile", block_size="4KiB", backend_recheck_after=0.2, backend_probe_interval=60
    )
    assert fs.cat_file(str(files / "f000.bin"))
    backend: SwitchableLocalBackend = backend_of(fs)
    backend.online = False
    with pytest.raises(BackendUnavailableError):
        fs.cat_file(str(files / "f001.bin"))
    monkeypatch.setattr(SwitchableLocalBackend, "probes", 0)
    time.sleep(0.2)
    paths = [str(files / f"f{i:03d}.bin") for i in range(1, 40)]
    results = fs.cat(paths, on_error="return")
    assert all(isinstance(r, BackendUnavailableError) for r in results.values())
    assert SwitchableLocalBackend.probes == 1
    backend.online = True
    time.sleep(0.2)
    assert fs.cat(paths) == {p: pattern(8 * KiB, seed=i) for i, p in enumerate(paths, 1)}
    assert SwitchableLocalBackend.probes == 2


def test_after_an_outage_cached_files_do_not_wait_on_a_link_that_flaps(
    make_fs: MakeFs, files: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fs = make_fs(
        "hangfile",
        block_size="4KiB",
        metadata_ttl=0,  # every info has expired: each read of a cached file would revalidate
        backend_recheck_after=0.1,
        backend_stable_after=60,
        backend_probe_interval=60,
    )
    cached = str(files / "f000.bin")
    assert fs.cat_file(cached)
    monkeypatch.setattr(HangingLocalBackend, "hung", True)
    with pytest.raises(BackendUnavailableError):
        fs.cat_file(str(files / "f001.bin"))  # one timeout: offline
    monkeypatch.setattr(HangingLocalBackend, "hung", False)
    time.sleep(0.1)
    assert fs.cat_file(str(files / "f001.bin"))  # back: the read probed and went ahead
    assert fs.health.online and not fs.health.stable

    # It drops again, this time for long. Cached files are served from the cache at once (the
    # revalidation runs behind the readers and takes the backend offline again).
    monkeypatch.setattr(HangingLocalBackend, "hang_seconds", 5.0)
    monkeypatch.setattr(HangingLocalBackend, "hung", True)
    monkeypatch.setattr(HangingLocalBackend, "waits", 0)
    started = time.monotonic()
    for _ in range(20):
        assert fs.cat_file(cached) == pattern(8 * KiB, seed=0)
    assert time.monotonic() - started < 2.5, "a read of a cached file waited on the link"
    assert HangingLocalBackend.waits <= 1
