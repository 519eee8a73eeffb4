"""One Dataset's view: its mounts' trees as plain, verified, read-only files on this node.

Place in the flow::

    DatasetView.sync(mounts)          (the agent calls it on events and every metadata TTL)
      list every mount (the engine's flat listing, cached: works from the cache offline)
      -> files gone upstream: unlinked          (readers holding them keep the old inode)
      -> over the high watermark, not pinned: least recently read files unlinked to low
      -> new or changed files, while they fit in the quota:
           ReadEngine.materialise -> <root>/.edgecache-agent/staging/<token>  (never in the view)
           verify (size, and the MD5 an object store's plain ETag carries), fsync, chmod 0444,
           drop the file's blocks from the block cache: the view file is their storage now
           charge the view's bytes to the cache index (one quota with the blocks: unpinned
           blocks are evicted for them; no room -> other views over their own share give way
           (:mod:`edgecache.agent._room`); still none -> reported as larger than its quota)
           rename into the view   (atomic)
      -> manifest saved (views/<ns>/<name>.json): version and size of every file held

A file in the view is therefore always complete and verified, and a name appears in it only by
rename. Staging lives on the same filesystem (under ``--root``), so the rename never copies.

The view's bytes are charged to the node's block cache index (``view:<ns>/<name>``) before a
file is renamed in, and settled after deletions and evictions: every process on the cache
directory (``edgecache::`` readers in pods, the agent's own reads) then counts them as pinned
usage, so blocks and views share one quota.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import posixpath
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecache.agent._copies import ViewCopies
from edgecache.agent._settings import AgentSettings
from edgecache.agent._state import read_json, write_json
from edgecache.cache import TieredCache
from edgecache.dataset import Mount
from edgecache.engine import ReadPlan, as_background
from edgecache.errors import TierUnavailableError
from edgecache.fs import EdgeCacheFileSystem
from edgecache.metrics import AGENT_VIEW_FILES

__all__ = ["DatasetView", "MountSource", "NoRoomError", "Quota", "ViewFile", "WantedFile"]

log = logging.getLogger(__name__)

VERSION_XATTR = "user.edgecache.version"
"""Extended attribute on every view file: the object version it holds (the view describes
itself, so a manifest lost in a crash is rebuilt from the files)."""
_MD5_ETAG = re.compile(r"[0-9a-fA-F]{32}")
_SAVE_EVERY_SECONDS = 0.5


@dataclass(frozen=True)
class MountSource:
    """A mount of the Dataset and the filesystem that reads it (its backend and credentials)."""

    mount: Mount
    fs: EdgeCacheFileSystem


@dataclass(frozen=True)
class Quota:
    """What the runtime gives this Dataset on the node (bytes) and its watermarks."""

    capacity_bytes: int
    high: float = 0.95
    low: float = 0.85
    pinned: bool = False
    """A DataLoad asked to pin it: its files are never evicted."""


@dataclass
class ViewFile:
    """One file the view holds."""

    version: str
    size: int
    backend: str = ""
    """Identity of the backend it came from and its object path (for :class:`ViewCopies`)."""
    object_path: str = ""


@dataclass(frozen=True)
class WantedFile:
    """One file of the Dataset as its mount lists it now."""

    relative: str
    """Path inside the view (and the dataset), no leading slash."""
    source: MountSource
    object_path: str
    size: int


@dataclass
class SyncResult:
    """What one :meth:`DatasetView.sync` found."""

    listed: bool = False
    total_files: int = 0
    total_bytes: int = 0
    added: int = 0
    replaced: int = 0
    deleted: int = 0
    evicted: int = 0
    failed: dict[str, str] = field(default_factory=dict)
    over_quota_bytes: int = 0
    error: str = ""


class NoRoomError(OSError):
    """The node's cache directory has no room for a view file (pinned blocks and the other
    views take its quota)."""


def _safe_relative(name: str) -> str | None:
    """``name`` as a relative path that stays inside the view, or None."""
    parts = [p for p in name.split("/") if p]
    if not parts or any(p in (".", "..") or "\0" in p for p in parts):
        return None
    return "/".join(parts)


def _etag(info: dict[str, Any]) -> str:
    return str(info.get("ETag") or info.get("etag") or "").strip('"')


class DatasetView:
    """The view of Dataset ``namespace/name`` and its manifest (see the module docstring)."""

    def __init__(
        self,
        settings: AgentSettings,
        namespace: str,
        name: str,
        copies: ViewCopies | None = None,
        room: Callable[[DatasetView, int], Awaitable[int]] | None = None,
    ) -> None:
        self.settings = settings
        self.room = room
        """Asked for bytes when the node's cache refuses a file of this view: frees room from
        other views (:class:`~edgecache.agent._room.ViewRoom`) and says how much."""
        self.copies = copies if copies is not None else ViewCopies()
        """Where the engines find blocks of the files this view holds."""
        self.namespace = namespace
        self.name = name
        self.path = settings.view_path(namespace, name)
        self.manifest_path = settings.state_dir / "views" / namespace / f"{name}.json"
        self.staging = settings.state_dir / "staging"
        self.files: dict[str, ViewFile] = {}
        self.uid = ""
        self.complete = False
        """Every file of the last listing is in the view (publishable)."""
        self.message = "not loaded yet"
        self.total_files = 0
        self.total_bytes = 0
        """Files and bytes of the Dataset as last listed (what a complete view holds)."""
        self.hits = 0
        self.misses = 0
        self.loads: dict[str, dict[str, Any]] = {}
        """DataLoad uid -> its last run's entry (run, phase, counts, failed paths)."""
        self.wanted: dict[str, WantedFile] = {}
        self.plans: dict[str, ReadPlan] = {}
        """The last successful listing: what the view should hold, and each file's plan."""
        self._saved_at = 0.0
        self.blocks: TieredCache | None = None
        """The node's block cache (known from the first mount read): where the view's bytes
        are charged."""
        self._reserved = 0
        """Bytes of files about to be renamed in, charged already."""
        self.writing: set[str] = set()
        """Files being written or replaced now, from staging until their charge is settled:
        until then the view's charge does not say what they hold, so no other view's room
        (:class:`~edgecache.agent._room.ViewRoom`) is ever taken from them."""
        self._charging = asyncio.Lock()
        self._charge_warned = False
        self._load()

    @property
    def charge_name(self) -> str:
        """The view's name in the cache index's charges."""
        return f"view:{self.namespace}/{self.name}"

    # --- the manifest ----------------------------------------------------------------------------
    def _load(self) -> None:
        data = read_json(self.manifest_path)
        if isinstance(data, dict):
            self.uid = str(data.get("uid") or "")
            self.complete = bool(data.get("complete"))
            self.message = str(data.get("message") or "")
            self.total_files = int(data.get("totalFiles") or 0)
            self.total_bytes = int(data.get("totalBytes") or 0)
            self.hits = int(data.get("hits") or 0)
            self.misses = int(data.get("misses") or 0)
            self.loads = dict(data.get("loads") or {})
            for rel, entry in (data.get("files") or {}).items():
                self.files[rel] = ViewFile(
                    str(entry["version"]),
                    int(entry["size"]),
                    str(entry.get("backend") or ""),
                    str(entry.get("object") or ""),
                )
        self._reconcile_with_disk()
        for rel, held in self.files.items():
            if held.backend and held.object_path:
                self.copies.add(held.backend, held.object_path, held.version, self.path / rel)

    def _reconcile_with_disk(self) -> None:
        """The files are the truth: drop entries whose file is gone, adopt tagged files the
        manifest missed (killed between a rename and the next save)."""
        for rel in list(self.files):
            if not (self.path / rel).is_file():
                del self.files[rel]
                self.complete = False
        if not self.path.is_dir():
            return
        for dirpath, _dirs, names in os.walk(self.path):
            for name in names:
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.path).replace(os.sep, "/")
                if rel in self.files:
                    continue
                try:
                    version = os.getxattr(full, VERSION_XATTR).decode()
                    size = os.stat(full).st_size
                except OSError:
                    continue
                self.files[rel] = ViewFile(version, size)

    def save(self, *, force: bool = True) -> None:
        now = time.monotonic()
        if not force and now - self._saved_at < _SAVE_EVERY_SECONDS:
            return
        self._saved_at = now
        write_json(
            self.manifest_path,
            {
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "complete": self.complete,
                "message": self.message,
                "totalFiles": self.total_files,
                "totalBytes": self.total_bytes,
                "hits": self.hits,
                "misses": self.misses,
                "loads": self.loads,
                "files": {
                    r: {
                        "version": f.version,
                        "size": f.size,
                        "backend": f.backend,
                        "object": f.object_path,
                    }
                    for r, f in self.files.items()
                },
            },
        )

    @property
    def cached_bytes(self) -> int:
        return sum(f.size for f in self.files.values())

    # --- the charge in the node's cache index ----------------------------------------------------
    def _charge(self, blocks: TieredCache, total: int) -> bool:
        try:
            return blocks.charge(self.charge_name, total)
        except TierUnavailableError as exc:
            # Readers bypass an unusable tier too: only the view's own quota holds meanwhile.
            if not self._charge_warned:
                self._charge_warned = True
                log.warning("%s: the view's bytes are not charged to the cache: %s", self, exc)
            return True

    async def settle_charge(self, blocks: TieredCache | None = None) -> None:
        """Charge what the view holds (and has reserved) now."""
        blocks = blocks or self.blocks
        if blocks is None:
            return
        self.blocks = blocks
        async with self._charging:
            await asyncio.to_thread(self._charge, blocks, self.cached_bytes + self._reserved)

    async def _reserve(self, blocks: TieredCache, grow: int) -> bool:
        """Charge ``grow`` more bytes before a file is renamed in; False when the node's
        cache has no room (nothing is charged then)."""
        self.blocks = blocks
        async with self._charging:
            total = self.cached_bytes + self._reserved + grow
            if not await asyncio.to_thread(self._charge, blocks, total):
                return False
            self._reserved += grow
            return True

    # --- listing ---------------------------------------------------------------------------------
    async def list_mounts(self, sources: Sequence[MountSource]) -> dict[str, WantedFile]:
        """Every file of every mount, by path inside the view (raises on any listing failure:
        an unreachable mount is never taken for an empty one)."""
        wanted: dict[str, WantedFile] = {}
        for source in sources:
            fs = source.fs
            root = fs.object_path(source.mount.url()).rstrip("/")
            found = await fs._find(root, detail=True, on_error="raise")
            for object_path, info in sorted(found.items()):
                if info.get("type") == "directory":
                    continue
                inside = object_path[len(root) :] if object_path.startswith(root) else ""
                relative = _safe_relative(posixpath.join(source.mount.path, inside.lstrip("/")))
                if relative is None:
                    log.warning("%s: skipping %r: not a path inside the view", self, object_path)
                    continue
                wanted[relative] = WantedFile(
                    relative, source, object_path, int(info.get("size") or 0)
                )
        return wanted

    async def listing(
        self, sources: Sequence[MountSource]
    ) -> tuple[dict[str, WantedFile], dict[str, ReadPlan]]:
        """The mounts' files and their plans now (raises when a mount cannot be listed)."""
        wanted = await self.list_mounts(sources)
        plans = {rel: await self.plan_of(w) for rel, w in wanted.items()}
        return wanted, plans

    async def plan_of(self, wanted: WantedFile) -> ReadPlan:
        fs = wanted.source.fs
        return await fs.engine.plan(
            wanted.object_path,
            block_size=fs.settings.read.block_size,
            ttl=fs.settings.metadata.ttl_seconds,
        )

    def holds(self, relative: str, plan: ReadPlan) -> bool:
        """The view holds ``relative`` at ``plan``'s version."""
        held = self.files.get(relative)
        if held is None or held.version != plan.version or held.size != plan.size:
            return False
        if not held.object_path:  # adopted from its version attribute: learn where it is from
            held.backend, held.object_path = plan.backend, plan.path
            self.copies.add(plan.backend, plan.path, plan.version, self.path / relative)
        return True

    # --- one pass --------------------------------------------------------------------------------
    async def sync(
        self,
        sources: Sequence[MountSource],
        quota: Quota,
        *,
        interrupted: Callable[[], bool] | None = None,
    ) -> SyncResult:
        """Bring the view in line with the mounts (see the module docstring). Files not started
        when ``interrupted()`` turns true are left for the next pass (a DataLoad run arrived:
        it goes first)."""
        result = SyncResult()
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            wanted, plans = await self.listing(sources)
        except Exception as exc:  # unreachable, permissions, a bad option: reported, kept
            result.error = f"listing the mounts failed: {exc or type(exc).__name__}"
            self.message = (
                f"{result.error}; the view keeps serving the {len(self.files)} files it holds"
            )
            self.save()
            return result
        self.wanted, self.plans = wanted, plans
        result.listed = True
        result.total_files = len(wanted)
        result.total_bytes = sum(p.size for p in plans.values())
        self.total_files, self.total_bytes = result.total_files, result.total_bytes
        for rel in sorted(set(self.files) - set(wanted)):
            self._unlink(rel)
            result.deleted += 1
            AGENT_VIEW_FILES.labels("deleted").inc()
        result.evicted = self.evict(quota)
        if sources:
            await self.settle_charge(sources[0].fs.engine.blocks)
        todo = [rel for rel in sorted(wanted) if not self.holds(rel, plans[rel])]
        # A Dataset that fits under the high watermark gets its whole quota; one that does not
        # is filled up to the watermark only, so an eviction is not undone by the next pass.
        limit = quota.capacity_bytes
        if result.total_bytes > quota.high * quota.capacity_bytes:
            limit = int(quota.high * quota.capacity_bytes)
        budget = limit - self.cached_bytes
        chosen: list[str] = []
        for rel in todo:
            held = self.files.get(rel)
            grows = plans[rel].size - (held.size if held else 0)
            if grows > budget:
                result.over_quota_bytes += plans[rel].size
                continue
            budget -= grows
            chosen.append(rel)
        await self.materialise_many(
            [(wanted[r], plans[r]) for r in chosen], result, interrupted=interrupted
        )
        await self.settle_charge()
        missing = sum(1 for rel in wanted if not self.holds(rel, plans[rel]))
        self.complete = missing == 0
        self.message = self._describe(result, missing, quota)
        self.save()
        return result

    def _describe(self, result: SyncResult, missing: int, quota: Quota) -> str:
        if result.over_quota_bytes:
            return (
                f"Dataset {self.namespace}/{self.name} is larger than its quota: "
                f"{result.total_bytes} bytes in {result.total_files} files, quota "
                f"{quota.capacity_bytes} bytes (high watermark {quota.high:g}) on node "
                f"{self.settings.node_name}; {missing} files ({result.over_quota_bytes} bytes) "
                f"are not in the view, which is not published; raise the EdgeCacheRuntime's "
                f"tieredstore quota"
            )
        if result.failed:
            rel, why = next(iter(sorted(result.failed.items())))
            return f"{len(result.failed)} files could not be loaded (first: {rel}: {why})"
        if missing:
            return f"{missing} of {result.total_files} files not loaded yet"
        return ""

    @as_background  # loading a Dataset: the node's readers' fetches go first (WAN QoS)
    async def materialise_many(
        self,
        items: Sequence[tuple[WantedFile, ReadPlan]],
        result: SyncResult,
        *,
        interrupted: Callable[[], bool] | None = None,
    ) -> None:
        """Materialise ``items`` (at most ``materialise_concurrency`` at once)."""
        gate = asyncio.Semaphore(max(1, self.settings.materialise_concurrency))

        async def one(wanted: WantedFile, plan: ReadPlan) -> None:
            async with gate:
                if interrupted is not None and interrupted():
                    return
                replacing = wanted.relative in self.files
                try:
                    await self.materialise(wanted, plan)
                except NoRoomError as exc:
                    result.over_quota_bytes += plan.size
                    result.failed[wanted.relative] = str(exc)
                    log.warning("%s: %s not loaded: %s", self, wanted.relative, exc)
                    return
                except Exception as exc:
                    result.failed[wanted.relative] = str(exc) or type(exc).__name__
                    AGENT_VIEW_FILES.labels("failed").inc()
                    log.warning("%s: %s not loaded: %s", self, wanted.relative, exc)
                    return
                if replacing:
                    result.replaced += 1
                    AGENT_VIEW_FILES.labels("replaced").inc()
                else:
                    result.added += 1
                    AGENT_VIEW_FILES.labels("added").inc()
                self.save(force=False)

        await asyncio.gather(*(one(w, p) for w, p in items))

    async def materialise(self, wanted: WantedFile, plan: ReadPlan) -> None:
        """Copy one object into the view: staged, verified, renamed (see the module docstring)."""
        self.writing.add(wanted.relative)
        try:
            await self._materialise(wanted, plan)
        finally:
            self.writing.discard(wanted.relative)

    async def _materialise(self, wanted: WantedFile, plan: ReadPlan) -> None:
        fs = wanted.source.fs
        engine = fs.engine
        block_size, ttl = fs.settings.read.block_size, fs.settings.metadata.ttl_seconds
        missing = len(engine.missing_blocks(plan))
        self.misses += missing
        self.hits += plan.block_count - missing
        self.staging.mkdir(parents=True, exist_ok=True)
        staged = self.staging / f".{uuid.uuid4().hex}.{os.getpid()}.tmp"
        try:
            # Four blocks per read: a few files at once stay within tens of MiB of memory.
            written = await engine.materialise(
                wanted.object_path, str(staged), block_size=block_size, ttl=ttl, step_blocks=4
            )
            await asyncio.to_thread(self._verify_and_seal, staged, written, wanted)
            # The view file is to be the node's copy of these bytes: keeping the blocks too
            # would store them twice under one quota. They go before the view's charge grows,
            # so blocks and view never hold the same bytes at once.
            engine.blocks.invalidate([written.key(i) for i in written.blocks()])
            old = self.files.get(wanted.relative)
            grow = max(written.size - (old.size if old is not None else 0), 0)
            while not await self._reserve(engine.blocks, grow):
                # Other views over their share give way; what they free may go to another file
                # being charged at the same moment, so ask again until they have nothing left.
                if self.room is not None and await self.room(self, grow):
                    continue
                raise NoRoomError(
                    f"no room in node {self.settings.node_name}'s cache quota for its "
                    f"{written.size} bytes (pinned blocks and other views hold the rest)"
                )
            try:
                final = self.path / wanted.relative
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staged, final)
                if old is not None:
                    self.copies.discard(old.backend, old.object_path, old.version)
                self.files[wanted.relative] = ViewFile(
                    written.version, written.size, written.backend, written.path
                )
            finally:
                self._reserved -= grow
        finally:
            with contextlib.suppress(FileNotFoundError):
                staged.unlink()
        self.copies.add(written.backend, written.path, written.version, final)
        if old is not None and old.size > written.size:
            await self.settle_charge(engine.blocks)

    def _verify_and_seal(self, staged: Path, plan: ReadPlan, wanted: WantedFile) -> None:
        size = os.stat(staged).st_size
        if size != plan.size:
            raise OSError(f"copied {size} bytes of {wanted.object_path}, expected {plan.size}")
        cached = wanted.source.fs.engine.info_cached(wanted.object_path, ttl=float("inf"))
        etag = (
            _etag(dict(cached.info))
            if cached is not None and cached.version == plan.version
            else ""
        )
        with open(staged, "rb") as copy:
            if _MD5_ETAG.fullmatch(etag):
                digest = hashlib.md5(usedforsecurity=False)
                while chunk := copy.read(1 << 20):
                    digest.update(chunk)
                if digest.hexdigest() != etag.lower():
                    raise OSError(
                        f"{wanted.object_path}: the copy's MD5 {digest.hexdigest()} is not the "
                        f"object's ETag {etag}"
                    )
            os.fsync(copy.fileno())
        os.chmod(staged, 0o444)
        with contextlib.suppress(OSError):  # a filesystem without user xattrs: manifest only
            os.setxattr(staged, VERSION_XATTR, plan.version.encode())

    # --- removing --------------------------------------------------------------------------------
    def _unlink(self, relative: str) -> None:
        """Remove one file (open readers keep it) and the directories it leaves empty."""
        held = self.files.pop(relative, None)
        if held is not None:
            self.copies.discard(held.backend, held.object_path, held.version)
        target = self.path / relative
        with contextlib.suppress(FileNotFoundError):
            target.unlink()
        parent = target.parent
        while parent != self.path and parent.is_relative_to(self.path):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def evict(self, quota: Quota) -> int:
        """Over the high watermark and not pinned: unlink least recently read files down to
        the low watermark. Returns how many were evicted."""
        if quota.pinned or self.cached_bytes <= quota.high * quota.capacity_bytes:
            return 0
        target = quota.low * quota.capacity_bytes
        chosen: list[str] = []
        used = self.cached_bytes
        for _atime, rel in self.eviction_order():
            if used <= target:
                break
            used -= self.files[rel].size
            chosen.append(rel)
        return self.evict_files(chosen)

    def eviction_order(self) -> list[tuple[float, str]]:
        """``(last read, file)`` of each file the view may give up now, least recently read
        first (by ``atime``; a file that cannot be looked at first of all): never one it is
        writing or replacing (:attr:`writing`)."""
        ranked: list[tuple[float, str]] = []
        for rel in self.files:
            if rel in self.writing:
                continue
            try:
                ranked.append((os.stat(self.path / rel).st_atime, rel))
            except OSError:
                ranked.append((0.0, rel))
        return sorted(ranked)

    def evict_files(self, relatives: Sequence[str]) -> int:
        """Unlink these files of the view (readers holding them keep them); the view is no
        longer complete. Returns how many there were. The caller settles the charge."""
        for rel in relatives:
            self._unlink(rel)
        if relatives:
            AGENT_VIEW_FILES.labels("evicted").inc(len(relatives))
            self.complete = False
        return len(relatives)

    def remove(self) -> None:
        """Remove the whole view, its manifest and its charge (the Dataset left this node)."""
        for rel in list(self.files):
            self._unlink(rel)
        if self.blocks is not None:
            self._charge(self.blocks, 0)
        with contextlib.suppress(OSError):
            self.path.rmdir()
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path.unlink()

    def __repr__(self) -> str:
        return f"<view {self.namespace}/{self.name}>"
