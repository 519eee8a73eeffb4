"""The CSI Node service: kubelet publishes a view into a pod, read-only, and takes it away.

    kubelet --NodePublishVolume(handle, target)--> check request (_csi_requests)
        --> already our read-only mount of that view at target?  -> OK (idempotent)
        --> ViewResolver.ready_view(ns, name)   ViewNotReadyError -> UNAVAILABLE + its message
        --> mkdir target (marked as ours) --> bind_mount_read_only(view, target)
    kubelet --NodeUnpublishVolume(handle, target)--> unmount while mounted
        --> remove target only if it is the empty directory we created

A view that is not ready is answered with UNAVAILABLE, gRPC's "try again later": kubelet keeps
the pod in ContainerCreating, retries with back-off and shows the message in the pod's events;
nothing is created at the target, so a pod never starts on an empty directory. (kubelet treats
UNAVAILABLE as "maybe in progress" and so always sends NodeUnpublishVolume before it forgets
the volume; unpublish of a target with nothing there is a no-op.)

Calls for one target are serialised (kubelet may repeat a call while the first still runs);
mount(2), umount2(2) and directory changes run in a worker thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import pathlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

import grpc

from edgecache.agent._csi import ViewResolver
from edgecache.agent._csi_mounts import bind_mount_read_only, mount_at, unmount
from edgecache.agent._csi_proto import csi_pb2, csi_pb2_grpc
from edgecache.agent._csi_requests import (
    InvalidRequest,
    VolumeRef,
    check_capability,
    checked_path,
    volume_ref,
)
from edgecache.errors import ViewNotReadyError
from edgecache.k8s.objects import NODEPOOL_LABEL

__all__ = ["TARGET_MARKER", "NodeService", "NodeSettings"]

log = logging.getLogger(__name__)

TARGET_MARKER = ".edgecache-csi-target"
"""Written into a target directory the service creates, before the view is mounted over it
(so hidden while published): unpublish removes a directory only if this is all it holds, so
it never removes a directory kubelet or anyone else made, even after an agent restart."""

_UNMOUNT_ROUNDS = 8  # mounts stacked at one target (by someone else) that unpublish takes off


@dataclass(frozen=True)
class NodeSettings:
    """What the Node service needs to know about its node."""

    node_id: str
    """The Kubernetes node name (``--node-name``): kubelet matches it against its own."""
    views_root: pathlib.Path
    """The agent's ``--root``: every published view is under ``<views_root>/datasets/``."""
    kubelet_dir: pathlib.Path = pathlib.Path("/var/lib/kubelet")
    """kubelet's root directory (``--kubelet-dir``); targets must be under its ``pods/``, where
    kubelet puts every CSI target path, so no request can mount over another host path."""
    nodepool: Callable[[], str | None] = field(default=lambda: None)
    """The node's ``apps.openyurt.io/nodepool`` label, once the agent knows it: NodeGetInfo
    reports it as the node's topology."""

    @property
    def pods_dir(self) -> pathlib.Path:
        """Where kubelet keeps per-pod volume directories."""
        return self.kubelet_dir / "pods"


