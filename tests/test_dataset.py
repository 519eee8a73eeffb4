"""The Dataset/EdgeCacheRuntime/DataLoad model: Fluid field names, precise messages."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecache.dataset import (
    DataLoad,
    Dataset,
    EdgeCacheRuntime,
    SpecError,
    load_resources,
    load_resources_file,
)

REFERENCE = Path(__file__).parents[2] / "shared" / "reference" / "openyurt-fluid-demo.yaml"
API = "apiVersion: data.edgecache.io/v1alpha1\n"


def test_the_fluid_demo_loads_after_changing_api_version_and_runtime_kind(tmp_path: Path) -> None:
    if not REFERENCE.exists():
        pytest.skip("shared/reference is not beside this checkout")
    text = REFERENCE.read_text().replace("data.fluid.io/v1alpha1", "data.edgecache.io/v1alpha1")
    text = text.replace("kind: AlluxioRuntime", "kind: EdgeCacheRuntime")
    converted = tmp_path / "demo.yaml"
    converted.write_text(text)
    resources = load_resources_file(str(converted))
    dataset = next(r for r in resources if isinstance(r, Dataset))
    assert dataset.name == "images"
    assert dataset.nodepools == ["np763275de88194dabbb34b86ffaa2615e"]
    (mount,) = dataset.mounts
    assert (
        mount.protocol == "oss" and mount.url("a/b.jpg") == "oss://test-fluid/images/images/a/b.jpg"
    )
    options = mount.backend_options()
    assert options["fs.oss.endpoint"] == "oss-cn-beijing.aliyuncs.com"
    assert options["encryptOptions"][1] == {
        "name": "fs.oss.accessKeySecret",
        "valueFrom": {"secretKeyRef": {"name": "mysecret", "key": "fs.oss.accessKeySecret"}},
    }
    assert any(isinstance(r, EdgeCacheRuntime) for r in resources)


def test_runtime_tiered_store_becomes_cache_settings() -> None:
    (runtime,) = load_resources(
        API + "kind: EdgeCacheRuntime\nmetadata: {name: d}\nspec:\n  blockSize: 1MiB\n"
        "  compression: none\n  evictionPolicy: lru\n  tieredstore:\n    levels:\n"
        "      - {mediumtype: MEM, quota: 2Gi}\n"
        "      - {mediumtype: SSD, path: '/a,/b', quotaList: '10Gi,30Gi',\n"
        "         high: '0.9', low: '0.6'}\n"
    )
    assert isinstance(runtime, EdgeCacheRuntime)
    settings = runtime.cache_settings()
    assert settings.mem_quota == 2 * 1024**3
    assert [(d.path, d.quota_bytes) for d in settings.ssd_directories] == [
        ("/a", 10 * 1024**3),
        ("/b", 30 * 1024**3),
    ]
    assert (settings.ssd_high, settings.ssd_low) == (0.9, 0.6)
    assert settings.block_size == 1024**2 and settings.compression == "none"
    assert settings.eviction_policy == "lru"


def test_dataload_defaults_and_cron() -> None:
    (load,) = load_resources(
        API + "kind: DataLoad\nmetadata: {name: l, namespace: f}\nspec: {dataset: {name: d}}\n"
    )
    assert isinstance(load, DataLoad)
    assert (load.targets, load.policy, load.pin, load.load_metadata) == (
        ("/",),
        "Once",
        False,
        True,
    )
    assert load.dataset_namespace == "f"
    (cron,) = load_resources(
        API + "kind: DataLoad\nmetadata: {name: l}\nspec:\n"
        "  dataset: {name: d}\n  policy: Cron\n  schedule: '0 6 * * *'\n"
        "  target: [{path: /train}, {path: /val}]\n  pin: true\n"
    )
    assert isinstance(cron, DataLoad)
    assert cron.targets == ("/train", "/val") and cron.schedule == "0 6 * * *" and cron.pin


def test_dataset_paths_resolve_to_the_right_mount() -> None:
    (ds,) = load_resources(
        API + "kind: Dataset\nmetadata: {name: d}\nspec:\n  mounts:\n"
        "    - {mountPoint: 's3://b/train/', name: train}\n"
        "    - {mountPoint: 'oss://o/val', name: val, path: /v}\n"
    )
    assert isinstance(ds, Dataset)
    mount, rel = ds.resolve("/train/x/1.jpg")
    assert (mount.name, rel, mount.url(rel)) == ("train", "x/1.jpg", "s3://b/train/x/1.jpg")
    mount, rel = ds.resolve("/v")
    assert (mount.name, mount.url(rel)) == ("val", "oss://o/val")
    with pytest.raises(SpecError, match="no mount holds '/other'"):
        ds.resolve("/other")


MOUNT = "spec:\n  mounts: [{mountPoint: 's3://b/p'}]\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "kind: Dataset\nmetadata: {name: d}\n" + MOUNT,
            "x.yaml: document 1 (Dataset d): apiVersion: required; data.edgecache.io/v1alpha1",
        ),
        (
            "apiVersion: data.fluid.io/v1alpha1\nkind: Dataset\nmetadata: {name: d}\n" + MOUNT,
            "apiVersion: data.fluid.io/v1alpha1 is Fluid's API; edgecache reads the same fields "
            "under data.edgecache.io/v1alpha1",
        ),
        (
            API + "kind: Datasett\nmetadata: {name: d}\n",
            "kind: 'Datasett' is not one of Dataset, EdgeCacheRuntime, DataLoad",
        ),
        (API + "kind: Dataset\n" + MOUNT, "x.yaml: document 1: metadata: required"),
        (
            API + "kind: Dataset\nmetadata: {name: d}\nspec: {mounts: {a: 1}}\n",
            "(Dataset d): spec.mounts: expected a list, got a mapping",
        ),
        (
            API + "kind: Dataset\nmetadata: {name: d}\nspec:\n  mounts: [{mountPoint: bucket}]\n",
            "spec.mounts[0].mountPoint: 'bucket' is not a URL",
        ),
        (
            API + "kind: Dataset\nmetadata: {name: d}\nspec:\n  mounts:\n"
            "    - mountPoint: s3://b/p\n      encryptOptions: [{name: aws.secretAccessKey}]\n",
            "spec.mounts[0].encryptOptions[0].valueFrom: required",
        ),
        (
            API + "kind: Dataset\nmetadata: {name: d}\n" + MOUNT + "  nodeAffinity:\n"
            "    required:\n      nodeSelectorTerms:\n        - matchExpressions:\n"
            "            - {key: apps.openyurt.io/nodepool, operator: Inside, values: [a]}\n",
            "spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].operator: "
            "'Inside' is not one of DoesNotExist, Exists, Gt, In, Lt, NotIn",
        ),
        (
            API + "kind: EdgeCacheRuntime\nmetadata: {name: d}\nspec:\n  tieredstore:\n"
            "    levels: [{mediumtype: SSD, path: /a, quota: lots}]\n",
            "spec.tieredstore.levels[0].quota: 'lots' is not a size",
        ),
        (
            API + "kind: EdgeCacheRuntime\nmetadata: {name: d}\nspec:\n  tieredstore:\n"
            "    levels: [{mediumtype: NVME, path: /a, quota: 1Gi}]\n",
            "spec.tieredstore.levels[0].mediumtype: 'NVME' is not one of MEM, SSD, HDD",
        ),
        (
            API + "kind: DataLoad\nmetadata: {name: l}\nspec: {dataset: {name: d}, policy: Cron, "
            "schedule: 'every day'}\n",
            "spec.schedule: 'every day' is not a 5-field cron expression",
        ),
        (
            API + "kind: DataLoad\nmetadata: {name: l}\nspec: {dataset: {name: d}, pin: 'yes'}\n",
            "spec.pin: expected true or false, got 'yes'",
        ),
        (
            "---\n" + API + "kind: Dataset\nmetadata: {name: ok}\n" + MOUNT + "---\n- a list\n",
            "x.yaml: document 2: (document): expected a mapping, got a list",
        ),
        ("key: [unclosed\n", "x.yaml: not valid YAML at line 2, column 1"),
        (
            API + "kind: DataSet\nmetadata: {name: d}\n",
            "kind: 'DataSet' is not one of Dataset, EdgeCacheRuntime, DataLoad",
        ),
    ],
)
def test_bad_specs_give_precise_messages(text: str, message: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_resources(text, source="x.yaml")
    assert message in str(caught.value)


def test_other_resources_in_the_file_are_skipped() -> None:
    text = (
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n---\n"
        + API
        + ("kind: Dataset\nmetadata: {name: d}\n" + MOUNT)
    )
    assert [type(r).__name__ for r in load_resources(text)] == ["Dataset"]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"nope\.yaml: cannot read"):
        load_resources_file(str(tmp_path / "nope.yaml"))
