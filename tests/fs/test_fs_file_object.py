"""The file object ``open(..., "rb")`` returns behaves as a Python file and as fsspec's files:
lines, iteration, seek/tell from every origin, ``readinto``, text mode through ``fsspec.open``,
pickling, and every call on a closed handle refused."""

from __future__ import annotations

import pickle
from pathlib import Path

import fsspec
import pytest

KiB = 1024


@pytest.mark.parametrize("mem_quota", ["0", "64MiB"])
def test_the_file_object_behaves_as_a_file(tmp_path: Path, mem_quota: str) -> None:
    data = b"".join(f"line {i}\n".encode() for i in range(20_000)) + b"no newline at the end"
    path = tmp_path / "lines.txt"
    path.write_bytes(data)
    options = {"cache_dir": str(tmp_path / "cache"), "block_size": 64 * KiB}
    options["mem_quota"] = mem_quota
    url = f"edgecache::file://{path}"
    lines = data.splitlines(keepends=True)
    with fsspec.open(url, "rb", edgecache=options) as f:
        assert f.readable() and f.seekable() and not f.writable()
        assert f.size == len(data) and f.info()["size"] == len(data)
        assert f.readline() == lines[0]
        assert f.tell() == len(lines[0])
        assert f.readline(3) == lines[1][:3]
        assert f.readline() == lines[1][3:]
        assert list(f) == lines[2:]  # lines cross the 64 KiB blocks
        assert f.read() == b""
        f.seek(-5, 2)
        assert f.read() == data[-5:]
        f.seek(3)
        f.seek(4, 1)
        assert f.tell() == 7
        assert f.readlines() == data[7:].splitlines(keepends=True)
        f.seek(100)
        buffer = bytearray(200 * KiB)
        assert f.readinto(buffer) == len(buffer) and buffer == data[100 : 100 + len(buffer)]
        assert f.read(0) == b""
        f.seek(len(data) + 10)
        assert f.read() == b"" and f.readinto(bytearray(8)) == 0
        with pytest.raises(ValueError):
            f.seek(-1)
        f.seek(12_345)
        clone = pickle.loads(pickle.dumps(f))
        with clone:
            assert clone.tell() == 12_345 and clone.read(100) == data[12_345:12_445]
    assert f.closed
    for call in (f.read, f.readline, lambda: f.seek(0), f.tell, lambda: f.readinto(bytearray(1))):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(ValueError), f:
        pass
    with fsspec.open(url, "rt", edgecache=options) as text:
        assert next(iter(text)) == lines[0].decode()
        assert text.read() == data[len(lines[0]) :].decode()
