"""OSS options: native and Fluid keys, values from env/files/Secrets, STS tokens, and reads."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from edgecache_oss._options import oss_config
from edgecache_testservers.oss import OSSServer
from osstestlib import KEY, SECRET, STS_KEY, STS_SECRET, TOKEN

from edgecache.backends import get_backend
from edgecache.backends.options import Secret
from edgecache.errors import ConfigError
from edgecache.testing.backend_suite import run


def read(options: dict[str, Any], path: str) -> bytes:
    backend = get_backend("oss", options)
    version = backend.version(run(backend.call, "info", path))
    return run(backend.fetch_range, path, 0, 1 << 20, version)


def test_fluid_keys_map_to_ossfs(oss_server: OSSServer) -> None:
    config = oss_config(
        {
            "fs.oss.endpoint": oss_server.endpoint,
            "fs.oss.accessKeyId": KEY,
            "fs.oss.accessKeySecret": SECRET,
            "fs.oss.securityToken": TOKEN,
        }
    )
    kwargs = config.fs_kwargs
    assert (kwargs["endpoint"], kwargs["key"], kwargs["secret"], kwargs["token"]) == (
        oss_server.endpoint,
        KEY,
        SECRET,
        TOKEN,
    )
    assert kwargs["use_listings_cache"] is False
    assert config.endpoint == oss_server.endpoint


def test_reads_with_fluid_keys(oss_server: OSSServer, put: Any, prefix: str) -> None:
    path = put(f"{prefix}/fluid.txt", b"fluid keys")
    options = {
        "fs.oss.endpoint": oss_server.endpoint,
        "fs.oss.accessKeyId": KEY,
        "fs.oss.accessKeySecret": SECRET,
    }
    assert read(options, path) == b"fluid keys"


def test_sts_token_reads_and_stays_out_of_logs(
    oss_server: OSSServer, put: Any, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = put(f"{prefix}/sts.txt", b"temporary credentials")
    options = {
        "fs.oss.endpoint": oss_server.endpoint,
        "fs.oss.accessKeyId": STS_KEY,
        "fs.oss.accessKeySecret": STS_SECRET,
        "fs.oss.securityToken": TOKEN,
    }
    assert read(options, path) == b"temporary credentials"
    assert TOKEN not in caplog.text and STS_SECRET not in caplog.text
    with pytest.raises(PermissionError, match=r"oss://.*sts\.txt"):
        read({**options, "fs.oss.securityToken": "not-the-token"}, path)


def test_bare_endpoint_gets_a_scheme() -> None:
    assert oss_config({"endpoint": "oss-cn-hangzhou.aliyuncs.com"}).endpoint == (
        "https://oss-cn-hangzhou.aliyuncs.com"
    )
    plain = oss_config({"fs.oss.endpoint": "oss-cn-hangzhou.aliyuncs.com", "use_ssl": "false"})
    assert plain.fs_kwargs["endpoint"] == "http://oss-cn-hangzhou.aliyuncs.com"


def test_an_unknown_option_is_refused_listing_the_accepted_ones() -> None:
    # ossfs would drop it silently: a typo must not quietly fall back to a default.
    with pytest.raises(ConfigError, match="unknown OSS option 'psize_typo'") as caught:
        oss_config({"endpoint": "http://127.0.0.1:1", "psize_typo": "4"})
    assert "endpoint" in str(caught.value) and "psize" in str(caught.value)
    assert oss_config({"endpoint": "http://127.0.0.1:1", "psize": 4}).fs_kwargs["psize"] == 4
    # What edgecache sets itself from connect_timeout etc. cannot be passed around it.
    with pytest.raises(ConfigError, match="attempts"):
        oss_config({"endpoint": "http://127.0.0.1:1", "attempts": 9})


def test_endpoint_is_required() -> None:
    with pytest.raises(ConfigError, match=r"fs\.oss\.endpoint"):
        oss_config({"key": KEY, "secret": SECRET})


def test_credentials_from_environment(
    oss_server: OSSServer, put: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OSS_ENDPOINT", oss_server.endpoint)
    monkeypatch.setenv("OSS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", SECRET)
    assert oss_config({}).resolved.sources["secret"] == "env OSS_ACCESS_KEY_SECRET"
    path = put(f"{prefix}/env.txt", b"from env")
    assert read({}, path) == b"from env"


def test_secret_from_file_url_and_file_key(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    base = {"endpoint": "oss.example:1", "key": KEY}
    by_url = oss_config({**base, "secret": f"file://{secret_file}"})
    by_key = oss_config({**base, "fs.oss.accessKeySecret_file": str(secret_file)})
    assert by_url.fs_kwargs["secret"] == by_key.fs_kwargs["secret"] == SECRET


def test_encrypt_options_from_mounted_secret(
    oss_server: OSSServer, put: Any, prefix: str, tmp_path: Path
) -> None:
    secret_dir = tmp_path / "secrets" / "oss-creds"
    secret_dir.mkdir(parents=True)
    (secret_dir / "fs.oss.accessKeyId").write_text(KEY)
    (secret_dir / "fs.oss.accessKeySecret").write_text(SECRET + "\n")
    options = {
        "fs.oss.endpoint": oss_server.endpoint,
        "secrets_dir": str(tmp_path / "secrets"),
        "encryptOptions": [
            {
                "name": name,
                "valueFrom": {"secretKeyRef": {"name": "oss-creds", "key": name}},
            }
            for name in ("fs.oss.accessKeyId", "fs.oss.accessKeySecret")
        ],
    }
    path = put(f"{prefix}/secret.txt", b"via a Kubernetes Secret")
    assert read(options, path) == b"via a Kubernetes Secret"


def test_encrypt_options_must_name_a_known_key() -> None:
    options = {
        "endpoint": "oss.example:1",
        "encryptOptions": [
            {"name": "fs.oss.unknown", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        ],
        "secret_resolver": lambda name, key, namespace: "value",
    }
    with pytest.raises(ConfigError, match=r"fs\.oss\.unknown"):
        oss_config(options)


def test_malformed_encrypt_options() -> None:
    with pytest.raises(ConfigError, match="secretKeyRef"):
        oss_config({"endpoint": "oss.example:1", "encryptOptions": [{"name": "x"}]})


def test_conflicting_keys_name_both_options_not_values() -> None:
    with pytest.raises(ConfigError) as info:
        oss_config(
            {"endpoint": "oss.example:1", "key": KEY, "secret": SECRET, "access_key_secret": "x2y"}
        )
    assert "option secret" in str(info.value) and "option access_key_secret" in str(info.value)
    assert SECRET not in str(info.value)


def test_incomplete_credentials() -> None:
    with pytest.raises(ConfigError, match=r"fs\.oss\.accessKeySecret"):
        oss_config({"endpoint": "oss.example:1", "fs.oss.accessKeyId": KEY})


def test_options_keep_secrets_wrapped(oss_options: dict[str, Any]) -> None:
    backend = get_backend("oss", oss_options)
    assert backend.options["secret"] == Secret(SECRET)
    assert SECRET not in repr(backend.options) and SECRET not in repr(backend)


def test_the_connection_pool_has_room_for_foreground_and_background_requests() -> None:
    # 16 foreground + 32 background request slots by default: ossfs's own pool of 20 would
    # make a reader wait for a connection a prefetch holds. An explicit psize still wins.
    assert oss_config({"endpoint": "http://127.0.0.1:1"}).fs_kwargs["psize"] == 64
    assert oss_config({"endpoint": "http://127.0.0.1:1", "psize": 8}).fs_kwargs["psize"] == 8
