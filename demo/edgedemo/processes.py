"""Every process the demo starts, and the guarantee that none outlives it.

Each child (hubs, agents, the controller) runs in its own session, so its whole process group can
be signalled, grandchildren included, and a Ctrl-C on the terminal reaches only the demo, which
then stops the site in order (agents before hubs) instead of everything dying at once. SIGINT,
SIGTERM and SIGHUP all end the demo through :class:`Interrupted`, so the ``finally`` that calls
:meth:`Processes.stop_all` always runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType


class Interrupted(Exception):
    """The demo was asked to stop (Ctrl-C, SIGTERM, SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_on_signals() -> None:
    """Turn the stop signals into :class:`Interrupted` in the main thread."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handler)


def ignore_signals() -> None:
    """While cleaning up, a second Ctrl-C must not cut the clean-up short."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Processes:
    """Starts long-running children with their output in ``log_dir/NAME.log``; stops them all."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], *, env: dict[str, str] | None = None) -> Child:
        log = self.log_dir / f"{name}.log"
        with log.open("ab") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def check_alive(self) -> None:
        """A child that died on its own is a broken demo: say which, with its last lines."""
        for child in self.children:
            code = child.process.poll()
            if code is not None:
                raise RuntimeError(
                    f"{child.name} exited with {code}; the end of {child.log}:\n{child.tail()}"
                )

    def stop(self, child: Child, timeout_seconds: float = 5.0) -> None:
        """SIGTERM to the child's process group, SIGKILL if it is still there after the timeout."""
        if child.process.poll() is None:
            _signal_group(child.process.pid, signal.SIGTERM)
            try:
                child.process.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                _signal_group(child.process.pid, signal.SIGKILL)
                child.process.wait(timeout=timeout_seconds)
        # Whatever the child left in its group goes too (it is ours, nobody else's).
        _signal_group(child.process.pid, signal.SIGKILL)
        if child in self.children:
            self.children.remove(child)

    def stop_all(self) -> None:
        """Newest first: agents stop before the hubs they talk through."""
        for child in reversed(list(self.children)):
            self.stop(child)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def wait_until(
    what: str,
    ready: Callable[[], bool],
    *,
    timeout_seconds: float,
    processes: Processes | None = None,
    interval_seconds: float = 0.2,
) -> float:
    """Poll ``ready`` until it holds; returns the seconds it took. A child dying meanwhile, or
    the timeout, is an error naming ``what``."""
    started = time.monotonic()
    deadline = started + timeout_seconds
    while True:
        if ready():
            return time.monotonic() - started
        if processes is not None:
            processes.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        time.sleep(interval_seconds)


def http_text(url: str, timeout_seconds: float = 2.0) -> str | None:
    """The body of a GET, or ``None`` when the server does not answer 2xx."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as answer:
            body: bytes = answer.read()
            return body.decode(errors="replace")
    except OSError:
        return None