def _same_directory(a: pathlib.Path, b: pathlib.Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class NodeService(csi_pb2_grpc.NodeServicer):
    """CSI v1 Node service over views found by a :class:`ViewResolver`."""

    def __init__(self, settings: NodeSettings, resolver: ViewResolver) -> None:
        self._settings = settings
        self._resolver = resolver
        self._targets: dict[pathlib.Path, _TargetCalls] = {}

    # -- calls -------------------------------------------------------------------------------

    async def NodePublishVolume(
        self, request: csi_pb2.NodePublishVolumeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodePublishVolumeResponse:
        try:
            ref = volume_ref(request.volume_id)
            check_capability(request)
            target = checked_path(
                request.target_path, field="target_path", pods_dir=self._settings.pods_dir
            )
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        async with self._serialised(target):
            await self._publish(ref, target, request, context)
        return csi_pb2.NodePublishVolumeResponse()

    async def NodeUnpublishVolume(
        self, request: csi_pb2.NodeUnpublishVolumeRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeUnpublishVolumeResponse:
        try:
            if not request.volume_id:
                raise InvalidRequest("volume_id is required")
            target = checked_path(
                request.target_path, field="target_path", pods_dir=self._settings.pods_dir
            )
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        async with self._serialised(target):
            try:
                await asyncio.to_thread(_unpublish, target)
            except OSError as exc:
                # EBUSY and the like: kubelet retries; the message says what is in the way.
                await _abort(context, grpc.StatusCode.INTERNAL, f"unpublishing {target}: {exc}")
        log.info("unpublished %s from %s", request.volume_id, target)
        return csi_pb2.NodeUnpublishVolumeResponse()

    async def NodeGetVolumeStats(
        self, request: csi_pb2.NodeGetVolumeStatsRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeGetVolumeStatsResponse:
        try:
            if not request.volume_id:
                raise InvalidRequest("volume_id is required")
            path = checked_path(
                request.volume_path, field="volume_path", pods_dir=self._settings.pods_dir
            )
        except InvalidRequest as exc:
            await _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if await asyncio.to_thread(mount_at, path) is None:
            await _abort(context, grpc.StatusCode.NOT_FOUND, f"no volume is published at {path}")
        try:
            stats = await asyncio.to_thread(os.statvfs, path)
        except OSError as exc:
            await _abort(context, grpc.StatusCode.INTERNAL, f"statvfs {path}: {exc}")
        # The filesystem that holds the view (shared with the node's cache): what kubelet's
        # volume metrics can truthfully say about a bind mount.
        unit = csi_pb2.VolumeUsage.Unit
        return csi_pb2.NodeGetVolumeStatsResponse(
            usage=[
                csi_pb2.VolumeUsage(
                    unit=unit.BYTES,
                    total=stats.f_blocks * stats.f_frsize,
                    available=stats.f_bavail * stats.f_frsize,
                    used=(stats.f_blocks - stats.f_bfree) * stats.f_frsize,
                ),
                csi_pb2.VolumeUsage(
                    unit=unit.INODES,
                    total=stats.f_files,
                    available=stats.f_favail,
                    used=stats.f_files - stats.f_ffree,
                ),
            ]
        )

    async def NodeGetCapabilities(
        self, request: csi_pb2.NodeGetCapabilitiesRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeGetCapabilitiesResponse:
        # No STAGE_UNSTAGE_VOLUME: a view is published straight from its directory.
        rpc = csi_pb2.NodeServiceCapability.RPC
        return csi_pb2.NodeGetCapabilitiesResponse(
            capabilities=[csi_pb2.NodeServiceCapability(rpc=rpc(type=rpc.GET_VOLUME_STATS))]
        )

    async def NodeGetInfo(
        self, request: csi_pb2.NodeGetInfoRequest, context: grpc.aio.ServicerContext
    ) -> csi_pb2.NodeGetInfoResponse:
        response = csi_pb2.NodeGetInfoResponse(node_id=self._settings.node_id)
        nodepool = self._settings.nodepool()
        if nodepool:
            response.accessible_topology.segments[NODEPOOL_LABEL] = nodepool
        return response

    # -- publishing --------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _serialised(self, target: pathlib.Path) -> AsyncIterator[None]:
        """One call at a time per target; the entry goes with its last caller (a long-running
        agent sees a new target path for every pod)."""
        calls = self._targets.get(target)
        if calls is None:
            calls = self._targets[target] = _TargetCalls()
        calls.users += 1
        try:
            async with calls.lock:
                yield
        finally:
            calls.users -= 1
            if calls.users == 0:
                del self._targets[target]

    def _inside_datasets(self, view: pathlib.Path) -> bool:
        # A link planted under <root>/datasets/ must not lead the bind mount anywhere else.
        datasets = os.path.realpath(self._settings.views_root / "datasets")
        return view.is_dir() and pathlib.Path(os.path.realpath(view)).is_relative_to(datasets)

    async def _publish(
        self,
        ref: VolumeRef,
        target: pathlib.Path,
        request: csi_pb2.NodePublishVolumeRequest,
        context: grpc.aio.ServicerContext,
    ) -> None:
        expected_view = ref.view_under(self._settings.views_root)
        existing = await asyncio.to_thread(mount_at, target)
        if existing is not None:
            if existing.read_only and _same_directory(target, expected_view):
                return  # published before: the same view, read-only
            await _abort(
                context,
                grpc.StatusCode.ALREADY_EXISTS,
                f"{target} already has another mount (not the read-only view of {ref})",
            )
        try:
            view = self._resolver.ready_view(ref.namespace, ref.dataset)
        except ViewNotReadyError as exc:
            await _abort(context, grpc.StatusCode.UNAVAILABLE, str(exc))
        except Exception as exc:  # a resolver bug: say so, rather than gRPC's bare UNKNOWN
            log.exception("view resolver failed for %s", ref)
            await _abort(context, grpc.StatusCode.INTERNAL, f"finding the view of {ref}: {exc!r}")
        if not (_same_directory(view, expected_view) and self._inside_datasets(expected_view)):
            log.error("view resolver answered %s for %s, expected %s", view, ref, expected_view)
            await _abort(
                context,
                grpc.StatusCode.INTERNAL,
                f"the view of {ref} is not at {expected_view}",
            )
        try:
            await asyncio.to_thread(_mount_view, expected_view, target)
        except _TargetInUse as exc:
            await _abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except OSError as exc:
            await _abort(context, grpc.StatusCode.INTERNAL, f"publishing at {target}: {exc}")
        pod = request.volume_context.get("csi.storage.k8s.io/pod.name", "?")
        pod_namespace = request.volume_context.get("csi.storage.k8s.io/pod.namespace", "?")
        log.info("published %s read-only for pod %s/%s at %s", ref, pod_namespace, pod, target)


@dataclass
class _TargetCalls:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


class _TargetInUse(Exception):
    """The target holds something else: mounting over it would hide it."""


def _mount_view(view: pathlib.Path, target: pathlib.Path) -> None:
    created = _prepare_target(target)
    try:
        bind_mount_read_only(view, target)
    except BaseException:
        if created:
            _remove_our_directory(target)
        raise


def _prepare_target(target: pathlib.Path) -> bool:
    """Make ``target`` an empty directory to mount on; True if this call created it."""
    try:
        target.mkdir(mode=0o750)
    except FileExistsError:
        if not target.is_dir():
            raise _TargetInUse(f"{target} exists and is not a directory") from None
        if any(entry.name != TARGET_MARKER for entry in os.scandir(target)):
            raise _TargetInUse(f"{target} is not empty: refusing to mount over it") from None
        return False
    try:
        (target / TARGET_MARKER).touch(mode=0o400)
    except BaseException:
        target.rmdir()
        raise
    return True


def _unpublish(target: pathlib.Path) -> None:
    if not target.exists():
        return
    for _ in range(_UNMOUNT_ROUNDS):
        if mount_at(target) is None:
            break
        unmount(target)
    else:
        raise OSError(errno.EBUSY, "mounts keep appearing", os.fspath(target))
    _remove_our_directory(target)


def _remove_our_directory(target: pathlib.Path) -> None:
    try:
        entries = [entry.name for entry in os.scandir(target)]
    except NotADirectoryError:
        return
    if entries == [TARGET_MARKER]:
        (target / TARGET_MARKER).unlink()
        target.rmdir()


async def _abort(context: grpc.aio.ServicerContext, code: Any, message: str) -> NoReturn:
    await context.abort(code, message)
    raise AssertionError("unreachable: ServicerContext.abort raises")
