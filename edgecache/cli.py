"""The ``edgecache`` command line: the outermost layer, above hub, agent and controller.

Each sub-command is a thin shell over a library call: ``cat``/``ls`` read plain URLs
(``file:///x``, ``memory://x``, ``s3://b/k`` once its plugin is installed) through the cache,
``stats`` shows what the cache holds and how well it serves. User mistakes print one line on
stderr and exit 2 (usage) or 1 (failure); tracebacks are for bugs only.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import click
from fsspec.core import split_protocol
from tqdm import tqdm

from edgecache.config import CacheSettings, default_cache_dir, settings_from_yaml
from edgecache.dataset import DataLoad, Dataset, EdgeCacheRuntime, Mount, load_resources_file
from edgecache.engine import Store
from edgecache.errors import BackendNotInstalledError, ConfigError, EdgeCacheError, quoted
from edgecache.fs import EdgeCacheFileSystem, PrefetchProgress, PrefetchReport, run_prefetch
from edgecache.yamlio import read_text_file

__all__ = ["main"]

F = TypeVar("F", bound=Callable[..., Any])

EXIT_FAILURE = 1
EXIT_USAGE = 2
_MALFORMED_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:/?(?!/)")


#: Commands that run as services: they configure their own logging, and their warnings are
#: part of their running output rather than held for the end (see _HeldWarnings). Each lives
#: in its own package (module, attribute) and is imported only when it is asked for: the
#: Kubernetes, hub and agent code would cost every ``edgecache cat`` a fifth of its start-up.
_SERVICE_COMMANDS = {
    "hub": ("edgecache.hub.command", "hub_command"),
    "controller": ("edgecache.controller.command", "controller_command"),
    "agent": ("edgecache.agent.command", "agent_command"),
}


class _OneLineGroup(click.Group):
    """A click group whose errors are one line on stderr, with the exit codes the brief fixes.

    This is the CLI's error boundary: every exception a command lets out becomes one line,
    ``edgecache: error: ...``, and exit 2 (the input is wrong: usage, options, URLs, specs) or
    1 (the operation failed: not found, unreachable, permissions, anything else). Exceptions
    nobody expected are reported as such, on one line too; ``EDGECACHE_DEBUG=1`` shows their
    traceback.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *_SERVICE_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SERVICE_COMMANDS and cmd_name not in self.commands:
            module, attribute = _SERVICE_COMMANDS[cmd_name]
            self.add_command(getattr(importlib.import_module(module), attribute), cmd_name)
        return super().get_command(ctx, cmd_name)

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        _tolerate_undecodable_names()
        held = _HeldWarnings()
        argv = kwargs.get("args") or (args[0] if args else None) or sys.argv[1:]
        command = next((a for a in argv if not a.startswith("-")), "")
        try:
            with held.capturing(enabled=command not in _SERVICE_COMMANDS):
                result = super().main(*args, **kwargs)
            held.print_held()
            return result
        except SystemExit:
            held.print_held()  # a command's own exit (prefetch with failed files): output is done
            raise
        except BaseException as exc:
            code, message = _one_line_error(exc)
            if code is None:
                raise
            held.print_held(failed=True)
            _fail(message, code)


