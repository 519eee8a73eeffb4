"""Settings for the cache and the filesystem, and the parser of sizes and ratios they use.

This module sits at the bottom of the stack: the fsspec layer, the CLI and (later) the agent build
a :class:`CacheSettings` from user input (storage options, ``-o`` flags, YAML) and hand it to the
tiered cache. Every field has a default, a unit in its name or docstring, and a reason for the
default. Parsing errors are :class:`~edgecache.errors.ConfigError` naming the option, the value and
what is allowed.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

from edgecache.errors import ConfigError, quoted

__all__ = [
    "OPTION_FIELDS",
    "CacheSettings",
    "Compression",
    "HealthSettings",
    "MetadataSettings",
    "QoSSettings",
    "ReadSettings",
    "SSDDirectory",
    "StoreSettings",
    "TimeWindow",
    "default_cache_dir",
    "parse_rate",
    "parse_ratio",
    "parse_size",
    "parse_windows",
    "settings_from_yaml",
]

Compression = Literal["auto", "lz4", "none"]

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "ki": 1024,
    "kib": 1024,
    "mi": 1024**2,
    "mib": 1024**2,
    "gi": 1024**3,
    "gib": 1024**3,
    "ti": 1024**4,
    "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")

MiB = 1024**2
GiB = 1024**3


def parse_size(value: object, *, option: str = "size") -> int:
    """Parse ``4MiB``, ``10Gi``, ``500M``, ``1.5GiB`` or a plain byte count into bytes.

    ``Ki/Mi/Gi/Ti`` (with or without a trailing ``B``) are powers of 1024, ``K/M/G/T`` powers of
    1000, as in Kubernetes quantities. Raises :class:`ConfigError` naming ``option``.
    """
    if isinstance(value, bool):
        raise ConfigError(f"{option}: expected a size such as 4MiB or 1048576, got {quoted(value)}")
    if isinstance(value, int):
        number: float = value
        unit = ""
    elif isinstance(value, float):
        number, unit = value, ""
    elif isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match or match.group(2).lower() not in _SIZE_UNITS:
            raise ConfigError(
                f"{option}: {quoted(value)} is not a size; use bytes or a number with a unit "
                "(B, KiB, MiB, GiB, TiB, Ki, Mi, Gi, K, M, G), e.g. 4MiB or 10Gi"
            )
        number, unit = float(match.group(1)), match.group(2).lower()
    else:
        raise ConfigError(f"{option}: expected a size such as 4MiB, got {type(value).__name__}")
    if not math.isfinite(number):
        raise ConfigError(f"{option}: size must be a finite number of bytes, got {quoted(value)}")
    result = int(number * _SIZE_UNITS[unit])
    if result < 0:
        raise ConfigError(f"{option}: size must not be negative, got {quoted(value)}")
    return result


def parse_ratio(value: object, *, option: str = "ratio") -> float:
    """Parse a ratio between 0 and 1: ``0.95``, ``"0.95"`` or ``"95%"``."""
    try:
        if isinstance(value, str) and value.strip().endswith("%"):
            ratio = float(value.strip()[:-1]) / 100
        elif isinstance(value, bool):
            raise TypeError
        else:
            ratio = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"{option}: {quoted(value)} is not a ratio; use e.g. 0.95 or 95%"
        ) from exc
    if not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"{option}: {quoted(value)} is outside 0..1")
    return ratio


_BIT_UNITS = {"kbit": 1000 / 8, "mbit": 1000**2 / 8, "gbit": 1000**3 / 8}
_UNLIMITED = {"unlimited", "none", "off", ""}


def parse_rate(value: object, *, option: str = "rate") -> float | None:
    """Parse a bandwidth into bytes per second: a size per second (``10MiB``, ``10MiB/s``,
    ``500K``, a plain number of bytes) or bits (``80Mbit``, ``1Gbit/s``: powers of 1000).

    ``unlimited`` (or ``none``) is None, no cap; ``0`` is a rate of zero (nothing may pass).
    Raises :class:`ConfigError` naming ``option``.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in _UNLIMITED):
        return None
    if isinstance(value, str):
        text = value.strip()
        if text.lower().endswith("/s"):
            text = text[:-2]
        match = _SIZE_RE.match(text)
        if match and match.group(2).lower() in _BIT_UNITS:
            return float(match.group(1)) * _BIT_UNITS[match.group(2).lower()]
        value = text
    try:
        return float(parse_size(value, option=option))
    except ConfigError as exc:
        raise ConfigError(
            f"{option}: {quoted(value)} is not a rate; use bytes per second with a unit "
            "(10MiB, 10MiB/s), bits (80Mbit, 1Gbit/s), 0 (nothing) or unlimited"
        ) from exc


