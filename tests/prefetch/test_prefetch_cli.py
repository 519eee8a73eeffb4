"""`edgecache prefetch` as a user runs it: real subprocesses, exit codes, summaries, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def edgecache(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "EDGECACHE_CACHE_DIR": str(cache)}
    return subprocess.run(
        [sys.executable, "-m", "edgecache", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_prefetch_url_summary_json_and_second_run(dataset_dir: Path, cache_dir: Path) -> None:
    first = edgecache("prefetch", f"file://{dataset_dir}", "--json", cache=cache_dir)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["files_loaded"] == report["files_total"] == 47 and report["ok"]
    second = edgecache("prefetch", f"file://{dataset_dir}", cache=cache_dir)
    assert second.returncode == 0
    assert "loaded 0 files (0 B), already cached 47 files" in second.stdout
    stats = json.loads(edgecache("stats", "--json", cache=cache_dir).stdout)
    assert stats["tiers"]["backend"]["fetches"] == 47  # one 4 MiB block per file
    # Progress goes to stderr as plain lines when stderr is not a terminal.
    assert "prefetch: 47/47 files" in first.stderr


def test_prefetch_paths_under_a_url_and_dry_run(dataset_dir: Path, cache_dir: Path) -> None:
    dry = edgecache(
        "prefetch", f"file://{dataset_dir}", "val", "train/img00*.jpg", "--dry-run", cache=cache_dir
    )
    assert dry.returncode == 0, dry.stderr
    assert "15 files" in dry.stdout and "would load" in dry.stdout
    stats = json.loads(edgecache("stats", "--json", cache=cache_dir).stdout)
    assert stats["tiers"]["backend"]["fetches"] == 0


def test_partial_failure_exits_1_and_lists_failed_paths(dataset_dir: Path, cache_dir: Path) -> None:
    proc = edgecache("prefetch", f"file://{dataset_dir}", "val", "nope", cache=cache_dir)
    assert proc.returncode == 1
    assert f"failed: {dataset_dir}/nope: not found" in proc.stderr
    assert "loaded 5 files" in proc.stdout


def test_pin_refused_when_it_cannot_fit(dataset_dir: Path, cache_dir: Path) -> None:
    proc = edgecache(
        "prefetch", f"file://{dataset_dir}", "--pin", "--set", "ssd_quota=100KiB", cache=cache_dir
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("edgecache: error: cannot pin")


def test_dataset_yaml(dataset_dir: Path, cache_dir: Path, tmp_path: Path) -> None:
    spec = tmp_path / "dataset.yaml"
    spec.write_text(f"""\
apiVersion: data.edgecache.io/v1alpha1
kind: Dataset
metadata: {{name: images, namespace: factory}}
spec:
  mounts:
    - {{mountPoint: "file://{dataset_dir}/train", name: train}}
    - {{mountPoint: "file://{dataset_dir}/val", name: val}}
---
apiVersion: data.edgecache.io/v1alpha1
kind: EdgeCacheRuntime
metadata: {{name: images, namespace: factory}}
spec:
  tieredstore:
    levels:
      - {{mediumtype: SSD, path: "{cache_dir}", quota: 1Gi, high: "0.9", low: "0.8"}}
---
apiVersion: data.edgecache.io/v1alpha1
kind: DataLoad
metadata: {{name: warm-val, namespace: factory}}
spec:
  dataset: {{name: images}}
  target: [{{path: /val}}]
  pin: true
""")
    proc = edgecache("prefetch", str(spec), "--pin", "--json", cache=tmp_path / "unused")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["files_loaded"] == 5  # the DataLoad's target, /val
    assert report["pinned"] == ["dataset/factory/images"]
    both = edgecache("prefetch", str(spec), "/train/shards", "/val", cache=tmp_path / "unused")
    assert both.returncode == 0, both.stderr
    assert "7 files" in both.stdout and "already cached 5 files" in both.stdout
    # The runtime's SSD path is the cache that was used.
    stats = json.loads(edgecache("stats", "--json", cache=cache_dir).stdout)
    assert stats["tiers"]["ssd"]["used_bytes"] > 600_000


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: Dataset\napiVersion: data.edgecache.io/v1alpha1\nmetadata: {name: d}\n"
            "spec: {mounts: []}\n",
            "dataset.yaml: document 1 (Dataset d): spec.mounts: needs at least one mount",
        ),
        ("a: [1,\n", "dataset.yaml: not valid YAML at line 2, column 1"),
        (
            "kind: AlluxioRuntime\napiVersion: data.edgecache.io/v1alpha1\nmetadata: {name: d}\n",
            "kind: AlluxioRuntime is a Fluid runtime; use EdgeCacheRuntime",
        ),
    ],
)
def test_bad_yaml_and_bad_specs(tmp_path: Path, cache_dir: Path, text: str, message: str) -> None:
    spec = tmp_path / "dataset.yaml"
    spec.write_text(text)
    proc = edgecache("prefetch", str(spec), cache=cache_dir)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_ctrl_c_leaves_a_consistent_cache_and_says_how_to_resume(
    tmp_path: Path, cache_dir: Path
) -> None:
    data = tmp_path / "big"
    data.mkdir()
    for i in range(8):
        (data / f"part{i:02d}.bin").write_bytes(os.urandom(4 * 1024 * 1024))
    env = {**os.environ, "EDGECACHE_CACHE_DIR": str(cache_dir)}
    slow_cli = str(Path(__file__).with_name("slow_cli.py"))
    proc = subprocess.Popen(
        [
            sys.executable,
            slow_cli,
            "prefetch",
            f"slowfile://{data}",
            "--parallel",
            "2",
            "--set",
            "block_size=1MiB",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Wait until loading has started (the first progress line), then interrupt.
    assert proc.stderr is not None
    proc.stderr.readline()
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "run the same command again to resume" in err
    resumed = edgecache(
        "prefetch", f"file://{data}", "--json", "--set", "block_size=1MiB", cache=cache_dir
    )
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert 0 < report["bytes_cached"] < report["bytes_total"], "nothing was kept or all was"
    for path in data.iterdir():
        cat = subprocess.run(
            [sys.executable, "-m", "edgecache", "cat", f"file://{path}"],
            capture_output=True,
            env=env,
            timeout=60,
        )
        assert cat.stdout == path.read_bytes()
