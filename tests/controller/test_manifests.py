"""manifests/ and the Dockerfile: they install with real kubectl, every YAML validates, custom
resources pass their CRD's schema, and the manifests agree with the image (command, flags,
ports, probes, user) and with the metrics the dashboard plots."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import run_kubectl
from openapi_schema_validator import OAS30Validator

from edgecache.metrics import REGISTRY

from .conftest import MANIFESTS, ROOT, crd_documents, seed_demo

JSONObject = dict[str, Any]
EDGECACHE = str(Path(sys.executable).with_name("edgecache"))
ALL_YAML = sorted(p for p in MANIFESTS.rglob("*.yaml") if p.name != "kustomization.yaml")


def documents(path: Path) -> list[JSONObject]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def rendered(directory: Path = MANIFESTS) -> list[JSONObject]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(directory)], capture_output=True, text=True, check=True
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def containers(docs: list[JSONObject]) -> list[tuple[str, JSONObject, JSONObject]]:
    """(workload name, pod spec, container) for every container of every workload."""
    found = []
    for doc in docs:
        spec = doc.get("spec") or {}
        pod = (spec.get("template") or {}).get("spec") if "template" in spec else None
        if doc["kind"] == "Pod":
            pod = spec
        for container in (pod or {}).get("containers") or []:
            found.append((doc["metadata"]["name"], pod, container))
    return found


def schemas() -> dict[str, JSONObject]:
    return {
        crd["spec"]["names"]["kind"]: crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for crd in crd_documents()
    }


@pytest.fixture
def apiserver(cluster: KubeAPIServer) -> KubeAPIServer:
    """The cluster fixture minus our CRDs (kubectl installs them here), plus the Prometheus
    Operator's CRDs so the monitoring manifests can be checked too."""
    for crd in crd_documents():
        cluster.delete(
            "apiextensions.k8s.io/v1", "CustomResourceDefinition", crd["metadata"]["name"]
        )
    for kind in ("ServiceMonitor", "PodMonitor"):
        cluster.create(objects.crd("monitoring.coreos.com", kind))
    return cluster


def test_kubectl_apply_k_installs_everything(apiserver: KubeAPIServer) -> None:
    result = run_kubectl(apiserver.url, "apply", "-k", str(MANIFESTS))
    created = set(re.findall(r"^(\S+) created$", result.stdout, re.M))
    expected = {f"{d['kind'].lower()}" for d in rendered()}
    kinds = {name.split("/")[0].split(".")[0] for name in created}
    assert expected <= kinds, (expected - kinds, result.stdout)
    for crd in ("datasets", "edgecacheruntimes", "dataloads", "cachereports"):
        run_kubectl(
            apiserver.url,
            "wait",
            "--for=condition=established",
            f"crd/{crd}.data.edgecache.io",
            "--timeout=10s",
        )
    # The examples go in with kubectl's strict field validation, as a user applies them.
    run_kubectl(apiserver.url, "apply", "-f", str(MANIFESTS / "examples"))
    out = run_kubectl(apiserver.url, "get", "datasets,edgecacheruntimes,dataloads", "-o", "name")
    assert set(out.stdout.split()) == {
        "dataset.data.edgecache.io/images",
        "edgecacheruntime.data.edgecache.io/images",
        "dataload.data.edgecache.io/images-warmup",
    }
    # Applying again changes nothing.
    again = run_kubectl(apiserver.url, "apply", "-k", str(MANIFESTS))
    assert "created" not in again.stdout


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_every_manifest_passes_a_client_dry_run(apiserver: KubeAPIServer, path: Path) -> None:
    run_kubectl(apiserver.url, "apply", "-k", str(MANIFESTS))
    run_kubectl(apiserver.url, "apply", "--dry-run=client", "-f", str(path))


def test_custom_resources_validate_against_the_crd_schemas() -> None:
    """A real OpenAPI v3 validator, independent of the test server's own checks."""
    by_kind = schemas()
    checked = 0
    for path in ALL_YAML:
        for doc in documents(path):
            if doc.get("apiVersion") == "data.edgecache.io/v1alpha1":
                OAS30Validator(by_kind[doc["kind"]]).validate(doc)
                checked += 1
    assert checked >= 3
    bad_dataset = {"spec": {"mounts": [{"mountPoint": "no-scheme"}]}}
    assert not OAS30Validator(by_kind["Dataset"]).is_valid(bad_dataset)
    bad_quota = {"spec": {"tieredstore": {"levels": [{"mediumtype": "SSD", "quota": "10GG"}]}}}
    assert not OAS30Validator(by_kind["EdgeCacheRuntime"]).is_valid(bad_quota)
    assert OAS30Validator(by_kind["EdgeCacheRuntime"]).is_valid(
        {"spec": {"tieredstore": {"levels": [{"mediumtype": "SSD", "quota": "1.5GiB"}]}}}
    )


