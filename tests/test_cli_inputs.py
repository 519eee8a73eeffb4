"""Hostile and clumsy input through the real command: each case is a fresh ``python -m edgecache``
process, as a user hits it, and must end in one line on stderr with exit 1 or 2, never a
traceback, in bounded time (YAML bombs, binary and endless files, deep nesting, huge numbers,
file names that are not UTF-8)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

API = "apiVersion: data.edgecache.io/v1alpha1\n"


def edgecache(*args: str, cache: Path, env: dict[str, str] | None = None) -> tuple[int, str, bytes]:
    """(exit code, stderr, stdout) of one run of the command."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("EDGECACHE_CACHE_DIR", None)
    proc = subprocess.run(
        [sys.executable, "-m", "edgecache", *args, "--cache-dir", str(cache)],
        capture_output=True,
        env=full_env,
        timeout=60,
    )
    return proc.returncode, proc.stderr.decode("utf-8", "replace"), proc.stdout


def assert_one_line_error(code: int, err: str, *, expected_code: int, needle: str) -> None:
    assert "Traceback" not in err, err
    assert err.count("\n") == 1 and err.startswith("edgecache: error: "), err
    assert code == expected_code, err
    assert needle in err, err


def laughs(levels: int = 9) -> str:
    """A billion-laughs YAML fragment: anchors l0..l8, each nine aliases of the one before;
    ``*l8`` stands for 9**9 strings. Under 500 bytes."""
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


def bomb_config() -> str:
    return (
        "cache:\n"
        + "".join("  " + line + "\n" for line in laughs().splitlines())
        + ("  block_size: *l8\n")
    )


@pytest.fixture
def hostname() -> str:
    return "file:///etc/hostname"


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("bomb.yaml", bomb_config(), "aliases expanded"),
        ("deep.yaml", "[" * 50_000 + "]" * 50_000, "nesting depth"),
        ("deepmap.yaml", "".join(" " * i + "a:\n" for i in range(300)), "nested deeper than 100"),
        ("number.yaml", "block_size: " + "9" * 5000 + "\n", "a number of 5,000 characters"),
        ("binary.yaml", b"\x7fELF\x02\x01\x01\x00" * 100, "a binary file"),
        ("latin1.yaml", "block_size: 4MiB # größe\n".encode("latin-1"), "not UTF-8 text"),
        ("huge.yaml", "# " + "x" * (2 * 1024 * 1024) + "\n", "larger than 1,048,576 bytes"),
        ("value.yaml", "compression: " + "z" * 10_000 + "\n", "is not one of auto, lz4, none"),
        ("multi.yaml", "block_size: 1MiB\n---\nblock_size: 2MiB\n", "one YAML document"),
        (
            "twice.yaml",
            "cache:\n  block_size: 1MiB\n  mem_quota: 1GiB\n  block_size: 2MiB\n",
            "duplicate key 'block_size' at line 4, column 3 (first at line 2, column 3)",
        ),
    ],
)
def test_config_files_that_are_not_settings(
    tmp_path: Path, hostname: str, name: str, content: str | bytes, needle: str
) -> None:
    config = tmp_path / name
    if isinstance(content, bytes):
        config.write_bytes(content)
    else:
        config.write_text(content)
    code, err, _ = edgecache("cat", "--config", str(config), hostname, cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=2, needle=needle)
    assert len(err) < 400, "a value from the file was echoed whole"


def test_config_from_dev_zero(tmp_path: Path, hostname: str) -> None:
    code, err, _ = edgecache("cat", "--config", "/dev/zero", hostname, cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=2, needle="/dev/zero: larger than")


def test_a_config_file_with_shared_anchors_still_works(tmp_path: Path) -> None:
    # Aliases are allowed within a budget: a real use (one size for two settings) keeps working.
    config = tmp_path / "config.yaml"
    config.write_text("cache:\n  block_size: &size 1MiB\n  mem_quota: *size\n")
    data = tmp_path / "x.txt"
    data.write_bytes(b"anchored\n")
    code, err, out = edgecache(
        "cat", "--config", str(config), f"file://{data}", cache=tmp_path / "c"
    )
    assert code == 0, err
    assert out == b"anchored\n"


