"""The Dataset, EdgeCacheRuntime and DataLoad model, shared by the CLI, agent and controller.

Field names follow Fluid's ``data.fluid.io/v1alpha1`` API so a Fluid user changes only the
``apiVersion`` (to ``data.edgecache.io/v1alpha1``) and the runtime kind (``AlluxioRuntime`` ->
``EdgeCacheRuntime``). Objects are loaded from YAML (several documents per file allowed) and
validated here, once, with messages that give the document, the field path, what is wrong and
what is allowed::

    dataset.yaml: document 1 (Dataset images): spec.mounts[0].mountPoint: required; the URL of
    the data, e.g. oss://bucket/path/

A mount turns into what the filesystem layer needs with :meth:`Mount.url` and
:meth:`Mount.backend_options` (options plus Fluid ``encryptOptions``, resolved later by the
backend so secrets never pass through here in clear). A runtime's tiered store turns into
:class:`~edgecache.config.CacheSettings` with :meth:`EdgeCacheRuntime.cache_settings`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn

from fsspec.core import split_protocol

from edgecache.config import CacheSettings, SSDDirectory, parse_ratio, parse_size
from edgecache.errors import ConfigError, label, quoted
from edgecache.k8s.objects import API_VERSION, is_dns_label, is_dns_subdomain
from edgecache.yamlio import load_yaml_documents, read_text_file

__all__ = [
    "API_VERSION",
    "DataLoad",
    "Dataset",
    "EdgeCacheRuntime",
    "Mount",
    "SpecError",
    "TieredLevel",
    "load_resources",
    "load_resources_file",
    "parse_resource",
]

_FLUID_API = "data.fluid.io/v1alpha1"
_FLUID_RUNTIMES = {
    "AlluxioRuntime",
    "JuiceFSRuntime",
    "JindoRuntime",
    "GooseFSRuntime",
    "ThinRuntime",
    "EFCRuntime",
    "VineyardRuntime",
}
_OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}


class SpecError(ConfigError):
    """A resource spec is invalid; the message names the document and the field path."""


class _Fields:
    """Reads a mapping field by field, raising :class:`SpecError` with the field path."""

    def __init__(self, where: str, data: Any, path: str = "") -> None:
        self.where = where
        self.path = path
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            self.fail("", f"expected a mapping, got {_kind(data)}")
        self.data: Mapping[str, Any] = data

    def _at(self, name: str) -> str:
        if not name:
            return self.path or "(document)"
        if name.startswith("["):
            return f"{self.path}{name}"
        return f"{self.path}.{name}" if self.path else name

    def fail(self, name: str, message: str) -> NoReturn:
        raise SpecError(f"{self.where}: {self._at(name)}: {message}")

    def child(self, name: str, *, required: bool = False) -> _Fields:
        if required and name not in self.data:
            self.fail(name, "required")
        return _Fields(self.where, self.data.get(name), self._at(name))

    def items(self, name: str, *, required: bool = False) -> Iterator[_Fields]:
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "required (a list)")
            return
        if not isinstance(value, list):
            self.fail(name, f"expected a list, got {_kind(value)}")
        for i, item in enumerate(value):
            yield _Fields(self.where, item, f"{self._at(name)}[{i}]")

    def text(self, name: str, *, required: bool = False, default: str = "", hint: str = "") -> str:
        value = self.data.get(name)
        if value is None or value == "":
            if required:
                self.fail(name, "required" + (f"; {hint}" if hint else ""))
            return default
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            self.fail(name, f"expected a string, got {_kind(value)}")
        return str(value)

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.fail(name, "expected a list of strings")
        return list(value)

    def mapping_of_str(self, name: str) -> dict[str, str]:
        value = self.data.get(name)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(name, f"expected a mapping of strings, got {_kind(value)}")
        out = {}
        for k, v in value.items():
            if isinstance(v, Mapping | list):
                self.fail(f"{name}.{label(k)}", f"expected a string, got {_kind(v)}")
            out[str(k)] = "" if v is None else str(v).lower() if isinstance(v, bool) else str(v)
        return out

    def flag(self, name: str, default: bool) -> bool:
        value = self.data.get(name)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(name, f"expected true or false, got {quoted(value)}")
        return value

    def choice(self, name: str, allowed: Sequence[str], default: str) -> str:
        value = self.text(name, default=default)
        if value not in allowed:
            self.fail(name, f"{quoted(value)} is not one of {', '.join(allowed)}")
        return value

    def size(self, name: str, *, required: bool = False) -> int | None:
        value = self.data.get(name)
        if value is None:
            if required:
                self.fail(name, "required (a size such as 10Gi)")
            return None
        try:
            return parse_size(value, option=self._at(name))
        except ConfigError as exc:
            raise SpecError(f"{self.where}: {exc}") from exc

    def ratio(self, name: str) -> float | None:
        value = self.data.get(name)
        if value is None:
            return None
        try:
            return parse_ratio(value, option=self._at(name))
        except ConfigError as exc:
            raise SpecError(f"{self.where}: {exc}") from exc


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


# --- Dataset -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SecretKeyRef:
    """``valueFrom.secretKeyRef`` of an ``encryptOptions`` entry."""

    name: str
    key: str


@dataclass(frozen=True)
class Mount:
    """One ``spec.mounts[]`` entry: where data comes from and where it appears in the dataset."""

    mount_point: str
    """URL of the data (``oss://bucket/prefix/``, ``s3://b/p``, ``file:///data``)."""
    name: str
    path: str
    """Where the mount appears inside the dataset (``/`` by default; Fluid's default is
    ``/<name>``, which we follow when the dataset has several mounts)."""
    options: dict[str, str] = field(default_factory=dict)
    encrypt_options: tuple[tuple[str, SecretKeyRef], ...] = ()

    @property
    def protocol(self) -> str:
        """The backend protocol of the mount point."""
        return split_protocol(self.mount_point)[0] or "file"

    def url(self, relative: str = "") -> str:
        """The mount point URL, extended by a path relative to the mount's root."""
        base = self.mount_point.rstrip("/")
        relative = relative.strip("/")
        return f"{base}/{relative}" if relative else base

    def backend_options(self) -> dict[str, Any]:
        """Options for the backend: ``options`` plus Fluid ``encryptOptions`` references."""
        out: dict[str, Any] = dict(self.options)
        if self.encrypt_options:
            out["encryptOptions"] = [
                {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}
                for name, ref in self.encrypt_options
            ]
        return out


@dataclass(frozen=True)
class NodeSelectorRequirement:
    """``matchExpressions[]`` entry of a node selector term."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True)
class Dataset:
    """``kind: Dataset``: the data (mounts) and where it is cached (node affinity)."""

    name: str
    namespace: str
    mounts: tuple[Mount, ...]
    node_selector_terms: tuple[tuple[NodeSelectorRequirement, ...], ...] = ()
    access_modes: tuple[str, ...] = ("ReadOnlyMany",)

    @property
    def nodepools(self) -> list[str]:
        """Nodepools named by ``apps.openyurt.io/nodepool In [...]`` requirements."""
        pools: list[str] = []
        for term in self.node_selector_terms:
            for req in term:
                if req.key == "apps.openyurt.io/nodepool" and req.operator == "In":
                    pools.extend(v for v in req.values if v not in pools)
        return pools

    def resolve(self, dataset_path: str) -> tuple[Mount, str]:
        """(mount, path relative to its root) holding ``dataset_path`` (``/images/x.jpg``)."""
        wanted = "/" + dataset_path.strip("/")
        best: tuple[Mount, str] | None = None
        best_len = -1
        for mount in self.mounts:
            root = "/" + mount.path.strip("/")
            inside = wanted == root or wanted.startswith(root.rstrip("/") + "/") or root == "/"
            if inside and len(root) > best_len:
                best, best_len = (mount, wanted[len(root) :].lstrip("/")), len(root)
        if best is None:
            raise SpecError(
                f"Dataset {label(self.name)}: no mount holds {quoted(dataset_path)}; mounts: "
                + ", ".join(f"{quoted(m.path)} <- {quoted(m.mount_point)}" for m in self.mounts)
            )
        return best


# --- EdgeCacheRuntime ----------------------------------------------------------------------------
@dataclass(frozen=True)
class TieredLevel:
    """``spec.tieredstore.levels[]``: one cache medium."""

    mediumtype: Literal["MEM", "SSD", "HDD"]
    paths: tuple[str, ...]
    quotas: tuple[int, ...]
    high: float | None = None
    low: float | None = None


@dataclass(frozen=True)
class EdgeCacheRuntime:
    """``kind: EdgeCacheRuntime`` (same name as its Dataset): how the cache is built."""

    name: str
    namespace: str
    levels: tuple[TieredLevel, ...] = ()
    block_size: int | None = None
    compression: str | None = None
    eviction_policy: str | None = None
    """``spec.evictionPolicy`` (``s3fifo``, ``lru``); None: the cache's default."""

    def cache_settings(self, base: CacheSettings | None = None) -> CacheSettings:
        """The cache settings this runtime asks for, over ``base`` (for what it leaves out)."""
        options: dict[str, Any] = {}
        ssd_dirs: list[SSDDirectory] = []
        for level in self.levels:
            if level.mediumtype == "MEM":
                options["mem_quota"] = sum(level.quotas)
                continue
            ssd_dirs.extend(
                SSDDirectory(p, q) for p, q in zip(level.paths, level.quotas, strict=True)
            )
            if level.high is not None:
                options["ssd_high"] = level.high
            if level.low is not None:
                options["ssd_low"] = level.low
        if ssd_dirs:
            options["ssd_dirs"] = ssd_dirs
            options["cache_dir"] = ssd_dirs[0].path
            options["ssd_quota"] = sum(d.quota_bytes for d in ssd_dirs)
        if self.block_size is not None:
            options["block_size"] = self.block_size
        if self.compression is not None:
            options["compression"] = self.compression
        if self.eviction_policy is not None:
            options["eviction_policy"] = self.eviction_policy
        return CacheSettings.from_options(options, base=base)


# --- DataLoad ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DataLoad:
    """``kind: DataLoad``: warm (and maybe pin) paths of a dataset, once or on a schedule."""

    name: str
    namespace: str
    dataset: str
    dataset_namespace: str
    targets: tuple[str, ...] = ("/",)
    policy: Literal["Once", "Cron"] = "Once"
    schedule: str = ""
    pin: bool = False
    load_metadata: bool = True


Resource = Dataset | EdgeCacheRuntime | DataLoad


def _metadata(doc: _Fields) -> tuple[str, str]:
    meta = doc.child("metadata", required=True)
    name = meta.text("name", required=True, hint="a DNS-1123 name such as images")
    # Kubernetes' own rules (a subdomain for names, a label for namespaces), checked here so a
    # file the API server would refuse is refused the same way before it is used.
    if not is_dns_subdomain(name):
        meta.fail("name", f"{quoted(name)} is not a DNS-1123 name (lowercase a-z, 0-9, '-', '.')")
    namespace = meta.text("namespace", default="default")
    if not is_dns_label(namespace):
        meta.fail("namespace", f"{quoted(namespace)} is not a DNS-1123 label (a-z, 0-9, '-')")
    return name, namespace


_MAX_DATASET_NAME = 63


def _parse_dataset(doc: _Fields) -> Dataset:
    name, namespace = _metadata(doc)
    if len(name) > _MAX_DATASET_NAME:
        doc.child("metadata").fail(
            "name",
            f"{len(name)} characters; a Dataset's name has at most {_MAX_DATASET_NAME} "
            "(it labels the Dataset's volume, as in Fluid)",
        )
    spec = doc.child("spec", required=True)
    mounts = []
    raw_mounts = list(spec.items("mounts", required=True))
    if not raw_mounts:
        spec.fail("mounts", "needs at least one mount")
    for m in raw_mounts:
        url = m.text(
            "mountPoint", required=True, hint="the URL of the data, e.g. oss://bucket/path/"
        )
        protocol, _ = split_protocol(url)
        if protocol is None and not url.startswith("/"):
            m.fail(
                "mountPoint",
                f"{quoted(url)} is not a URL; expected e.g. s3://bucket/prefix/ or oss://bucket/prefix/",
            )
        names_a_bucket = bool(url.split("://", 1)[-1].strip("/"))
        if protocol not in (None, "file", "local", "memory") and not names_a_bucket:
            m.fail(
                "mountPoint",
                f"{quoted(url)} names no bucket; expected e.g. {protocol}://bucket/prefix/",
            )
        if protocol == "local":
            url = "file://" + url.split("://", 1)[1]
        mount_name = m.text("name", default=url.rstrip("/").rsplit("/", 1)[-1] or "data")
        default_path = "/" if len(raw_mounts) == 1 else f"/{mount_name}"
        path = m.text("path", default=default_path)
        if not path.startswith("/"):
            m.fail("path", f"{quoted(path)} must be absolute inside the dataset (start with /)")
        encrypt = []
        for e in m.items("encryptOptions"):
            ref = e.child("valueFrom", required=True).child("secretKeyRef", required=True)
            encrypt.append(
                (
                    e.text(
                        "name", required=True, hint="the option it sets, e.g. fs.oss.accessKeyId"
                    ),
                    SecretKeyRef(ref.text("name", required=True), ref.text("key", required=True)),
                )
            )
        mounts.append(Mount(url, mount_name, path, m.mapping_of_str("options"), tuple(encrypt)))
    paths = [m.path for m in mounts]
    if len(set(paths)) != len(paths):
        spec.fail("mounts", f"two mounts use the same path: {quoted(paths)}")
    terms = []
    required = spec.child("nodeAffinity").child("required")
    for t in required.items("nodeSelectorTerms"):
        reqs = []
        for r in t.items("matchExpressions"):
            op = r.choice("operator", sorted(_OPERATORS), "In")
            values = tuple(r.strings("values"))
            if op in ("In", "NotIn") and not values:
                r.fail("values", f"operator {op} needs at least one value")
            if op in ("Exists", "DoesNotExist") and values:
                r.fail("values", f"operator {op} takes no values")
            if op in ("Gt", "Lt") and (len(values) != 1 or not values[0].lstrip("-").isdigit()):
                r.fail("values", f"operator {op} needs exactly one integer value")
            reqs.append(NodeSelectorRequirement(r.text("key", required=True), op, values))
        terms.append(tuple(reqs))
    modes = tuple(spec.strings("accessModes")) or ("ReadOnlyMany",)
    for i, mode in enumerate(modes):
        if mode not in (
            "ReadOnlyMany",
            "ReadWriteMany",
            "ReadWriteOnce",
            "ReadOnlyOnce",
            "ReadWriteOncePod",
        ):
            spec.fail(f"accessModes[{i}]", f"{quoted(mode)} is not a Kubernetes access mode")
    return Dataset(name, namespace, tuple(mounts), tuple(terms), modes)


def _parse_runtime(doc: _Fields) -> EdgeCacheRuntime:
    name, namespace = _metadata(doc)
    spec = doc.child("spec")
    levels = []
    for lv in spec.child("tieredstore").items("levels"):
        medium = lv.choice("mediumtype", ["MEM", "SSD", "HDD"], "")
        paths = tuple(
            p.strip() for p in lv.text("path", required=medium != "MEM").split(",") if p.strip()
        )
        if "quotaList" in lv.data:
            quotas_raw = lv.text("quotaList").split(",")
            try:
                quotas = tuple(
                    parse_size(q.strip(), option=f"{lv.path}.quotaList") for q in quotas_raw
                )
            except ConfigError as exc:  # a SpecError with the document's name, as size() gives
                raise SpecError(f"{lv.where}: {exc}") from exc
        else:
            quota = lv.size("quota", required=True)
            assert quota is not None
            quotas = (quota,) if len(paths) <= 1 else tuple(quota // len(paths) for _ in paths)
        if medium != "MEM" and len(quotas) != len(paths):
            lv.fail("quotaList", f"{len(quotas)} quotas for {len(paths)} paths")
        high, low = lv.ratio("high"), lv.ratio("low")
        if high is not None and low is not None and low > high:
            lv.fail("low", f"{low} is above high ({high})")
        levels.append(TieredLevel(medium, paths, quotas, high, low))  # type: ignore[arg-type]
    block = spec.size("blockSize")
    compression = spec.data.get("compression")
    if compression is not None:
        compression = spec.choice("compression", ["auto", "lz4", "none"], "auto")
    policy = spec.data.get("evictionPolicy")
    if policy is not None:
        policy = spec.choice("evictionPolicy", ["s3fifo", "lru"], "s3fifo")
    return EdgeCacheRuntime(name, namespace, tuple(levels), block, compression, policy)


def _parse_dataload(doc: _Fields) -> DataLoad:
    name, namespace = _metadata(doc)
    spec = doc.child("spec", required=True)
    ds = spec.child("dataset", required=True)
    targets = tuple(
        t.text("path", required=True, hint="a path inside the dataset, e.g. /train")
        for t in spec.items("target")
    ) or ("/",)
    policy = spec.choice("policy", ["Once", "Cron"], "Once")
    schedule = spec.text("schedule")
    if policy == "Cron":
        if not schedule:
            spec.fail("schedule", "required when policy is Cron (e.g. '0 6 * * *')")
        if len(schedule.split()) != 5:
            spec.fail("schedule", f"{quoted(schedule)} is not a 5-field cron expression")
    return DataLoad(
        name,
        namespace,
        ds.text("name", required=True),
        ds.text("namespace", default=namespace),
        targets,
        policy,  # type: ignore[arg-type]
        schedule,
        spec.flag("pin", False),
        spec.flag("loadMetadata", True),
    )


_PARSERS: dict[str, Callable[[_Fields], Resource]] = {
    "Dataset": _parse_dataset,
    "EdgeCacheRuntime": _parse_runtime,
    "DataLoad": _parse_dataload,
}


def load_resources(text: str, *, source: str = "<yaml>") -> list[Resource]:
    """Parse and validate every edgecache document of a YAML text.

    Empty documents, and resources of other APIs bundled in the same file (Pods, PVCs), are
    skipped; anything that claims to be ours, or is a Fluid runtime, is validated.
    """
    try:
        docs = load_yaml_documents(text, source=source)
    except SpecError:
        raise
    except ConfigError as exc:
        raise SpecError(str(exc)) from exc
    out: list[Resource] = []
    for number, raw in enumerate(docs, start=1):
        if raw is None:
            continue
        resource = _parse_document(raw, f"{source}: document {number}")
        if resource is not None:
            out.append(resource)
    return out


def parse_resource(obj: Mapping[str, Any], *, source: str = "") -> Resource:
    """Validate one object as the API hands it over (a dict from ``kubectl get -o json``, a
    watch event): the same rules and messages as :func:`load_resources`, prefixed by
    ``source`` (default: the kind and name, such as ``Dataset images``)."""
    resource = _parse_document(obj, source, ours=True)
    assert resource is not None
    return resource


def _parse_document(raw: Any, where: str, *, ours: bool = False) -> Resource | None:
    """One document: ``None`` when it belongs to another API (unless ``ours``)."""
    doc = _Fields(where or "(object)", raw)
    kind = doc.text("kind", required=True, hint="Dataset, EdgeCacheRuntime or DataLoad")
    metadata = raw.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("name"):
        named = f"{label(kind)} {label(metadata['name'])}"
        doc = _Fields(f"{where} ({named})" if where else named, raw)
    api = doc.text("apiVersion", default="")
    ours = ours or kind in _PARSERS or kind in _FLUID_RUNTIMES
    if not ours and api not in (API_VERSION, _FLUID_API):
        return None  # another resource bundled in the same file (a Pod, a PVC...)
    if not api:
        doc.fail("apiVersion", f"required; {API_VERSION}")
    if api == _FLUID_API:
        doc.fail(
            "apiVersion",
            f"{api} is Fluid's API; edgecache reads the same fields under {API_VERSION}",
        )
    if api != API_VERSION:
        doc.fail("apiVersion", f"{quoted(api)} is not {API_VERSION}")
    if kind in _FLUID_RUNTIMES:
        doc.fail("kind", f"{kind} is a Fluid runtime; use EdgeCacheRuntime")
    parser = _PARSERS.get(kind)
    if parser is None:
        doc.fail("kind", f"{quoted(kind)} is not one of {', '.join(_PARSERS)}")
    return parser(doc)


def load_resources_file(path: str) -> list[Resource]:
    """:func:`load_resources` of a file; the file name prefixes every message."""
    try:
        text = read_text_file(path)
    except ConfigError as exc:
        raise SpecError(str(exc)) from exc
    return load_resources(text, source=posixpath.basename(path) or path)
