"""``edgecache agent``'s flags reach the settings its parts run with: the pool's peer timeouts
(``--peer-connect-timeout``, ``--peer-first-byte-timeout``) end in the pool node's
:class:`~edgecache.pool.PeerTimeouts`, and timeouts that would never end are refused."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import edgecache.agent.command
from edgecache.cli import main
from edgecache.pool import PeerTimeouts, PoolNode


def pool_node_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *flags: str) -> PoolNode:
    """The pool node ``edgecache agent ... FLAGS`` would serve with (the service is not run)."""
    served: list[Any] = []
    monkeypatch.setattr(
        edgecache.agent.command, "run_service", lambda name, serve: served.append(serve)
    )
    token = tmp_path / "token"
    token.write_text("t\n")
    done = CliRunner().invoke(
        main,
        [
            *_agent_args(tmp_path),
            "--peer-listen=127.0.0.1:0",
            f"--peer-token-file={token}",
            *flags,
        ],
    )
    assert done.exit_code == 0, done.output
    (serve,) = served
    assert isinstance(serve, functools.partial)
    pool = serve.args[-1]
    assert isinstance(pool, PoolNode)
    return pool


def test_peer_timeouts_default_to_the_pool_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert pool_node_of(tmp_path, monkeypatch).settings.timeouts == PeerTimeouts()


def test_peer_timeout_flags_reach_the_pool_node(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = pool_node_of(
        tmp_path, monkeypatch, "--peer-connect-timeout=2.5", "--peer-first-byte-timeout=20"
    )
    assert pool.settings.timeouts == PeerTimeouts(connect_seconds=2.5, first_byte_seconds=20.0)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
@pytest.mark.parametrize("flag", ["--peer-connect-timeout", "--peer-first-byte-timeout"])
def test_a_peer_timeout_that_is_not_a_positive_finite_number_is_refused(
    tmp_path: Path, flag: str, value: str
) -> None:
    done = CliRunner().invoke(main, [*_agent_args(tmp_path), f"{flag}={value}"])
    assert done.exit_code == 2, done.output
    assert flag in done.output and "positive number of seconds" in done.output, done.output


def _agent_args(tmp_path: Path) -> list[str]:
    """``edgecache agent`` with the flags every case needs (a server nobody listens on)."""
    return [
        "agent",
        "--node-name=n1",
        "--server=http://127.0.0.1:1",
        f"--root={tmp_path / 'root'}",
        f"--cache-dir={tmp_path / 'cache'}",
    ]
