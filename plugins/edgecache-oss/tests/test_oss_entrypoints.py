"""OSS-specific ways in: Fluid-style options and secrets through the CLI, refused credentials,
and client quirks. What every backend must do through the CLI and URL chaining (exact bytes,
cold then cached, writes replacing what was cached) is in the shared conformance suite
(``edgecache.testing.backend_suite``), which ``test_oss_conformance.py`` runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
from edgecache_testservers.oss import OSSServer
from osstestlib import KEY, SECRET

from edgecache.testing.backend_suite import edgecache_cli

WRONG_SECRET = "Cli-Wrong-OSS-Secret"


def test_cli_cat_fluid_options(
    oss_server: OSSServer, put: Any, prefix: str, tmp_path: Path
) -> None:
    path = put(f"{prefix}/fluid.txt", b"fluid through the CLI\n")
    done = edgecache_cli(
        "cat",
        f"edgecache::oss://{path}",
        "-o",
        f"fs.oss.endpoint={oss_server.endpoint}",
        "-o",
        f"fs.oss.accessKeyId={KEY}",
        "-o",
        f"fs.oss.accessKeySecret={SECRET}",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"fluid through the CLI\n"


def test_cli_wrong_secret_is_one_line_without_the_secret(
    oss_server: OSSServer, put: Any, prefix: str, tmp_path: Path
) -> None:
    path = put(f"{prefix}/hello.txt", b"hello")
    done = edgecache_cli(
        "cat",
        f"oss://{path}",
        "-o",
        f"fs.oss.endpoint={oss_server.endpoint}",
        "-o",
        f"fs.oss.accessKeyId={KEY}",
        "-o",
        f"fs.oss.accessKeySecret={WRONG_SECRET}",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert stderr.startswith("edgecache: error: ") and stderr.count("\n") == 1, stderr
    assert "access denied" in stderr and f"oss://{path}" in stderr
    assert WRONG_SECRET not in stderr + done.stdout.decode()


def test_cli_ls(oss_server: OSSServer, put: Any, prefix: str, tmp_path: Path) -> None:
    put(f"{prefix}/d/a.bin", b"a")
    put(f"{prefix}/d/b.bin", b"bb")
    done = edgecache_cli(
        "ls",
        f"oss://{prefix}/d/",
        "-o",
        f"endpoint={oss_server.endpoint}",
        "-o",
        f"key={KEY}",
        "-o",
        f"secret={SECRET}",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "a.bin" in done.stdout.decode() and "b.bin" in done.stdout.decode()


def test_ossfs_cat_file_ranges_follow_fsspec(
    oss_options: dict[str, Any], put: Any, prefix: str
) -> None:
    from edgecache.backends import get_backend

    data = bytes(range(256)) * 4
    path = put(f"{prefix}/ranges.bin", data)
    fs = get_backend("oss", oss_options).fs
    assert fs.cat_file(path) == data
    assert fs.cat_file(path, start=10, end=20) == data[10:20]
    assert fs.cat_file(path, start=-5) == data[-5:]
    assert fs.cat_file(path, start=1000, end=5000) == data[1000:]
    assert fs.cat_file(path, start=7, end=7) == b""


def test_pipe_file_create_mode_refuses_to_overwrite(
    oss_options: dict[str, Any], put: Any, prefix: str
) -> None:
    import pytest

    from edgecache.backends import get_backend

    fs = get_backend("oss", oss_options).fs
    path = put(f"{prefix}/exists.bin", b"old")
    with pytest.raises(FileExistsError):
        fs.pipe_file(path, b"new", mode="create")
    fs.pipe_file(f"{prefix}/fresh.bin", b"new", mode="create")
    assert fs.cat_file(path) == b"old" and fs.cat_file(f"{prefix}/fresh.bin") == b"new"


def test_a_large_write_goes_up_in_parts(
    oss_options: dict[str, Any], oss_server: OSSServer, prefix: str, tmp_path: Path
) -> None:
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="oss",
        target_options=oss_options,
        cache_dir=str(tmp_path / "cache"),
        skip_instance_cache=True,
    )
    data = os.urandom(11 * 1024 * 1024)
    oss_server.clear_requests()
    fs.pipe_file(f"oss://{prefix}/large.bin", data)
    assert any(r.operation == "UploadPart" for r in oss_server.requests)
    assert fs.cat_file(f"oss://{prefix}/large.bin") == data
    fs.cache.close()
    fs.metadata.close()
