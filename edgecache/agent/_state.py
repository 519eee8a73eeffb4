"""The agent's local state: what it must know to keep serving with no API answer at all.

Written under ``<root>/.edgecache-agent/`` as JSON files replaced atomically (written beside,
fsynced, renamed), so a SIGKILL leaves the old or the new version, never a torn one::

    node.json                        the Node's labels last seen (the nodepool)
    objects.json                     the Datasets, runtimes and DataLoads placed on this node
    views/<namespace>/<name>.json    one view's manifest: every file it holds (version, size),
                                     whether it is complete, counters, DataLoad runs done

At start the agent reads them before asking the API anything: the views it had stay
publishable (``ready_view``) while the link (or the hub) is down.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Any

__all__ = ["read_json", "remove_stale_temporaries", "write_json"]

log = logging.getLogger(__name__)


def write_json(path: Path, data: Any) -> None:
    """Replace ``path`` by ``data`` atomically (temporary name beside it, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as out:
            json.dump(data, out, sort_keys=True, separators=(",", ":"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def read_json(path: Path) -> Any:
    """The data of ``path``; None when it is missing or unreadable (logged: we start empty)."""
    try:
        with open(path, encoding="utf-8") as source:
            return json.load(source)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable agent state %s: %s", path, exc)
        return None


def remove_stale_temporaries(directory: Path) -> int:
    """Delete our own temporary files (``.<name>.<pid>.<token>.tmp``) left by a killed agent."""
    removed = 0
    if not directory.is_dir():
        return 0
    for dirpath, _dirs, files in os.walk(directory):
        for name in files:
            if name.startswith(".") and name.endswith(".tmp"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
    return removed
