"""Which directories the cache takes, and that it never deletes a file it did not create.

Issue #10, case 4: ``mkdir -p D/tmp D/blocks/x; echo a>D/tmp/notes.txt; echo b>D/blocks/x/world.dat;
edgecache cat file:///etc/hostname --cache-dir D`` deleted both files with exit 0, and an empty
``--cache-dir`` made the current directory the cache. Now a directory is ours only with a
``CACHEDIR.TAG`` (written when we create it or find it empty); a non-empty one without it is
refused with one line and exit 2; an earlier edgecache cache (our layout, our index) is adopted;
and inside our own directory only files we recognise as ours (temp-file names, block files
with a valid header) are ever removed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cachetestlib import Source, make_objects, read_object, settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from edgecache.cache import TieredCache
from edgecache.errors import ConfigError

SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"


def edgecache(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if k != "EDGECACHE_CACHE_DIR"}
    return subprocess.run(
        [sys.executable, "-m", "edgecache", *args],
        capture_output=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


def tree(root: Path) -> dict[str, bytes]:
    """Every regular file under ``root`` and its content."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def source_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "hello.txt"
    path.parent.mkdir()
    path.write_bytes(b"hello from the edge\n" * 300)
    return path


def assert_one_line_error(proc: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr.decode())
    assert proc.stdout == b""
    stderr = proc.stderr.decode()
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("edgecache: error: ") and "Traceback" not in stderr
    for needle in needles:
        assert needle in stderr, stderr
    return stderr


def test_a_user_directory_is_refused_and_nothing_in_it_is_touched(
    tmp_path: Path, source_file: Path
) -> None:
    d = tmp_path / "D"
    (d / "tmp").mkdir(parents=True)
    (d / "blocks" / "x").mkdir(parents=True)
    (d / "tmp" / "notes.txt").write_text("a\n")
    (d / "blocks" / "x" / "world.dat").write_text("b\n")
    before = tree(d)
    entries = sorted(p.name for p in d.iterdir())

    proc = edgecache("cat", f"file://{source_file}", "--cache-dir", str(d))
    assert_one_line_error(proc, str(d), "CACHEDIR.TAG", "not empty")
    assert tree(d) == before
    assert sorted(p.name for p in d.iterdir()) == entries, "something was created in D"

    for command in (["ls", f"file://{source_file.parent}"], ["stats"], ["prefetch", str(d)]):
        assert_one_line_error(edgecache(*command, "--cache-dir", str(d)), "CACHEDIR.TAG")
    assert tree(d) == before


def test_a_home_like_directory_is_refused(tmp_path: Path, source_file: Path) -> None:
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    (home / "tmp" / "draft.txt").write_text("mine")
    (home / ".bashrc").write_text("export X=1")
    before = tree(home)
    assert_one_line_error(
        edgecache("cat", f"file://{source_file}", "--cache-dir", str(home)), "CACHEDIR.TAG"
    )
    assert tree(home) == before


@pytest.mark.parametrize(
    "how",
    [
        ["--cache-dir", ""],
        ["--cache-dir", "   "],
        ["--set", "cache_dir="],
        ["--config", "CONFIG"],
    ],
    ids=["flag", "blank-flag", "set", "config-file"],
)
def test_an_empty_cache_dir_is_an_error(tmp_path: Path, source_file: Path, how: list[str]) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "keep.txt").write_text("the current directory is not a cache")
    config = tmp_path / "cache.yaml"
    config.write_text('cache:\n  cache_dir: ""\n')
    args = [str(config) if a == "CONFIG" else a for a in how]
    proc = edgecache("cat", f"file://{source_file}", *args, cwd=cwd)
    assert_one_line_error(proc, "cache_dir")
    assert sorted(p.name for p in cwd.iterdir()) == ["keep.txt"]


def test_a_new_directory_is_created_with_the_tag_and_then_serves_hits(
    tmp_path: Path, source_file: Path
) -> None:
    d = tmp_path / "new" / "cache"
    first = edgecache("cat", f"file://{source_file}", "--cache-dir", str(d))
    assert first.returncode == 0, first.stderr.decode()
    assert first.stdout == source_file.read_bytes()
    tag = (d / "CACHEDIR.TAG").read_bytes()
    assert tag.startswith(SIGNATURE + b"\n")
    assert b"edgecache" in tag
    assert not [p for p in d.iterdir() if p.name.startswith(".CACHEDIR.TAG.")]
    second = edgecache("cat", f"file://{source_file}", "--cache-dir", str(d))
    assert second.stdout == first.stdout
    stats = json.loads(edgecache("stats", "--json", "--cache-dir", str(d)).stdout)
    assert stats["tiers"]["ssd"]["hits"] == 1


@pytest.mark.parametrize("content", [[], ["lost+found"]], ids=["empty", "fresh-filesystem"])
def test_an_empty_directory_is_taken(tmp_path: Path, source_file: Path, content: list[str]) -> None:
    d = tmp_path / "mnt"
    d.mkdir()
    for name in content:
        (d / name).mkdir()
    proc = edgecache("cat", f"file://{source_file}", "--cache-dir", str(d))
    assert proc.returncode == 0, proc.stderr.decode()
    assert (d / "CACHEDIR.TAG").read_bytes().startswith(SIGNATURE)
    for name in content:
        assert (d / name).is_dir()


