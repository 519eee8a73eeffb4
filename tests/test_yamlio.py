"""The bounded YAML loader (edgecache/yamlio.py) and the message cutter (errors.quoted): every
input ends in a valid result or one ConfigError line, in bounded time and memory; hypothesis
generates the documents (random nesting, anchors and aliases, huge scalars, random bytes)."""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgecache.config import CacheSettings, settings_from_yaml
from edgecache.dataset import load_resources
from edgecache.errors import ConfigError, quoted
from edgecache.yamlio import YAMLLimits, load_yaml_documents, read_text_file

# Bounds that catch a blow-up (the unbounded loader took 38 s and 5.5 GB on a 425-byte file),
# not noise: memory is counted exactly; time is the process's CPU time, which a loaded machine
# does not inflate as it does wall time (examples take milliseconds; speed is bench/'s job).
EXAMPLE_CPU_SECONDS = 2.0
EXAMPLE_BYTES = 16 * 1024 * 1024


def bounded(call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(...)``'s result, or the ConfigError it raised; asserts CPU time and memory bounds."""
    tracemalloc.start()
    started = time.process_time()
    try:
        return call(*args, **kwargs)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message and len(message) < 600, message
        return exc
    finally:
        elapsed = time.process_time() - started
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert elapsed < EXAMPLE_CPU_SECONDS, f"took {elapsed:.2f} s of CPU"
        assert peak < EXAMPLE_BYTES, f"peaked at {peak / 1e6:.1f} MB"


def billion_laughs(levels: int = 9) -> str:
    lines = ['l0: &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


# --- what is refused, and what is kept ------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "needle"),
    [
        (billion_laughs(), "aliases expanded"),
        ("[" * 50_000 + "]" * 50_000, "nesting depth"),
        ("".join(" " * i + "a:\n" for i in range(300)), "nested deeper than 100 levels"),
        ("x: " + "9" * 5000, "a number of 5,000 characters"),
        ("x: 1." + "5" * 5000, "a number of 5,002 characters"),
        ("x: !!int '" + "1" * 100 + "'", "a number of 100 characters"),
        ("x: " + "s" * 300_000, "a value of 300,000 characters"),
        ("a: &a [*a]", "recursive alias *a"),
        ("a: *nowhere", "undefined alias"),
        ("a: 2024-13-45", "not valid YAML"),
        ("a: \x01", "not YAML text"),
        ("? [1]\n: 2", "unhashable key"),
        ("a: !!python/object:os.system x", "could not determine a constructor"),
        ("a: [1,\n", "not valid YAML at line 2, column 1"),
        ("a: 1\nb: 2\na: 3\n", "duplicate key 'a' at line 3, column 1 (first at line 1,"),
        ("x:\n  - {k: 1, k: 2}\n", "duplicate key 'k' at line 2, column 12"),
        ("s: !!set {a, b, a}", "duplicate key 'a' at line 1, column 17"),
        ("1: one\n1: again\n", "duplicate key 1 at line 2"),
    ],
)
def test_refused_in_one_line_naming_the_source(text: str, needle: str) -> None:
    result = bounded(load_yaml_documents, text, source="in.yaml")
    assert isinstance(result, ConfigError)
    assert str(result).startswith("in.yaml: ")
    assert needle in str(result)


def test_aliases_within_the_budget_and_merge_keys_work() -> None:
    text = "base: &base {k: 1, opts: &opts [a, b]}\nuse: *base\nmore: {<<: *base, d: 2}\nl: *opts\n"
    assert load_yaml_documents(text, source="s") == [
        {
            "base": {"k": 1, "opts": ["a", "b"]},
            "use": {"k": 1, "opts": ["a", "b"]},
            "more": {"k": 1, "opts": ["a", "b"], "d": 2},
            "l": ["a", "b"],
        }
    ]


def test_keys_equal_only_in_python_and_merged_keys_are_not_duplicates() -> None:
    # 1 == True == 1.0 in Python; in YAML they are three keys (not refused; a Python dict
    # then holds one of them, as PyYAML's own loader gives). A merge key may be overridden.
    assert load_yaml_documents("1: a\ntrue: b\n1.0: c\n", source="s") == [{1: "c"}]
    text = "base: &b {k: 1, j: 2}\nuse: {<<: *b, k: 3}\n"
    assert load_yaml_documents(text, source="s")[0]["use"] == {"k": 3, "j": 2}


def test_the_budget_counts_what_aliases_repeat() -> None:
    # 10 aliases of a 10-item list: 11 + 10 * 11 = 121 nodes expanded, plus the mapping's own.
    text = "a: &a [" + ",".join(["x"] * 10) + "]\nb: [" + ",".join(["*a"] * 10) + "]\n"
    limits = YAMLLimits(max_expanded_nodes=130)
    assert load_yaml_documents(text, source="s", limits=limits)[0]["b"][9] == ["x"] * 10
    with pytest.raises(ConfigError, match="more than 100 nodes"):
        load_yaml_documents(text, source="s", limits=YAMLLimits(max_expanded_nodes=100))


def test_documents_results_match_pyyaml_for_ordinary_input() -> None:
    text = "a: 1\nb: [x, 2.5, null, true]\nc: {d: '2024-01-02'}\n---\n- 1\n---\n"
    assert load_yaml_documents(text, source="s") == list(yaml.safe_load_all(text))


def test_read_text_file_bounds(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_bytes("\ufeffa: ü\n".encode())
    assert read_text_file(plain) == "a: ü\n"
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * 2000)
    with pytest.raises(ConfigError, match=r"big\.yaml: larger than 1,000 bytes"):
        read_text_file(big, max_bytes=1000)
    endless = bounded(read_text_file, "/dev/zero")
    assert isinstance(endless, ConfigError) and "/dev/zero: larger than" in str(endless)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"a: 1\n\x00\x01")
    with pytest.raises(ConfigError, match=r"a binary file \(NUL byte at offset 5\)"):
        read_text_file(binary)
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"a: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"not UTF-8 text \(byte 0xe9 at offset 6\)"):
        read_text_file(latin)
    with pytest.raises(ConfigError, match="cannot read"):
        read_text_file(tmp_path / "missing.yaml")


