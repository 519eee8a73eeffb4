"""Each bad spec gets its own Ready=False condition naming the field; none stops the controller,
and fixing the cause heals the Dataset without a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from edgecache_testservers.kubeapi import KubeAPIServer
from edgecache_testservers.kubeapi._status import APIError

from edgecache.controller import Controller
from edgecache.dataset import SpecError, parse_resource
from edgecache.metrics import CONTROLLER_RECONCILES

from .conftest import condition, dataset, eventually, get, runtime

JSONObject = dict[str, Any]


def oss_dataset(name: str, secret: str, key: str) -> JSONObject:
    obj = dataset(name, "oss://bucket/images/")
    obj["spec"]["mounts"][0]["options"] = {"fs.oss.endpoint": "http://127.0.0.1:9"}
    obj["spec"]["mounts"][0]["encryptOptions"] = [
        {
            "name": "fs.oss.accessKeyId",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "id"}},
        },
        {
            "name": "fs.oss.accessKeySecret",
            "valueFrom": {"secretKeyRef": {"name": secret, "key": key}},
        },
    ]
    return obj


def no_affinity(name: str, data: str) -> JSONObject:
    obj = dataset(name, data)
    del obj["spec"]["nodeAffinity"]
    return obj


def empty_term(name: str, data: str) -> JSONObject:
    obj = dataset(name, data)
    obj["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"] = [{}]
    return obj


# (name, dataset builder, runtime or None for the default, reason, exact message)
CASES: list[tuple[str, Any, JSONObject | None, str, str]] = [
    (
        "scheme",
        lambda n, d: dataset(n, "foo://bucket/x/"),
        None,
        "UnknownProtocol",
        "Dataset scheme: spec.mounts[0].mountPoint: unknown protocol foo://: no edgecache backend "
        "and no fsspec implementation is registered for it (installed edgecache backends: ",
    ),
    (
        "nosecret",
        lambda n, d: oss_dataset(n, "absent", "secret"),
        None,
        "SecretNotFound",
        "Dataset nosecret: spec.mounts[0].encryptOptions[0].valueFrom.secretKeyRef.name: Secret "
        "default/absent (for fs.oss.accessKeyId) does not exist",
    ),
    (
        "nokey",
        lambda n, d: oss_dataset(n, "creds", "wrong-key"),
        None,
        "SecretKeyNotFound",
        "Dataset nokey: spec.mounts[0].encryptOptions[1].valueFrom.secretKeyRef.key: Secret "
        "default/creds has no key 'wrong-key' (for fs.oss.accessKeySecret); its keys: id, secret",
    ),
    (
        "noaffinity",
        no_affinity,
        None,
        "NoAffinity",
        "Dataset noaffinity: spec.nodeAffinity.required.nodeSelectorTerms: required; pin the "
        "Dataset to a nodepool, e.g. matchExpressions [{key: apps.openyurt.io/nodepool, operator: "
        "In, values: [my-pool]}]",
    ),
    (
        "emptyterm",
        empty_term,
        None,
        "InvalidAffinity",
        "Dataset emptyterm: spec.nodeAffinity.required.nodeSelectorTerms[0]: no matchExpressions "
        "(an empty term matches no node)",
    ),
    (
        "nopool",
        lambda n, d: dataset(n, d, pool="pool-z"),
        None,
        "NoMatchingNodes",
        "Dataset nopool: spec.nodeAffinity.required.nodeSelectorTerms: no node matches "
        "(apps.openyurt.io/nodepool In [pool-z]); nodepools with nodes: pool-a (2), pool-b (1)",
    ),
    (
        "notiers",
        lambda n, d: dataset(n, d),
        {"spec": {}},
        "InvalidRuntime",
        "EdgeCacheRuntime notiers: spec.tieredstore.levels: required; give at least one cache "
        "tier, e.g. {mediumtype: SSD, path: /var/lib/edgecache/cache, quota: 10Gi}",
    ),
    (
        "noruntime",
        lambda n, d: dataset(n, d),
        {},
        "RuntimeNotFound",
        "Dataset noruntime: no EdgeCacheRuntime noruntime in namespace default (a Dataset is "
        "cached by the runtime of the same name)",
    ),
]


@pytest.fixture
def data_dir(tmp_path: Path) -> str:
    (tmp_path / "data").mkdir()
    return f"file://{tmp_path / 'data'}"


async def test_each_bad_spec_gets_its_condition_and_the_good_one_still_binds(
    cluster: KubeAPIServer, controller: Controller, data_dir: str
) -> None:
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "default"},
            "stringData": {"id": "AK", "secret": "SK"},
        }
    )
    errors_before = CONTROLLER_RECONCILES.labels("Dataset", "error")._value.get()
    for name, build, rt, _, _ in CASES:
        cluster.create(build(name, data_dir))
        if rt == {}:
            continue
        body = runtime(name)
        if rt is not None:
            body["spec"] = rt["spec"]
        cluster.create(body)
    cluster.create(dataset("good", data_dir))
    cluster.create(runtime("good"))
    for name, _, _, reason, message in CASES:
        ready = await eventually(lambda n=name: condition(get(cluster, "Dataset", n)), what=name)
        assert (ready["status"], ready["reason"]) == ("False", reason), name
        assert ready["message"].startswith(message), (name, ready["message"])
        expected_phase = "NotBound" if reason == "RuntimeNotFound" else "Failed"
        assert get(cluster, "Dataset", name)["status"]["phase"] == expected_phase
    await eventually(
        lambda: get(cluster, "Dataset", "good").get("status", {}).get("phase") == "Bound"
    )
    bad_runtime = get(cluster, "EdgeCacheRuntime", "notiers")
    assert condition(bad_runtime)["reason"] == "InvalidRuntime"  # type: ignore[index]
    assert condition(get(cluster, "EdgeCacheRuntime", "good"))["status"] == "True"  # type: ignore[index]
    # No volume for any bad Dataset; no reconcile ended in an error (they are verdicts).
    assert {
        pv["metadata"]["labels"]["data.edgecache.io/dataset"]
        for pv in cluster.list_objects("v1", "PersistentVolume")
    } == {"good"}
    assert CONTROLLER_RECONCILES.labels("Dataset", "error")._value.get() == errors_before


async def test_fixing_the_cause_heals_the_dataset(
    cluster: KubeAPIServer, controller: Controller, data_dir: str
) -> None:
    cluster.create(oss_dataset("later", "late-secret", "secret"))
    cluster.create(runtime("later"))
    await eventually(
        lambda: (
            (condition(get(cluster, "Dataset", "later")) or {}).get("reason") == "SecretNotFound"
        )
    )
    # Secrets are not watched: the controller looks again after recheck_seconds.
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "late-secret", "namespace": "default"},
            "stringData": {"id": "AK", "secret": "SK"},
        }
    )
    await eventually(
        lambda: get(cluster, "Dataset", "later").get("status", {}).get("phase") == "Bound"
    )
    # A pool that gains its first node (a watched change) heals at once too.
    cluster.create(dataset("waiting", data_dir, pool="pool-new"))
    cluster.create(runtime("waiting"))
    await eventually(
        lambda: (
            (condition(get(cluster, "Dataset", "waiting")) or {}).get("reason") == "NoMatchingNodes"
        )
    )
    cluster.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n-new", "labels": {"apps.openyurt.io/nodepool": "pool-new"}},
        }
    )
    await eventually(
        lambda: get(cluster, "Dataset", "waiting").get("status", {}).get("phase") == "Bound"
    )


@pytest.mark.parametrize(
    ("body", "admission", "model_message"),
    [
        (
            {"mounts": [{"name": "x"}]},
            "spec.mounts[0].mountPoint: Required value",
            "Dataset q: spec.mounts[0].mountPoint: required; the URL of the data",
        ),
        (
            {"mounts": [{"mountPoint": "file:///d", "path": "relative"}]},
            "spec.mounts[0].path",
            "Dataset q: spec.mounts[0].path: 'relative' must be absolute inside the dataset",
        ),
        (
            {"mounts": [{"mountPoint": "file:///d"}], "accessModes": ["ReadAlways"]},
            "spec.accessModes[0]: Unsupported value",
            "Dataset q: spec.accessModes[0]: 'ReadAlways' is not a Kubernetes access mode",
        ),
    ],
)
def test_malformed_datasets_are_refused_at_admission_naming_the_field(
    cluster: KubeAPIServer, body: JSONObject, admission: str, model_message: str
) -> None:
    """The CRD schema refuses them (422 naming the field); the model the controller validates
    with (edgecache.dataset) names the same field, for objects that got past an older schema."""
    ds = dataset("q", "file:///d")
    ds["spec"] = body
    with pytest.raises(APIError) as refused:
        cluster.create(ds)
    assert refused.value.code == 422 and admission in str(refused.value)
    with pytest.raises(SpecError) as invalid:
        parse_resource(ds)
    assert str(invalid.value).startswith(model_message)


async def test_bad_quota_is_refused_at_admission_and_reported_if_stored_anyway(
    cluster: KubeAPIServer, controller: Controller, data_dir: str
) -> None:
    rt = runtime("q", quota="10GG")
    with pytest.raises(APIError) as refused:
        cluster.create(rt)
    assert refused.value.code == 422
    assert "spec.tieredstore.levels[0].quota" in str(refused.value)
    cluster.create(dataset("q", data_dir))
    cluster.put(rt)  # stored as given, as under an older CRD without the pattern
    ready = await eventually(lambda: condition(get(cluster, "Dataset", "q")))
    assert (ready["status"], ready["reason"]) == ("False", "InvalidRuntime")
    assert ready["message"].startswith(
        "EdgeCacheRuntime q: spec.tieredstore.levels[0].quota: '10GG' is not a size"
    ), ready["message"]
