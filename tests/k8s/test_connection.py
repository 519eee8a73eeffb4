"""Connecting to an API server the one way every component does: flags, kubeconfig, in-cluster
service account; the official ``kubernetes`` client built from the same settings, over real TLS
against the test API server, with token files that rotate."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from kubernetes import client as k8s

from edgecache.errors import ConfigError
from edgecache.k8s import (
    ConnectionFlags,
    ConnectionSettings,
    HealthMonitor,
    HealthSettings,
    TokenSource,
    client_ssl_context,
    connection_options,
    official_api_client,
    pod_namespace,
    resolve_connection,
)


def _service_account(directory: Path, *, token: str, ca: Path | None = None) -> Path:
    directory.mkdir(parents=True)
    (directory / "token").write_text(token + "\n")
    (directory / "namespace").write_text("edge-system\n")
    if ca is not None:
        shutil.copy(ca, directory / "ca.crt")
    return directory


def _kubeconfig(path: Path, server: str, user: str) -> Path:
    path.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
        f"clusters: [{{name: k, cluster: {{server: '{server}'}}}}]\n"
        f"users: [{{name: u, user: {user}}}]\n"
    )
    return path


def test_in_cluster_fills_server_ca_and_token_file(tmp_path: Path) -> None:
    account = _service_account(tmp_path / "sa", token="t", ca=Path(__file__))
    env = {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}
    settings = resolve_connection(ConnectionSettings(), environ=env, service_account_dir=account)
    assert settings.servers == ["https://[fd00::1]:443"]
    assert settings.certificate_authority == str(account / "ca.crt")
    assert settings.token_file == str(account / "token") and settings.token is None
    assert pod_namespace(account) == "edge-system"
    assert pod_namespace(tmp_path / "nowhere") is None


def test_flags_win_over_kubeconfig_and_in_cluster(tmp_path: Path) -> None:
    account = _service_account(tmp_path / "sa", token="t")
    env = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    kubeconfig = _kubeconfig(tmp_path / "kc", "http://127.0.0.1:1/", "{token: from-kubeconfig}")
    flags = ConnectionSettings(servers=["http://127.0.0.1:2"], token="from-flag")
    resolve_connection(flags, kubeconfig=kubeconfig, environ=env, service_account_dir=account)
    assert (flags.servers, flags.token) == (["http://127.0.0.1:2"], "from-flag")
    from_file = ConnectionSettings()
    resolve_connection(from_file, kubeconfig=kubeconfig, environ=env, service_account_dir=account)
    assert (from_file.servers, from_file.token) == (["http://127.0.0.1:1"], "from-kubeconfig")


def test_no_source_names_all_three(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--server URL, --kubeconfig FILE, or run in a pod"):
        resolve_connection(ConnectionSettings(), environ={})
    with pytest.raises(ConfigError, match="no service-account token"):
        resolve_connection(
            ConnectionSettings(),
            environ={"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"},
            service_account_dir=tmp_path / "empty",
        )


def test_kubeconfig_credential_plugins_are_refused(tmp_path: Path) -> None:
    kubeconfig = _kubeconfig(
        tmp_path / "kc", "https://127.0.0.1:1", "{exec: {command: aws, apiVersion: v1}}"
    )
    with pytest.raises(ConfigError, match="'exec' plugin"):
        resolve_connection(ConnectionSettings(), kubeconfig=kubeconfig, environ={})


def test_unreadable_ca_is_a_config_error(tmp_path: Path) -> None:
    settings = ConnectionSettings(
        servers=["https://127.0.0.1:1"], certificate_authority=str(tmp_path / "missing.crt")
    )
    with pytest.raises(ConfigError, match="CA"):
        client_ssl_context(settings)
    assert client_ssl_context(ConnectionSettings(servers=["http://127.0.0.1:1"])) is None


def test_token_source_follows_rotation(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    tokens = TokenSource(ConnectionSettings(token_file=str(token_file)))
    assert tokens.authorization() == "Bearer first"
    token_file.write_text("second-token\n")
    assert tokens.token() == "second-token"
    token_file.unlink()
    assert tokens.token() is None


def test_official_client_in_cluster_over_tls_with_rotating_token(tmp_path: Path) -> None:
    with KubeAPIServer(tls=True, tokens={"one": "sa-1", "two": "sa-2"}) as api:
        assert api.pki is not None
        api.seed(objects.pods(3))
        account = _service_account(tmp_path / "sa", token="one", ca=api.pki.ca_cert)
        host, port = api.url.removeprefix("https://").rsplit(":", 1)
        settings = resolve_connection(
            ConnectionSettings(),
            environ={"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port},
            service_account_dir=account,
        )
        v1 = k8s.CoreV1Api(official_api_client(settings, user_agent="edgecache-controller/0.1"))
        assert len(v1.list_namespaced_pod("default").items) == 3
        first = api.requests[-1]
        assert (first.user, first.user_agent) == ("sa-1", "edgecache-controller/0.1")
        (account / "token").write_text("two\n")
        os.utime(account / "token", (1, 1))  # a new mtime even within the same clock tick
        v1.list_namespaced_pod("default")
        assert api.requests[-1].user == "sa-2"


def test_connection_flags_on_a_command(tmp_path: Path) -> None:
    seen: list[ConnectionSettings] = []

    @click.command()
    @connection_options()
    def command(*, connection: ConnectionFlags) -> None:
        settings = ConnectionSettings()
        connection.resolve(settings)
        seen.append(settings)

    runner = CliRunner()
    ok = runner.invoke(command, ["--server", "http://127.0.0.1:5/,http://127.0.0.1:6"])
    assert ok.exit_code == 0, ok.output
    assert seen[0].servers == ["http://127.0.0.1:5", "http://127.0.0.1:6"]
    both = runner.invoke(command, ["--server", "http://x", "--token", "a", "--token-file", "f"])
    assert both.exit_code == 2 and "--token or --token-file" in both.output
    kubeconfig = tmp_path / "kc"
    kubeconfig.write_text("{}")
    bad = runner.invoke(command, ["--kubeconfig", str(kubeconfig)])
    assert bad.exit_code == 2 and "current-context" in bad.output


async def test_health_monitor_hysteresis() -> None:
    answers: asyncio.Queue[bool] = asyncio.Queue()
    switches: list[bool] = []
    settings = HealthSettings(
        probe_interval_seconds=0.01,
        retry_interval_seconds=0.01,
        failures_to_offline=2,
        successes_to_online=3,
    )

    async def probe() -> bool:
        return await answers.get()

    monitor = HealthMonitor(settings, probe=probe, on_switch=switches.append, name="test")
    answers.put_nowait(True)
    assert await monitor.start() is True
    for answer in (False, True, False, False):  # a single failure in between does not count
        answers.put_nowait(answer)
    await monitor.wait_for(False, within_seconds=5)
    for answer in (True, True, False, True, True, True):
        answers.put_nowait(answer)
    await monitor.wait_for(True, within_seconds=5)
    assert answers.empty()
    assert switches == [False, True]
    await monitor.stop()
