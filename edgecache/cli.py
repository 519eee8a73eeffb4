"""The ``edgecache`` command line: the outermost layer, above hub, agent and controller.

Each sub-command is a thin shell over a library call: ``cat``/``ls`` read plain URLs
(``file:///x``, ``memory://x``, ``s3://b/k`` once its plugin is installed) through the cache,
``stats`` shows what the cache holds and how well it serves. User mistakes print one line on
stderr and exit 2 (usage) or 1 (failure); tracebacks are for bugs only.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
import yaml
from fsspec.core import split_protocol

from edgecache.cache import TieredCache
from edgecache.config import CacheSettings, default_cache_dir, settings_from_yaml
from edgecache.errors import BackendNotInstalledError, ConfigError, EdgeCacheError
from edgecache.fs import EdgeCacheFileSystem

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE = 1
EXIT_USAGE = 2
_MALFORMED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/?(?!/)")


class _OneLineGroup(click.Group):
    """A click group whose errors are one line on stderr, with the exit codes the brief fixes."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            return super().main(*args, **kwargs)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.exceptions.Abort:
            _fail("aborted", EXIT_FAILURE)
        except click.UsageError as exc:
            hint = f" (see 'edgecache {exc.ctx.info_name} --help')" if exc.ctx else ""
            if exc.ctx and exc.ctx.parent is None:
                hint = " (see 'edgecache --help')"
            _fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except (ConfigError, BackendNotInstalledError) as exc:
            _fail(str(exc), EXIT_USAGE)
        except FileNotFoundError as exc:
            _fail(f"not found: {exc.filename or exc}", EXIT_FAILURE)
        except IsADirectoryError as exc:
            _fail(f"is a directory: {exc.filename or exc} (use 'edgecache ls')", EXIT_FAILURE)
        except BrokenPipeError:
            sys.exit(EXIT_FAILURE)
        except (EdgeCacheError, OSError) as exc:
            _fail(str(exc) or type(exc).__name__, EXIT_FAILURE)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"edgecache: error: {message}", err=True)
    sys.exit(code)


