"""Linux bind mounts for the CSI node service: publish a view read-only, find it, take it away.

    NodePublishVolume -> bind_mount_read_only(view, target)   mount(2): MS_BIND, then a remount
                                                              with MS_RDONLY (the kernel ignores
                                                              MS_RDONLY on the first bind)
    NodeUnpublishVolume -> unmount(target)                   umount2(2)
    both, to stay idempotent -> mount_at(target)             /proc/self/mountinfo

mount(2) is called through ctypes rather than by running ``mount --bind`` and
``mount -o remount,bind,ro``: the image needs no util-linux, no process is spawned per pod
volume, and a failure comes back as an exact errno (EPERM, ENOENT, EBUSY) that becomes a precise
gRPC status, instead of a localised message on a child's stderr. The calls block (briefly): the
service runs them in a worker thread.

``os.path.ismount`` cannot be used here: a bind mount from the same filesystem has the same
device as its parent directory, so only the kernel's mount table tells it apart.
"""

from __future__ import annotations

import ctypes
import errno
import os
import pathlib
import re
from dataclasses import dataclass

__all__ = [
    "MountEntry",
    "bind_mount_read_only",
    "mount_at",
    "unmount",
]

# <linux/mount.h>: the flags this module passes to mount(2).
_MS_RDONLY = 0x1
_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REMOUNT = 0x20
_MS_NOATIME = 0x400
_MS_NODIRATIME = 0x800
_MS_BIND = 0x1000
_MS_RELATIME = 0x200000

# statvfs f_flag bits -> the mount(2) flags a read-only remount must repeat: the kernel refuses
# (EPERM) a bind remount that would clear a flag locked on the source mount (nosuid, nodev,
# noexec, atime: locked when the mount was made in another user namespace, as in containers).
_KEPT_FLAGS = (
    (os.ST_NOSUID, _MS_NOSUID),
    (os.ST_NODEV, _MS_NODEV),
    (os.ST_NOEXEC, _MS_NOEXEC),
    (os.ST_NOATIME, _MS_NOATIME),
    (os.ST_NODIRATIME, _MS_NODIRATIME),
    (os.ST_RELATIME, _MS_RELATIME),
)

_MOUNTINFO = pathlib.Path("/proc/self/mountinfo")
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class MountEntry:
    """One line of ``/proc/self/mountinfo`` (proc(5)), the fields the service needs."""

    mount_point: pathlib.Path
    """Where the mount is attached."""
    root: str
    """The directory of the source filesystem that is visible at the mount point."""
    read_only: bool
    """The per-mount ``ro`` option: what a write through this mount point gets (EROFS)."""


def _unescape(field: str) -> str:
    # The kernel writes space, tab, newline and backslash in paths as octal escapes (\040 ...).
    return _OCTAL_ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)


def _entries(mountinfo: pathlib.Path) -> list[MountEntry]:
    entries = []
    for line in mountinfo.read_text(errors="surrogateescape").splitlines():
        fields = line.split(" ")
        if len(fields) < 6:
            continue
        entries.append(
            MountEntry(
                mount_point=pathlib.Path(_unescape(fields[4])),
                root=_unescape(fields[3]),
                read_only="ro" in fields[5].split(","),
            )
        )
    return entries


def mount_at(path: pathlib.Path, *, mountinfo: pathlib.Path = _MOUNTINFO) -> MountEntry | None:
    """The mount visible at ``path`` (the last one stacked there), or ``None`` if none is."""
    found = None
    for entry in _entries(mountinfo):
        if entry.mount_point == path:
            found = entry
    return found


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_ulong,
        ctypes.c_void_p,
    ]
    libc.mount.restype = ctypes.c_int
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    libc.umount2.restype = ctypes.c_int
    return libc


def _check(result: int, what: str, path: pathlib.Path) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}", os.fspath(path))


def _mount(source: pathlib.Path | None, target: pathlib.Path, flags: int, what: str) -> None:
    source_bytes = os.fsencode(source) if source is not None else None
    _check(_libc().mount(source_bytes, os.fsencode(target), None, flags, None), what, target)


def bind_mount_read_only(source: pathlib.Path, target: pathlib.Path) -> None:
    """Make ``source`` visible read-only at the existing directory ``target``.

    Two steps, as the kernel requires (MS_RDONLY is ignored on the bind itself); if the
    read-only remount fails the bind is undone, so a writable view is never left published.
    """
    _mount(source, target, _MS_BIND, "bind mount")
    try:
        kept = os.statvfs(target).f_flag
        flags = _MS_REMOUNT | _MS_BIND | _MS_RDONLY
        for statvfs_bit, mount_flag in _KEPT_FLAGS:
            if kept & statvfs_bit:
                flags |= mount_flag
        _mount(None, target, flags, "read-only remount")
    except BaseException:
        unmount(target)
        raise


def unmount(target: pathlib.Path) -> None:
    """Detach the mount at ``target`` (EBUSY while a process still uses it: retry later).

    Not lazy (MNT_DETACH): kubelet calls unpublish once the pod's containers are gone, and a
    mount that is still busy then is a fault to report, not to hide.
    """
    result = _libc().umount2(os.fsencode(target), 0)
    if result != 0 and ctypes.get_errno() == errno.EINVAL:
        # EINVAL: not a mount point (it went away meanwhile): nothing left to undo.
        return
    _check(result, "unmount", target)
