"""The `edgecache` command as a user runs it: real subprocesses, real files, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest


def run(
    *args: str,
    cache_dir: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGECACHE_CACHE_DIR", None)
    if cache_dir is not None:
        full_env["EDGECACHE_CACHE_DIR"] = str(cache_dir)
    proc = subprocess.run(
        [sys.executable, "-m", "edgecache", *args], capture_output=True, env=full_env, timeout=60
    )
    if check:
        assert proc.returncode == 0, proc.stderr.decode()
    return proc


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    (root / "sub").mkdir(parents=True)
    (root / "big.bin").write_bytes(os.urandom(5 * 1024 * 1024 + 17))
    (root / "sub" / "small.txt").write_bytes(b"hello edge\n")
    return root


def stats_json(cache: Path) -> dict:
    return json.loads(run("stats", "--json", cache_dir=cache, check=True).stdout)


def test_cat_twice_then_stats_shows_the_second_read_served_from_cache(
    dataset: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache"
    url = f"file://{dataset}/big.bin"
    first = run("cat", url, cache_dir=cache, check=True)
    assert first.stdout == (dataset / "big.bin").read_bytes()
    after_first = stats_json(cache)
    assert after_first["tiers"]["backend"]["fetches"] == 2  # two 4 MiB blocks
    assert after_first["tiers"]["ssd"]["hits"] == 0

    second = run("cat", url, cache_dir=cache, check=True)
    assert second.stdout == first.stdout
    after_second = stats_json(cache)
    assert after_second["tiers"]["backend"]["fetches"] == 2, "second read went to the backend"
    assert after_second["tiers"]["ssd"]["hits"] == 2
    assert after_second["tiers"]["ssd"]["bytes_served"] == len(first.stdout)

    text = run("stats", cache_dir=cache, check=True).stdout.decode()
    assert "ssd" in text and "hit ratio" in text and "50.0%" in text


def test_cache_dir_flag_and_env_and_set_options(dataset: Path, tmp_path: Path) -> None:
    flag_dir = tmp_path / "flag-cache"
    run(
        "cat",
        f"file://{dataset}/sub/small.txt",
        "--cache-dir",
        str(flag_dir),
        "--set",
        "block_size=1MiB",
        check=True,
    )
    report = json.loads(run("stats", "--json", "--cache-dir", str(flag_dir), check=True).stdout)
    assert report["tiers"]["backend"]["fetches"] == 1
    assert (flag_dir / "index.sqlite").exists()


def test_config_file(dataset: Path, tmp_path: Path) -> None:
    config = tmp_path / "edgecache.yaml"
    config.write_text("cache:\n  block_size: 1MiB\n  ssd_quota: 100MiB\n")
    cache = tmp_path / "cache"
    run("cat", f"file://{dataset}/big.bin", "--config", str(config), cache_dir=cache, check=True)
    report = json.loads(
        run("stats", "--json", "--config", str(config), cache_dir=cache, check=True).stdout
    )
    assert report["block_size"] == 1024 * 1024
    assert report["tiers"]["backend"]["fetches"] == 6
    assert report["tiers"]["ssd"]["quota_bytes"] == 100 * 1024 * 1024


def test_ls_plain_long_and_json(dataset: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    plain = run("ls", f"file://{dataset}", cache_dir=cache, check=True).stdout.decode().split()
    assert plain == [f"{dataset}/big.bin", f"{dataset}/sub"]
    long = run("ls", "-l", f"file://{dataset}", cache_dir=cache, check=True).stdout.decode()
    assert str(5 * 1024 * 1024 + 17) in long
    rows = json.loads(
        run("ls", "--json", f"file://{dataset}/sub", cache_dir=cache, check=True).stdout
    )
    assert rows == [{"name": f"{dataset}/sub/small.txt", "type": "file", "size": 11}]


def test_memory_url_and_chained_form(tmp_path: Path) -> None:
    proc = run("cat", "edgecache::memory://nothing/here", cache_dir=tmp_path / "c")
    assert proc.returncode == 1
    assert b"not found" in proc.stderr


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["cat", "s3:/bucket/key"], 2, "malformed URL"),
        (["cat", "nosuch://x/y"], 2, "unknown protocol nosuch://"),
        (["cat", "-o", "novalue", "file:///etc/hostname"], 2, "-o expects KEY=VALUE"),
        (["cat", "--set", "block_size=huge", "file:///etc/hostname"], 2, "block_size"),
        (["cat", "--set", "colour=blue", "file:///etc/hostname"], 2, "unknown cache option"),
        (["cat"], 2, "Missing argument"),
        (["frobnicate"], 2, "No such command"),
    ],
)
def test_user_mistakes_give_one_line_and_exit_code(
    tmp_path: Path, args: list[str], code: int, needle: str
) -> None:
    proc = run(*args, cache_dir=tmp_path / "cache")
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert needle in err
    assert err.count("\n") == 1, f"expected one line, got: {err!r}"
    assert "Traceback" not in err


def test_missing_object_and_directory(dataset: Path, tmp_path: Path) -> None:
    missing = run("cat", f"file://{dataset}/nope.bin", cache_dir=tmp_path / "c")
    assert missing.returncode == 1
    assert missing.stderr.decode().startswith("edgecache: error: not found")
    directory = run("cat", f"file://{dataset}/sub", cache_dir=tmp_path / "c")
    assert directory.returncode == 1
    assert "is a directory" in directory.stderr.decode()


def test_unusable_cache_dir_still_serves_exact_bytes(dataset: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    proc = run("cat", f"file://{dataset}/big.bin", cache_dir=blocker / "cache")
    assert proc.returncode == 0
    assert proc.stdout == (dataset / "big.bin").read_bytes()
    assert b"reading straight from the backend" in proc.stderr
    stats = run("stats", cache_dir=blocker / "cache")
    assert stats.returncode == 1
    assert b"not usable" in stats.stderr


def test_help_explains_each_command_with_an_example() -> None:
    for command in ("cat", "ls", "stats", "prefetch", "hub"):
        text = run(command, "--help", check=True).stdout.decode()
        assert "Examples:" in text and f"edgecache {command}" in text


def test_the_data_commands_start_without_the_service_commands_code() -> None:
    # hub, controller and agent are imported when asked for (a fifth of every cat's start-up
    # otherwise); each is still a command of the group, with its help.
    services = ("edgecache.hub", "edgecache.controller", "edgecache.agent")
    check = (
        "import atexit, sys\n"
        f"loaded = lambda: sorted(m for m in sys.modules if m.startswith({services}))\n"
        "atexit.register(lambda: print(loaded()))\n"
        "from edgecache.cli import main\n"
        "main(['ls', '--help'])\n"
    )
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Examples:" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "[]", proc.stdout
    listed = run("--help", check=True).stdout.decode()
    for command in ("agent", "cat", "controller", "hub", "ls", "prefetch", "stats"):
        assert f"\n  {command} " in listed, listed
    for command in ("agent", "controller"):
        assert "Usage:" in run(command, "--help", check=True).stdout.decode()


def test_option_values_are_kept_as_given() -> None:
    from edgecache.cli import _pairs

    assert _pairs(["secret=0123", "c=12:30", "anon=true", "empty=", "a=b=c"], "-o") == {
        "secret": "0123",
        "c": "12:30",
        "anon": "true",
        "empty": "",
        "a": "b=c",
    }
