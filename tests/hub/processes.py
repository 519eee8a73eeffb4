"""``edgecache hub`` as a real process for the tests that start, kill and restart it."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from pathlib import Path

__all__ = ["HubProcess"]

_READY = re.compile(r"serving (http://\S+) \(health (http://\S+)\), (\w+)")


class HubProcess:
    """``edgecache hub`` in a subprocess on free ports; ``url``/``health_url`` once ready."""

    def __init__(
        self, cache_dir: Path, upstream: str, *extra: str, log: Path | None = None
    ) -> None:
        """``log``: append the hub's stderr there (a pipe nobody reads fills up and blocks a
        hub that logs many mode switches)."""
        script = Path(sys.executable).with_name("edgecache")
        command = (
            [str(script), "hub"] if script.exists() else [sys.executable, "-m", "edgecache.hub"]
        )
        self.process = subprocess.Popen(
            [
                *command,
                *(("--server", upstream) if upstream else ()),
                *extra,
                "--listen",
                "127.0.0.1:0",
                "--health-listen",
                "127.0.0.1:0",
                "--cache-dir",
                str(cache_dir),
                "--components",
                "*",
                "--probe-interval",
                "0.1",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE if log is None else log.open("a"),
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        match = _READY.search(line)
        if match is None:
            self.process.kill()
            errors = self.process.stderr.read() if self.process.stderr else log.read_text()  # type: ignore[union-attr]
            raise AssertionError(f"hub did not start: {line!r} {errors!r}")
        self.url, self.health_url, self.mode = match.groups()

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=10)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
