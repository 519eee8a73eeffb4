"""The edge site: a nodepool of three nodes on this machine, each with its edge hub and agent.

Every node is a set of processes with its own directories and ports, as separate machines would
be: the hub (``edgecache hub``) is the node's only way to the control plane, and the agent
(``edgecache agent``) talks through it, keeps the node's cache in its own ``--cache-dir`` and the
materialised views under its own ``--root``, and (with ``--peer-listen``) serves its blocks to
the other nodes of the pool."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from edgedemo.processes import Child, Processes, http_text

NODEPOOL = "np763275de88194dabbb34b86ffaa2615e"
"""The seed demo's nodepool name: its Dataset and pod select it, so our nodes carry it."""

EDGECACHE = [sys.executable, "-m", "edgecache"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@cache
def agent_flags() -> frozenset[str]:
    """The long options this build's ``edgecache agent`` accepts (empty: no agent command).
    The agent (issue #12) and its pool flags (issue #13) land separately; the demo uses what is
    there and says plainly what is not."""
    proc = subprocess.run(
        [*EDGECACHE, "agent", "--help"], capture_output=True, text=True, timeout=60
    )
    if proc.returncode != 0:
        return frozenset()
    return frozenset(
        word.split("=")[0].rstrip(",") for word in proc.stdout.split() if word.startswith("--")
    )


POOL_FLAGS = ("--peer-listen", "--advertise", "--peer-token-file")


def has_agent() -> bool:
    return "--node-name" in agent_flags()


def has_pool() -> bool:
    return all(flag in agent_flags() for flag in POOL_FLAGS)


@dataclass
class EdgeNode:
    name: str
    home: Path
    hub_port: int
    hub_health_port: int
    agent_health_port: int
    peer_port: int
    hub: Child | None = None
    agent: Child | None = None

    @classmethod
    def create(cls, name: str, work: Path) -> EdgeNode:
        home = work / name
        for sub in ("hub", "cache", "root"):
            (home / sub).mkdir(parents=True, exist_ok=True)
        return cls(name, home, free_port(), free_port(), free_port(), free_port())

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    @property
    def root(self) -> Path:
        return self.home / "root"

    def view(self, namespace: str, dataset: str) -> Path:
        return self.root / "datasets" / namespace / dataset

    def hub_mode(self) -> str | None:
        """``online`` or ``offline`` as the hub's /readyz says, ``None`` if it does not answer."""
        text = http_text(f"http://127.0.0.1:{self.hub_health_port}/readyz")
        if text is None:
            return None
        return "online" if text.startswith("ok: online") else "offline"

    def _metric(self, family_name: str, by: str, **where: str) -> dict[str, float]:
        """The agent's metric ``family_name`` summed by the label ``by`` over the samples whose
        labels match ``where``; empty if the agent does not answer."""
        text = http_text(f"http://127.0.0.1:{self.agent_health_port}/metrics") or ""
        found: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name != family_name:
                continue
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                if all(sample.labels.get(k) == v for k, v in where.items()):
                    key = sample.labels.get(by, "")
                    found[key] = found.get(key, 0.0) + sample.value
        return found

    def bytes_by_source(self) -> dict[str, float]:
        """The agent's ``edgecache_cache_read_bytes`` by source (backend, peer, ssd, mem): where
        the node's blocks came from. Empty if the agent does not answer."""
        return self._metric("edgecache_cache_read_bytes", "source")

    def peer_failures(self) -> dict[str, float]:
        """The agent's requests to pool peers that failed, by result (timeout, refused, ...)."""
        asked = self._metric("edgecache_peer_requests", "result", side="asked")
        return {result: n for result, n in asked.items() if result not in ("hit", "miss") and n}

    def pool_members(self) -> int:
        """How many members of the pool the agent sees (itself included; its
        ``edgecache_pool_members``), 0 if it does not answer."""
        return int(sum(self._metric("edgecache_pool_members", "").values()))

    def agent_healthy(self) -> bool:
        return http_text(f"http://127.0.0.1:{self.agent_health_port}/healthz") is not None

    def start_hub(self, processes: Processes, api_url: str) -> None:
        self.hub = processes.start(
            f"{self.name}-hub",
            [
                *EDGECACHE,
                "hub",
                "--server",
                api_url,
                "--cache-dir",
                str(self.home / "hub"),
                "--listen",
                f"127.0.0.1:{self.hub_port}",
                "--health-listen",
                f"127.0.0.1:{self.hub_health_port}",
                "--nodepool",
                NODEPOOL,
                "--probe-interval",
                "0.5",
            ],
        )

    def start_agent(self, processes: Processes, token_file: Path | None) -> None:
        argv = [
            *EDGECACHE,
            "agent",
            "--node-name",
            self.name,
            "--server",
            self.hub_url,
            "--root",
            str(self.root),
            "--cache-dir",
            str(self.home / "cache"),
        ]
        flags = agent_flags()
        if "--health-listen" in flags:
            argv += ["--health-listen", f"127.0.0.1:{self.agent_health_port}"]
        if token_file is not None and has_pool():
            address = f"127.0.0.1:{self.peer_port}"
            argv += ["--peer-listen", address, "--advertise", address]
            argv += ["--peer-token-file", str(token_file)]
        self.agent = processes.start(f"{self.name}-agent", argv)


def write_peer_token(work: Path) -> Path:
    """The pool's shared secret (on a cluster: a Secret mounted into every agent)."""
    path = work / "peer-token"
    path.write_text(secrets.token_urlsafe(32))
    os.chmod(path, 0o600)
    return path


class Kubectl:
    """The real ``kubectl``, with a kubeconfig of our own (never the user's)."""

    def __init__(self, work: Path) -> None:
        self.kubeconfig = work / "kubeconfig"
        self.kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\n")

    def __call__(
        self, server: str, *args: str, stdin: str | None = None, timeout_seconds: float = 30
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", "--server", server, "--request-timeout=20s", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            env={**os.environ, "KUBECONFIG": str(self.kubeconfig)},
        )

    def ok(self, server: str, *args: str, stdin: str | None = None) -> str:
        proc = self(server, *args, stdin=stdin)
        if proc.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout
