"""Cache settings: sizes with units, ratios, option names, YAML, and errors that name the option."""

from __future__ import annotations

import math

import pytest

from edgecache.config import (
    CacheSettings,
    SSDDirectory,
    parse_ratio,
    parse_size,
    settings_from_yaml,
)
from edgecache.errors import ConfigError

KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4MiB", 4 * MiB),
        ("4mib", 4 * MiB),
        ("10Gi", 10 * GiB),
        ("500M", 500 * 1000**2),
        ("500MB", 500 * 1000**2),
        ("1.5GiB", int(1.5 * GiB)),
        ("2TiB", 2 * TiB),
        ("64Ki", 64 * KiB),
        ("1k", 1000),
        (" 7 MiB ", 7 * MiB),
        ("123", 123),
        ("123B", 123),
        ("0", 0),
        (1048576, MiB),
        (0, 0),
        (2.0, 2),
    ],
)
def test_sizes(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "bad",
    ["", "MiB", "4 XB", "4MiBs", "-1", "-4MiB", "1e3", "4,5MiB", -1, True, None, [1], math.nan],
)
def test_bad_sizes_name_the_option(bad: object) -> None:
    with pytest.raises(ConfigError, match="mem_quota"):
        parse_size(bad, option="mem_quota")


@pytest.mark.parametrize("bad", [math.inf, -math.inf])
def test_infinite_sizes_are_refused(bad: float) -> None:
    with pytest.raises(ConfigError, match="ssd_quota"):
        parse_size(bad, option="ssd_quota")


@pytest.mark.parametrize(
    ("value", "expected"),
    [(0.95, 0.95), ("0.95", 0.95), ("95%", 0.95), (" 85 % ", 0.85), (1, 1.0), (0, 0.0)],
)
def test_ratios(value: object, expected: float) -> None:
    assert parse_ratio(value) == pytest.approx(expected)


@pytest.mark.parametrize("bad", ["high", "1.5", "150%", -0.1, True, None, "nan", math.nan])
def test_bad_ratios_name_the_option(bad: object) -> None:
    with pytest.raises(ConfigError, match="ssd_high"):
        parse_ratio(bad, option="ssd_high")


def test_defaults_are_sane() -> None:
    s = CacheSettings(cache_dir="/tmp/x")
    assert s.block_size == 4 * MiB
    assert 0 < s.ssd_low < s.ssd_high <= 1
    assert s.compression == "auto"
    assert s.eviction_policy == "s3fifo"
    assert s.ssd_directories == (SSDDirectory("/tmp/x", s.ssd_quota),)


def test_storage_option_names_from_the_design() -> None:
    s = CacheSettings.from_options(
        {
            "cache_dir": "~/edgecache-test",
            "block_size": "1MiB",
            "mem_quota": "500Mi",
            "ssd_quota": "10Gi",
            "ssd_high": "90%",
            "ssd_low": 0.5,
            "compression": "LZ4",
            "metadata_ttl": "30",
            "eviction_policy": "LRU",
            "readahead_blocks": "2",
            "fetch_concurrency": 16,
            "compression_min_saving": "20%",
        }
    )
    assert not s.cache_dir.startswith("~")
    assert (s.block_size, s.mem_quota, s.ssd_quota) == (MiB, 500 * MiB, 10 * GiB)
    assert (s.ssd_high, s.ssd_low) == (pytest.approx(0.9), 0.5)
    assert (s.compression, s.eviction_policy) == ("lz4", "lru")
    assert (s.metadata_ttl, s.readahead_blocks, s.fetch_concurrency) == (30.0, 2, 16)
    assert s.compression_min_saving == pytest.approx(0.2)


def test_options_apply_on_top_of_a_base() -> None:
    base = CacheSettings(cache_dir="/c", mem_quota=MiB)
    s = CacheSettings.from_options({"ssd_quota": "1GiB"}, base=base)
    assert (s.cache_dir, s.mem_quota, s.ssd_quota) == ("/c", MiB, GiB)


