"""Dataset / EdgeCacheRuntime / DataLoad specs mutated at volume (issue #15): hypothesis takes a
valid bundle (a ``file://`` Dataset of two mounts with a Secret reference and node affinity,
its runtime, a DataLoad) and changes one thing: a value of the wrong type, a huge scalar,
deep nesting, a YAML bomb in place of a value, a path or mount point with ``..`` or NUL, a
field deleted or an unknown one added. Each mutated bundle goes through every reader of specs:

- :func:`edgecache.dataset.load_resources` (the YAML text, as the CLI reads a file);
- the controller's checks (:func:`check_dataset`, :func:`check_runtime`: the message of a
  ``Ready=False`` condition);
- ``edgecache prefetch BUNDLE.yaml`` (in process, as in test_fuzz_inputs.py);
- a real ``edgecache agent`` reading them from the API test server (stored as given, as
  under an older CRD without validation).

Each ends in a result or a clear error (one line, naming the field the mutation touched),
never a traceback, a hang or a write outside the cache directory and the agent's root.

Random YAML documents and bombs on their own are fuzzed in tests/test_yamlio.py."""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from agent.conftest import AgentProcess, wait_for
from agent.conftest import cluster as cluster  # a fixture, reused
from agent.conftest import tree as view_tree
from click.testing import CliRunner
from edgecache_testservers.kubeapi import KubeAPIServer
from fuzzlib import FUZZ, LONG, examples, tree
from hypothesis import given, settings
from hypothesis import strategies as st
from test_yamlio import bounded

from edgecache.cli import main
from edgecache.controller._validation import Problem, check_dataset, check_runtime
from edgecache.dataset import SpecError, load_resources
from edgecache.k8s.objects import API_VERSION, NODEPOOL_LABEL

JSONObject = dict[str, Any]
SOURCE = "/edgecache-fuzz-source"
"""Placeholder of the data directory in the bundle (replaced per test)."""


def bundle(source: str, name: str = "images") -> list[JSONObject]:
    """The valid bundle; its runtime's SSD tiers are directories beside ``source`` (the CLI
    caches there: a runtime's paths are where its cache lives)."""
    meta = {"name": name, "namespace": "default"}
    dataset = {
        "apiVersion": API_VERSION,
        "kind": "Dataset",
        "metadata": dict(meta),
        "spec": {
            "mounts": [
                {"mountPoint": f"file://{source}/train", "name": "train", "path": "/train"},
                {
                    "mountPoint": f"local://{source}/val",
                    "name": "val",
                    "path": "/val",
                    "options": {"x.option": "1"},
                    "encryptOptions": [
                        {
                            "name": "fs.oss.accessKeyId",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "id"}},
                        }
                    ],
                },
            ],
            "nodeAffinity": {
                "required": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": NODEPOOL_LABEL, "operator": "In", "values": ["pool-a"]}
                            ]
                        }
                    ]
                }
            },
            "accessModes": ["ReadOnlyMany"],
        },
    }
    runtime = {
        "apiVersion": API_VERSION,
        "kind": "EdgeCacheRuntime",
        "metadata": dict(meta),
        "spec": {
            "tieredstore": {
                "levels": [
                    {"mediumtype": "MEM", "quota": "64Mi"},
                    {
                        "mediumtype": "SSD",
                        "path": f"{source}-ssd/a,{source}-ssd/b",
                        "quotaList": "1Gi,1Gi",
                    },
                ]
            },
            "blockSize": "4MiB",
            "compression": "auto",
        },
    }
    dataload = {
        "apiVersion": API_VERSION,
        "kind": "DataLoad",
        "metadata": {"name": f"{name}-warm", "namespace": "default"},
        "spec": {
            "dataset": {"name": name, "namespace": "default"},
            "target": [{"path": "/train"}, {"path": "/val/x"}],
            "policy": "Cron",
            "schedule": "0 6 * * *",
            "pin": True,
        },
    }
    return [dataset, runtime, dataload]


# --- mutations -----------------------------------------------------------------------------------
DEEP = "\x00DEEP\x00"
BOMB = "\x00BOMB\x00"
"""Sentinels replaced in the rendered text by deep nesting and by a billion-laughs value."""

