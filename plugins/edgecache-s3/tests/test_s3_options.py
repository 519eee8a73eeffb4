"""S3 options: native and Fluid keys, values from env/files/Secrets, and reads through each."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from edgecache_s3._options import s3_config
from s3testlib import KEY, SECRET, put

from edgecache.backends import Backend, get_backend
from edgecache.backends.options import (
    MountedSecretResolver,
    Secret,
    redact_in_logs,
    scrub,
    set_secret_resolver,
)
from edgecache.errors import ConfigError
from edgecache.testing.backend_suite import run


def read(options: dict[str, Any], path: str) -> bytes:
    backend = get_backend("s3", options)
    try:
        version = backend.version(run(backend.call, "info", path))
        return run(backend.fetch_range, path, 0, 1 << 20, version)
    finally:
        run(backend.close)  # else the garbage collector reports its session unclosed


def test_fluid_keys_map_to_s3fs(moto_endpoint: str) -> None:
    config = s3_config(
        {
            "fs.s3a.endpoint": moto_endpoint,
            "aws.accessKeyId": KEY,
            "aws.secretAccessKey": SECRET,
            "aws.sessionToken": "tok-123",
            "aws.region": "eu-west-1",
            "fs.s3a.path.style.access": "true",
        }
    )
    kwargs = config.fs_kwargs
    assert (kwargs["endpoint_url"], kwargs["key"], kwargs["secret"], kwargs["token"]) == (
        moto_endpoint,
        KEY,
        SECRET,
        "tok-123",
    )
    assert kwargs["client_kwargs"]["region_name"] == "eu-west-1"
    assert kwargs["config_kwargs"]["s3"] == {"addressing_style": "path"}
    assert kwargs["config_kwargs"]["retries"] == {"total_max_attempts": 3, "mode": "standard"}
    assert config.endpoint == moto_endpoint


def test_s3a_hadoop_keys(moto_endpoint: str) -> None:
    kwargs = s3_config(
        {"fs.s3a.endpoint": moto_endpoint, "fs.s3a.access.key": KEY, "fs.s3a.secret.key": SECRET}
    ).fs_kwargs
    assert (kwargs["key"], kwargs["secret"]) == (KEY, SECRET)


def test_reads_with_fluid_keys(moto_endpoint: str, client: Any, prefix: str) -> None:
    path = put(client, f"{prefix}/fluid.txt", b"fluid keys")
    options = {
        "fs.s3a.endpoint": moto_endpoint,
        "aws.accessKeyId": KEY,
        "aws.secretAccessKey": SECRET,
        "aws.region": "us-east-1",
    }
    assert read(options, path) == b"fluid keys"


def test_credentials_from_environment(
    moto_endpoint: str, client: Any, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto_endpoint)
    config = s3_config({})
    assert (config.fs_kwargs["key"], config.fs_kwargs["secret"]) == (KEY, SECRET)
    assert config.resolved.sources["secret"] == "env AWS_SECRET_ACCESS_KEY"
    path = put(client, f"{prefix}/env.txt", b"from env")
    assert read({}, path) == b"from env"


def test_env_reference_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_S3_SECRET", SECRET)
    config = s3_config({"key": KEY, "secret": "env://MY_S3_SECRET"})
    assert config.fs_kwargs["secret"] == SECRET
    with pytest.raises(ConfigError, match="NOT_SET_ANYWHERE"):
        s3_config({"key": KEY, "secret": "env://NOT_SET_ANYWHERE"})


def test_secret_from_file_url_and_file_key(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    by_url = s3_config({"key": KEY, "secret": f"file://{secret_file}"})
    by_key = s3_config({"key": KEY, "aws.secretAccessKey_file": str(secret_file)})
    assert by_url.fs_kwargs["secret"] == by_key.fs_kwargs["secret"] == SECRET


def test_missing_secret_file_names_the_path_only(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"secret_file: .*nope: cannot read"):
        s3_config({"key": KEY, "secret_file": str(tmp_path / "nope")})


def test_secret_files_are_read_within_bounds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"option secret: /dev/zero: larger than 65,536 bytes"):
        s3_config({"key": KEY, "secret": "file:///dev/zero"})
    binary = tmp_path / "secret.bin"
    binary.write_bytes(b"\x00\x01secret")
    with pytest.raises(ConfigError, match="a binary file"):
        s3_config({"key": KEY, "secret_file": str(binary)})


def fluid_mount_options(endpoint: str) -> dict[str, Any]:
    """A Dataset mount's options and encryptOptions, as Fluid users write them."""
    return {
        "fs.s3a.endpoint": endpoint,
        "aws.region": "us-east-1",
        "encryptOptions": [
            {
                "name": "aws.accessKeyId",
                "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "id"}},
            },
            {
                "name": "aws.secretAccessKey",
                "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret"}},
            },
        ],
    }


def mount_secret(root: Path) -> Path:
    secret_dir = root / "s3-creds"
    secret_dir.mkdir(parents=True)
    (secret_dir / "id").write_text(KEY)
    (secret_dir / "secret").write_text(SECRET)
    return root


def test_secret_key_ref_from_mounted_secret_dir(
    moto_endpoint: str, client: Any, prefix: str, tmp_path: Path
) -> None:
    root = mount_secret(tmp_path / "secrets")
    options = {**fluid_mount_options(moto_endpoint), "secrets_dir": str(root)}
    config = s3_config(options)
    assert (config.fs_kwargs["key"], config.fs_kwargs["secret"]) == (KEY, SECRET)
    assert config.resolved.sources["secret"] == "secret s3-creds/secret"
    path = put(client, f"{prefix}/secret-ref.txt", b"via secretKeyRef")
    assert read(options, path) == b"via secretKeyRef"


def test_secret_key_ref_root_from_environment(
    moto_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGECACHE_SECRETS_DIR", str(mount_secret(tmp_path / "mounted")))
    assert s3_config(fluid_mount_options(moto_endpoint)).fs_kwargs["secret"] == SECRET


def test_secret_key_ref_through_a_pluggable_resolver(moto_endpoint: str) -> None:
    asked: list[tuple[str, str, str | None]] = []

    def resolver(name: str, key: str, namespace: str | None) -> str:
        asked.append((name, key, namespace))
        return {"id": KEY, "secret": SECRET}[key]

    previous = set_secret_resolver(resolver)
    try:
        options = {**fluid_mount_options(moto_endpoint), "secret_namespace": "team-a"}
        assert s3_config(options).fs_kwargs["secret"] == SECRET
    finally:
        set_secret_resolver(previous)
    assert asked == [("s3-creds", "id", "team-a"), ("s3-creds", "secret", "team-a")]


def test_unmounted_secret_is_a_config_error_without_value(
    moto_endpoint: str, tmp_path: Path
) -> None:
    options = {**fluid_mount_options(moto_endpoint), "secrets_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match=r"Secret s3-creds/id.*not mounted"):
        s3_config(options)


def test_conflicting_keys_name_both_options_not_values() -> None:
    with pytest.raises(ConfigError) as info:
        s3_config({"key": KEY, "secret": SECRET, "aws.secretAccessKey": "other-secret-value"})
    message = str(info.value)
    assert "option secret" in message and "option aws.secretAccessKey" in message
    assert SECRET not in message and "other-secret-value" not in message


def test_incomplete_credentials() -> None:
    with pytest.raises(ConfigError, match=r"secret .* is missing"):
        s3_config({"aws.accessKeyId": KEY})


def test_endpoint_without_scheme_and_with_userinfo(backends: Callable[..., Backend]) -> None:
    assert s3_config({"endpoint": "minio.local:9000"}).endpoint == "https://minio.local:9000"
    plain = s3_config({"endpoint": "minio.local:9000", "use_ssl": "false"})
    assert plain.fs_kwargs["endpoint_url"] == "http://minio.local:9000"
    hidden = s3_config({"endpoint_url": "http://user:pw-secret@minio.local:9000/"})
    assert hidden.endpoint == "http://minio.local:9000"
    assert (
        "pw-secret"
        not in backends("s3", {"endpoint_url": "http://user:pw-secret@minio.local:9000/"}).identity
    )


def test_bad_numbers_and_flags() -> None:
    with pytest.raises(ConfigError, match="read_timeout"):
        s3_config({"read_timeout": "soon"})
    with pytest.raises(ConfigError, match="retries"):
        s3_config({"retries": 0})
    with pytest.raises(ConfigError, match="path_style"):
        s3_config({"path_style": "maybe"})


def test_foreign_fluid_keys_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    config = s3_config({"fs.s3a.connection.maximum": "100", "alluxio.user.file.writetype": "x"})
    assert "fs.s3a.connection.maximum" not in config.fs_kwargs
    assert "ignoring option fs.s3a.connection.maximum" in caplog.text


def test_native_keywords_pass_through() -> None:
    config = s3_config({"requester_pays": True, "config_kwargs": {"read_timeout": 7}})
    assert config.fs_kwargs["requester_pays"] is True
    assert config.fs_kwargs["config_kwargs"]["read_timeout"] == 7


def test_options_keep_secrets_wrapped(
    s3_options: dict[str, Any], backends: Callable[..., Backend]
) -> None:
    backend = backends("s3", s3_options)
    assert backend.options["secret"] == Secret(SECRET)
    assert SECRET not in repr(backend.options) and SECRET not in str(backend.options["secret"])
    assert backend.options["secret"].reveal() == SECRET


# --- the shared option machinery (edgecache.backends.options) ---
def test_secret_wrapper_never_shows_its_value() -> None:
    secret = Secret(SECRET)
    assert SECRET not in f"{secret} {secret!r} {[secret]} { ({'s': secret}) }"
    assert secret.reveal() == SECRET and secret == Secret(SECRET) and secret != Secret("x")


def test_scrub() -> None:
    assert scrub(f"failed with {SECRET} inside", [Secret(SECRET)]) == "failed with *** inside"


@pytest.mark.parametrize(("name", "key"), [("..", "x"), ("a/b", "x"), ("s", "../../etc/passwd")])
def test_mounted_secret_resolver_refuses_paths(tmp_path: Path, name: str, key: str) -> None:
    with pytest.raises(KeyError, match="invalid Secret reference"):
        MountedSecretResolver(tmp_path)(name, key, None)


def test_redact_in_logs_rewrites_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    redact_in_logs([Secret("redact-me-please")], ["edgecache.test.redaction"])
    logging.getLogger("edgecache.test.redaction").debug("header token=%s", "redact-me-please")
    assert "header token=***" in caplog.text and "redact-me-please" not in caplog.text
