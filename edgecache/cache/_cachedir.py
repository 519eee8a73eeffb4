"""Which directories the cache may use, and which files in them are its own.

Before the SSD tier (:mod:`edgecache.cache.ssd`) creates, cleans or rebuilds anything in a
directory, it claims the directory here. A directory is ours when it holds a ``CACHEDIR.TAG``
(the Cache Directory Tagging convention: a file whose first line is the fixed signature), which
we write when we create the directory or find it empty. A non-empty directory without the tag
is refused with :class:`~edgecache.errors.ConfigError`: a mistyped ``--cache-dir ~`` must never
become a cache whose maintenance deletes files.

A directory from before the tag existed is adopted (the tag is written, once) when everything at
its top level is a name the cache itself creates and it holds an index or metadata database
(an SQLite file) or a ``blocks/`` directory whose entries are all two-hex-digit directories: that
is what our layout looks like and what nobody else's does. ``lost+found`` (a freshly formatted
disk mounted as the cache directory) does not count as content.

Being ours does not make everything in the directory deletable: the tier deletes only files it
can recognise as its own (temp files by :func:`is_temp_name`, block files by their name and
header: :func:`edgecache.cache._blockfile.inspect_block_file`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid

from edgecache.errors import ConfigError

__all__ = ["CACHEDIR_TAG", "TAG_SIGNATURE", "claim_directory", "is_temp_name"]

log = logging.getLogger(__name__)

CACHEDIR_TAG = "CACHEDIR.TAG"
TAG_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
"""The convention's fixed first line (the MD5 of ".IsCacheDirectory")."""
_TAG_TEXT = TAG_SIGNATURE + (
    b"\n# This file is a cache directory tag created by edgecache.\n"
    b"# For information about cache directory tags, see https://bford.info/cachedir/\n"
)
_TAG_TEMP_PREFIX = "." + CACHEDIR_TAG + "."
_NOT_CONTENT = {"lost+found"}
_OUR_TOP_LEVEL = {
    "blocks",
    "tmp",
    "locks",
    "index.sqlite",
    "index.sqlite-wal",
    "index.sqlite-shm",
    "metadata.sqlite",
    "metadata.sqlite-wal",
    "metadata.sqlite-shm",
    "qos",
}
_OUR_TOP_LEVEL_PATTERN = re.compile(r"index\.sqlite\.corrupt(-\d+)?(-wal|-shm)?")
_SQLITE_MAGIC = b"SQLite format 3\0"
_TEMP_NAME = re.compile(r"[0-9a-f]{32}\.([0-9]+)\.[0-9a-f]{32}")
_PREFIX_DIR = re.compile(r"[0-9a-f]{2}")


def is_temp_name(name: str) -> int | None:
    """The writer's pid if ``name`` is one of our temp block files (``<digest>.<pid>.<token>``
    in ``tmp/``), else None."""
    match = _TEMP_NAME.fullmatch(name)
    return int(match.group(1)) if match else None


def claim_directory(path: str) -> None:
    """Make sure ``path`` is a cache directory of ours, creating and tagging it if needed.

    Raises :class:`ConfigError` for an empty path or a directory that holds something else
    (one line saying what and why); ``OSError`` when the directory cannot be created or read
    (the tier then bypasses itself, as for any unusable directory).
    """
    if not path or not path.strip():
        raise ConfigError("cache directory: the path is empty; give a directory")
    os.makedirs(path, exist_ok=True)
    tag = os.path.join(path, CACHEDIR_TAG)
    if _tag_is_valid(tag, path):
        return
    content = [
        name
        for name in os.listdir(path)
        if name not in _NOT_CONTENT and not name.startswith(_TAG_TEMP_PREFIX)
    ]
    if CACHEDIR_TAG in content and _tag_is_valid(tag, path):
        # Another process claimed the new directory between our look at the tag and the
        # listing (DataLoader workers starting on one cache directory), and may already have
        # made its index: that is our cache, not someone else's files. The tag is linked into
        # place whole, so seeing it in the listing means it is there to read.
        return
    if content:
        if not _is_earlier_cache(path, content):
            shown = ", ".join(sorted(content)[:3]) + (", ..." if len(content) > 3 else "")
            raise ConfigError(
                f"cache directory {path} is not empty ({shown}) and has no {CACHEDIR_TAG}, so "
                "it is not an edgecache cache: refusing to use it (choose a new or empty "
                "directory)"
            )
        log.info("adopting the edgecache cache in %s from an earlier version", path)
    _write_tag(path, tag)


def _tag_is_valid(tag: str, path: str) -> bool:
    try:
        with open(tag, "rb") as f:
            head = f.read(len(TAG_SIGNATURE))
    except FileNotFoundError:
        return False
    if head != TAG_SIGNATURE:
        raise ConfigError(
            f"cache directory {path} has a {CACHEDIR_TAG} without the cache-directory "
            "signature: refusing to use it"
        )
    return True


def _is_earlier_cache(path: str, content: list[str]) -> bool:
    """Whether ``path`` looks like an edgecache cache directory written before the tag."""
    if not all(n in _OUR_TOP_LEVEL or _OUR_TOP_LEVEL_PATTERN.fullmatch(n) for n in content):
        return False
    for db in ("index.sqlite", "metadata.sqlite"):
        try:
            with open(os.path.join(path, db), "rb") as f:
                if f.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                    return True
        except OSError:
            continue
    blocks = os.path.join(path, "blocks")
    if not os.path.isdir(blocks):
        return False
    return all(_PREFIX_DIR.fullmatch(n) for n in os.listdir(blocks))


def _write_tag(path: str, tag: str) -> None:
    # Written under a temp name and linked into place: another process claiming the same new
    # directory sees a whole tag or none, never a partial one it would have to refuse.
    temp = os.path.join(path, f"{_TAG_TEMP_PREFIX}{os.getpid()}.{uuid.uuid4().hex}")
    try:
        with open(temp, "xb") as f:
            f.write(_TAG_TEXT)
        try:
            os.link(temp, tag)
        except FileExistsError:
            pass  # another process tagged it first
        except OSError:
            # A filesystem without hard links: create it in place (O_EXCL), the rare fallback.
            with contextlib.suppress(FileExistsError), open(tag, "xb") as f:
                f.write(_TAG_TEXT)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    _tag_is_valid(tag, path)