@dataclass(frozen=True, order=True)
class TimeWindow:
    """A daily time window in UTC, ``start`` inclusive to ``end`` exclusive, in minutes after
    midnight; a window whose end is before its start wraps past midnight (``22:00-06:00``)."""

    start_minute: int
    end_minute: int

    def __post_init__(self) -> None:
        if not (0 <= self.start_minute < 1440 and 0 < self.end_minute <= 1440):
            raise ConfigError(f"time window {self}: minutes must be within one day")
        if self.start_minute == self.end_minute % 1440:
            raise ConfigError(
                f"time window {self}: start and end are the same time; for all day, set no window"
            )

    def contains(self, minute_of_day: float) -> bool:
        """Whether ``minute_of_day`` (0 to 1440, UTC) falls inside the window."""
        if self.start_minute < self.end_minute:
            return self.start_minute <= minute_of_day < self.end_minute
        return minute_of_day >= self.start_minute or minute_of_day < self.end_minute

    def __str__(self) -> str:
        def hhmm(minute: int) -> str:
            return f"{minute // 60:02d}:{minute % 60:02d}"

        return f"{hhmm(self.start_minute)}-{hhmm(self.end_minute)}"


_WINDOW_RE = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def parse_windows(value: object, *, option: str = "windows") -> tuple[TimeWindow, ...]:
    """Parse daily UTC windows: ``02:00-06:00``, several separated by commas
    (``02:00-06:00,22:00-23:30``) or a list of them; empty means none."""
    if value is None:
        return ()
    if isinstance(value, TimeWindow):
        return (value,)
    if isinstance(value, str):
        parts: list[object] = [p for p in value.split(",") if p.strip()]
    elif isinstance(value, list | tuple):
        parts = list(value)
    else:
        raise ConfigError(f"{option}: expected windows such as 02:00-06:00, got {quoted(value)}")
    windows = []
    for part in parts:
        if isinstance(part, TimeWindow):
            windows.append(part)
            continue
        match = _WINDOW_RE.match(part) if isinstance(part, str) else None
        if match is None:
            raise ConfigError(
                f"{option}: {quoted(part)} is not a time window; use HH:MM-HH:MM in UTC, "
                "e.g. 02:00-06:00"
            )
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2):
            raise ConfigError(f"{option}: {quoted(part)} is not a time of day (00:00 to 24:00)")
        try:
            windows.append(TimeWindow(h1 * 60 + m1, h2 * 60 + m2))
        except ConfigError as exc:
            raise ConfigError(f"{option}: {exc}") from exc
    return tuple(sorted(windows))


def default_cache_dir() -> str:
    """``$EDGECACHE_CACHE_DIR``, else the per-user cache directory (``~/.cache/edgecache``)."""
    cache_dir = os.environ.get("EDGECACHE_CACHE_DIR")
    if cache_dir:
        return cache_dir
    # Imported here, as the YAML reader below: what a reader's first fsspec.open imports is
    # what every spawned DataLoader worker pays before its first byte.
    import platformdirs

    return platformdirs.user_cache_dir("edgecache")


@dataclass(frozen=True)
class SSDDirectory:
    """One directory of the SSD tier with its own byte quota (Fluid's ``path`` + ``quotaList``)."""

    path: str
    """Directory holding block files and (for the first directory) the index."""
    quota_bytes: int
    """Most bytes of (compressed) blocks kept in this directory."""


