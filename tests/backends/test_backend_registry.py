"""The backend registry: plugins found through the ``edgecache.backends`` entry points, clear
errors for protocols whose plugin is missing or unknown, and no silent overrides.

A plugin here is real packaging metadata: a module and a ``*.dist-info`` directory with an
``entry_points.txt``, put on ``sys.path`` (or on ``PYTHONPATH`` of a new interpreter), exactly
what ``pip install`` leaves behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from importlib.metadata import EntryPoint, PackageNotFoundError
from pathlib import Path
from typing import Any

import fsspec
import pytest

from edgecache.backends import (
    ENTRY_POINT_GROUP,
    Backend,
    _registry,
    available_backends,
    get_backend,
    register_backend,
)
from edgecache.backends.generic import GenericBackend
from edgecache.backends.local import LocalBackend
from edgecache.backends.memory import MemoryBackend
from edgecache.errors import BackendNotInstalledError, ConfigError

PLUGIN_MODULE = '''
from edgecache.backends.memory import MemoryBackend


class FakeBackend(MemoryBackend):
    """A third-party backend: fsspec's memory store under its own protocol."""

    protocols = ("fakeproto",)

    @property
    def identity(self) -> str:
        return "fakeproto"

    def strip(self, path: str) -> str:
        return super().strip(path.removeprefix("fakeproto://"))


