"""Backend options: turning a mount's keys and secret references into one dict of settings.

Sits between what users write (CLI ``-o KEY=VALUE``, ``edgecache={...}``/``s3={...}`` storage
options, a Dataset mount's ``options`` and ``encryptOptions``) and the plugin that builds an
fsspec filesystem from it (``edgecache_s3``, ``edgecache_oss``). Each plugin declares its
settings as :class:`OptionSpec` (canonical name, Fluid-style aliases, environment variables,
whether the value is a secret) and calls :func:`resolve_options`.

Where a value can come from, first match wins:

1. the option itself under its canonical name or any alias (``key``, ``aws.accessKeyId``,
   ``fs.s3a.access.key``); a value ``file:///path`` is read from that file, ``env://NAME`` from
   that environment variable;
2. ``<name>_file`` (for the canonical name or any alias): a path whose content is the value;
3. ``encryptOptions[]`` (Fluid): ``{"name": "aws.secretAccessKey", "valueFrom": {"secretKeyRef":
   {"name": "s3-creds", "key": "secret"}}}`` resolved by a :data:`SecretResolver`; the default
   reads the mounted Secret at ``/etc/edgecache/secrets/<name>/<key>`` (root overridable with
   the ``secrets_dir`` option or ``$EDGECACHE_SECRETS_DIR``; the controller plugs in a resolver
   that asks the Kubernetes API);
4. the spec's environment variables (``AWS_ACCESS_KEY_ID``...).

Secret values are wrapped in :class:`Secret`, whose ``repr``/``str`` never show the value;
:func:`scrub` removes them from any text (error messages) that might have picked one up, and
:func:`redact_in_logs` from client libraries' log records (botocore logs an STS token at DEBUG).
The small parsers plugins share (:func:`flag`, :func:`number`, :func:`endpoint_url`,
:func:`public_url`) are here too, so every backend reads ``true``/``5``/``host:port`` alike.

Options no spec claims go to the plugin's filesystem as native keywords. Client libraries accept
``**kwargs`` and fail late (s3fs hands them to botocore's session on the first request, a
``TypeError``; ossfs drops them silently), so a plugin checks them up front with
:func:`refuse_unknown_options` against :func:`filesystem_keywords`; a backend that cannot know
its keywords in advance (fsspec's http) translates the late ``TypeError`` with
:func:`unexpected_option`.
"""

from __future__ import annotations

import inspect
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from edgecache.errors import ConfigError, quoted

__all__ = [
    "DEFAULT_SECRETS_DIR",
    "SECRET_MAX_BYTES",
    "MountedSecretResolver",
    "OptionSpec",
    "ResolvedOptions",
    "Secret",
    "SecretResolver",
    "endpoint_url",
    "filesystem_keywords",
    "flag",
    "number",
    "public_url",
    "redact_in_logs",
    "refuse_unknown_options",
    "resolve_options",
    "reveal",
    "scrub",
    "set_secret_resolver",
    "unexpected_option",
]

log = logging.getLogger(__name__)

SECRET_MAX_BYTES = 64 * 1024
"""Largest secret read from a file: keys, tokens and a cloud credentials JSON are a few KiB;
the bound keeps ``file:///dev/zero`` from being read forever."""
DEFAULT_SECRETS_DIR = "/etc/edgecache/secrets"
"""Where Kubernetes Secrets are mounted, one directory per Secret, one file per key."""
SECRETS_DIR_ENV = "EDGECACHE_SECRETS_DIR"
_FILE_SUFFIX = "_file"
_ENCRYPT_KEYS = ("encryptOptions", "encrypt_options")
_META_KEYS = {"secrets_dir", "secret_resolver", "secret_namespace", *_ENCRYPT_KEYS}
_MASK = "***"