@dataclass(frozen=True)
class StoreSettings:
    """What a cache directory holds and how much: the store one process opens per directory.

    The first filesystem of a process to open a directory decides these for the process (its
    caches are shared by every later one, whatever their read settings)."""

    cache_dir: str = field(default_factory=default_cache_dir)
    """Root of the SSD tier: index, block files, lock files and the metadata cache."""
    mem_quota: int = 256 * MiB
    """MEM tier bound in bytes, per process. 256 MiB holds a working set of 64 default
    blocks."""
    ssd_quota: int = 10 * GiB
    """SSD tier bound in bytes for ``cache_dir`` when ``ssd_dirs`` is not given."""
    ssd_high: float = 0.95
    """When usage would pass ``ssd_high * quota``, evict..."""
    ssd_low: float = 0.85
    """... down to ``ssd_low * quota``. The gap batches evictions instead of one per insert."""
    ssd_dirs: tuple[SSDDirectory, ...] = ()
    """Several SSD directories, each with its quota; empty means ``((cache_dir, ssd_quota),)``."""
    compression: Compression = "auto"
    """``auto``: LZ4 where a sample shows it pays; ``lz4``: try every block; ``none``: never."""
    compression_min_saving: float = 0.10
    """A block is stored compressed only if LZ4 saves at least this fraction of its size."""
    eviction_policy: str = "s3fifo"
    """Name of the eviction policy (``s3fifo``, ``lru``): see :mod:`edgecache.cache.eviction`."""
    ssd_retry_seconds: float = 30.0
    """Seconds the SSD tier stays out of service after its directory failed (disk full,
    read-only, removed, unreadable) before it tries the directory again; meanwhile reads go
    straight to the backend. Thirty seconds: a retry costs a few system calls and an index
    open, and a disk that is full or remounted read-only rarely comes back sooner, so readers
    do not pay for a failing open on every miss; a test or an operator who frees the disk can
    lower it."""

    def __post_init__(self) -> None:
        # "" would make the current directory the cache (and its contents ours to clean).
        for path in (self.cache_dir, *(d.path for d in self.ssd_dirs)):
            if not isinstance(path, str) or not path.strip():
                raise ConfigError(f"cache_dir: {quoted(path)} is not a directory path")
        if not 0 < self.ssd_low <= self.ssd_high <= 1:
            raise ConfigError(
                f"ssd_low/ssd_high: need 0 < low <= high <= 1, got low={self.ssd_low} "
                f"high={self.ssd_high}"
            )
        if not (math.isfinite(self.ssd_retry_seconds) and self.ssd_retry_seconds >= 0):
            raise ConfigError(
                f"ssd_retry_seconds: must be >= 0 seconds, got {self.ssd_retry_seconds}"
            )
        if self.compression not in ("auto", "lz4", "none"):
            raise ConfigError(
                f"compression: {quoted(self.compression)} is not one of auto, lz4, none"
            )

    @property
    def ssd_directories(self) -> tuple[SSDDirectory, ...]:
        """The SSD directories in effect (``cache_dir`` alone unless ``ssd_dirs`` is set)."""
        return self.ssd_dirs or (SSDDirectory(self.cache_dir, self.ssd_quota),)


@dataclass(frozen=True)
class ReadSettings:
    """How a filesystem reads: each filesystem's own, passed with each call to the engine."""

    block_size: int = 4 * MiB
    """Unit of caching and fetching, in bytes. 4 MiB: large enough that one ranged GET over a
    30 ms link moves far more data than it waits, small enough that random reads waste
    little."""
    readahead_blocks: int = 4
    """Blocks fetched ahead, in parallel, once a file is read sequentially."""
    fetch_concurrency: int = 16
    """Most block fetches in flight per read engine (the node's link is shared by every
    filesystem of the process; the first to open the engine sizes it): at 30 ms RTT and
    100 Mbit/s, 16 requests for small objects keep the link full; for 4 MiB blocks a few
    would do."""
    scan_ahead_files: int = 16
    """Files whose first block is fetched ahead once a directory is read in name order."""

    def __post_init__(self) -> None:
        if self.block_size < 4096:
            raise ConfigError(f"block_size: must be at least 4KiB, got {self.block_size}")
        if self.readahead_blocks < 0 or self.scan_ahead_files < 0 or self.fetch_concurrency < 1:
            raise ConfigError(
                "readahead_blocks and scan_ahead_files must be >= 0, fetch_concurrency >= 1"
            )