@click.group(cls=_OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgecache")
def main() -> None:
    """edgecache: edge-cloud data acceleration.

    Reads object storage through a tiered (memory + SSD) block cache that keeps working when the
    WAN drops, and runs the edge hub that keeps Kubernetes answering offline.

    \b
    Examples:
      edgecache cat file:///data/images/0001.jpg > /tmp/x.jpg
      edgecache ls file:///data/images/
      edgecache stats
    """


# --- shared options ------------------------------------------------------------------------------
def _cache_options(func: F) -> F:
    func = click.option(
        "--set",
        "cache_settings",
        multiple=True,
        metavar="KEY=VALUE",
        help="Cache setting (block_size=1MiB, mem_quota=512Mi, ssd_quota=10Gi, ssd_high=0.95, "
        "ssd_low=0.85, compression=auto|lz4|none, metadata_ttl=60). Repeatable.",
    )(func)
    func = click.option(
        "--config",
        "config_file",
        type=click.Path(exists=True, dir_okay=False),
        help="YAML file of cache settings (the same keys as --set, optionally under 'cache:').",
    )(func)
    func = click.option(
        "--cache-dir",
        envvar="EDGECACHE_CACHE_DIR",
        default=default_cache_dir,
        show_default="$EDGECACHE_CACHE_DIR or the user cache directory",
        help="Cache directory (SSD tier, index, metadata).",
    )(func)
    return func


def _backend_options(func: F) -> F:
    return click.option(
        "-o",
        "--option",
        "backend_options",
        multiple=True,
        metavar="KEY=VALUE",
        help="Backend option (e.g. endpoint_url=http://127.0.0.1:9000, fs.oss.endpoint=...). "
        "Repeatable.",
    )(func)


def _json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


def _pairs(pairs: Sequence[str], flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{flag} expects KEY=VALUE, got {pair!r}")
        try:
            parsed = yaml.safe_load(value) if value else ""
        except yaml.YAMLError:
            parsed = value
        # Keep strings that YAML would turn into dates or other non-scalar types as given.
        out[key.strip()] = parsed if isinstance(parsed, str | int | float | bool) else value
    return out


def _settings(
    cache_dir: str, config_file: str | None, cache_settings: Sequence[str]
) -> CacheSettings:
    base = CacheSettings(cache_dir=cache_dir)
    if config_file:
        with open(config_file, encoding="utf-8") as f:
            base = settings_from_yaml(f.read(), base=base)
    options = {
        k: str(v) if isinstance(v, bool) else v for k, v in _pairs(cache_settings, "--set").items()
    }
    return CacheSettings.from_options(options, base=base)


def _split_url(url: str) -> tuple[str, str]:
    """(protocol, url) of a plain URL; ``edgecache::`` in front is accepted and dropped."""
    if url.startswith("edgecache::"):
        url = url[len("edgecache::") :]
    if not url or "::" in url:
        raise ConfigError(f"malformed URL {url!r}: expected e.g. file:///data/x or s3://bucket/key")
    protocol, _ = split_protocol(url)
    if protocol is None:
        if _MALFORMED_URL.match(url) and not re.match(r"^[A-Za-z]:[\\/]", url):
            raise ConfigError(
                f"malformed URL {url!r}: a URL needs '://' after its protocol (e.g. "
                f"{url.split(':', 1)[0]}://...)"
            )
        return "file", url
    return protocol, url


@contextmanager
def _filesystem(
    url: str,
    *,
    cache_dir: str,
    config_file: str | None,
    cache_settings: Sequence[str],
    backend_options: Sequence[str],
) -> Iterator[tuple[EdgeCacheFileSystem, str]]:
    protocol, url = _split_url(url)
    settings = _settings(cache_dir, config_file, cache_settings)
    fs = EdgeCacheFileSystem(
        target_protocol=protocol,
        target_options=_pairs(backend_options, "-o"),
        settings=settings,
        skip_instance_cache=True,
    )
    try:
        yield fs, url
    finally:
        fs.cache.flush()


# --- commands ------------------------------------------------------------------------------------
@main.command()
@click.argument("urls", nargs=-1, required=True, metavar="URL...")
@_cache_options
@_backend_options
def cat(
    urls: tuple[str, ...],
    cache_dir: str,
    config_file: str | None,
    cache_settings: tuple[str, ...],
    backend_options: tuple[str, ...],
) -> None:
    """Write the bytes of each URL to standard output, reading through the cache.

    \b
    Examples:
      edgecache cat file:///data/train/part-0001.parquet > part.parquet
      edgecache cat --cache-dir /var/cache/edgecache memory://scratch/x
      edgecache cat s3://bucket/key -o endpoint_url=http://127.0.0.1:9000
    """
    out = sys.stdout.buffer
    for url in urls:
        with (
            _filesystem(
                url,
                cache_dir=cache_dir,
                config_file=config_file,
                cache_settings=cache_settings,
                backend_options=backend_options,
            ) as (fs, path),
            fs.open(path, "rb") as f,
        ):
            while chunk := f.read(fs.settings.block_size):
                out.write(chunk)
    out.flush()


@main.command(name="ls")
@click.argument("url")
@click.option("-l", "--long", "long_format", is_flag=True, help="Show type and size.")
@_cache_options
@_backend_options
@_json_option
def ls_command(
    url: str,
    long_format: bool,
    cache_dir: str,
    config_file: str | None,
    cache_settings: tuple[str, ...],
    backend_options: tuple[str, ...],
    as_json: bool,
) -> None:
    """List a directory (or show one object) through the metadata cache.

    \b
    Examples:
      edgecache ls file:///data/images/
      edgecache ls -l --json s3://bucket/prefix/ -o endpoint_url=http://127.0.0.1:9000
    """
    with _filesystem(
        url,
        cache_dir=cache_dir,
        config_file=config_file,
        cache_settings=cache_settings,
        backend_options=backend_options,
    ) as (fs, path):
        info = fs.info(path)
        entries = fs.ls(path, detail=True) if info.get("type") == "directory" else [info]
    rows = [
        {"name": e["name"], "type": e.get("type", "file"), "size": e.get("size")}
        for e in sorted(entries, key=lambda e: str(e["name"]))
    ]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        if long_format:
            size = "-" if row["type"] == "directory" else str(row["size"])
            click.echo(f"{row['type'][:4]:4} {size:>14} {row['name']}")
        else:
            click.echo(row["name"])


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@main.command()
@_cache_options
@click.option("--verify", is_flag=True, help="Also reconcile block files with the index (slow).")
@_json_option
def stats(
    cache_dir: str,
    config_file: str | None,
    cache_settings: tuple[str, ...],
    verify: bool,
    as_json: bool,
) -> None:
    """Show cache usage and hit counters per tier (summed over every process using the dir).

    \b
    Examples:
      edgecache stats
      edgecache stats --cache-dir /var/cache/edgecache --json
    """
    settings = _settings(cache_dir, config_file, cache_settings)
    cache = TieredCache(settings)
    try:
        report = cache.stats()
        if verify:
            report["verify"] = cache.ssd.reconcile()
    finally:
        cache.close()
    if not report["ssd_available"]:
        raise click.ClickException(f"cache directory {settings.cache_dir} is not usable")
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
        return
    tiers = report["tiers"]
    mem, ssd, backend = tiers["mem"], tiers["ssd"], tiers["backend"]
    ratio = report["hit_ratio"]
    click.echo(f"cache dir   {report['cache_dir']}")
    click.echo(f"block size  {_human(report['block_size'])}")
    click.echo(f"{'tier':8} {'hits':>10} {'served':>12} {'used':>12} {'quota':>12}")
    click.echo(
        f"{'mem':8} {mem['hits']:>10} {_human(mem['bytes_served']):>12} {'-':>12} "
        f"{_human(mem['quota_bytes']):>12}"
    )
    click.echo(
        f"{'ssd':8} {ssd['hits']:>10} {_human(ssd['bytes_served']):>12} "
        f"{_human(ssd['used_bytes']):>12} {_human(ssd['quota_bytes']):>12}"
    )
    click.echo(
        f"{'backend':8} {backend['fetches']:>10} {_human(backend['bytes_fetched']):>12} "
        f"{'':>12} {'':>12}"
    )
    click.echo(f"hit ratio   {'-' if ratio is None else f'{ratio:.1%}'}")
    click.echo(f"evictions   {ssd['evictions']}   corrupt blocks found {ssd['corrupt_blocks']}")
    for pin in report["pins"]:
        click.echo(f"pin         {pin['name']}: {pin['backend']} {pin['prefix']}")
    if verify:
        click.echo(f"verify      {report['verify']}")


from edgecache.hub.command import hub_command  # noqa: E402

main.add_command(hub_command, "hub")
