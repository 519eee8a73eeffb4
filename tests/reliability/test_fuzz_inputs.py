"""Hostile input at volume (issue #15): hypothesis draws URLs, object names (``..``, NUL bytes,
very long names, bytes that are not UTF-8), and ``--set``/``-o`` options, and feeds them to the
``edgecache`` command (in process through click's runner, so hundreds of examples fit the CI
budget) and to the fsspec filesystem. Every one ends in a result or a clear error: exit 0, 1 or
2 with one ``edgecache: error:`` line, never a traceback or an "unexpected" error, never a
write outside the cache directory, never a hang.

Only 127.0.0.1 is ever a target: object-store URLs get a closed local endpoint and dummy
credentials (no instance-metadata lookup), http URLs a local closed port, and other protocols
are drawn from names no fsspec implementation has.

YAML inputs (bombs included) are fuzzed in tests/test_yamlio.py; hub requests in
tests/hub/test_hub_reliability.py."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fuzzlib import FUZZ, tree
from hypothesis import given
from hypothesis import strategies as st

from edgecache.cli import main
from edgecache.errors import EdgeCacheError
from edgecache.fs import EdgeCacheFileSystem

CLOSED = "http://127.0.0.1:1"
LOCAL_OPTIONS = {
    "s3": ["-o", f"endpoint_url={CLOSED}", "-o", "key=k", "-o", "secret=s", "-o", "retries=1"],
    "s3a": ["-o", f"endpoint_url={CLOSED}", "-o", "key=k", "-o", "secret=s", "-o", "retries=1"],
    "oss": ["-o", f"endpoint={CLOSED}", "-o", "key=k", "-o", "secret=s", "-o", "retries=1"],
}

NAME_PARTS = st.one_of(
    st.sampled_from(["..", ".", "", "a", "\x00", "%00", "%2e%2e", "~", "-", " ", "\n", "*", "?"]),
    st.text(max_size=30),
    st.binary(min_size=1, max_size=12).map(lambda b: b.decode("utf-8", "surrogateescape")),
    st.integers(min_value=200, max_value=5000).map(lambda n: "n" * n),
)
NAMES = st.lists(NAME_PARTS, min_size=1, max_size=5).map("/".join)
PROTOCOLS = st.one_of(
    st.sampled_from(["file", "memory", "s3", "s3a", "oss", "edgecache", "FILE", "", "http"]),
    st.text(alphabet="0123456789+-._", min_size=1, max_size=6),  # no fsspec protocol is this
)


def run_cli(*args: str) -> Any:
    result = CliRunner().invoke(main, list(args), catch_exceptions=True)
    output = result.output
    assert "Traceback" not in output, output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert result.exit_code in (0, 1, 2), (result.exit_code, output)
    if result.exit_code:
        last = output.rstrip("\n").rsplit("\n", 1)[-1]
        assert last.startswith("edgecache: error: "), output
        assert "unexpected" not in last and "a bug" not in last, last
    return result


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "data").mkdir()
    (root / "data" / "plain.txt").write_bytes(b"plain\n")
    (root / "outside.txt").write_bytes(b"outside the data directory\n")
    return root


@FUZZ
@given(protocol=PROTOCOLS, rest=NAMES)
def test_any_url_through_the_command(
    sandbox: Path, reliability: Any, monkeypatch: pytest.MonkeyPatch, protocol: str, rest: str
) -> None:
    for name in [k for k in os.environ if k.startswith(("AWS_", "OSS_", "ALIBABA_"))]:
        monkeypatch.delenv(name)
    if protocol == "http":
        url = f"{CLOSED}/{rest}"
    elif protocol == "file":
        url = f"file://{sandbox}/data/{rest}"
    else:
        url = f"{protocol}://{rest}"
    cache = sandbox / "cache"
    before = tree(sandbox, cache)
    cwd = set(os.listdir())
    run_cli("cat", url, *LOCAL_OPTIONS.get(protocol, []), "--cache-dir", str(cache))
    reliability.bad_inputs += 1
    assert tree(sandbox, cache) == before, "written outside the cache directory"
    assert set(os.listdir()) == cwd


SETTING_NAMES = st.one_of(
    st.sampled_from(
        [
            "block_size",
            "mem_quota",
            "ssd_quota",
            "ssd_high",
            "ssd_low",
            "compression",
            "metadata_ttl",
            "cache_dir",
        ]
    ),
    st.text(max_size=20),
)
SETTING_VALUES = st.one_of(
    st.sampled_from(["", "0", "-1", "4MiB", "10Gi", "1e400", "nan", "inf", "lz4", "0.5", "2"]),
    st.text(max_size=40),
    st.integers().map(str),
)


@FUZZ
@given(sets=st.lists(st.tuples(SETTING_NAMES, SETTING_VALUES), max_size=3))
def test_any_settings_through_the_command(
    sandbox: Path, reliability: Any, monkeypatch: pytest.MonkeyPatch, sets: list[tuple[str, str]]
) -> None:
    args = [a for key, value in sets for a in ("--set", f"{key}={value}")]
    cache = sandbox / "cache2"
    # A relative `--set cache_dir=...` is a cache in the working directory, as asked: the
    # command runs in a scratch one, which only such a setting may write into.
    scratch = sandbox / "cwd"
    scratch.mkdir(exist_ok=True)
    monkeypatch.chdir(scratch)
    allowed = [cache, scratch] if any(key == "cache_dir" for key, _ in sets) else [cache]
    before = tree(sandbox, *allowed)
    result = run_cli("cat", f"file://{sandbox}/data/plain.txt", *args, "--cache-dir", str(cache))
    reliability.bad_inputs += 1
    if result.exit_code == 0:
        assert result.stdout_bytes == b"plain\n"
    assert tree(sandbox, *allowed) == before, "written outside the cache directory"


@FUZZ
@given(name=NAMES)
def test_any_object_name_through_fsspec(sandbox: Path, reliability: Any, name: str) -> None:
    fs = EdgeCacheFileSystem(
        target_protocol="file", cache_dir=str(sandbox / "cache3"), skip_instance_cache=True
    )
    try:
        before = tree(sandbox, sandbox / "cache3")
        for call in (fs.cat_file, fs.info, fs.ls):
            try:
                result = call(f"{sandbox}/data/{name}")
            except (OSError, ValueError, EdgeCacheError):
                pass  # a clear error (not found, not a directory, not UTF-8...)
            else:
                if call is fs.cat_file:
                    assert isinstance(result, bytes)
                    real = os.path.normpath(f"{sandbox}/data/{name}")
                    assert result == Path(real).read_bytes()  # what that name really holds
        reliability.bad_inputs += 1
        assert tree(sandbox, sandbox / "cache3") == before, "written outside the cache"
    finally:
        fs.engine.close() if hasattr(fs.engine, "close") else None


OPTION_KEYS = st.one_of(
    st.sampled_from(
        ["auto_mkdir", "max_paths", "skip_instance_cache", "use_listings_cache", "retries", ""]
    ),
    st.text(alphabet="abcdefghijklmnop_.", max_size=12),
)
OPTION_VALUES = st.one_of(SETTING_VALUES, st.sampled_from(["true", "false", "{}", "[1]", "null"]))


@FUZZ
@given(
    url=st.sampled_from(["file://{s}/data/plain.txt", "memory://fuzz/x", "file://{s}/data/"]),
    pairs=st.lists(st.tuples(OPTION_KEYS, OPTION_VALUES), min_size=1, max_size=3),
)
def test_any_backend_options_through_the_command(
    sandbox: Path, reliability: Any, url: str, pairs: list[tuple[str, str]]
) -> None:
    # -o options go to the client filesystem as keywords: a keyword it does not take, or a
    # value of the wrong type, is a one-line ConfigError (exit 2), never "unexpected".
    args = [a for key, value in pairs for a in ("-o", f"{key}={value}")]
    cache = sandbox / "cache4"
    before = tree(sandbox, cache)
    result = run_cli("cat", url.format(s=sandbox), *args, "--cache-dir", str(cache))
    reliability.bad_inputs += 1
    if result.exit_code == 0 and url.endswith("plain.txt"):
        assert result.stdout_bytes == b"plain\n"
    assert tree(sandbox, cache) == before, "written outside the cache directory"