def test_a_cache_from_before_the_tag_is_adopted_with_its_blocks(
    tmp_path: Path, source_file: Path
) -> None:
    d = tmp_path / "old"
    assert edgecache("cat", f"file://{source_file}", "--cache-dir", str(d)).returncode == 0
    (d / "CACHEDIR.TAG").unlink()  # what a cache written by an earlier version looks like
    proc = edgecache("cat", f"file://{source_file}", "--cache-dir", str(d))
    assert proc.returncode == 0, proc.stderr.decode()
    assert proc.stdout == source_file.read_bytes()
    assert (d / "CACHEDIR.TAG").read_bytes().startswith(SIGNATURE)
    stats = json.loads(edgecache("stats", "--json", "--cache-dir", str(d)).stdout)
    assert stats["tiers"]["ssd"]["hits"] == 1, "the adopted cache's block was not served"
    assert stats["tiers"]["backend"]["fetches"] == 1


def test_a_tag_without_the_signature_is_refused(tmp_path: Path, source_file: Path) -> None:
    d = tmp_path / "tagged"
    d.mkdir()
    (d / "CACHEDIR.TAG").write_text("this is not the signature\n")
    assert_one_line_error(
        edgecache("cat", f"file://{source_file}", "--cache-dir", str(d)), "signature"
    )


def test_a_new_directory_another_process_sets_up_meanwhile_is_taken(
    tmp_path: Path, source_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # DataLoader workers starting on one new cache directory: one of them finds no tag, and
    # before it lists the directory another one has tagged it and made its index and blocks
    # (a fresh-clone CI run failed a forked-worker test on this: "not empty (CACHEDIR.TAG,
    # blocks, index.sqlite, ...) and has no CACHEDIR.TAG").
    d = tmp_path / "cache"
    listdir = os.listdir

    def listdir_after_another_process(path: str) -> list[str]:
        if Path(path) == d and not (d / "CACHEDIR.TAG").exists():
            other = edgecache("cat", f"file://{source_file}", "--cache-dir", str(d))
            assert other.returncode == 0, other.stderr.decode()
        return listdir(path)

    monkeypatch.setattr(os, "listdir", listdir_after_another_process)
    cache = TieredCache(settings(str(d)))
    monkeypatch.undo()
    try:
        assert {"CACHEDIR.TAG", "blocks", "index.sqlite"} <= set(os.listdir(d))
        assert cache.ssd.available
    finally:
        cache.close()


def test_every_ssd_directory_is_claimed(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "photo.jpg").write_bytes(b"\xff\xd8")
    s = settings(str(ours), ssd_dirs=[(str(ours), 64 * 4096), (str(theirs), 64 * 4096)])
    with pytest.raises(ConfigError, match="theirs"):
        TieredCache(s)
    assert tree(theirs) == {"photo.jpg": b"\xff\xd8"}


# --- inside a directory that is ours --------------------------------------------------------

DIGESTISH = st.text("0123456789abcdef", min_size=30, max_size=34)
NAME = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="/\0"), min_size=1, max_size=12).filter(
        lambda n: n not in (".", "..")
    ),
    DIGESTISH,
    st.builds(lambda d, p, t: f"{d}.{p}.{t}", DIGESTISH, st.integers(0, 10**7), DIGESTISH),
    st.just("index.sqlite.bak"),
)
PLACE = st.sampled_from(["", "tmp", "blocks", "blocks/ab", "blocks/x", "blocks/ab/cd", "locks"])


def _is_ours(place: str, name: str) -> bool:
    """Names the cache may remove: temp files of dead writers (a 32-hex digest, a pid, a
    32-hex token)."""
    parts = name.split(".")
    return (
        place == "tmp"
        and len(parts) == 3
        and len(parts[0]) == len(parts[2]) == 32
        and parts[1].isdigit()
    )


@hsettings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    files=st.lists(st.tuples(PLACE, NAME, st.binary(max_size=64)), max_size=8),
    lose_index=st.booleans(),
)
def test_files_that_are_not_ours_survive_reads_maintenance_and_rebuilds(
    tmp_path_factory: pytest.TempPathFactory,
    files: list[tuple[str, str, bytes]],
    lose_index: bool,
) -> None:
    root = tmp_path_factory.mktemp("owned")
    s = settings(str(root / "cache"), ssd_quota=8 * 4096)
    specs = make_objects(6, blocks=3, seed=3)
    source = Source.of(specs)
    cache = TieredCache(s)
    try:
        for spec in specs[:3]:
            asyncio.run(read_object(cache, source, spec.path))
    finally:
        cache.close()

    planted: dict[str, bytes] = {}
    for place, name, content in files:
        folder = root / "cache" / place
        if folder.is_file():
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        if target.exists() or str(target.relative_to(root / "cache")) in planted:
            continue
        target.write_bytes(content)
        if not _is_ours(place, name):
            planted[str(target.relative_to(root / "cache"))] = content
    if lose_index:
        for suffix in ("", "-wal", "-shm"):
            (root / "cache" / f"index.sqlite{suffix}").unlink(missing_ok=True)

    cache = TieredCache(s)  # cleans tmp/, and with lose_index rebuilds from blocks/
    try:
        for spec in specs:  # evicts (8 blocks of quota), invalidates, stores
            assert asyncio.run(read_object(cache, source, spec.path)) == spec.data()
        cache.invalidate(source.keys(specs[0].path))
        report = cache.ssd.reconcile()
        assert report["removed_files"] == 0
    finally:
        cache.close()
    now = tree(root / "cache")
    for path, content in planted.items():
        assert now.get(path) == content, f"{path} was deleted or changed"
    shutil.rmtree(root)