def test_quoted_cuts_and_never_renders_a_value_whole() -> None:
    assert quoted("short") == "'short'"
    long = quoted("x" * 5_000_000)
    assert len(long) <= 80 and "..." in long
    shared: Any = ["lol"] * 9
    for _ in range(9):
        shared = [shared] * 9  # 9**9 strings once expanded: only a bounded repr can show it
    assert len(bounded(quoted, shared)) <= 80
    assert len(quoted(10**5000)) <= 80


# --- hypothesis: any document, any bytes ----------------------------------------------------
ANCHORS = ["a", "b", "c"]
scalars = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
    st.none(),
    st.sampled_from(["4MiB", "95%", "0.9", "auto", "~", "2024-01-02", "0x1F", "1:30", "1e999"]),
    st.builds(lambda n: "9" * n, st.integers(0, 6000)),  # long numbers
    st.builds(lambda n: "s" * n, st.integers(0, 300_000)),  # long scalars
)


def render(node: Any, anchors: list[str]) -> str:
    """Flow-style YAML of ``node``; tuples are ("&", name, child) anchors and ("*", name)
    aliases (possibly undefined or recursive: the loader must cope)."""
    if isinstance(node, tuple) and node[0] == "&":
        anchors.append(node[1])
        return f"&{node[1]} {render(node[2], anchors)}"
    if isinstance(node, tuple) and node[0] == "*":
        return f"*{node[1]}"
    if isinstance(node, list):
        return "[" + ", ".join(render(child, anchors) for child in node) + "]"
    if isinstance(node, dict):
        return "{" + ", ".join(f"{k!r}: {render(v, anchors)}" for k, v in node.items()) + "}"
    if isinstance(node, str):
        return json.dumps(node)  # a JSON string is a YAML double-quoted scalar (and fast)
    return yaml.safe_dump(node, default_flow_style=True, width=10**9).strip().removesuffix("...")


trees = st.recursive(
    scalars | st.tuples(st.just("*"), st.sampled_from(ANCHORS)),
    lambda children: st.one_of(
        st.lists(children, max_size=9),
        st.dictionaries(st.sampled_from(["block_size", "cache", "k", "mem_quota"]), children),
        st.tuples(st.just("&"), st.sampled_from(ANCHORS), children),
    ),
    max_leaves=60,
)


def alias_chain(levels: int, width: int) -> str:
    """Anchor i is a list of ``width`` aliases of anchor i-1: width**levels nodes expanded."""
    lines = ["l0: &l0 x"]
    lines += [f"l{i}: &l{i} [" + ",".join([f"*l{i - 1}"] * width) + "]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


chains = st.builds(alias_chain, st.integers(1, 12), st.integers(1, 12))

nested = st.builds(
    lambda depth, opener: opener * depth,
    st.integers(0, 3000),
    st.sampled_from(["[", "{a: ", "- ", "a:\n  "]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_any_document_is_a_result_or_a_config_error(tree: Any) -> None:
    text = render(tree, [])
    result = bounded(load_yaml_documents, text, source="h.yaml")
    assert isinstance(result, ConfigError | list)
    event(str(result).rsplit(": ", 1)[-1][:40] if isinstance(result, ConfigError) else "loaded")


@settings(max_examples=100, deadline=None)
@given(
    text=nested | st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1"))
)
def test_deep_or_random_text_is_a_result_or_a_config_error(text: str) -> None:
    result = bounded(load_yaml_documents, text, source="h.yaml")
    assert isinstance(result, ConfigError | list)


@settings(max_examples=100, deadline=None)
@given(data=st.binary(max_size=2000))
def test_any_file_is_text_or_a_config_error(data: bytes, tmp_path_factory: Any) -> None:
    path = tmp_path_factory.mktemp("bytes") / "config.yaml"
    path.write_bytes(data)
    result = bounded(read_text_file, path)
    assert isinstance(result, ConfigError | str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_any_config_document_gives_settings_or_a_config_error(tree: Any) -> None:
    result = bounded(settings_from_yaml, render(tree, []), source="config.yaml")
    assert isinstance(result, ConfigError | CacheSettings)


DATASET = (
    "apiVersion: data.edgecache.io/v1alpha1\nkind: {kind}\nmetadata: {{name: {name}}}\n"
    "spec: {spec}\n"
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(["Dataset", "EdgeCacheRuntime", "DataLoad"]),
    name=trees,
    spec=trees,
)
def test_any_resource_document_validates_or_is_a_config_error(
    kind: str, name: Any, spec: Any
) -> None:
    anchors: list[str] = []
    text = DATASET.format(kind=kind, name=render(name, anchors), spec=render(spec, anchors))
    result = bounded(load_resources, text, source="dataset.yaml")
    assert isinstance(result, ConfigError | list)