@dataclass(frozen=True)
class MetadataSettings:
    """How long listings and object infos are trusted (each filesystem's own)."""

    ttl_seconds: float = 60.0
    """Seconds a listing or object info is trusted before the backend is asked again (the
    storage option ``metadata_ttl``). A minute makes a training loop's opens free and still
    notices a changed object soon; offline, older entries are served anyway."""

    def __post_init__(self) -> None:
        if self.ttl_seconds < 0:
            raise ConfigError(f"metadata_ttl: must be >= 0 seconds, got {self.ttl_seconds}")


@dataclass(frozen=True)
class HealthSettings:
    """How the read engine watches a backend it found unreachable (the engine's, node-level)."""

    probe_interval_seconds: float = 5.0
    """Seconds between background reachability probes while a backend is offline (the storage
    option ``backend_probe_interval``), also the bound on one probe. Only matters when nothing
    reads: a read that needs the backend probes by itself (:attr:`recheck_after_seconds`)."""
    recheck_after_seconds: float = 1.0
    """A read that needs an offline backend probes it at once when the last probe is at least
    this many seconds old, and goes ahead if it is answered (``backend_recheck_after``). One
    second: a returning link is used within about a second, and a dead one costs at most one
    probe a second, whatever the number of reads."""
    stable_after_seconds: float = 30.0
    """Seconds a backend must stay reachable after an outage before expired metadata of cached
    data is revalidated in the foreground again (``backend_stable_after``); until then it is
    served as it is and refreshed in the background, so a link that flaps makes no reader of
    cached data wait. Thirty seconds outlasts the usual flaps (a route change, a radio link
    dropping for seconds) and is short next to a metadata TTL."""

    def __post_init__(self) -> None:
        if not self.probe_interval_seconds > 0:
            raise ConfigError(
                f"backend_probe_interval: must be > 0 seconds, got {self.probe_interval_seconds}"
            )
        for option, value in (
            ("backend_recheck_after", self.recheck_after_seconds),
            ("backend_stable_after", self.stable_after_seconds),
        ):
            if not value >= 0:
                raise ConfigError(f"{option}: must be >= 0 seconds, got {value}")


