"""Pytest fixtures and helpers for suites that need a Kubernetes API (hub, controller, agent).

Import the fixture into a ``conftest.py``:
``from edgecache_testservers.kubeapi.fixtures import kube_api``.
``kube_api`` is a fresh threaded :class:`KubeAPIServer` per test with 0.2-second bookmarks;
``run_kubectl`` runs the machine's kubectl against a server URL; ``WatchReader`` reads the events
of a watch response opened with aiohttp.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from ._server import KubeAPIServer

TEST_BOOKMARK_INTERVAL_SECONDS = 0.2


@pytest.fixture
def kube_api() -> Iterator[KubeAPIServer]:
    """A running API server (own thread and loop), usable from sync and async tests alike."""
    with KubeAPIServer(bookmark_interval_seconds=TEST_BOOKMARK_INTERVAL_SECONDS) as server:
        yield server


def kubectl_path() -> str | None:
    return shutil.which("kubectl")


def run_kubectl(
    server_url: str,
    *args: str,
    token: str | None = None,
    certificate_authority: Path | None = None,
    client_certificate: tuple[Path, Path] | None = None,
    input_text: str | None = None,
    timeout_seconds: float = 30.0,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """``kubectl --server URL ARGS``, with no kubeconfig and an empty discovery cache; text output.

    kubectl sends a bearer token only over HTTPS: give ``certificate_authority`` (``server.pki``).
    """
    executable = kubectl_path()
    if executable is None:
        pytest.skip("kubectl is not installed")
    # A fresh discovery cache per call: ports are reused across servers, and a cached discovery
    # from an earlier server would hide (or invent) resources.
    cache_dir = tempfile.mkdtemp(prefix="kubectl-cache-")
    command = [
        executable,
        "--server",
        server_url,
        "--kubeconfig",
        "/dev/null",
        "--cache-dir",
        cache_dir,
    ]
    if token is not None:
        command += ["--token", token]
    if certificate_authority is not None:
        command += ["--certificate-authority", str(certificate_authority)]
    if client_certificate is not None:
        command += ["--client-certificate", str(client_certificate[0])]
        command += ["--client-key", str(client_certificate[1])]
    try:
        result = subprocess.run(
            [*command, *args],
            input=input_text,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
    finally:
        shutil.rmtree(cache_dir, ignore_errors=True)
    if check and result.returncode != 0:
        raise AssertionError(
            f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}"
        )
    return result


class WatchReader:
    """Reads JSON-line watch events from a streaming aiohttp response."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self, timeout_seconds: float = 10.0) -> dict[str, Any] | None:
        """The next event, or ``None`` when the stream has ended."""
        line = await asyncio.wait_for(self.response.content.readline(), timeout_seconds)
        if not line:
            return None
        event: dict[str, Any] = json.loads(line)
        return event

    async def take(self, count: int, timeout_seconds: float = 10.0) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        for _ in range(count):
            event = await self.next(timeout_seconds)
            assert event is not None, f"stream ended after {events}"
            events.append(event)
        return events

    async def take_skipping_bookmarks(
        self, count: int, timeout_seconds: float = 10.0
    ) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        while len(events) < count:
            event = await self.next(timeout_seconds)
            assert event is not None, f"stream ended after {events}"
            if event["type"] != "BOOKMARK":
                events.append(event)
        return events