PATH_JUNK = [
    "..",
    "../..",
    "/../../outside",
    "/train/../../..",
    "a/../../b",
    "/x\x00y",
    "\x00",
    "%2e%2e/%2e%2e",
    "~",
    "//",
    "/" * 3000,
    "/" + "n" * 5000,
]
MOUNT_JUNK = [
    f"file://{SOURCE}/../outside",
    f"file://{SOURCE}/train/../../..",
    f"file://{SOURCE}/\x00",
    f"file://{SOURCE}/train\x00/x",
    "file://",
    "file:///../../",
    "local:///..",
    "memory://x/../..",
    "/../../",
    "../relative",
    "",
    "::::",
    "s3://",  # names no bucket: refused before any client exists
]
JUNK_VALUES: list[Any] = [
    *[0, -1, 1.5, True, False, None, [], {}, ["a"], {"a": 1}, "", "0", "1e400", "NaN"],
    *PATH_JUNK,
    *MOUNT_JUNK,
    DEEP,
    BOMB,
    "s" * 300_000,
    "s" * 5000,
    json.loads("[" * 40 + "]" * 40),
    2**70,
    -(2**70),
]
JUNK = st.one_of(
    st.sampled_from(JUNK_VALUES),
    st.integers(min_value=1000, max_value=300_000).map(lambda n: "s" * n),
    st.integers(min_value=10, max_value=60).map(lambda n: json.loads("[" * n + "]" * n)),
    st.text(max_size=30).filter(lambda t: "://" not in t),  # never a URL of a real protocol
    st.integers(min_value=-(2**70), max_value=2**70),
)
HOWS = ["replace"] * 6 + ["delete", "unknown field", "wrap in a list"]
UNKNOWN_FIELDS = ["surprise", "mountpoint", "Spec", "..", "\x00"]
Pick = Callable[[Sequence[Any]], Any]


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key path in ``node``."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield (*prefix, key)
            yield from paths(child, (*prefix, key))
    elif isinstance(node, list):
        for i, child in enumerate(node):
            yield (*prefix, i)
            yield from paths(child, (*prefix, i))


def dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def mutate(
    source: str, documents: Sequence[int], pick: Pick, junk: Callable[[], Any]
) -> tuple[list[JSONObject], int, tuple[Any, ...], str]:
    """(bundle, which document, the key path changed, how): one change to one of
    ``documents``, each choice made by ``pick``, each bad value from ``junk``."""
    docs = bundle(source)
    which = pick(documents)
    doc = docs[which]
    path = pick(sorted(paths(doc), key=repr))
    *parents, last = path
    parent = doc
    for part in parents:
        parent = parent[part]
    how = pick(HOWS)
    if how == "replace":
        value = junk()
        if isinstance(value, str) and SOURCE in value:
            value = value.replace(SOURCE, source)
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "unknown field":
        target = parent[last] if isinstance(parent[last], dict) else parent
        if isinstance(target, dict):
            target[pick(UNKNOWN_FIELDS)] = junk()
    else:
        parent[last] = [parent[last]]
    return docs, which, tuple(path), how


@st.composite
def mutated(
    draw: st.DrawFn, source: str, documents: tuple[int, ...] = (0, 1, 2)
) -> tuple[list[JSONObject], int, tuple[Any, ...], str]:
    """:func:`mutate` with hypothesis making the choices."""
    return mutate(source, documents, lambda seq: draw(st.sampled_from(seq)), lambda: draw(JUNK))


def render(docs: list[JSONObject]) -> str:
    """YAML text of the bundle (JSON documents are YAML), sentinels expanded."""
    text = "\n---\n".join(json.dumps(d) for d in docs)
    deep = "[" * 5000 + "]" * 5000
    laughs = ", ".join(
        f"&a{i} [" + ",".join([f"*a{i - 1}"] * 9 if i else ['"lol"'] * 9) + "]" for i in range(9)
    )
    return text.replace(json.dumps(DEEP), deep).replace(json.dumps(BOMB), f"[{laughs}]")


FIELD = re.compile(r": (apiVersion|kind|metadata|spec)(?=[.\[:])")