def _one_line_error(exc: BaseException) -> tuple[int | None, str]:
    """(exit code, message) for an exception leaving a command; (None, "") to re-raise."""
    if isinstance(exc, click.exceptions.Exit):
        sys.exit(exc.exit_code)
    if isinstance(exc, click.exceptions.Abort):
        return EXIT_FAILURE, "aborted"
    if isinstance(exc, click.UsageError):
        hint = f" (see 'edgecache {exc.ctx.info_name} --help')" if exc.ctx else ""
        if exc.ctx and exc.ctx.parent is None:
            hint = " (see 'edgecache --help')"
        return EXIT_USAGE, f"{exc.format_message()}{hint}"
    if isinstance(exc, click.ClickException):
        return exc.exit_code, exc.format_message()
    if isinstance(exc, ConfigError | BackendNotInstalledError):
        return EXIT_USAGE, str(exc)
    if isinstance(exc, FileNotFoundError):
        return EXIT_FAILURE, f"not found: {exc.filename or exc}"
    if isinstance(exc, IsADirectoryError):
        where = exc.filename or "the root of the store"
        return EXIT_FAILURE, f"is a directory: {where} (use 'edgecache ls')"
    if isinstance(exc, BrokenPipeError):
        sys.exit(EXIT_FAILURE)
    if isinstance(exc, UnicodeEncodeError) and _has_surrogates(exc.object):
        # A name the OS gave us as bytes that are not UTF-8 (read with surrogateescape):
        # block keys, the metadata store and object stores all name things in UTF-8.
        return EXIT_FAILURE, (
            f"the name {_undecodable_part(exc.object)} is not valid UTF-8; edgecache caches "
            "only UTF-8 names (rename the file)"
        )
    if isinstance(exc, EdgeCacheError | OSError):
        return EXIT_FAILURE, str(exc) or type(exc).__name__
    if isinstance(exc, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(exc, Exception) and not os.environ.get("EDGECACHE_DEBUG"):
        return EXIT_FAILURE, (
            f"unexpected {type(exc).__name__}: {exc} (a bug: please report it; "
            "EDGECACHE_DEBUG=1 shows the traceback)"
        )
    return None, ""


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"edgecache: error: {_printable(message)}", err=True)
    sys.exit(code)


def _printable(message: str) -> str:
    """``message`` as one line: newlines folded (library messages may span several), bytes
    that were not UTF-8 shown as ``\\xNN`` rather than failing to print."""
    one_line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    return one_line.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _has_surrogates(text: object) -> bool:
    return isinstance(text, str) and any("\udc80" <= c <= "\udcff" for c in text)


def _undecodable_part(text: str) -> str:
    """The piece of ``text`` (NUL-separated parts, as in a block key) holding undecodable
    bytes, shown with ``\\xNN`` escapes (not quoted: quoting would double the backslashes)."""
    part = next((p for p in text.split("\0") if _has_surrogates(p)), text)
    return part.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _tolerate_undecodable_names() -> None:
    """Names from the OS that are not UTF-8 reach Python as surrogate escapes; write them back
    as the bytes they were (as ls does) instead of failing on the first one, whatever the
    locale's error handler."""
    for stream, errors in ((sys.stdout, "surrogateescape"), (sys.stderr, "backslashreplace")):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(errors=errors)


class _HeldWarnings(logging.Handler):
    """Warnings logged while a one-shot command runs, printed once each when it is done.

    A command that succeeds prints them after its output (that it served cached data because
    the backend was unreachable, that it dropped a damaged row). A command that fails prints
    the ones its error does not already say, then the error as the last line: a backend's
    "went offline" warning repeats the "unreachable" error, so a plain failure is one line.
    """

    #: Loggers whose warnings every resulting error repeats (the backend's reachability).
    REPEATED_BY_ERRORS = ("edgecache.engine._health",)

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: dict[str, str] = {}  # message -> logger name, in the order logged

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.messages.setdefault(_printable(record.getMessage()), record.name)
        except Exception:  # a malformed record is the logging module's business
            self.handleError(record)

    @contextmanager
    def capturing(self, *, enabled: bool) -> Iterator[None]:
        if not enabled:
            yield
            return
        root = logging.getLogger()
        root.addHandler(self)
        try:
            yield
        finally:
            root.removeHandler(self)

    def print_held(self, *, failed: bool = False) -> None:
        for message, logger in self.messages.items():
            if not (failed and logger in self.REPEATED_BY_ERRORS):
                click.echo(f"edgecache: warning: {message}", err=True)
        self.messages.clear()


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
      edgecache prefetch s3://bucket/train/ --pin -o endpoint_url=http://10.0.0.1:9000
      edgecache stats
      edgecache hub --server https://10.0.0.1:6443 --cache-dir /var/lib/edgecache/hub
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