@dataclass(frozen=True)
class QoSSettings:
    """How the site's WAN link is shared between foreground reads and background loading
    (:mod:`edgecache.engine._qos`; node-level: one link scheduler per process per backend link
    and these settings).

    Foreground: what a reader waits for (its reads, their read-ahead, the scan-ahead of a loop
    opening files, a peer's request on behalf of a reader). Background: prefetch and DataLoads.
    Background fetches start one block at a time and only while no foreground request of the
    node is queued or in flight (other processes on the cache directory included), within the
    cap and the windows below.
    """

    enabled: bool = True
    """``False``: no priorities in this process (background runs like foreground, uncapped);
    the storage option ``qos_enabled``. On by default: it costs a foreground read nothing, and a
    DataLoad must never slow the pods' reads."""
    background_bytes_per_second: float | None = None
    """Cap on background bytes per second from the backend outside the windows (all the time
    when there are none): storage option ``background_rate`` (``20MiB``, ``80Mbit``). None: no
    cap (background still yields to foreground); 0: background runs only inside the windows.
    No cap by default: yielding to foreground already protects readers, and a cap is a site's
    decision (what else shares its link)."""
    background_windows: tuple[TimeWindow, ...] = ()
    """Daily UTC windows (``background_windows``: ``02:00-06:00``) in which background runs at
    :attr:`window_bytes_per_second` instead of the cap, e.g. uncapped at night."""
    window_bytes_per_second: float | None = None
    """Cap on background bytes per second inside the windows (``background_window_rate``);
    None: uncapped."""
    background_inflight_bytes: int = 4 * MiB
    """Most bytes of background blocks in flight at once (``background_inflight``); a block
    larger than this still goes, alone. It bounds what a foreground burst can find on the link
    (the rest of these bytes, then background stops until the burst is over): one default
    block, so a foreground read waits at most about one block time for background traffic.
    For small objects it still lets many go at once, which keeps the link busy."""
    background_lead: float = 0.25
    """Share of a background block's expected time on the link (``background_lead``, 0 to 1)
    at its end during which it no longer counts against :attr:`background_inflight_bytes`:
    the next block's request is sent while this one's tail streams, so the link does not idle
    for the request's round trip and the engine's steps between blocks (with one block in
    flight at a time a prefetch of a large object ran at 0.73x of the link under load). The
    expected time is learnt from the blocks that landed before (none yet: no lead). A quarter
    covers the gap measured under load (0.12 s of 0.46 s per 4 MiB block at 30 ms, 100 Mbit/s)
    and adds at most a quarter block to what a foreground read can find ahead of it; 0: one
    block at a time, as before."""
    background_fetches: int = 32
    """Most background block fetches in flight at once (``background_fetches``), on request
    slots of their own: background never takes one of the ``fetch_concurrency`` slots of
    foreground requests, which always find theirs free. Small objects need many requests in
    flight to keep a link busy (each costs round trips, not bandwidth: its connection and its
    request over 30 ms against 5 ms for 64 KiB at 100 Mbit/s); large blocks are bounded by
    :attr:`background_inflight_bytes` long before this, which also bounds what a foreground
    burst finds on the link. Sharing the foreground's 16 slots (at most 12), a prefetch of
    1,000 x 64 KiB objects moved 0.72x of a 30 ms, 100 Mbit/s link on a quiet machine, and
    0.81x of a 120 ms, 25 Mbit/s one (the same round trips per byte) on a loaded one; with 32
    of its own, 0.91x of the latter (`bench/wan_bench.py --only prefetch_small`; bench/README.md,
    "QoS and small objects")."""
    foreground_quiet_seconds: float = 0.5
    """Background waits until foreground has been quiet this long (``foreground_quiet``): a
    reader between two reads (a training step, the next file) is still reading, and a
    background block started in that gap would sit in front of its next read. Half a second
    spans a data loader's step and costs background little."""
    state_dir: str = ""
    """Directory of the files through which processes see each other's foreground activity
    (``qos_dir``); empty: ``<cache_dir>/qos``. Processes that share a link but not a cache
    directory (a pod with its own cache next to the agent) share coordination by pointing
    this at one directory."""

    def __post_init__(self) -> None:
        for option, rate in (
            ("background_rate", self.background_bytes_per_second),
            ("background_window_rate", self.window_bytes_per_second),
        ):
            if rate is not None and not (math.isfinite(rate) and rate >= 0):
                raise ConfigError(f"{option}: must be >= 0 bytes per second, got {rate}")
        if self.background_inflight_bytes < 1 or self.background_fetches < 1:
            raise ConfigError("background_inflight and background_fetches must be >= 1")
        if not 0 <= self.background_lead <= 1:
            raise ConfigError(f"background_lead: must be 0 to 1, got {self.background_lead}")
        if not self.foreground_quiet_seconds >= 0:
            raise ConfigError(
                f"foreground_quiet: must be >= 0 seconds, got {self.foreground_quiet_seconds}"
            )


