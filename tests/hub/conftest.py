"""Fixtures for the edge hub tests: a real API test server behind a real hub, with short timers.

``kube_api`` is the threaded :class:`KubeAPIServer` (the "cloud"); ``hub`` is a
:class:`HubServer` on the test's event loop in front of it. ``cut``/``restore`` stop and start the
upstream and wait until the hub has switched. Sync clients (the ``kubernetes`` package, kubectl)
run in threads so the hub keeps serving on the loop meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.kubeapi.fixtures import kube_api, run_kubectl
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from edgecache.hub import HubServer, HubSettings

__all__ = [
    "KubeWatcher",
    "cut",
    "fast_settings",
    "hub",
    "json_names",
    "k8s_client",
    "kube_api",
    "kubectl",
    "names",
    "restore",
]


def fast_settings(cache_dir: Path, upstream: str | list[str]) -> HubSettings:
    """Hub settings with test-speed timers: a switch takes a fraction of a second."""
    settings = HubSettings(cache_dir=cache_dir)
    settings.upstream.servers = [upstream] if isinstance(upstream, str) else list(upstream)
    settings.upstream.connect_timeout_seconds = 0.5
    settings.listen.address = "127.0.0.1:0"
    settings.listen.health_address = "127.0.0.1:0"
    settings.health.probe_interval_seconds = 0.1
    settings.health.probe_timeout_seconds = 0.5
    settings.health.retry_interval_seconds = 0.05
    settings.health.failures_to_offline = 2
    settings.health.successes_to_online = 2
    settings.offline.bookmark_interval_seconds = 0.2
    settings.recording.watch_flush_seconds = 0.01
    return settings


@pytest.fixture
async def hub(tmp_path: Path, kube_api: KubeAPIServer) -> AsyncIterator[HubServer]:
    async with HubServer(fast_settings(tmp_path / "hub", kube_api.url)) as server:
        yield server


async def cut(api: KubeAPIServer, hub: HubServer) -> None:
    """Cut the upstream (connections reset) and wait until the hub serves offline."""
    assert hub.recorder is not None
    await hub.recorder.drain()
    await asyncio.to_thread(api.stop)
    await hub.health.wait_for(False, within_seconds=10)


async def restore(api: KubeAPIServer, hub: HubServer) -> None:
    await asyncio.to_thread(api.start)
    await hub.health.wait_for(True, within_seconds=10)


def k8s_client(
    url: str, *, agent: str = "edgecache-agent/0.1", token: str | None = None
) -> k8s.ApiClient:
    """A ``kubernetes`` API client through ``url`` with a component User-Agent."""
    configuration = k8s.Configuration()
    configuration.host = url
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    api_client = k8s.ApiClient(configuration)
    api_client.user_agent = agent
    return api_client


def kubectl(url: str, *args: str, **kwargs: Any) -> Any:
    """kubectl through ``url`` with its own empty discovery cache (so discovery hits the hub)."""
    return run_kubectl(url, *args, **kwargs)


class KubeWatcher:
    """An informer-style watch with the ``kubernetes`` package, consumed on a thread."""

    def __init__(self, list_call: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._watch = k8s_watch.Watch()
        self._thread = threading.Thread(
            target=self._run, args=(list_call, args, kwargs), daemon=True
        )
        self.error: BaseException | None = None
        self._thread.start()

    def _run(self, list_call: Callable[..., Any], args: Any, kwargs: Any) -> None:
        try:
            for event in self._watch.stream(list_call, *args, **kwargs):
                self.events.put(event)
        except BaseException as exc:
            self.error = exc
        finally:
            self.events.put(None)

    def next(self, timeout: float = 5.0) -> dict[str, Any] | None:
        """The next event, or None when the stream ended."""
        return self.events.get(timeout=timeout)

    async def anext(self, wait_seconds: float = 5.0) -> dict[str, Any] | None:
        return await asyncio.to_thread(self.next, wait_seconds)

    async def next_change(self, wait_seconds: float = 5.0) -> dict[str, Any] | None:
        """The next event that is not a BOOKMARK, or None when the stream ended."""
        while True:
            event = await self.anext(wait_seconds)
            if event is None or event["type"] != "BOOKMARK":
                return event

    async def until_end(self, wait_seconds: float = 10.0) -> list[dict[str, Any]]:
        """Events up to the end of the stream."""
        events: list[dict[str, Any]] = []
        while True:
            event = await self.anext(wait_seconds)
            if event is None:
                return events
            events.append(event)

    def stop(self) -> None:
        self._watch.stop()

    def join(self) -> None:
        self._thread.join(timeout=10)


def names(items: Any) -> list[str]:
    return sorted(item.metadata.name for item in items)


def json_names(body: str | bytes) -> list[str]:
    return sorted(item["metadata"]["name"] for item in json.loads(body)["items"])