class Secret:
    """A secret string: usable through :meth:`reveal`, invisible in ``repr``, ``str`` and logs."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret value, for handing to the client library that needs it."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{_MASK}')"

    def __str__(self) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)


def reveal(value: Any) -> Any:
    """``value`` itself, or the plain string inside a :class:`Secret`."""
    return value.reveal() if isinstance(value, Secret) else value


def scrub(text: str, secrets: Iterable[Any]) -> str:
    """``text`` with every secret value in ``secrets`` replaced by ``***``."""
    for secret in secrets:
        value = reveal(secret)
        if isinstance(value, str) and len(value) >= 3:
            text = text.replace(value, _MASK)
    return text


class _Redactor(logging.Filter):
    """Rewrites log records that contain a registered secret (client libraries log request
    headers at DEBUG, an STS token among them)."""

    def __init__(self) -> None:
        super().__init__()
        # Replaced, never mutated: records are filtered on many threads while backends register.
        self.secrets: frozenset[str] = frozenset()

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the logging module's business
            return True
        cleaned = scrub(message, self.secrets)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


_redactor = _Redactor()


def redact_in_logs(secrets: Iterable[Any], logger_prefixes: Iterable[str]) -> None:
    """Hide ``secrets`` in records of every logger named ``prefix`` or ``prefix.*`` that exists
    now (a logging filter applies to its own logger only, so each gets one; import the client
    library's modules before calling this)."""
    values = {reveal(secret) for secret in secrets}
    _redactor.secrets = _redactor.secrets | {
        value for value in values if isinstance(value, str) and len(value) >= 3
    }
    prefixes = tuple(logger_prefixes)
    names = [
        name
        for name in list(logging.root.manager.loggerDict)
        if name in prefixes or name.startswith(tuple(p + "." for p in prefixes))
    ]
    for name in {*prefixes, *names}:
        logger = logging.getLogger(name)
        if _redactor not in logger.filters:
            logger.addFilter(_redactor)


SecretResolver = Callable[[str, str, "str | None"], str]
"""``resolver(secret_name, key, namespace) -> value``; raises ``KeyError`` when not found."""


class MountedSecretResolver:
    """Reads Secrets mounted as files: ``<root>/<secret name>/<key>`` (how kubelet mounts them)."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = os.fspath(root) if root is not None else None

    def _root(self) -> str:
        return self.root or os.environ.get(SECRETS_DIR_ENV) or DEFAULT_SECRETS_DIR

    def __call__(self, name: str, key: str, namespace: str | None = None) -> str:
        for part in (name, key):
            if not part or part in (".", "..") or "/" in part or "\\" in part:
                raise KeyError(f"invalid Secret reference {name!r}/{key!r}")
        path = os.path.join(self._root(), name, key)
        if not os.path.isfile(path):
            raise KeyError(f"Secret {quoted(name)} key {quoted(key)} is not mounted at {path}")
        try:
            return _read_secret_file(path)
        except ConfigError as exc:
            raise KeyError(f"Secret {quoted(name)} key {quoted(key)}: {exc}") from exc


_default_resolver: SecretResolver = MountedSecretResolver()


def set_secret_resolver(resolver: SecretResolver | None) -> SecretResolver:
    """Install the process-wide Secret resolver (None: mounted files); returns the previous one."""
    global _default_resolver
    previous = _default_resolver
    _default_resolver = resolver or MountedSecretResolver()
    return previous


@dataclass(frozen=True)
class OptionSpec:
    """One setting a backend understands."""

    name: str
    """Canonical (native) name, as the plugin uses it (``key``, ``endpoint_url``)."""
    aliases: tuple[str, ...] = ()
    """Other names users write for it: Fluid/Hadoop keys (``aws.accessKeyId``), SDK names."""
    env: tuple[str, ...] = ()
    """Environment variables consulted, in order, when no option gives a value."""
    secret: bool = False
    """Wrap the value in :class:`Secret` (never logged, never in an error message)."""

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)


@dataclass
class ResolvedOptions:
    """The outcome of :func:`resolve_options`."""

    values: dict[str, Any] = field(default_factory=dict)
    """Canonical name -> value (a :class:`Secret` for secret settings) for every spec that has
    a value."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Options matching no spec, as given (native keywords of the underlying filesystem)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Canonical name -> where its value came from (``option aws.region``, ``env
    AWS_REGION``...), secret-free, for diagnostics."""

    def get(self, name: str, default: Any = None) -> Any:
        """The plain value of ``name`` (a secret revealed), or ``default``."""
        return reveal(self.values[name]) if name in self.values else default

    def secrets(self) -> list[Secret]:
        """Every secret value, for :func:`scrub`."""
        return [v for v in self.values.values() if isinstance(v, Secret)]


def _read_file(option: str, location: Any) -> str:
    path = str(location)
    if path.startswith("file://"):
        path = path[len("file://") :]
    try:
        return _read_secret_file(os.path.expanduser(path))
    except ConfigError as exc:
        raise ConfigError(f"option {option}: {exc}") from exc


def _value(option: str, raw: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(raw, Secret) or not isinstance(raw, str):
        return raw
    if raw.startswith("file://"):
        return _read_file(option, raw)
    if raw.startswith("env://"):
        name = raw[len("env://") :]
        if name not in environ:
            raise ConfigError(f"option {option}: environment variable {name} is not set")
        return environ[name]
    return raw


def _encrypt_options(
    options: Mapping[str, Any], resolver: SecretResolver
) -> dict[str, tuple[str, str]]:
    """Fluid ``encryptOptions`` -> {option name: (value, source)}."""
    out: dict[str, tuple[str, str]] = {}
    namespace = options.get("secret_namespace")
    for key in _ENCRYPT_KEYS:
        entries = options.get(key) or []
        if not isinstance(entries, list):
            raise ConfigError(f"{key} must be a list of {{name, valueFrom.secretKeyRef}}")
        for entry in entries:
            try:
                name = str(entry["name"])
                ref = entry["valueFrom"]["secretKeyRef"]
                secret_name, secret_key = str(ref["name"]), str(ref["key"])
            except (KeyError, TypeError) as exc:
                raise ConfigError(
                    f"{key} entries need name and valueFrom.secretKeyRef.{{name,key}}: "
                    f"missing {exc}"
                ) from exc
            try:
                value = resolver(secret_name, secret_key, namespace)
            except KeyError as exc:
                raise ConfigError(
                    f"{key} {name}: cannot resolve Secret {secret_name}/{secret_key}: "
                    f"{exc.args[0] if exc.args else exc}"
                ) from exc
            out[name] = (value, f"secret {secret_name}/{secret_key}")
    return out


def resolve_options(
    options: Mapping[str, Any],
    specs: Iterable[OptionSpec],
    *,
    environ: Mapping[str, str] | None = None,
    resolver: SecretResolver | None = None,
    ignore_prefixes: tuple[str, ...] = (),
) -> ResolvedOptions:
    """Resolve ``options`` against ``specs`` (see the module docstring for the order).

    Two different values for one setting (``key`` and ``aws.accessKeyId``) are a
    :class:`ConfigError` naming both options, never the values. Unknown options whose name starts
    with one of ``ignore_prefixes`` (Fluid/Hadoop keys meant for another engine, such as
    ``fs.s3a.connection.maximum``) are logged and dropped; other unknown options go to
    :attr:`ResolvedOptions.extra`.
    """
    environ = os.environ if environ is None else environ
    if resolver is None:
        given = options.get("secret_resolver")
        if given is not None and not callable(given):
            raise ConfigError("secret_resolver must be callable(name, key, namespace)")
        if given is None and options.get("secrets_dir"):
            given = MountedSecretResolver(str(options["secrets_dir"]))
        resolver = given or _default_resolver
    encrypted = _encrypt_options(options, resolver)
    specs = list(specs)
    by_name = {name: spec for spec in specs for name in spec.names}
    by_file_name = {name + _FILE_SUFFIX: spec for spec in specs for name in spec.names}
    out = ResolvedOptions()
    found: dict[str, tuple[Any, str]] = {}

    def offer(spec: OptionSpec, value: Any, source: str) -> None:
        if value is None:
            return
        if spec.secret and not isinstance(value, Secret):
            value = Secret(str(value))
        previous = found.get(spec.name)
        if previous is not None and previous[0] != value:
            raise ConfigError(
                f"conflicting values for {spec.name}: {previous[1]} and {source} differ"
            )
        found.setdefault(spec.name, (value, source))

    for option, raw in options.items():
        if option in _META_KEYS:
            continue
        if option in by_name:
            offer(by_name[option], _value(option, raw, environ), f"option {option}")
        elif option in by_file_name:
            offer(by_file_name[option], _read_file(option, raw), f"file option {option}")
        elif option.startswith(ignore_prefixes):
            log.warning("ignoring option %s: not used by this backend", option)
        else:
            out.extra[option] = raw
    for option, (value, source) in encrypted.items():
        spec = by_name.get(option)
        if spec is None:
            raise ConfigError(
                f"encryptOptions names {quoted(option)}, which this backend does not use"
            )
        offer(spec, value, source)
    for spec in specs:
        if spec.name in found:
            continue
        for var in spec.env:
            if environ.get(var):
                offer(spec, environ[var], f"env {var}")
                break
    for name, (value, source) in found.items():
        out.values[name] = value
        out.sources[name] = source
    return out


# --- value parsers shared by the plugins ---
def flag(name: str, value: Any) -> bool:
    """A boolean option given as a bool or as ``true``/``false``/``1``/``0``/``yes``/``no``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"option {name}: expected true or false, got {quoted(value)}")