def _pairs(pairs: Sequence[str], flag: str) -> dict[str, str]:
    """``KEY=VALUE`` strings as a dict. Values stay strings: the cache settings and the
    backends parse their own (a secret such as ``0123`` must not become a number)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.UsageError(f"{flag} expects KEY=VALUE, got {quoted(pair)}")
        out[key.strip()] = value
    return out


def _settings(
    cache_dir: str, config_file: str | None, cache_settings: Sequence[str]
) -> CacheSettings:
    base = CacheSettings(cache_dir=cache_dir)
    if config_file:
        base = settings_from_yaml(read_text_file(config_file), base=base, source=config_file)
    options = {
        k: str(v) if isinstance(v, bool) else v for k, v in _pairs(cache_settings, "--set").items()
    }
    return CacheSettings.from_options(options, base=base)


def _split_url(url: str) -> tuple[str, str]:
    """(protocol, url) of a plain URL; ``edgecache::`` in front is accepted and dropped."""
    if url.startswith("edgecache::"):
        url = url[len("edgecache::") :]
    if _has_surrogates(url):
        raise ConfigError(
            f"the URL {_undecodable_part(url)} is not valid UTF-8; edgecache caches only UTF-8 "
            "names (rename the file)"
        )
    if "\0" in url:  # no file or object name holds one; the OS would refuse it late
        raise ConfigError(f"malformed URL {quoted(url)}: it contains a NUL byte")
    if not url or "::" in url:
        raise ConfigError(
            f"malformed URL {quoted(url)}: expected e.g. file:///data/x or s3://bucket/key"
        )
    protocol, _ = split_protocol(url)
    if protocol is None:
        if _MALFORMED_URL.match(url) and not re.match(r"^[A-Za-z]:[\\/]", url):
            raise ConfigError(
                f"malformed URL {quoted(url)}: a URL needs '://' after its protocol (e.g. "
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
        fs.engine.flush()


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
    # Consecutive URLs of one protocol share a filesystem, so their listings and connections
    # are reused and small objects are fetched many at a time.
    groups: list[tuple[str, list[str]]] = []
    for url in urls:
        protocol, _ = _split_url(url)
        if groups and groups[-1][0] == protocol:
            groups[-1][1].append(url)
        else:
            groups.append((protocol, [url]))
    for _, group in groups:
        with _filesystem(
            group[0],
            cache_dir=cache_dir,
            config_file=config_file,
            cache_settings=cache_settings,
            backend_options=backend_options,
        ) as (fs, _first):
            for chunk in fs.iter_cat([_split_url(u)[1] for u in group]):
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
@click.option(
    "--verify",
    is_flag=True,
    help="Check and repair everything the cache keeps: the index (rebuilt from the block files "
    "if damaged), every block's checksum, files against the index, the metadata cache (slow). "
    "Exits 1 when it found damage.",
)
@_json_option
def stats(
    cache_dir: str,
    config_file: str | None,
    cache_settings: tuple[str, ...],
    verify: bool,
    as_json: bool,
) -> None:
    """Show cache usage and hit counters per tier (summed over every process using the dir).

    The index is checked first; a damaged one is rebuilt from the block files (its counters
    start again) and the command exits 1.

    \b
    Examples:
      edgecache stats
      edgecache stats --cache-dir /var/cache/edgecache --json
      edgecache stats --verify
    """
    settings = _settings(cache_dir, config_file, cache_settings)
    store = Store(settings)
    cache = store.blocks
    try:
        if not cache.ssd.available:
            raise click.ClickException(
                f"cache directory {settings.cache_dir} is not usable "
                f"({cache.ssd.unavailable_reason or 'unknown reason'})"
            )
        verified: dict[str, Any] | None = None
        if verify:
            verified = cache.verify()
            verified["metadata"] = store.metadata.verify()
            verified["damage_found"] |= verified["metadata"]["damage_found"]
        else:
            cache.check()
        report = cache.stats()
    finally:
        store.close()
    if verified is not None:
        report["verify"] = verified
    damaged = report["index"]["state"] != "ok" or bool(verified and verified["damage_found"])
    if as_json:
        click.echo(json.dumps(report, indent=2, default=str))
    else:
        _print_stats(report)
    if damaged:
        rebuilt = report["index"]["state"] != "ok"
        what = " (the index was rebuilt from the block files)" if rebuilt else ""
        _fail(f"damage found and repaired{what}; see the report above", EXIT_FAILURE)


def _print_stats(report: dict[str, Any]) -> None:
    tiers = report["tiers"]
    mem, ssd, backend = tiers["mem"], tiers["ssd"], tiers["backend"]
    ratio = report["hit_ratio"]
    index = report["index"]
    click.echo(f"cache dir   {report['cache_dir']}")
    click.echo(f"block size  {_human(report['block_size'])}")
    if index["state"] != "ok":
        click.echo(
            f"index       DAMAGED: moved to {index['moved_to']} and rebuilt from "
            f"{index['blocks_kept']} block files ({index['pins_kept']} pins kept); the counters "
            "below start again"
        )
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
    click.echo(
        f"evictions   {ssd['evictions']}   corrupt blocks found {ssd['corrupt_blocks']}   "
        f"missing blocks {ssd['missing_blocks']}"
    )
    for pin in report["pins"]:
        click.echo(f"pin         {pin['name']}: {pin['backend']} {pin['prefix']}")
    verified = report.get("verify")
    if verified is not None:
        meta = verified["metadata"]
        click.echo(
            f"verify      index {'; '.join(verified['index_problems']) or 'ok'}, "
            f"sums {'fixed' if verified['accounting_fixed'] else 'ok'}, "
            f"row sizes corrected {verified['rows_corrected']}, "
            f"corrupt blocks {verified['corrupt_blocks']}, "
            f"unaccounted files removed {verified['removed_files']}, "
            f"rows without a file removed {verified['removed_rows']}, "
            f"files not ours left alone {verified['foreign_files']}"
        )
        click.echo(
            f"verify      metadata {'rebuilt' if meta['rebuilt'] else 'ok'}, "
            f"damaged rows dropped {meta['dropped_rows']}, rows kept {meta['rows']}"
        )


@main.command()
@click.argument("source", metavar="URL|DATASET.yaml")
@click.argument("paths", nargs=-1, metavar="[PATH_OR_GLOB]...")
@click.option(
    "--parallel",
    type=click.IntRange(min=1),
    help="Blocks loaded at once [default: with WAN QoS on, background_fetches plus a "
    "quarter, 40; else the fetch_concurrency setting, 16].",
)
@click.option("--pin", is_flag=True, help="Pin what is loaded (refused if it cannot fit).")
@click.option("--pin-name", help="Name of the pin [default: the URL or dataset/NAMESPACE/NAME].")
@click.option("--dry-run", is_flag=True, help="Show what would load and how much; load nothing.")
@click.option("--dataset", "dataset_name", help="Which Dataset of the YAML file (if several).")
@_cache_options
@_backend_options
@_json_option
def prefetch(
    source: str,
    paths: tuple[str, ...],
    parallel: int | None,
    pin: bool,
    pin_name: str | None,
    dry_run: bool,
    dataset_name: str | None,
    cache_dir: str,
    config_file: str | None,
    cache_settings: tuple[str, ...],
    backend_options: tuple[str, ...],
    as_json: bool,
) -> None:
    """Load a URL, or a Dataset's data, into the cache before it is needed.

    Lists the targets recursively (caching the listings, so ls/info work offline afterwards),
    skips blocks already cached (an interrupted run resumes where it stopped), loads the rest
    in parallel, and prints a summary. Exits 1 when anything failed, listing the failed paths.

    \b
    Examples:
      edgecache prefetch file:///data/train/
      edgecache prefetch s3://bucket/images/ '*.jpg' --pin -o endpoint_url=http://10.0.0.1:9000
      edgecache prefetch dataset.yaml /train --dry-run
    """
    settings = _settings(cache_dir, config_file, cache_settings)
    jobs = _prefetch_jobs(source, paths, settings, backend_options, dataset_name)
    report = PrefetchReport(dry_run=dry_run)
    progress = _ProgressDisplay()
    for fs, targets, default_pin in jobs:
        try:
            part = run_prefetch(
                fs,
                targets,
                parallel=parallel,
                pin=(pin_name or default_pin) if pin else None,
                dry_run=dry_run,
                on_progress=progress.update,
                progress_interval=progress.interval,
            )
        finally:
            fs.engine.flush()
        report.merge(part)
        if part.interrupted:
            break
    progress.close()
    _print_report(report, source, as_json)
    if report.interrupted:
        sys.exit(130)
    if not report.ok:
        sys.exit(EXIT_FAILURE)


def _prefetch_jobs(
    source: str,
    paths: Sequence[str],
    settings: CacheSettings,
    backend_options: Sequence[str],
    dataset_name: str | None,
) -> list[tuple[EdgeCacheFileSystem, list[str], str]]:
    """(filesystem, targets, default pin name) per backend the source needs."""
    if not source.endswith((".yaml", ".yml")):
        protocol, url = _split_url(source)
        fs = EdgeCacheFileSystem(
            target_protocol=protocol,
            target_options=_pairs(backend_options, "-o"),
            settings=settings,
            skip_instance_cache=True,
        )
        base = url.rstrip("/")
        targets = [f"{base}/{p.lstrip('/')}" for p in paths] or [url]
        return [(fs, targets, source)]
    resources = load_resources_file(source)
    datasets = [r for r in resources if isinstance(r, Dataset)]
    if dataset_name:
        datasets = [d for d in datasets if d.name == dataset_name]
    if len(datasets) != 1:
        names = ", ".join(d.name for d in datasets) or "none"
        raise ConfigError(
            f"{source}: expected one Dataset{f' named {dataset_name}' if dataset_name else ''}, "
            f"found {names} (choose with --dataset NAME)"
        )
    dataset = datasets[0]
    runtime = next(
        (r for r in resources if isinstance(r, EdgeCacheRuntime) and r.name == dataset.name), None
    )
    if runtime is not None and runtime.levels:
        settings = runtime.cache_settings(settings)
    loads = [r for r in resources if isinstance(r, DataLoad) and r.dataset == dataset.name]
    wanted = list(paths) or (list(loads[0].targets) if loads else ["/"])
    by_mount: dict[str, tuple[Mount, list[str]]] = {}
    for path in wanted:
        mount, relative = dataset.resolve(path)
        by_mount.setdefault(mount.name, (mount, []))[1].append(mount.url(relative))
    extra = _pairs(backend_options, "-o")
    jobs = []
    for mount, targets in by_mount.values():
        fs = EdgeCacheFileSystem(
            target_protocol=mount.protocol,
            target_options={**mount.backend_options(), **extra},
            settings=settings,
            skip_instance_cache=True,
        )
        jobs.append((fs, targets, f"dataset/{dataset.namespace}/{dataset.name}"))
    return jobs


class _ProgressDisplay:
    """A tqdm bar on a terminal; a plain line every few seconds otherwise (logs, CI)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.interval = 0.2 if self.tty else 5.0
        self._bar: tqdm[Any] | None = None

    def update(self, p: PrefetchProgress) -> None:
        files = f"{p.files_done}/{p.files_total} files"
        if self.tty:
            if self._bar is None:
                self._bar = tqdm(
                    total=p.bytes_total,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc="prefetch",
                    file=sys.stderr,
                )
            self._bar.total = p.bytes_total
            self._bar.n = p.bytes_done
            self._bar.set_postfix_str(files, refresh=False)
            self._bar.refresh()
            return
        eta = "-" if p.eta is None else f"{p.eta:.0f} s"
        click.echo(
            f"prefetch: {files}, {_human(p.bytes_done)}/{_human(p.bytes_total)}, "
            f"{_human(p.rate)}/s, ETA {eta}",
            err=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _print_report(report: PrefetchReport, source: str, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    verb = "would load" if report.dry_run else "loaded"
    todo_bytes = report.bytes_total - report.bytes_cached
    click.echo(
        f"prefetch {source}: {report.files_total} files, {_human(report.bytes_total)}; "
        + (
            f"{verb} {_human(todo_bytes)}"
            if report.dry_run
            else f"{verb} {report.files_loaded} files ({_human(report.bytes_loaded)})"
        )
        + f", already cached {report.files_cached} files ({_human(report.bytes_cached)}), "
        f"failed {report.files_failed}, in {report.elapsed:.1f} s "
        f"({_human(report.rate)}/s)"
    )
    for name in report.pinned:
        if report.failed:
            click.echo(f"pinned as {name}, but {report.files_failed} files are not cached (below)")
        else:
            click.echo(f"pinned as {name}")
    for failure in report.failed:
        click.echo(f"failed: {_printable(failure.path)}: {failure.error}", err=True)
    if report.interrupted:
        click.echo(
            "interrupted: what was loaded is cached; run the same command again to resume "
            "(cached blocks are skipped)",
            err=True,
        )