_GROUPS: dict[str, type[Any]] = {
    "store": StoreSettings,
    "read": ReadSettings,
    "metadata": MetadataSettings,
    "health": HealthSettings,
    "qos": QoSSettings,
}
#: Storage-option name (design section 2.3, flat as users write them) -> (group, field).
OPTION_FIELDS: dict[str, tuple[str, str]] = {
    **{f.name: (group, f.name) for group, cls in _GROUPS.items() for f in fields(cls)},
    "metadata_ttl": ("metadata", "ttl_seconds"),
    "backend_probe_interval": ("health", "probe_interval_seconds"),
    "backend_recheck_after": ("health", "recheck_after_seconds"),
    "backend_stable_after": ("health", "stable_after_seconds"),
    "qos_enabled": ("qos", "enabled"),
    "background_rate": ("qos", "background_bytes_per_second"),
    "background_window_rate": ("qos", "window_bytes_per_second"),
    "background_inflight": ("qos", "background_inflight_bytes"),
    "foreground_quiet": ("qos", "foreground_quiet_seconds"),
    "qos_dir": ("qos", "state_dir"),
}
for _field in (
    "ttl_seconds",
    "probe_interval_seconds",
    "recheck_after_seconds",
    "stable_after_seconds",
    "enabled",
    "background_bytes_per_second",
    "window_bytes_per_second",
    "background_inflight_bytes",
    "foreground_quiet_seconds",
    "state_dir",
):
    del OPTION_FIELDS[_field]


