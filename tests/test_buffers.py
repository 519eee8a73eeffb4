"""filled_bytes: the bytes a read hands out, filled in place by one copy."""

from __future__ import annotations

import os

import pytest

from edgecache.buffers import filled_bytes


def test_filled_bytes_holds_what_was_written_and_behaves_as_bytes(
    tmp_path: os.PathLike[str],
) -> None:
    path = os.path.join(tmp_path, "f")
    data = os.urandom(3 * 1024 * 1024 + 17)
    with open(path, "wb") as f:
        f.write(data)
    fd = os.open(path, os.O_RDONLY)
    views: list[memoryview] = []

    def fill(view: memoryview) -> bool:
        views.append(view)
        return os.preadv(fd, [view], 0) == len(data)

    try:
        got = filled_bytes(len(data), fill)
    finally:
        os.close(fd)
    assert type(got) is bytes
    assert got == data
    assert hash(got) == hash(data)
    with pytest.raises(ValueError, match="released"):
        views[0][0] = 1  # the writable view is gone once the bytes are handed out


def test_filled_bytes_is_none_when_the_fill_fails_and_empty_for_zero() -> None:
    seen: list[int] = []

    def fail(view: memoryview) -> bool:
        seen.append(view.nbytes)
        view[:] = b"x" * view.nbytes
        return False

    assert filled_bytes(64, fail) is None
    assert seen == [64]
    assert filled_bytes(0, lambda view: True) == b""


def test_without_the_c_api_a_bytearray_is_filled_and_copied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import edgecache.buffers as buffers

    def fill(view: memoryview) -> bool:
        view[:] = b"abcde"
        return True

    monkeypatch.setattr(buffers, "_C_API", None)  # as on PyPy: no ctypes.pythonapi
    got = buffers.filled_bytes(5, fill)
    assert type(got) is bytes and got == b"abcde"
    assert buffers.filled_bytes(5, lambda view: False) is None
