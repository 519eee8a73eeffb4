"""The public API of each package is its ``__all__``: sorted, and every name in it exists.

So the public surface changes only on purpose, and ``from edgecache.x import *`` never fails.
The modules checked are the packages' public ones listed below and every module whose source
declares ``__all__``, found by reading the sources (a new module is checked without being
listed).
"Sorted" is the order ruff's RUF022 (enabled for this project) keeps ``__all__`` in, so the
linter's autofix and this test never disagree: constants first, then classes, then the rest,
each group in natural order.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import edgecache_testservers
import pytest

import edgecache

PUBLIC_MODULES = [
    "edgecache.backends",
    "edgecache.backends.objectstore",
    "edgecache.backends.options",
    "edgecache.cache",
    "edgecache.config",
    "edgecache.dataset",
    "edgecache.engine",
    "edgecache.errors",
    "edgecache.fs",
    "edgecache.fs.prefetch",
    "edgecache.hub",
    "edgecache.k8s",
    "edgecache.k8s.selectors",
    "edgecache.metrics",
    "edgecache.yamlio",
    "edgecache_testservers.kubeapi",
    "edgecache_testservers.oss",
]


def modules_declaring_all() -> list[str]:
    """Every module of the two packages whose source assigns ``__all__`` (read, not imported,
    so a module is found whether or not a list above names it)."""
    found = []
    for package in (edgecache, edgecache_testservers):
        prefix = package.__name__ + "."
        for info in pkgutil.walk_packages(package.__path__, prefix):
            spec = importlib.util.find_spec(info.name)
            if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
                continue
            tree = ast.parse(Path(spec.origin).read_text(encoding="utf-8"))
            if any(
                isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
                for node in tree.body
            ):
                found.append(info.name)
    return sorted(found)


DECLARING_MODULES = modules_declaring_all()


def test_every_public_module_declares_all() -> None:
    missing = sorted(set(PUBLIC_MODULES) - set(DECLARING_MODULES))
    assert not missing, f"public modules without __all__: {missing}"


def isort_style(name: str) -> tuple[int, list[str | int]]:
    """Sort key of RUF022: SCREAMING_CASE, then CamelCase, then others; digits compare as
    numbers."""
    if name.upper() == name:
        group = 0
    elif name[:1].isupper():
        group = 1
    else:
        group = 2
    natural: list[str | int] = [
        int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)
    ]
    return group, natural


def test_isort_style_order() -> None:
    names = ["get_backend", "Backend", "ENTRY_POINT_GROUP", "Block10", "Block9", "REGISTRY"]
    assert sorted(names, key=isort_style) == [
        "ENTRY_POINT_GROUP",
        "REGISTRY",
        "Backend",
        "Block9",
        "Block10",
        "get_backend",
    ]


@pytest.mark.parametrize("name", sorted(set(PUBLIC_MODULES) | set(DECLARING_MODULES)))
def test_all_is_sorted(name: str) -> None:
    module = importlib.import_module(name)
    assert list(module.__all__) == sorted(module.__all__, key=isort_style)


@pytest.mark.parametrize("name", sorted(set(PUBLIC_MODULES) | set(DECLARING_MODULES)))
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"
    missing = [attr for attr in module.__all__ if not hasattr(module, attr)]
    assert not missing, f"{name}.__all__ names what it does not define: {missing}"


@pytest.mark.parametrize("name", sorted(set(PUBLIC_MODULES) | set(DECLARING_MODULES)))
def test_star_import(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from {name} import *", namespace)
    assert set(importlib.import_module(name).__all__) <= set(namespace)


def test_no_module_of_edgecache_needs_the_test_servers() -> None:
    """The test servers are a distribution of their own (never on a node): every module of
    ``edgecache`` imports without them, the backend conformance suite included."""
    modules = [
        info.name
        for info in pkgutil.walk_packages(edgecache.__path__, "edgecache.")
        if not info.name.endswith(".__main__")  # runs the CLI
    ]
    script = (
        "import importlib, sys\n"
        "sys.modules['edgecache_testservers'] = None  # importing it raises ImportError\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "print('ok')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
