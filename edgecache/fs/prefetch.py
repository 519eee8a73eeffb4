"""Prefetch: warm the cache with whole files or directory trees before they are read.

Used by ``edgecache prefetch`` and (later) by the agent for DataLoads. Place in the flow::

    targets (paths, globs) --list/find (listings cached: metadata prefetch)--> files
      --> blocks not in the SSD tier (ReadEngine.missing_blocks)
      --N workers--> ReadEngine.fetch (background priority: after readers) --> cache

Work is cut at block level and handed to ``parallel`` workers from one queue, so large files and
many small ones both keep the link busy while memory stays bounded (a block in flight per
worker). Blocks already in the SSD tier are skipped: a second run, or a run after an
interruption, loads only what is missing. Every block is stored atomically by the cache, so
stopping at any point (``stop`` event, Ctrl-C) leaves a consistent cache.

What counts as loaded is what the SSD tier holds afterwards, not what was read: a block the
tier could not store (disk full, read-only, quota taken by pins) makes its file a failure
("not cached"), so a run that cached nothing never reports success.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edgecache.engine import ReadPlan, as_background
from edgecache.fs._filesystem import EdgeCacheFileSystem

__all__ = ["FailedPath", "PrefetchProgress", "PrefetchReport", "prefetch", "run_prefetch"]

_GLOB_CHARS = set("*?[")
_NOT_UTF8 = "the name is not valid UTF-8; edgecache caches only UTF-8 names (rename the file)"


@dataclass
class FailedPath:
    """A target or file that could not be loaded, with the reason."""

    path: str
    error: str


@dataclass
class PrefetchProgress:
    """Counts so far; files count once they are fully loaded, found cached, or failed."""

    files_total: int = 0
    bytes_total: int = 0
    files_loaded: int = 0
    bytes_loaded: int = 0
    """Bytes fetched from the backend by this run."""
    files_cached: int = 0
    """Files whose every block was in the cache before this run."""
    bytes_cached: int = 0
    """Bytes (of any file) found in the cache instead of fetched."""
    files_failed: int = 0
    bytes_failed: int = 0
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None

    @property
    def files_done(self) -> int:
        """Files settled one way or another."""
        return self.files_loaded + self.files_cached + self.files_failed

    @property
    def bytes_done(self) -> int:
        """Bytes settled one way or another."""
        return self.bytes_loaded + self.bytes_cached + self.bytes_failed

    @property
    def elapsed(self) -> float:
        """Seconds since the run started (until it finished)."""
        return (self.finished or time.monotonic()) - self.started

    @property
    def rate(self) -> float:
        """Bytes per second fetched from the backend."""
        return self.bytes_loaded / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate (None before a rate is known)."""
        left = self.bytes_total - self.bytes_done
        return left / self.rate if self.rate > 0 else (0.0 if left <= 0 else None)


