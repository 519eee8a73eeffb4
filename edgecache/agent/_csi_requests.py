"""Checks of what kubelet sends the CSI node service, before anything on disk is touched.

    NodePublishVolumeRequest --volume_ref--------> (namespace, dataset): a Kubernetes name each
                             --check_capability--> a mounted filesystem, read-only access only
                             --checked_path------> a path under kubelet's pods directory

Each check raises :class:`InvalidRequest` (the service answers INVALID_ARGUMENT, which kubelet
shows in the pod's events) with a message that names the field. A request that passes can only
lead to ``<root>/datasets/<namespace>/<dataset>/`` and to a directory under
``<kubelet dir>/pods/``: never to an arbitrary host path, whatever the strings hold (``..``,
absolute parts, NUL bytes, symbolic links planted under the pods directory).
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

from edgecache.agent._csi_proto import csi_pb2
from edgecache.errors import quoted
from edgecache.k8s.objects import parse_volume_handle

__all__ = [
    "READ_ONLY_MODES",
    "InvalidRequest",
    "VolumeRef",
    "check_capability",
    "checked_path",
    "volume_ref",
]

_AccessMode = csi_pb2.VolumeCapability.AccessMode

READ_ONLY_MODES = frozenset(
    {_AccessMode.SINGLE_NODE_READER_ONLY, _AccessMode.MULTI_NODE_READER_ONLY}
)
"""The access modes a view can be published with: the controller's PVs are ``ReadOnlyMany``
(kubelet sends MULTI_NODE_READER_ONLY); a single-node reader is as safe."""


class InvalidRequest(ValueError):
    """The request is malformed or asks for what a view cannot give: the caller must fix it."""


@dataclass(frozen=True)
class VolumeRef:
    """The dataset a volume handle names; both parts are valid Kubernetes names."""

    namespace: str
    dataset: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.dataset}"

    def view_under(self, root: pathlib.Path) -> pathlib.Path:
        """The view directory of this dataset under the agent's ``--root``."""
        return root / "datasets" / self.namespace / self.dataset


def volume_ref(volume_id: str) -> VolumeRef:
    """The dataset named by ``volume_id`` (the PV's ``volumeHandle``), strictly parsed."""
    if not volume_id:
        raise InvalidRequest("volume_id is required")
    try:
        namespace, dataset = parse_volume_handle(volume_id)
    except ValueError as exc:
        raise InvalidRequest(f"volume_id: {exc}") from exc
    return VolumeRef(namespace, dataset)


def check_capability(request: csi_pb2.NodePublishVolumeRequest) -> None:
    """Accept a mounted filesystem with a read-only access mode; refuse anything else.

    ``fs_type`` and ``mount_flags`` are ignored: the view is a bind mount of a directory, whose
    filesystem is the node's, and it is always mounted read-only whatever ``readonly`` says.
    """
    if not request.HasField("volume_capability"):
        raise InvalidRequest("volume_capability is required")
    capability = request.volume_capability
    access_type = capability.WhichOneof("access_type")
    if access_type == "block":
        raise InvalidRequest(
            "block volumes are not supported: an edgecache volume is a directory of files "
            "(use volumeMode: Filesystem)"
        )
    if access_type != "mount":
        raise InvalidRequest("volume_capability needs access_type mount")
    mode = capability.access_mode.mode
    if mode not in READ_ONLY_MODES:
        name = _AccessMode.Mode.Name(mode) if mode in _AccessMode.Mode.values() else str(mode)
        raise InvalidRequest(
            f"access mode {name} is not supported: an edgecache volume is read-only "
            "(use ReadOnlyMany)"
        )


def checked_path(raw: str, *, field: str, pods_dir: pathlib.Path) -> pathlib.Path:
    """``raw`` as the path to act on, if it lies under ``pods_dir``; else :class:`InvalidRequest`.

    The path must be absolute and normal (no ``.``/``..`` parts, no doubled or trailing slash:
    kubelet never sends one), and its parent, with symbolic links resolved, must be inside the
    resolved ``pods_dir``. The result has that resolved parent, so a link planted anywhere
    above it cannot redirect the mount; a link as the last part is refused.
    """
    if not raw:
        raise InvalidRequest(f"{field} is required")
    if "\0" in raw or not os.path.isabs(raw) or os.path.normpath(raw) != raw or raw == "/":
        raise InvalidRequest(f"{field} {quoted(raw)} is not a normal absolute path")
    path = pathlib.Path(raw)
    pods_real = pathlib.Path(os.path.realpath(pods_dir))
    parent_real = pathlib.Path(os.path.realpath(path.parent))
    if not parent_real.is_relative_to(pods_real):
        raise InvalidRequest(
            f"{field} {quoted(raw)} is outside kubelet's pods directory {os.fspath(pods_dir)!r}: "
            "refused (check the agent's --kubelet-dir)"
        )
    target = parent_real / path.name
    if target.is_symlink():
        raise InvalidRequest(f"{field} {quoted(raw)} is a symbolic link: refused")
    return target