def number(name: str, value: Any, default: float, *, minimum: float) -> float:
    """A finite number option (``None`` gives ``default``), at least ``minimum``."""
    if value is None:
        return default
    try:
        parsed = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"option {name}: expected a number, got {quoted(value)}") from None
    if not parsed >= minimum or parsed == float("inf"):
        raise ConfigError(
            f"option {name}: must be a finite number >= {minimum}, got {quoted(value)}"
        )
    return parsed


def public_url(url: str) -> str:
    """``url`` without user:password, query or fragment, and without a trailing slash: safe to
    show in identities, logs and errors."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def endpoint_url(name: str, value: Any, *, use_ssl: bool = True) -> str:
    """An endpoint option as an ``http(s)://host[:port]`` URL; a bare ``host[:port]`` (as Fluid
    and Hadoop keys give it) gets ``https://`` (``http://`` when ``use_ssl`` is false)."""
    text = str(value).strip()
    if "://" not in text:
        text = ("https://" if use_ssl else "http://") + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"option {name}: expected http(s)://host[:port], got {public_url(text)!r}"
        )
    return text


# --- options the filesystem itself takes ---
#: Keywords every fsspec filesystem takes besides its own: the instance cache and the listings
#: cache (``AbstractFileSystem`` hands its ``**storage_options`` to ``DirCache``).
_FSSPEC_KEYWORDS = frozenset(
    {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"}
)


def filesystem_keywords(cls: type, *also: Callable[..., Any]) -> frozenset[str]:
    """Keyword arguments ``cls`` accepts by name: the named parameters of ``__init__`` along
    its MRO, fsspec's common ones, and those of ``also`` (where ``cls`` passes its leftover
    ``**kwargs``, e.g. s3fs to botocore's session)."""
    names = set(_FSSPEC_KEYWORDS)
    for func in [*(klass.__dict__.get("__init__") for klass in cls.__mro__), *also]:
        if func is None or func is object.__init__:
            continue
        try:
            parameters = inspect.signature(func).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature
            continue
        names.update(
            p.name
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"
        )
    return frozenset(names)


def refuse_unknown_options(
    extra: Mapping[str, Any],
    accepted: Iterable[str],
    *,
    backend: str,
    specs: Iterable[OptionSpec],
    filesystem: str,
) -> None:
    """Raise :class:`ConfigError` for the first option in ``extra`` (what no spec claimed) that
    the filesystem does not accept either, listing what is accepted."""
    allowed = set(accepted)
    unknown = sorted(str(name) for name in extra if name not in allowed)
    if not unknown:
        return
    ours = ", ".join(spec.name for spec in specs)
    native = ", ".join(sorted(allowed))
    raise ConfigError(
        f"unknown {backend} option {quoted(unknown[0])}"
        + (f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else "")
        + f"; {backend} options: {ours} (or their Fluid names); {filesystem} also takes: "
        + native
    )


_UNEXPECTED_KEYWORD = re.compile(r"unexpected keyword argument '([^']+)'")


def unexpected_option(exc: BaseException, options: Iterable[str]) -> str | None:
    """The user option a client library refused late (a ``TypeError`` "unexpected keyword
    argument 'x'" anywhere in ``exc``'s causes, with ``x`` one of ``options``), or None.

    Only a name the user gave counts, so a real bug's ``TypeError`` is never mistaken for a
    bad option."""
    given = {str(name) for name in options}
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, TypeError):
            match = _UNEXPECTED_KEYWORD.search(str(seen))
            if match and match.group(1) in given:
                return match.group(1)
        seen = seen.__cause__ or seen.__context__
    return None


def _read_secret_file(path: str) -> str:
    """A secret file's text through the bounded reader, without its line end."""
    # Imported here: the YAML stack behind it is not what a read needs (every spawned worker
    # imports what its first fsspec.open needs).
    from edgecache.yamlio import read_text_file

    return read_text_file(path, max_bytes=SECRET_MAX_BYTES).rstrip("\r\n")