NOT_A_BACKEND = object()
'''


def install_plugin(site: Path, entry_points_txt: str, *, module: str = PLUGIN_MODULE) -> Path:
    """Write ``fake_edge_plugin`` and its dist-info into ``site`` (a directory for sys.path)."""
    site.mkdir(parents=True, exist_ok=True)
    (site / "fake_edge_plugin.py").write_text(textwrap.dedent(module))
    dist = site / "fake_edge_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-edge-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent(entry_points_txt))
    return site


@pytest.fixture(autouse=True)
def clean_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Process registrations made by a test are undone after it."""
    monkeypatch.setattr(_registry, "_registered", dict(_registry._registered))
    yield
    sys.modules.pop("fake_edge_plugin", None)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = install_plugin(
        tmp_path / "site",
        f"""
        [{ENTRY_POINT_GROUP}]
        fakeproto = fake_edge_plugin:FakeBackend
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    return site


def test_entry_point_plugin_is_discovered(plugin: Path) -> None:
    assert "fakeproto" in available_backends()
    backend = get_backend("fakeproto", {})
    assert type(backend).__name__ == "FakeBackend"
    assert type(backend).__module__ == "fake_edge_plugin"
    assert isinstance(backend, Backend)
    assert backend.protocol == "fakeproto"


def test_entry_point_plugin_serves_reads_through_the_cache(plugin: Path, tmp_path: Path) -> None:
    fs = fsspec.filesystem(
        "edgecache",
        target_protocol="fakeproto",
        cache_dir=str(tmp_path / "cache"),
        skip_instance_cache=True,
    )
    try:
        assert type(fs.backend).__name__ == "FakeBackend"
        fs.pipe_file("/plugin/x", b"from the plugin")
        assert fs.cat_file("fakeproto://plugin/x") == b"from the plugin"
        assert fs.cat_file("/plugin/x") == b"from the plugin"
        assert fs.cache.backend_fetches == 1
    finally:
        fs.engine.close()
        fsspec.filesystem("memory").rm("/plugin", recursive=True)


def test_entry_point_plugin_is_discovered_in_a_new_interpreter(tmp_path: Path) -> None:
    site = install_plugin(
        tmp_path / "site",
        f"""
        [{ENTRY_POINT_GROUP}]
        fakeproto = fake_edge_plugin:FakeBackend
        """,
    )
    script = textwrap.dedent(
        """
        import json
        from edgecache.backends import available_backends, get_backend
        backend = get_backend("fakeproto", {})
        print(json.dumps({"class": type(backend).__qualname__,
                          "available": available_backends()}))
        """
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["class"] == "FakeBackend"
    assert {"fakeproto", "file", "memory"} <= set(result["available"])


def test_entry_point_to_something_else_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install_plugin(
        tmp_path / "site",
        f"""
        [{ENTRY_POINT_GROUP}]
        notabackend = fake_edge_plugin:NOT_A_BACKEND
        """,
    )
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(BackendNotInstalledError, match="not a Backend subclass"):
        get_backend("notabackend", {})


def test_plugin_that_fails_to_import_names_the_protocol(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = install_plugin(
        tmp_path / "site",
        f"""
        [{ENTRY_POINT_GROUP}]
        brokenproto = fake_edge_plugin:FakeBackend
        """,
        module="import a_dependency_that_is_not_installed\n",
    )
    monkeypatch.syspath_prepend(str(site))
    with pytest.raises(BackendNotInstalledError, match=r"brokenproto://.*failed to import"):
        get_backend("brokenproto", {})


@pytest.fixture
def no_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide every installed backend plugin but the core's own ``file`` and ``memory``.

    The s3 plugin of this repository may be installed in the test environment; what a user
    without it sees is what these tests are about.
    """
    real = _registry.entry_points

    def core_only(**selection: Any) -> list[EntryPoint]:
        return [ep for ep in real(**selection) if ep.value.startswith("edgecache.backends.")]

    monkeypatch.setattr(_registry, "entry_points", core_only)

    def not_installed(name: str) -> Any:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(_registry, "distribution", not_installed)


@pytest.mark.parametrize(
    ("protocol", "package"),
    [("s3", "edgecache-s3"), ("s3a", "edgecache-s3"), ("oss", "edgecache-oss")],
)
def test_missing_cloud_plugin_names_the_package(
    no_plugins: None, protocol: str, package: str
) -> None:
    with pytest.raises(BackendNotInstalledError, match=package) as caught:
        get_backend(protocol, {})
    assert f"{protocol}://" in str(caught.value)
    assert isinstance(caught.value, ImportError)
    assert available_backends() == ["file", "memory"]


@pytest.mark.parametrize(
    ("protocol", "package"), [("s3", "edgecache-s3"), ("oss", "edgecache-oss")]
)
def test_missing_cloud_plugin_through_fsspec(
    no_plugins: None, tmp_path: Path, protocol: str, package: str
) -> None:
    with pytest.raises(BackendNotInstalledError, match=package):
        fsspec.filesystem(
            "edgecache",
            target_protocol=protocol,
            cache_dir=str(tmp_path),
            skip_instance_cache=True,
        )
    with pytest.raises(BackendNotInstalledError, match=package):
        fsspec.open(
            f"edgecache::{protocol}://bucket/key", edgecache={"cache_dir": str(tmp_path)}
        ).open()


def test_unknown_protocol_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendNotInstalledError, match=r"unknown protocol nosuch://") as caught:
        get_backend("nosuch", {})
    assert "file, memory" in str(caught.value)  # and what is installed
    with pytest.raises(BackendNotInstalledError, match="nosuch"):
        fsspec.filesystem(
            "edgecache",
            target_protocol="nosuch",
            cache_dir=str(tmp_path),
            skip_instance_cache=True,
        )


def test_unknown_protocol_in_a_url_is_a_clear_error(tmp_path: Path) -> None:
    # fsspec resolves every protocol of a chained URL before edgecache is built.
    with pytest.raises(ValueError, match="nosuch"):
        fsspec.open("edgecache::nosuch://bucket/key", edgecache={"cache_dir": str(tmp_path)})


@pytest.mark.parametrize("protocol", ["", "no such", "s3/../x", "file:"])
def test_malformed_protocol_is_a_config_error(protocol: str) -> None:
    with pytest.raises(ConfigError, match="not a URL protocol"):
        get_backend(protocol, {})


def test_other_fsspec_protocols_use_the_generic_backend() -> None:
    backend = get_backend("http", {})
    assert isinstance(backend, GenericBackend)
    assert backend.identity == "http"


class OtherLocal(LocalBackend):
    protocols = ("file",)


class AnotherLocal(LocalBackend):
    protocols = ("file",)


def test_register_backend_is_used() -> None:
    register_backend("regproto", OtherLocal)
    assert isinstance(get_backend("regproto", {}), OtherLocal)
    assert "regproto" in available_backends()


def test_register_backend_refuses_silent_override() -> None:
    register_backend("regproto", OtherLocal)
    register_backend("regproto", OtherLocal)  # the same class again is not an override
    with pytest.raises(ValueError, match=r"already registered.*clobber=True"):
        register_backend("regproto", AnotherLocal)
    assert type(get_backend("regproto", {})) is OtherLocal
    register_backend("regproto", AnotherLocal, clobber=True)
    assert type(get_backend("regproto", {})) is AnotherLocal


@pytest.mark.parametrize("protocol", ["file", "memory"])
def test_register_backend_refuses_silent_override_of_a_plugin(protocol: str) -> None:
    with pytest.raises(ValueError, match=r"installed as a plugin.*clobber=True"):
        register_backend(protocol, OtherLocal)
    assert type(get_backend(protocol, {})) in (LocalBackend, MemoryBackend)
    register_backend(protocol, OtherLocal, clobber=True)
    assert type(get_backend(protocol, {})) is OtherLocal


def test_register_backend_accepts_the_installed_class_itself() -> None:
    register_backend("file", LocalBackend)
    assert type(get_backend("file", {})) is LocalBackend


def test_register_backend_refuses_what_is_not_a_backend() -> None:
    with pytest.raises(TypeError, match="not a subclass"):
        register_backend("regproto", dict)  # type: ignore[arg-type]
