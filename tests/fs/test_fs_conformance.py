"""fsspec's own abstract conformance suite, run against edgecache over ``file`` and ``memory``.

The wiring mirrors fsspec's tests of its local and memory filesystems
(``fsspec/implementations/tests/{local,memory}``): the same paths, joins and store clearing, with
an ``EdgeCacheFileSystem`` in place of the target filesystem. Every test gets a fresh cache
directory and the default ``metadata_ttl`` (60 s), so a missed invalidation after a write shows up
as a stale listing or stale bytes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fsspec.tests import abstract
from fsspec.tests.abstract import AbstractFixtures

from edgecache.fs import EdgeCacheFileSystem


class EdgeCacheLocalFixtures(AbstractFixtures):  # type: ignore[misc]
    """edgecache over a local directory (``auto_mkdir``, as fsspec's ``LocalFixtures``)."""

    @pytest.fixture
    def fs(self, make_fs: Callable[..., EdgeCacheFileSystem]) -> EdgeCacheFileSystem:
        return make_fs("file", {"auto_mkdir": True})

    @pytest.fixture
    def fs_path(self, tmpdir: Any) -> str:
        return str(tmpdir)


class EdgeCacheMemoryFixtures(AbstractFixtures):  # type: ignore[misc]
    """edgecache over ``memory://`` (paths and store clearing as fsspec's ``MemoryFixtures``)."""

    @pytest.fixture
    def fs(
        self, clean_memory: None, make_fs: Callable[..., EdgeCacheFileSystem]
    ) -> Iterator[EdgeCacheFileSystem]:
        yield make_fs("memory")

    @pytest.fixture
    def fs_join(self) -> Callable[..., str]:
        return lambda *args: "/".join(args)

    @pytest.fixture
    def fs_path(self) -> str:
        return ""


class TestLocalCopy(abstract.AbstractCopyTests, EdgeCacheLocalFixtures):  # type: ignore[misc]
    pass


class TestLocalGet(abstract.AbstractGetTests, EdgeCacheLocalFixtures):  # type: ignore[misc]
    pass


class TestLocalPut(abstract.AbstractPutTests, EdgeCacheLocalFixtures):  # type: ignore[misc]
    pass


class TestLocalOpen(abstract.AbstractOpenTests, EdgeCacheLocalFixtures):  # type: ignore[misc]
    pass


class TestLocalPipe(abstract.AbstractPipeTests, EdgeCacheLocalFixtures):  # type: ignore[misc]
    pass


class TestMemoryCopy(abstract.AbstractCopyTests, EdgeCacheMemoryFixtures):  # type: ignore[misc]
    pass


class TestMemoryGet(abstract.AbstractGetTests, EdgeCacheMemoryFixtures):  # type: ignore[misc]
    pass


class TestMemoryPut(abstract.AbstractPutTests, EdgeCacheMemoryFixtures):  # type: ignore[misc]
    pass


class TestMemoryOpen(abstract.AbstractOpenTests, EdgeCacheMemoryFixtures):  # type: ignore[misc]
    pass


class TestMemoryPipe(abstract.AbstractPipeTests, EdgeCacheMemoryFixtures):  # type: ignore[misc]
    pass


_MOVE_INTO_PROTECTED_DIR = """
import os, sys
import fsspec
tmp, recursive = sys.argv[1], sys.argv[2] == "True"
source = os.path.join(tmp, "source_file.txt")
with open(source, "w") as f:
    f.write("content")
protected = os.path.join(tmp, "protected_directory")
os.mkdir(protected)
os.chmod(protected, 0o555)
destination = os.path.join(protected, "destination_file.txt")
fs = fsspec.filesystem(
    "edgecache", target_protocol="file", cache_dir=os.path.join(tmp, "cache"),
    skip_instance_cache=True,
)
try:
    fs.mv(source, destination, recursive=recursive)
except PermissionError:
    print("PermissionError", os.path.exists(destination))
else:
    print("moved")
finally:
    os.chmod(protected, 0o755)
"""
_DROPPED_CAPS = "-dac_override,-dac_read_search"


def _unprivileged_command() -> list[str]:
    """Root ignores directory permissions (fsspec's own test fails as root): run without the
    capabilities that let it."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root, and setpriv is missing to drop CAP_DAC_OVERRIDE")
    return [setpriv, f"--bounding-set={_DROPPED_CAPS}", f"--inh-caps={_DROPPED_CAPS}", "--"]


# fsspec's ``tests/abstract/mv.py`` ships no abstract class: its two tests run against
# ``fsspec.filesystem("file")`` directly. The same tests, against edgecache over ``file`` (without
# ``auto_mkdir``, as there).
class TestLocalMv:
    def test_move_raises_error_with_tmpdir(
        self, tmpdir: Any, make_fs: Callable[..., EdgeCacheFileSystem]
    ) -> None:
        source = tmpdir.join("source_file.txt")
        source.write("content")
        destination = tmpdir.join("non_existent_directory/destination_file.txt")
        fs = make_fs("file")
        with pytest.raises(FileNotFoundError):
            fs.mv(str(source), str(destination))

    @pytest.mark.parametrize("recursive", [True, False])
    def test_move_raises_error_with_tmpdir_permission(self, recursive: bool, tmpdir: Any) -> None:
        # In a child process, so that a root test run can drop its override of permissions.
        child = subprocess.run(
            [
                *_unprivileged_command(),
                sys.executable,
                "-c",
                _MOVE_INTO_PROTECTED_DIR,
                str(tmpdir),
                str(recursive),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout.split() == ["PermissionError", "False"]
