"""S3-specific ways in: Fluid-style options and secrets through the CLI, refused credentials,
and client quirks. What every backend must do through the CLI and URL chaining (exact bytes,
cold then cached, writes replacing what was cached) is in the shared conformance suite
(``edgecache.testing.backend_suite``), which ``test_s3_conformance.py`` runs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import fsspec
import pytest
from s3testlib import KEY, SECRET, AuthMoto, put

from edgecache.fs import EdgeCacheFileSystem
from edgecache.testing.backend_suite import edgecache_cli

WRONG_SECRET = "Cli-Wrong-Secret-Value"


def test_cli_cat_fluid_options_and_secret_file(
    moto_endpoint: str, client: Any, prefix: str, tmp_path: Path
) -> None:
    path = put(client, f"{prefix}/fluid.txt", b"fluid through the CLI\n")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    done = edgecache_cli(
        "cat",
        f"s3a://{path}",
        "-o",
        f"fs.s3a.endpoint={moto_endpoint}",
        "-o",
        f"aws.accessKeyId={KEY}",
        "-o",
        f"aws.secretAccessKey=file://{secret_file}",
        "-o",
        "aws.region=us-east-1",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"fluid through the CLI\n"


def test_cli_wrong_secret_is_one_line_without_the_secret(
    auth_moto: AuthMoto, tmp_path: Path
) -> None:
    url = f"s3://{auth_moto.bucket}/hello.txt"
    done = edgecache_cli(
        "cat",
        url,
        "-o",
        f"endpoint_url={auth_moto.endpoint}",
        "-o",
        f"key={auth_moto.key}",
        "-o",
        f"secret={WRONG_SECRET}",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1
    assert stderr.startswith("edgecache: error: ") and stderr.count("\n") == 1, stderr
    assert "access denied" in stderr and url in stderr
    assert WRONG_SECRET not in stderr + done.stdout.decode()


def test_cli_unknown_bucket(moto_endpoint: str, tmp_path: Path) -> None:
    done = edgecache_cli(
        "cat",
        "s3://bucket-that-is-not-there/x.bin",
        "-o",
        f"endpoint_url={moto_endpoint}",
        "--cache-dir",
        str(tmp_path / "cache"),
    )
    assert done.returncode == 1
    assert "s3://bucket-that-is-not-there/x.bin" in done.stderr.decode()


def test_fsspec_filesystem(
    s3_options: dict[str, Any], client: Any, prefix: str, tmp_path: Path
) -> None:
    path = put(client, f"{prefix}/dir/a.bin", b"a" * 1000)
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="s3",
        target_options=s3_options,
        cache_dir=str(tmp_path / "cache"),
        skip_instance_cache=True,
    )
    assert isinstance(fs, EdgeCacheFileSystem)
    assert fs.cat_file(f"s3://{path}") == b"a" * 1000
    assert [os.path.basename(p) for p in fs.ls(f"s3://{prefix}/dir", detail=False)] == ["a.bin"]
    fs.cache.close()
    fs.metadata.close()


@pytest.mark.parametrize("protocol", ["s3", "s3a"])
def test_both_protocols_share_the_cache_identity(
    s3_options: dict[str, Any], client: Any, prefix: str, tmp_path: Path, protocol: str
) -> None:
    path = put(client, f"{prefix}/p.bin", b"p" * 10)
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol=protocol,
        target_options=s3_options,
        cache_dir=str(tmp_path / "cache"),
        skip_instance_cache=True,
    )
    assert fs.backend.identity == f"s3|{s3_options['endpoint_url']}"
    assert fs.cat_file(f"{protocol}://{path}") == b"p" * 10
    fs.cache.close()
    fs.metadata.close()
