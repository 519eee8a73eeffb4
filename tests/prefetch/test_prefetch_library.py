"""prefetch() as the agent and CLI call it: exact bytes, resume, pins, failures, offline use."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest
from prefetchlib import CountingBackend

from edgecache.errors import BackendUnavailableError, PinError
from edgecache.fs import EdgeCacheFileSystem, PrefetchProgress, run_prefetch

BLOCK = 64 * 1024


def make_fs(cache_dir: Path, **options: Any) -> EdgeCacheFileSystem:
    options.setdefault("block_size", BLOCK)
    return EdgeCacheFileSystem(
        target_protocol="pfile", cache_dir=str(cache_dir), skip_instance_cache=True, **options
    )


def backend(fs: EdgeCacheFileSystem) -> CountingBackend:
    assert isinstance(fs.backend, CountingBackend)
    return fs.backend


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_prefetch_loads_every_block_once_and_bytes_are_exact(
    dataset_dir: Path, cache_dir: Path
) -> None:
    fs = make_fs(cache_dir)
    report = run_prefetch(fs, [str(dataset_dir)])
    files = all_files(dataset_dir)
    assert report.ok
    assert report.files_total == report.files_loaded == len(files) == 47
    assert report.bytes_total == report.bytes_loaded == sum(len(b) for b in files.values())
    fetched = backend(fs).fetched
    assert len(fetched) == len(set(fetched))  # no block twice
    # Every byte now comes from the cache: no fetch while reading it all back.
    count = len(fetched)
    for path, data in files.items():
        assert fs.cat_file(path) == data
    assert len(backend(fs).fetched) == count


def test_second_run_fetches_nothing_and_reports_all_cached(
    dataset_dir: Path, cache_dir: Path
) -> None:
    fs = make_fs(cache_dir)
    run_prefetch(fs, [str(dataset_dir)])
    fetched = len(backend(fs).fetched)
    fs2 = make_fs(cache_dir)  # a new filesystem on the same cache dir (the same engine)
    report = run_prefetch(fs2, [str(dataset_dir)])
    assert backend(fs2).fetched[fetched:] == []
    assert report.ok and report.files_cached == 47 and report.bytes_loaded == 0
    assert report.bytes_cached == report.bytes_total


def test_interrupted_run_resumes_where_it_stopped(dataset_dir: Path, cache_dir: Path) -> None:
    stop = threading.Event()
    seen: list[int] = []

    def on_progress(p: PrefetchProgress) -> None:
        seen.append(p.bytes_loaded)
        if p.files_done >= 10:
            stop.set()

    fs = make_fs(cache_dir)
    first = run_prefetch(
        fs, [str(dataset_dir)], parallel=2, on_progress=on_progress, progress_interval=0, stop=stop
    )
    assert first.interrupted and not first.ok
    assert 0 < first.bytes_loaded < first.bytes_total
    loaded_first = {f for f in backend(fs).fetched}
    fetched = len(backend(fs).fetched)

    fs2 = make_fs(cache_dir)
    second = run_prefetch(fs2, [str(dataset_dir)])
    assert second.ok
    # Nothing loaded by the first run is fetched again; together they load everything once.
    assert not loaded_first & set(backend(fs2).fetched[fetched:])
    assert second.bytes_loaded + first.bytes_loaded == second.bytes_total
    for path, data in all_files(dataset_dir).items():
        assert fs2.cat_file(path) == data


def test_partial_failure_lists_failed_paths_and_loads_the_rest(
    dataset_dir: Path, cache_dir: Path
) -> None:
    (dataset_dir / "train" / "broken.bin").write_bytes(b"x" * 5000)
    fs = make_fs(cache_dir)
    report = run_prefetch(fs, [str(dataset_dir / "train"), str(dataset_dir / "missing")])
    assert not report.ok
    failed = {f.path: f.error for f in report.failed}
    assert set(failed) == {str(dataset_dir / "train" / "broken.bin"), str(dataset_dir / "missing")}
    assert "access denied" in failed[str(dataset_dir / "train" / "broken.bin")]
    assert "not found" in failed[str(dataset_dir / "missing")]
    assert report.files_loaded == 42 and report.files_failed == 2
    assert report.bytes_done == report.bytes_total


def test_a_file_failing_in_several_workers_at_once_fails_once_and_counts_once(
    dataset_dir: Path, cache_dir: Path
) -> None:
    # Every block of one, all but the first of the other: 4 workers meet the failures at once.
    (dataset_dir / "train" / "broken.bin").write_bytes(os.urandom(6 * BLOCK))
    (dataset_dir / "train" / "torn.bin").write_bytes(os.urandom(6 * BLOCK + 10))
    fs = make_fs(cache_dir)
    seen: list[tuple[int, int, int, int]] = []

    def progress(p: PrefetchProgress) -> None:
        seen.append((p.files_done, p.files_total, p.bytes_done, p.bytes_total))

    report = run_prefetch(fs, [str(dataset_dir / "train")], parallel=4, on_progress=progress)
    failed = [f.path for f in report.failed]
    assert sorted(failed) == [str(dataset_dir / "train" / n) for n in ("broken.bin", "torn.bin")]
    assert report.files_failed == 2 and report.files_loaded == 42
    assert report.files_done == report.files_total
    assert report.bytes_done == report.bytes_total
    assert all(done <= total and done_b <= total_b for done, total, done_b, total_b in seen)


def test_glob_targets(dataset_dir: Path, cache_dir: Path) -> None:
    fs = make_fs(cache_dir)
    report = run_prefetch(fs, [str(dataset_dir / "train" / "img00*.jpg")])
    assert report.files_loaded == 10
    assert {p for p, _ in backend(fs).fetched} == {
        str(dataset_dir / "train" / f"img{i:03d}.jpg") for i in range(10)
    }


def test_dry_run_loads_nothing_and_says_how_much(dataset_dir: Path, cache_dir: Path) -> None:
    fs = make_fs(cache_dir)
    report = run_prefetch(fs, [str(dataset_dir)], dry_run=True)
    assert backend(fs).fetched == []
    assert report.dry_run and report.files_total == 47 and report.bytes_cached == 0
    assert report.bytes_total == sum(len(b) for b in all_files(dataset_dir).values())


def test_pin_that_cannot_fit_is_refused_before_loading(dataset_dir: Path, cache_dir: Path) -> None:
    fs = make_fs(cache_dir, ssd_quota="200KiB")
    with pytest.raises(PinError, match="cannot pin"):
        run_prefetch(fs, [str(dataset_dir / "train")], pin="train")
    assert backend(fs).fetched == []


def test_pinned_data_survives_eviction_pressure(dataset_dir: Path, cache_dir: Path) -> None:
    fs = make_fs(cache_dir, ssd_quota="2MiB", mem_quota=0)
    report = run_prefetch(fs, [str(dataset_dir / "val")], pin="val")
    assert report.ok and report.pinned == ["val"]
    # Fill the rest of the cache many times over with other data.
    noise = dataset_dir / "noise"
    noise.mkdir()
    for i in range(30):
        (noise / f"n{i}.bin").write_bytes(os.urandom(200_000))
    run_prefetch(fs, [str(noise)])
    assert fs.cache.stats()["tiers"]["ssd"]["evictions"] > 0
    before = len(backend(fs).fetched)
    for path, data in all_files(dataset_dir / "val").items():
        assert fs.cat_file(path) == data
    assert len(backend(fs).fetched) == before, "pinned blocks were evicted"


def test_after_prefetch_ls_info_and_cat_work_with_the_backend_cut(
    dataset_dir: Path, cache_dir: Path
) -> None:
    fs = make_fs(cache_dir)
    run_prefetch(fs, [str(dataset_dir)])
    backend(fs).online = False
    fs2 = make_fs(cache_dir, metadata_ttl=0)  # new process, and every entry already expired
    backend(fs2).online = False
    for f in (fs, fs2):
        train = str(dataset_dir / "train")
        assert len(f.ls(train)) == 41
        assert f.info(str(dataset_dir / "val" / "v3.jpg"))["size"] == 2000
        assert (
            f.cat_file(str(dataset_dir / "train" / "shards" / "shard1.bin"))
            == (dataset_dir / "train" / "shards" / "shard1.bin").read_bytes()
        )
        assert sorted(f.find(str(dataset_dir / "val"))) == sorted(
            str(p) for p in (dataset_dir / "val").iterdir()
        )
    (dataset_dir / "late.bin").write_bytes(b"new")
    with pytest.raises(BackendUnavailableError, match="unreachable"):
        fs2.cat_file(str(dataset_dir / "late.bin"))