@pytest.mark.parametrize(
    ("quota", "ok"),
    [
        ("10Gi", True),
        ("512MiB", True),
        ("1.5GiB", True),
        ("100", True),
        ("4 MiB", True),
        ("10GG", False),
        ("ten", False),
        ("-1Gi", False),
        ("1e3", False),
        ("10Pi", False),
    ],
)
def test_the_quota_pattern_accepts_exactly_what_the_model_parses(quota: str, ok: bool) -> None:
    from edgecache.config import parse_size
    from edgecache.errors import ConfigError

    pattern = schemas()["EdgeCacheRuntime"]["properties"]["spec"]["properties"]["tieredstore"][
        "properties"
    ]["levels"]["items"]["properties"]["quota"]["pattern"]
    try:
        parse_size(quota)
        parsed = True
    except ConfigError:
        parsed = False
    assert (re.search(pattern, quota) is not None) == parsed == ok


def test_the_example_is_the_seed_demo_with_only_apiversion_and_kind_changed() -> None:
    path = seed_demo()
    if path is None:
        pytest.skip("shared/reference is not beside this checkout")
    original = path.read_text().replace("data.fluid.io/v1alpha1", "data.edgecache.io/v1alpha1")
    original = original.replace("AlluxioRuntime", "EdgeCacheRuntime")
    assert documents(MANIFESTS / "examples/openyurt-fluid-demo.yaml") == [
        d for d in yaml.safe_load_all(original) if d
    ]


def dockerfile() -> tuple[str, list[str], set[int], str]:
    text = (ROOT / "Dockerfile").read_text()
    image = re.search(r"docker build -t (\S+) \.", text)
    entrypoint = re.search(r"^ENTRYPOINT (\[.*\])$", text, re.M)
    expose = re.search(r"^EXPOSE (.+)$", text, re.M)
    user = re.search(r"^USER (\S+)$", text, re.M)
    assert image and entrypoint and expose and user
    ports = {int(p) for p in expose.group(1).split()}
    return image.group(1), json.loads(entrypoint.group(1)), ports, user.group(1)


def _flag_port(args: list[str], flag: str) -> int | None:
    for arg in args:
        if arg.startswith(flag + "="):
            return int(arg.rsplit(":", 1)[1])
    return None


def test_manifests_and_dockerfile_agree() -> None:
    image, entrypoint, exposed, user = dockerfile()
    version = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.M)
    assert version and image.endswith(":" + version.group(1))
    docs = rendered() + documents(MANIFESTS / "hub/static-pod.yaml")
    ours = [(w, p, c) for w, p, c in containers(docs) if c["image"].startswith("edgecache/")]
    assert {w for w, _, _ in ours} == {"edgecache-controller", "edgecache-agent", "edgecache-hub"}
    commands = subprocess.run(
        [EDGECACHE, "--help"], capture_output=True, text=True, check=True
    ).stdout
    for workload, _pod, container in ours:
        assert container["image"] == image, workload
        command, args = container["command"], container.get("args") or []
        assert command[: len(entrypoint)] == entrypoint, workload
        subcommand = command[len(entrypoint)]
        for port in container.get("ports") or []:
            assert port["containerPort"] in exposed, (workload, port)
        health = _flag_port(args, "--health-listen")
        for probe in ("livenessProbe", "readinessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] == health, (workload, probe)
        assert re.search(rf"^\s+{subcommand}\b", commands, re.M), (workload, subcommand)
        help_text = subprocess.run(
            [EDGECACHE, subcommand, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for arg in args:
            flag = arg.split("=", 1)[0]
            assert flag in help_text, (workload, flag)
    controller = next(c for w, _, c in ours if w == "edgecache-controller")
    pod = next(p for w, p, _ in ours if w == "edgecache-controller")
    assert str(pod["securityContext"]["runAsUser"]) == user.split(":")[0]
    assert controller["securityContext"]["readOnlyRootFilesystem"] is True
    agent = next(c for w, _, c in ours if w == "edgecache-agent")
    assert agent["securityContext"]["privileged"] is True  # CSI bind mounts


def test_the_dashboard_plots_only_metrics_that_exist() -> None:
    dashboard = json.loads((MANIFESTS / "monitoring/grafana-dashboard.json").read_text())
    exported = {m.name for m in REGISTRY.collect()}
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"\b(edgecache_[a-z_]+)", target["expr"]))
    assert used
    for name in used:
        assert name.removesuffix("_total") in exported, name
    rendered_monitoring = rendered(MANIFESTS / "monitoring")
    config_map = next(d for d in rendered_monitoring if d["kind"] == "ConfigMap")
    assert json.loads(config_map["data"]["grafana-dashboard.json"]) == dashboard
