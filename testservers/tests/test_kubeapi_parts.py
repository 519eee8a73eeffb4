"""The pieces of the Kubernetes API test server that need no HTTP, and its standalone command."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from edgecache_testservers.kubeapi import APIError, KubeAPIServer, objects
from edgecache_testservers.kubeapi._patch import json_patch, merge_patch
from edgecache_testservers.kubeapi._protobuf import decode_object
from edgecache_testservers.kubeapi._strategic import strategic_merge
from edgecache_testservers.kubeapi._table import human_age, json_path

from edgecache.k8s.selectors import FieldSelector, LabelSelector, SelectorError


def _labelled(**labels: str) -> dict[str, object]:
    return {"metadata": {"labels": labels}}


def test_label_selector_grammar() -> None:
    selector = LabelSelector.parse("env in (prod,staging),tier!=cache,!legacy,app")
    assert selector.matches(_labelled(env="prod", app="x"))
    assert not selector.matches(_labelled(env="dev", app="x"))
    assert not selector.matches(_labelled(env="prod", app="x", legacy="1"))
    assert not selector.matches(_labelled(env="prod"))
    assert LabelSelector.parse("").matches(_labelled())
    assert LabelSelector.parse("apps.openyurt.io/nodepool=hangzhou").matches(
        _labelled(**{"apps.openyurt.io/nodepool": "hangzhou"})
    )
    with pytest.raises(SelectorError):
        LabelSelector.parse("in (a)")


def test_field_selector_paths_and_escapes() -> None:
    obj = {"metadata": {"name": "a,b"}, "spec": {"replicas": 3, "paused": False}}
    assert FieldSelector.parse(r"metadata.name=a\,b").matches(obj)
    assert FieldSelector.parse("spec.replicas=3,spec.paused=false").matches(obj)
    assert FieldSelector.parse("spec.missing=").matches(obj)
    assert FieldSelector.parse("spec.replicas!=3").matches(obj) is False
    with pytest.raises(SelectorError):
        FieldSelector.parse("nonsense")


def test_strategic_merge_uses_the_api_merge_keys() -> None:
    current = {
        "metadata": {"finalizers": ["a"]},
        "containers": [
            {"name": "a", "image": "1", "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "b", "image": "1"},
        ],
        "args": ["x", "y"],
    }
    patch = {
        "metadata": {"finalizers": ["b"]},
        "$setElementOrder/containers": [{"name": "c"}, {"name": "a"}],
        "containers": [
            {"name": "a", "image": "2", "ports": [{"containerPort": 443}]},
            {"name": "b", "$patch": "delete"},
            {"name": "c", "image": "3"},
        ],
        "args": ["z"],
    }
    assert strategic_merge(current, patch) == {
        "metadata": {"finalizers": ["a", "b"]},  # a set: merged, not replaced
        "containers": [
            {"name": "c", "image": "3"},
            {
                "name": "a",
                "image": "2",
                "ports": [{"containerPort": 80, "name": "http"}, {"containerPort": 443}],
            },
        ],
        "args": ["z"],  # no merge key: replaced
    }
    removal = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}
    assert strategic_merge(current, removal)["metadata"] == {"finalizers": []}
    replaced = strategic_merge(current, {"metadata": {"$patch": "replace", "labels": {"x": "1"}}})
    assert replaced["metadata"] == {"labels": {"x": "1"}}
    assert merge_patch(current, {"containers": [{"name": "c"}]})["containers"] == [{"name": "c"}]


def test_json_patch_operations() -> None:
    doc = {"a": {"b": [1, 2]}}
    ops = [
        {"op": "add", "path": "/a/b/-", "value": 3},
        {"op": "test", "path": "/a/b/0", "value": 1},
        {"op": "copy", "from": "/a/b", "path": "/c"},
        {"op": "remove", "path": "/a/b/0"},
    ]
    assert json_patch(doc, ops) == {"a": {"b": [2, 3]}, "c": [1, 2, 3]}
    with pytest.raises(APIError):
        json_patch(doc, [{"op": "test", "path": "/a/b/0", "value": 9}])


def test_protobuf_envelope_must_be_present() -> None:
    with pytest.raises(APIError) as raised:
        decode_object(b'{"kind": "Pod"}')
    assert raised.value.code == 415


def test_age_and_json_path_for_tables() -> None:
    now = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)
    stamp = (now - timedelta(minutes=3, seconds=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert human_age(stamp, now=now) == "3m5s"
    assert human_age((now - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ"), now=now) == "3d"
    assert json_path({"status": {"items": [{"n": 1}]}}, ".status.items[0].n") == 1
    assert json_path({}, ".status.phase") is None


def test_dry_run_persists_nothing() -> None:
    with KubeAPIServer() as api:
        before = api.resource_version
        request = urllib.request.Request(
            f"{api.url}/api/v1/namespaces/default/configmaps?dryRun=All",
            data=json.dumps(objects.config_map("dry")).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request) as response:
            assert response.status == 201
        assert api.resource_version == before
        assert api.list_objects("v1", "ConfigMap", "default") == []


def test_standalone_command_serves_until_terminated(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yaml"
    crd = objects.crd("apps.openyurt.io", "NodePool", namespaced=False)
    pool = {
        "apiVersion": "apps.openyurt.io/v1",
        "kind": "NodePool",
        "metadata": {"name": "hangzhou"},
    }
    seed.write_text(yaml.safe_dump_all([crd, pool, objects.node("edge-1")]))
    command = [
        sys.executable,
        "-m",
        "edgecache_testservers.kubeapi",
        "--port",
        "0",
        "--seed-pods",
        "3",
        "--seed",
        str(seed),
        "--tls-dir",
        str(tmp_path / "pki"),
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            url = process.stdout.readline().split()[-1]
            ca = process.stdout.readline().split()[-1]
            assert url.startswith("https://127.0.0.1:") and ca == str(tmp_path / "pki" / "ca.crt")
            context = ssl.create_default_context(cafile=ca)
            with urllib.request.urlopen(
                f"{url}/api/v1/namespaces/default/pods", context=context
            ) as r:
                assert len(json.load(r)["items"]) == 3
            with urllib.request.urlopen(
                f"{url}/apis/apps.openyurt.io/v1/nodepools", context=context
            ) as r:
                assert [p["metadata"]["name"] for p in json.load(r)["items"]] == ["hangzhou"]
        finally:
            process.terminate()
            assert process.wait(timeout=10) == 0