def names_the_field(message: str, path: tuple[Any, ...]) -> bool:
    """Does the error name a field in the part of the document the mutation changed?"""
    named = FIELD.findall(message)
    return bool(named) and named[-1] == path[0]


def check_message(message: str, path: tuple[Any, ...], how: str) -> None:
    assert "\n" not in message and len(message) < 1500, message
    assert "Traceback" not in message
    # Mutations the YAML loader refuses before any field is read name the source instead.
    loader = any(
        w in message for w in ("too deep", "alias", "nesting depth", "not valid YAML", "refused: ")
    )
    assert loader or names_the_field(message, path), (dotted(path), how, message)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data of the bundle, in a directory of its own (``data``) with room beside it for
    the command's working directory and the runtime's tiers."""
    root = tmp_path_factory.mktemp("specs") / "data"
    for name in ("train/a.bin", "train/sub/b.bin", "val/x/c.bin"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(name.encode() * 100)
    (root.parent / "outside").write_bytes(b"outside\n")
    return root


# Huge scalars and bombs cost up to a second each: fewer examples in CI (400 in the long run).
SPEC_FUZZ = settings(FUZZ, max_examples=examples(25))
NODES = [{"metadata": {"name": "a1", "labels": {NODEPOOL_LABEL: "pool-a"}}}]


async def lookup_secret(namespace: str, name: str) -> JSONObject | None:
    return {"data": {"id": "aWQ="}} if name == "creds" else None


@SPEC_FUZZ
@given(data=st.data())
async def test_mutated_specs_through_the_parser_and_the_controller_checks(
    source: Path, reliability: Any, data: st.DataObject
) -> None:
    docs, which, path, how = data.draw(mutated(str(source)), label="mutation")
    result = bounded(load_resources, render(docs), source="bundle.yaml")
    reliability.bad_inputs += 1
    if isinstance(result, SpecError):
        check_message(str(result), path, how)
    else:
        assert isinstance(result, list)
    if (
        how == "replace"
        and isinstance((found := _at(docs[which], path)), str)
        and found in (DEEP, BOMB)
    ):
        return  # a YAML-text mutation: the API never hands over such an object
    dataset, runtime, _ = docs
    started = time.process_time()
    for call in ("dataset", "runtime"):
        try:
            if call == "dataset":
                await check_dataset(
                    dataset, runtime=runtime, nodes=NODES, lookup_secret=lookup_secret
                )
            else:
                check_runtime(runtime)
        except Problem as problem:
            assert re.fullmatch(r"[A-Z][A-Za-z]+", problem.reason), problem.reason
            check_message(problem.message, path, how)
    assert time.process_time() - started < 2.0


def _at(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            doc = doc[part]
        except (KeyError, IndexError, TypeError):
            return None
    return doc


@SPEC_FUZZ
@given(data=st.data())
def test_mutated_dataset_files_through_prefetch(
    source: Path, reliability: Any, monkeypatch: pytest.MonkeyPatch, data: st.DataObject
) -> None:
    # The runtime stays as given: its tier paths are where the command puts its cache, so a
    # mutated one would be a cache anywhere on this machine, as asked.
    docs = data.draw(mutated(str(source), documents=(0, 2)), label="mutation")[0]
    work = source.parent / "cli"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    spec_file = work / "bundle.yaml"
    spec_file.write_text(render(docs), encoding="utf-8", errors="surrogateescape")
    cache = work / "cache"
    ssd = source.parent / "data-ssd"
    before = tree(source.parent, cache, spec_file, ssd)
    result = CliRunner().invoke(
        main, ["prefetch", str(spec_file), "--cache-dir", str(cache)], catch_exceptions=True
    )
    reliability.bad_inputs += 1
    output = result.output
    assert "Traceback" not in output, output
    assert isinstance(result.exception, SystemExit | None), repr(result.exception)
    assert result.exit_code in (0, 1, 2), (result.exit_code, output)
    assert "unexpected" not in output and "a bug" not in output, output
    if result.exit_code == 2:
        # One line; it names the field when the spec is wrong (checked above through the
        # parser), or says what a valid but changed bundle cannot do ("no mount holds '/'").
        last = output.rstrip("\n").rsplit("\n", 1)[-1]
        assert last.startswith("edgecache: error: ") and len(last) < 1500, output
    # Exit 1: a failure, or prefetch's own report listing the paths it could not load.
    assert tree(source.parent, cache, spec_file, ssd) == before, "written outside the cache"


# --- the agent ------------------------------------------------------------------------------------
AGENT_SPECS = 80 if LONG else 12
"""Mutated bundles one agent reads in one run (12 in CI; 80 with the long size)."""


# One agent run reading many mutated bundles, chosen at random (a seed, printed with every
# change, reproduces a failure) rather than by hypothesis: its first example is the simplest
# one (every bundle alike), and one agent process per example would not fit the budget.
def test_an_agent_reading_mutated_specs_stays_up_and_writes_only_its_own_dirs(
    cluster: KubeAPIServer, tmp_path: Path, agents: list[Any], reliability: Any
) -> None:
    source = tmp_path / "data"
    for name in ("train/a.bin", "val/x/c.bin"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_bytes(name.encode() * 100)
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}}
    cluster.put(
        {**secret, "metadata": {"name": "creds", "namespace": "default"}, "data": {"id": "aWQ="}}
    )
    stored = 0
    count = AGENT_SPECS
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    changes: list[str] = []
    reliability.notes["seed"] = seed
    for i in range(count):
        docs, _, path, how = mutate(
            str(source), (0, 1, 2), rng.choice, lambda: rng.choice(JUNK_VALUES)
        )
        changes.append(f"fuzz-{i}: {dotted(path)} {how}")
        for doc in docs:
            meta = doc.get("metadata")
            if not isinstance(meta, dict):
                continue
            meta["name"], meta["namespace"] = (
                f"fuzz-{i}-{doc.get('kind', 'x')}".lower()[:60],
                "default",
            )
            if doc is docs[2] and isinstance(doc.get("spec"), dict):
                ds = doc["spec"].get("dataset")
                if isinstance(ds, dict):
                    ds["name"] = f"fuzz-{i}-dataset"
            if doc is docs[1]:
                meta["name"] = f"fuzz-{i}-dataset"
            text = (
                json.dumps(doc)
                .replace(json.dumps(DEEP), '"deep"')
                .replace(json.dumps(BOMB), '"bomb"')
            )
            try:
                cluster.put(json.loads(text))
                stored += 1
            except Exception:  # an object the API could not hold at all (no kind, no name)
                pass
        reliability.bad_inputs += 1
    # Always among them: the DataLoads that stopped the agent before (a spec or a
    # spec.dataset that is not a mapping, read before validation).
    for i, spec in enumerate((1.5, "x", {"dataset": 1.5}, {"dataset": ["a"]})):
        meta = {"name": f"odd-{i}", "namespace": "default"}
        cluster.put({"apiVersion": API_VERSION, "kind": "DataLoad", "metadata": meta, "spec": spec})
    # A sentinel Dataset after all of them: once its view is there, the others were read.
    sentinel = bundle(str(source), "sentinel")
    for doc in sentinel[:2]:
        cluster.put(doc)
    agent = AgentProcess(tmp_path, "a1", cluster.url).start()
    agents.append(agent)
    before = tree(tmp_path, agent.root, agent.cache_dir, agent.log)
    system = {d: set(os.listdir(d)) for d in ("/", "/mnt")}
    wait_for(
        lambda: (
            not agent.alive()
            or view_tree(agent.view("sentinel")).keys() >= {"train/a.bin", "val/x/c.bin"}
        ),
        what="the sentinel's view",
        timeout_seconds=60,
    )
    reliability.notes["objects_stored"] = reliability.notes.get("objects_stored", 0) + stored
    print(f"seed {seed}:", *changes, sep="\n  ")  # shown when the test fails
    assert agent.alive(), agent.log.read_text()[-3000:]
    log = agent.log.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
    assert tree(tmp_path, agent.root, agent.cache_dir, agent.log) == before
    # Nothing where a mutated runtime path or mount point pointed (/outside, /x...).
    assert {d: set(os.listdir(d)) for d in system} == system
    views = agent.root / "datasets"
    for found in views.rglob("*"):
        assert found.resolve().is_relative_to(views.resolve()), found