def test_unknown_option_is_refused_with_the_known_names() -> None:
    with pytest.raises(ConfigError) as err:
        CacheSettings.from_options({"ssd_qouta": "1GiB"})
    assert "ssd_qouta" in str(err.value)
    assert "ssd_quota" in str(err.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("block_size", "1KiB"),
        ("block_size", "lots"),
        ("mem_quota", "-1"),
        ("ssd_quota", "ten gigs"),
        ("ssd_high", 1.5),
        ("ssd_high", "0.1"),  # below the default low
        ("ssd_low", 0),
        ("ssd_low", "x"),
        ("compression", "zstd"),
        ("compression", 5),
        ("compression_min_saving", "200%"),
        ("metadata_ttl", "soon"),
        ("metadata_ttl", -1),
        ("readahead_blocks", "many"),
        ("readahead_blocks", -1),
        ("fetch_concurrency", 0),
        ("ssd_dirs", "/a"),
        ("ssd_dirs", [{"path": "/a"}]),
        ("ssd_dirs", [{"path": "/a", "quota": "big"}]),
        ("cache_dir", 5),
        ("cache_dir", None),
    ],
)
def test_bad_values_name_the_option(option: str, value: object) -> None:
    with pytest.raises(ConfigError, match=option.split("_dirs")[0]):
        CacheSettings.from_options({option: value})


def test_watermarks_must_be_ordered() -> None:
    with pytest.raises(ConfigError, match="ssd_low"):
        CacheSettings(cache_dir="/c", ssd_low=0.9, ssd_high=0.8)


def test_several_ssd_directories_with_their_quotas() -> None:
    s = CacheSettings.from_options(
        {"ssd_dirs": [{"path": "/mnt/a", "quota": "2GiB"}, {"path": "/mnt/b", "quota": 1024}]}
    )
    assert s.ssd_directories == (SSDDirectory("/mnt/a", 2 * GiB), SSDDirectory("/mnt/b", 1024))
    assert s.as_dict()["ssd_dirs"] == [
        {"path": "/mnt/a", "quota": 2 * GiB},
        {"path": "/mnt/b", "quota": 1024},
    ]


def test_yaml_whole_and_cache_section() -> None:
    text = """
cache:
  cache_dir: /var/cache/edgecache
  block_size: 8MiB
  ssd_quota: 1.5GiB
  ssd_high: 0.9
  ssd_low: 80%
  compression: none
  ssd_dirs:
    - {path: /ssd1, quota: 10Gi}
other_component: {ignored: true}
"""
    s = settings_from_yaml(text)
    assert s.cache_dir == "/var/cache/edgecache"
    assert (s.block_size, s.ssd_quota) == (8 * MiB, int(1.5 * GiB))
    assert (s.ssd_high, s.ssd_low, s.compression) == (0.9, pytest.approx(0.8), "none")
    assert s.ssd_directories == (SSDDirectory("/ssd1", 10 * GiB),)
    assert settings_from_yaml("mem_quota: 1MiB").mem_quota == MiB
    assert settings_from_yaml("").block_size == 4 * MiB


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("mem_quota: [1, 2", "YAML"),
        ("- a\n- b", "mapping"),
        ("cache:\n  blocksize: 4MiB", "blocksize"),
        ("ssd_quota: .nan", "ssd_quota"),
        ("mem_quota: null", "mem_quota"),
        ("ssd_high: yes", "ssd_high"),
    ],
)
def test_bad_yaml_gives_precise_errors(text: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        settings_from_yaml(text)


def test_unknown_eviction_policy_is_refused_when_the_cache_opens(tmp_path) -> None:
    # The policy registry lives in the cache layer (config sits below it), so the name is
    # checked when a cache is built from the settings, still with the option's name.
    from edgecache.cache import TieredCache

    s = CacheSettings.from_options({"eviction_policy": "mru", "cache_dir": str(tmp_path)})
    with pytest.raises(ConfigError, match="eviction_policy"):
        TieredCache(s)


@pytest.mark.parametrize("value", [2.7, True, "2.5", "many"])
def test_whole_number_options_refuse_fractions_and_flags(value: object) -> None:
    with pytest.raises(ConfigError, match=r"readahead_blocks: .* is not a whole number"):
        CacheSettings.from_options({"readahead_blocks": value})
