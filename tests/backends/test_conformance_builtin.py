"""The backend conformance suite (:mod:`edgecache.testing.backend_suite`) over file and memory."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fsspec.implementations.memory import MemoryFileSystem

from edgecache.backends import Backend, get_backend
from edgecache.testing.backend_suite import BackendConformance, Seed


class TestFileConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> Backend:
        return get_backend("file", {})

    @pytest.fixture
    def seed(self, backend: Backend, tmp_path: Path) -> Seed:
        root = tmp_path / "objects"

        def put(name: str, data: bytes) -> str:
            path = root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            # Replace as object stores do: a new file renamed over the old one.
            staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            staging.write_bytes(data)
            os.replace(staging, path)
            return str(path)

        return put


class TestMemoryConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> Iterator[Backend]:
        yield get_backend("memory", {})

    @pytest.fixture
    def seed(self, backend: Backend) -> Iterator[Seed]:
        root = f"/conformance-{uuid.uuid4().hex}"
        fs = backend.fs

        def put(name: str, data: bytes) -> str:
            path = f"{root}/{name}"
            fs.pipe_file(path, data)
            return path

        yield put
        if fs.exists(root):
            fs.rm(root, recursive=True)
        MemoryFileSystem.pseudo_dirs[:] = [d for d in MemoryFileSystem.pseudo_dirs if d != root]
