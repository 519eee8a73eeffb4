"""What ``edgecache agent`` can be told: directories, intervals, the health address.

The first thing the agent builds (from the command's flags, or a test's code); every other part
of :mod:`edgecache.agent` reads its intervals from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["AgentSettings"]


@dataclass
class AgentSettings:
    """One node agent. Paths are this node's own: several agents on one machine never share."""

    node_name: str
    """The Node this agent runs on (its nodepool label places Datasets here)."""
    root: Path
    """Views live in ``<root>/datasets/<namespace>/<name>/``; the agent's own state and staging
    area in ``<root>/.edgecache-agent/`` (same filesystem, so a finished file is renamed in)."""
    cache_dir: Path
    """The block cache directory (shared with ``edgecache::`` readers on the node); wins over
    the ``path`` of a runtime's tieredstore level."""
    health_address: str = "0.0.0.0:10269"
    """host:port of /healthz, /readyz and /metrics (all interfaces: kubelet probes them)."""
    metadata_ttl_seconds: float = 60.0
    """How long a listing of a mount is trusted: a changed or deleted object is reflected in
    the view within about this long (the design's metadata TTL). Every view is checked again
    this often even without events (level-triggered)."""
    node_refresh_seconds: float = 30.0
    """How often the Node's labels (its nodepool) are read again."""
    report_interval_seconds: float = 2.0
    """Least time between two writes of one CacheReport while numbers change (progress)."""
    report_retry_seconds: float = 2.0
    """How soon a report write that failed (offline, 503 from the hub) is tried again."""
    materialise_concurrency: int = 4
    """Files copied into views at once (each reads its blocks in parallel as well)."""
    request_timeout_seconds: float = 30.0
    """Seconds an API request may take (through the hub, an offline answer is immediate)."""

    @property
    def views_dir(self) -> Path:
        return self.root / "datasets"

    @property
    def state_dir(self) -> Path:
        return self.root / ".edgecache-agent"

    def view_path(self, namespace: str, name: str) -> Path:
        """``<root>/datasets/<namespace>/<name>``: the directory the CSI service publishes."""
        return self.views_dir / namespace / name