def dataset_file(
    *,
    name: str = "d",
    pin: str = "true",
    high: str = "0.9",
    anchors: str = "",
    mount: str = "file:///nonexistent-edgecache-data",
) -> str:
    """A Dataset, its runtime and a DataLoad, each document opening with ``anchors`` (aliases
    cannot reach across documents)."""
    documents = [
        f"kind: Dataset\nmetadata: {{name: {name}}}\n"
        f"spec:\n  mounts: [{{mountPoint: '{mount}'}}]\n",
        "kind: EdgeCacheRuntime\nmetadata: {name: d}\nspec:\n  tieredstore:\n"
        f"    levels: [{{mediumtype: SSD, path: /tmp/c, quota: 1Gi, high: {high}}}]\n",
        f"kind: DataLoad\nmetadata: {{name: l}}\nspec: {{dataset: {{name: d}}, pin: {pin}}}\n",
    ]
    return "---\n".join(anchors + API + doc for doc in documents)


@pytest.mark.parametrize(
    "where",
    [{"name": "*l8"}, {"pin": "*l8"}, {"high": "*l8"}],
    ids=["metadata.name", "DataLoad.pin", "runtime.high"],
)
def test_yaml_bombs_in_a_dataset_are_refused_at_once(tmp_path: Path, where: dict[str, str]) -> None:
    spec = tmp_path / "dataset.yaml"
    spec.write_text(dataset_file(**where, anchors=laughs()))
    assert len(spec.read_bytes()) < 2000
    code, err, _ = edgecache("prefetch", str(spec), "--dry-run", cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=2, needle="aliases expanded")


def test_the_same_file_without_the_bomb_is_accepted(tmp_path: Path) -> None:
    spec = tmp_path / "dataset.yaml"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.bin").write_bytes(b"x" * 1000)
    spec.write_text(dataset_file(mount=f"file://{tmp_path}/data"))
    code, err, out = edgecache("prefetch", str(spec), "--dry-run", cache=tmp_path / "c")
    assert code == 0, err
    assert b"would load" in out


def test_a_key_given_twice_in_a_dataset_file_is_refused(tmp_path: Path) -> None:
    spec = tmp_path / "dataset.yaml"
    spec.write_text(
        API + "kind: Dataset\nmetadata: {name: first}\n"
        "spec:\n  mounts: [{mountPoint: 'file:///x'}]\nmetadata: {name: second}\n"
    )
    code, err, _ = edgecache("prefetch", str(spec), "--dry-run", cache=tmp_path / "c")
    assert_one_line_error(
        code, err, expected_code=2, needle="duplicate key 'metadata' at line 6, column 1 (first"
    )


@pytest.mark.parametrize(
    ("where", "needle"),
    [
        ({"name": "n" * 100_000}, "metadata.name: 'nnnn"),
        ({"pin": "p" * 100_000}, "spec.pin: expected true or false, got 'pppp"),
        ({"high": "9" * 60 + "h" * 100_000}, "levels[0].high: '9999"),
    ],
    ids=["metadata.name", "DataLoad.pin", "runtime.high"],
)
def test_long_values_are_cut_in_messages(
    tmp_path: Path, where: dict[str, str], needle: str
) -> None:
    spec = tmp_path / "dataset.yaml"
    spec.write_text(dataset_file(**where))
    code, err, _ = edgecache("prefetch", str(spec), "--dry-run", cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=2, needle=needle)
    assert "..." in err and len(err) < 400


def test_a_mount_point_without_a_bucket(tmp_path: Path) -> None:
    spec = tmp_path / "dataset.yaml"
    spec.write_text(
        API + "kind: Dataset\nmetadata: {name: d}\nspec:\n  mounts: [{mountPoint: 's3://'}]\n"
    )
    code, err, _ = edgecache("prefetch", str(spec), cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=2, needle="'s3://' names no bucket")


@pytest.fixture
def odd_names(tmp_path: Path) -> Path:
    """A directory holding a file whose name is not UTF-8 (Latin-1 bytes), and a plain one."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "plain.txt").write_bytes(b"plain\n")
    with open(os.path.join(os.fsencode(root), b"caf\xe9.txt"), "wb") as f:
        f.write(b"latin-1 name\n")
    return root


@pytest.mark.parametrize("locale", ["C.UTF-8", "C"])
def test_ls_prints_names_that_are_not_utf8_as_their_bytes(
    tmp_path: Path, odd_names: Path, locale: str
) -> None:
    code, err, out = edgecache(
        "ls", f"file://{odd_names}", cache=tmp_path / "c", env={"LC_ALL": locale, "LANG": locale}
    )
    assert code == 0, err
    assert os.fsencode(odd_names) + b"/caf\xe9.txt\n" in out
    assert b"/plain.txt\n" in out


def test_cat_of_a_name_that_is_not_utf8_is_refused_clearly(tmp_path: Path, odd_names: Path) -> None:
    url = b"file://" + os.fsencode(odd_names) + b"/caf\xe9.txt"
    proc = subprocess.run(
        [sys.executable, "-m", "edgecache", "cat", url, "--cache-dir", str(tmp_path / "c")],
        capture_output=True,
        timeout=60,
    )
    err = proc.stderr.decode("utf-8", "replace")
    assert_one_line_error(proc.returncode, err, expected_code=2, needle="caf\\xe9.txt")
    assert "not valid UTF-8" in err


def test_prefetch_of_a_directory_holding_one_loads_the_rest_and_lists_it_as_failed(
    tmp_path: Path, odd_names: Path
) -> None:
    cache = tmp_path / "c"
    for run in ("first", "second"):  # the second finds plain.txt cached, and no damaged row
        code, err, out = edgecache("prefetch", f"file://{odd_names}", cache=cache)
        assert code == 1, err
        assert "Traceback" not in err and "warning" not in err, err
        failed = [line for line in err.splitlines() if line.startswith("failed: ")]
        assert failed == [
            f"failed: {odd_names}/caf\\xe9.txt: the name is not valid UTF-8; edgecache caches "
            "only UTF-8 names (rename the file)"
        ], err
        summary = out.decode()
        assert "2 files, 19 B;" in summary and "failed 1," in summary, summary
        cached = "already cached 1 files (6 B)" if run == "second" else "loaded 1 files (6 B)"
        assert cached in summary, summary
    code, err, out = edgecache("prefetch", f"file://{odd_names}", "--json", cache=cache)
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["files_cached"] == 1
    assert [os.fsencode(f["path"]) for f in report["failed"]] == [
        os.fsencode(odd_names) + b"/caf\xe9.txt"
    ]


def test_a_failed_command_prints_its_error_alone(tmp_path: Path) -> None:
    # The health warning ("backend ... unreachable; serving from cache") would repeat the error.
    code, err, _ = edgecache("cat", "http://127.0.0.1:1/x", cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=1, needle="unreachable")
    assert "not found" not in err


def test_edgecache_as_its_own_target_is_refused_not_a_hang(tmp_path: Path) -> None:
    # Found by the URL fuzzing of the reliability suite: the engine waited on its own loop.
    code, err, _ = edgecache("cat", "edgecache://x", cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=2, needle="cannot be the target of edgecache")


@pytest.mark.parametrize("command", ["ls", "cat", "prefetch"])
def test_a_client_option_the_store_rejects_is_a_clear_error(tmp_path: Path, command: str) -> None:
    # -o values arrive as text; fsspec's local client does arithmetic on max_paths.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_bytes(b"x")
    target = tmp_path / "data" / ("f" if command == "cat" else "")
    code, err, _ = edgecache(command, f"file://{target}", "-o", "max_paths=0", cache=tmp_path / "c")
    assert_one_line_error(code, err, expected_code=2, needle="client options rejected (max_paths)")