@dataclass
class PrefetchReport(PrefetchProgress):
    """The outcome of a run."""

    failed: list[FailedPath] = field(default_factory=list)
    pinned: list[str] = field(default_factory=list)
    interrupted: bool = False
    dry_run: bool = False

    @property
    def ok(self) -> bool:
        """Everything loaded or already cached, nothing failed, not interrupted."""
        return not self.failed and not self.interrupted

    def as_dict(self) -> dict[str, Any]:
        """Plain data for ``--json``."""
        out = asdict(self)
        out.pop("started")
        out.pop("finished")
        out.update(
            elapsed_seconds=round(self.elapsed, 3),
            throughput_bytes_per_second=round(self.rate, 1),
            files_done=self.files_done,
            bytes_done=self.bytes_done,
            ok=self.ok,
        )
        return out

    def merge(self, other: PrefetchReport) -> None:
        """Add another run's counts (several mounts of one dataset)."""
        for name in (
            "files_total",
            "bytes_total",
            "files_loaded",
            "bytes_loaded",
            "files_cached",
            "bytes_cached",
            "files_failed",
            "bytes_failed",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failed += other.failed
        self.pinned += other.pinned
        self.interrupted = self.interrupted or other.interrupted
        self.started = min(self.started, other.started)
        self.finished = max(self.finished or 0.0, other.finished or 0.0) or None


@dataclass
class _File:
    plan: ReadPlan
    missing: list[int]
    missing_bytes: int
    left: int = 0
    loaded: int = 0
    """Bytes of its missing blocks loaded so far (counted as failed instead if it fails)."""
    failed: bool = False
    unstored: int = 0
    """Bytes read from the backend that the SSD tier did not store."""


async def _expand(
    fs: EdgeCacheFileSystem, target: str, report: PrefetchReport
) -> dict[str, dict[str, Any]]:
    """Files under ``target`` (a file, a directory, or a glob) with their infos."""
    try:
        return await fs.files_under(target)
    except (OSError, ValueError) as exc:
        report.failed.append(FailedPath(target, _describe(exc)))
        return {}


def _static_prefix(path: str) -> str:
    """The part of a path before its first glob character (the whole path if none)."""
    for i, char in enumerate(path):
        if char in _GLOB_CHARS:
            return path[:i]
    return path


def _describe(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return f"not found ({exc})" if str(exc) else "not found"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@as_background
async def prefetch(
    fs: EdgeCacheFileSystem,
    targets: Sequence[str],
    *,
    parallel: int | None = None,
    pin: str | None = None,
    dry_run: bool = False,
    on_progress: Callable[[PrefetchProgress], None] | None = None,
    progress_interval: float = 0.5,
    stop: threading.Event | None = None,
) -> PrefetchReport:
    """Load every file under ``targets`` into the cache; see the module docstring.

    ``pin``: a name; each target is pinned (as ``pin`` or ``pin#i``) before loading, and a pin
    that cannot fit raises :class:`~edgecache.errors.PinError` before anything loads.
    ``stop``: set it to end the run early (the report says ``interrupted``).
    Its fetches are background work (WAN QoS): they wait while readers' requests are on the
    link, within the background cap and windows (:mod:`edgecache.engine._qos`).
    """
    report = PrefetchReport(dry_run=dry_run)
    engine = fs.engine
    block_size, ttl = fs.settings.read.block_size, fs.settings.metadata.ttl_seconds
    per_target: list[tuple[str, dict[str, dict[str, Any]]]] = []
    for target in targets:
        per_target.append((target, await _expand(fs, fs.object_path(target), report)))
    files: dict[str, _File] = {}
    for _, found in per_target:
        for path, info in found.items():
            if path in files or info.get("type") == "directory":
                continue
            try:
                plan = await engine.plan(fs.object_path(path), block_size=block_size, ttl=ttl)
                missing = engine.missing_blocks(plan, on_disk=True)
            except (UnicodeEncodeError, OSError) as exc:
                # A name the OS gave as bytes that are not UTF-8 (block keys and the metadata
                # store name things in UTF-8), or a file gone since it was listed: that file
                # fails, the rest of the tree loads.
                error = _NOT_UTF8 if isinstance(exc, UnicodeEncodeError) else _describe(exc)
                report.failed.append(FailedPath(path, error))
                report.files_total += 1
                report.bytes_total += int(info.get("size") or 0)
                report.bytes_failed += int(info.get("size") or 0)
                continue
            missing_bytes = plan.bytes_in(missing)
            files[path] = _File(plan, missing, missing_bytes, len(missing))
            size = plan.size
            report.files_total += 1
            report.bytes_total += size
            report.bytes_cached += size - missing_bytes
            if not missing:
                report.files_cached += 1
    report.files_failed = len(report.failed)
    if pin is not None and not dry_run:
        for i, (target, found) in enumerate(per_target):
            if not found:
                continue
            name = pin if len(per_target) == 1 else f"{pin}#{i}"
            reserve = sum(files[p].plan.size for p in found if p in files)
            engine.pin(name, prefix=_static_prefix(fs.object_path(target)), reserve_bytes=reserve)
            report.pinned.append(name)
    if dry_run:
        report.finished = time.monotonic()
        return report

    queue: asyncio.Queue[tuple[_File, int]] = asyncio.Queue()
    for f in files.values():
        for index in f.missing:
            queue.put_nowait((f, index))
    last_report = 0.0

    def tick(force: bool = False) -> None:
        nonlocal last_report
        now = time.monotonic()
        if on_progress is not None and (force or now - last_report >= progress_interval):
            last_report = now
            on_progress(report)

    async def worker() -> None:
        while True:
            try:
                f, index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            if stop is not None and stop.is_set():
                report.interrupted = True
                return
            length = f.plan.block_length(index)
            if not f.failed:
                try:
                    await engine.fetch(f.plan, [index])
                except Exception as exc:
                    # Other blocks of the file may be in flight in other workers and fail
                    # too: the file fails once, and its bytes count once, as failed.
                    if not f.failed:
                        f.failed = True
                        report.failed.append(FailedPath(f.plan.path, _describe(exc)))
                        report.files_failed += 1
                        report.bytes_failed += f.missing_bytes
                        report.bytes_loaded -= f.loaded
                else:
                    key = f.plan.key(index)
                    if not engine.blocks.ssd.has_file(key):
                        # Another reader's fetch of the block (a pool peer's request, a
                        # view) may have handed it over before storing it: wait for that.
                        await engine.blocks.settled(key)
                    if not engine.blocks.ssd.has_file(key):
                        f.unstored += length
                    elif not f.failed:
                        report.bytes_loaded += length
                        f.loaded += length
            f.left -= 1
            if f.left == 0 and not f.failed:
                if f.unstored:
                    ssd = engine.blocks.ssd
                    reason = (
                        "no room under the quota"
                        if ssd.available
                        else (ssd.unavailable_reason or "the tier is unusable")
                    )
                    report.failed.append(
                        FailedPath(
                            f.plan.path,
                            f"read but not cached: the SSD tier could not store "
                            f"{f.unstored} of its bytes ({reason})",
                        )
                    )
                    report.files_failed += 1
                    report.bytes_failed += f.unstored
                else:
                    report.files_loaded += 1
            tick()

    workers = max(1, parallel or _workers(fs))
    tick(force=True)
    await asyncio.gather(*(worker() for _ in range(workers)))
    report.finished = time.monotonic()
    tick(force=True)
    return report


def _workers(fs: EdgeCacheFileSystem) -> int:
    """Blocks loaded at once by default. With WAN QoS on, the link scheduler bounds them
    (``background_fetches`` on request slots of their own): a quarter more workers than that
    keep those slots full while the blocks that just landed are stored; a worker waiting for
    its turn holds no block. Without QoS, the engine's ``fetch_concurrency``."""
    qos = fs.engine.link.settings
    if qos.enabled:
        return qos.background_fetches + max(1, qos.background_fetches // 4)
    return fs.settings.read.fetch_concurrency


def run_prefetch(fs: EdgeCacheFileSystem, targets: Sequence[str], **kwargs: Any) -> PrefetchReport:
    """Synchronous :func:`prefetch` on the filesystem's event loop.

    A ``KeyboardInterrupt`` while it runs stops the workers after their current block and
    returns the report with ``interrupted`` set (the cache stays consistent).
    """
    stop = kwargs.pop("stop", None) or threading.Event()
    future = asyncio.run_coroutine_threadsafe(prefetch(fs, targets, stop=stop, **kwargs), fs.loop)
    try:
        while True:
            try:
                return future.result(timeout=0.2)
            except TimeoutError:
                continue
    except KeyboardInterrupt:
        stop.set()
        report = future.result()
        report.interrupted = True
        return report