@dataclass(frozen=True, init=False)
class CacheSettings:
    """Everything the cache, the read engine and the filesystem are configured with, grouped by
    concern: :attr:`store` (the directory and its quotas), :attr:`read` (block size,
    read-ahead), :attr:`metadata` (TTL), :attr:`health` (probing an offline backend),
    :attr:`qos` (foreground reads before background loading on the link).

    Built from the flat storage-option names users write (design section 2.3:
    ``CacheSettings(cache_dir=..., block_size=...)``, :meth:`from_options`), or from groups
    (``CacheSettings(read=ReadSettings(block_size=...))``); the flat names also read back
    (``settings.block_size``).
    """

    store: StoreSettings
    read: ReadSettings
    metadata: MetadataSettings
    health: HealthSettings
    qos: QoSSettings

    def __init__(
        self,
        *,
        store: StoreSettings | None = None,
        read: ReadSettings | None = None,
        metadata: MetadataSettings | None = None,
        health: HealthSettings | None = None,
        qos: QoSSettings | None = None,
        **options: Any,
    ) -> None:
        groups: dict[str, Any] = {
            "store": store or StoreSettings(),
            "read": read or ReadSettings(),
            "metadata": metadata or MetadataSettings(),
            "health": health or HealthSettings(),
            "qos": qos or QoSSettings(),
        }
        changes: dict[str, dict[str, Any]] = {}
        for name, value in options.items():
            if name not in OPTION_FIELDS:
                raise TypeError(f"CacheSettings() got an unexpected keyword argument {name!r}")
            group, attr = OPTION_FIELDS[name]
            changes.setdefault(group, {})[attr] = value
        for group, values in changes.items():
            groups[group] = replace(groups[group], **values)
        for group, value in groups.items():
            object.__setattr__(self, group, value)

    # --- the flat names (storage options), read back -------------------------------------------
    @property
    def cache_dir(self) -> str:
        """``store.cache_dir``."""
        return self.store.cache_dir

    @property
    def mem_quota(self) -> int:
        """``store.mem_quota`` (bytes)."""
        return self.store.mem_quota

    @property
    def ssd_quota(self) -> int:
        """``store.ssd_quota`` (bytes)."""
        return self.store.ssd_quota

    @property
    def ssd_high(self) -> float:
        """``store.ssd_high``."""
        return self.store.ssd_high

    @property
    def ssd_low(self) -> float:
        """``store.ssd_low``."""
        return self.store.ssd_low

    @property
    def ssd_dirs(self) -> tuple[SSDDirectory, ...]:
        """``store.ssd_dirs``."""
        return self.store.ssd_dirs

    @property
    def ssd_directories(self) -> tuple[SSDDirectory, ...]:
        """``store.ssd_directories``: the SSD directories in effect."""
        return self.store.ssd_directories

    @property
    def compression(self) -> Compression:
        """``store.compression``."""
        return self.store.compression

    @property
    def compression_min_saving(self) -> float:
        """``store.compression_min_saving``."""
        return self.store.compression_min_saving

    @property
    def eviction_policy(self) -> str:
        """``store.eviction_policy``."""
        return self.store.eviction_policy

    @property
    def ssd_retry_seconds(self) -> float:
        """``store.ssd_retry_seconds``."""
        return self.store.ssd_retry_seconds

    @property
    def block_size(self) -> int:
        """``read.block_size`` (bytes)."""
        return self.read.block_size

    @property
    def readahead_blocks(self) -> int:
        """``read.readahead_blocks``."""
        return self.read.readahead_blocks

    @property
    def fetch_concurrency(self) -> int:
        """``read.fetch_concurrency``."""
        return self.read.fetch_concurrency

    @property
    def scan_ahead_files(self) -> int:
        """``read.scan_ahead_files``."""
        return self.read.scan_ahead_files

    @property
    def metadata_ttl(self) -> float:
        """``metadata.ttl_seconds``."""
        return self.metadata.ttl_seconds

    @property
    def backend_probe_interval(self) -> float:
        """``health.probe_interval_seconds``."""
        return self.health.probe_interval_seconds

    @property
    def backend_recheck_after(self) -> float:
        """``health.recheck_after_seconds``."""
        return self.health.recheck_after_seconds

    @property
    def backend_stable_after(self) -> float:
        """``health.stable_after_seconds``."""
        return self.health.stable_after_seconds

    @property
    def qos_enabled(self) -> bool:
        """``qos.enabled``."""
        return self.qos.enabled

    @property
    def background_rate(self) -> float | None:
        """``qos.background_bytes_per_second`` (None: no cap)."""
        return self.qos.background_bytes_per_second

    @property
    def background_windows(self) -> tuple[TimeWindow, ...]:
        """``qos.background_windows``."""
        return self.qos.background_windows

    @property
    def background_window_rate(self) -> float | None:
        """``qos.window_bytes_per_second`` (None: uncapped)."""
        return self.qos.window_bytes_per_second

    @property
    def background_inflight(self) -> int:
        """``qos.background_inflight_bytes``."""
        return self.qos.background_inflight_bytes

    @property
    def background_lead(self) -> float:
        """``qos.background_lead``."""
        return self.qos.background_lead

    @property
    def background_fetches(self) -> int:
        """``qos.background_fetches``."""
        return self.qos.background_fetches

    @property
    def foreground_quiet(self) -> float:
        """``qos.foreground_quiet_seconds``."""
        return self.qos.foreground_quiet_seconds

    @property
    def qos_dir(self) -> str:
        """``qos.state_dir`` (empty: ``<cache_dir>/qos``)."""
        return self.qos.state_dir

    # --- building ------------------------------------------------------------------------------
    @classmethod
    def from_options(
        cls, options: Mapping[str, Any], *, base: CacheSettings | None = None
    ) -> CacheSettings:
        """Build settings from storage options (the names fixed in design section 2.3).

        Unknown names are refused with the list of known ones, so a typo never silently falls
        back to a default.
        """
        changes: dict[str, Any] = {}
        for name, value in options.items():
            if name not in OPTION_FIELDS:
                raise ConfigError(
                    f"unknown cache option {quoted(name)}; known options: "
                    + ", ".join(sorted(OPTION_FIELDS))
                )
            changes[name] = _convert(name, value)
        if base is None and "cache_dir" in changes:
            # Not the default directory's look-up (platformdirs' import, 10-70 ms of CPU) for
            # a directory given: every spawned DataLoader worker's first open pays it.
            base = cls(store=StoreSettings(cache_dir=changes["cache_dir"]))
        base = base or cls()
        return cls(
            store=base.store,
            read=base.read,
            metadata=base.metadata,
            health=base.health,
            qos=base.qos,
            **changes,
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain data under the storage-option names (for ``--json`` output and logs)."""
        out = {name: getattr(self, name) for name in OPTION_FIELDS}
        out["ssd_dirs"] = [{"path": d.path, "quota": d.quota_bytes} for d in self.ssd_dirs]
        out["background_windows"] = [str(w) for w in self.background_windows]
        return out


_SIZE_FIELDS = {"block_size", "mem_quota", "ssd_quota", "background_inflight"}
_RATIO_FIELDS = {"ssd_high", "ssd_low", "compression_min_saving", "background_lead"}
_INT_FIELDS = {"readahead_blocks", "fetch_concurrency", "scan_ahead_files", "background_fetches"}
_RATE_FIELDS = {"background_rate", "background_window_rate"}
_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False}
_BOOLEANS.update({"off": False, "0": False})
_SECONDS_FIELDS = {
    "metadata_ttl",
    "backend_probe_interval",
    "backend_recheck_after",
    "backend_stable_after",
    "foreground_quiet",
    "ssd_retry_seconds",
}


def _convert(name: str, value: Any) -> Any:
    if name in _SIZE_FIELDS:
        return parse_size(value, option=name)
    if name in _RATIO_FIELDS:
        return parse_ratio(value, option=name)
    if name in _INT_FIELDS:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{name}: {quoted(value)} is not a whole number")
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: {quoted(value)} is not a whole number") from exc
    if name in _SECONDS_FIELDS:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name}: {quoted(value)} is not a number of seconds") from exc
    if name == "cache_dir":
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"cache_dir: {quoted(value)} is not a directory path")
        try:
            return str(Path(os.fspath(value)).expanduser())
        except TypeError as exc:
            raise ConfigError(f"cache_dir: expected a directory path, got {quoted(value)}") from exc
    if name == "ssd_dirs":
        return _convert_dirs(value)
    if name in _RATE_FIELDS:
        return parse_rate(value, option=name)
    if name == "background_windows":
        return parse_windows(value, option=name)
    if name == "qos_enabled":
        if isinstance(value, bool):
            return value
        flag = _BOOLEANS.get(str(value).strip().lower())
        if flag is None:
            raise ConfigError(f"{name}: {quoted(value)} is not true or false")
        return flag
    if name == "qos_dir":
        return str(Path(os.fspath(value)).expanduser()) if value else ""
    if name in ("compression", "eviction_policy"):
        return str(value).lower()
    return value


def _convert_dirs(value: Any) -> tuple[SSDDirectory, ...]:
    if not isinstance(value, list | tuple):
        raise ConfigError("ssd_dirs: expected a list of {path, quota} entries")
    out = []
    for i, entry in enumerate(value):
        if isinstance(entry, SSDDirectory):
            out.append(entry)
            continue
        if not isinstance(entry, Mapping) or "path" not in entry or "quota" not in entry:
            raise ConfigError(
                f"ssd_dirs[{i}]: expected {{path: DIR, quota: SIZE}}, got {quoted(entry)}"
            )
        if not str(entry["path"]).strip():
            path = quoted(entry["path"])
            raise ConfigError(f"ssd_dirs[{i}].path: {path} is not a directory path")
        out.append(
            SSDDirectory(
                str(Path(str(entry["path"])).expanduser()),
                parse_size(entry["quota"], option=f"ssd_dirs[{i}].quota"),
            )
        )
    return tuple(out)


def settings_from_yaml(
    text: str, *, base: CacheSettings | None = None, source: str = "cache settings"
) -> CacheSettings:
    """Settings from a YAML mapping of option names (whole, or a file's ``cache:`` section).

    The text is parsed within the bounds of :mod:`edgecache.yamlio` (size, nesting, aliases);
    ``source`` (the file name) starts every error message.
    """
    from edgecache.yamlio import load_yaml_documents

    documents = load_yaml_documents(text, source=source)
    if len(documents) > 1:
        raise ConfigError(f"{source}: expected one YAML document, found {len(documents)}")
    data = documents[0] if documents else None
    if data is None:
        data = {}
    if isinstance(data, Mapping) and "cache" in data and isinstance(data["cache"], Mapping):
        data = data["cache"]
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of option names to values")
    return CacheSettings.from_options(data, base=base)
