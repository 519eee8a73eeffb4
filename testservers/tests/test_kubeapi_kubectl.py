"""The Kubernetes API test server driven by the real kubectl (v1.32) on this machine.

kubectl discovers the server through aggregated discovery, prints server-side tables, applies with
client-side (strategic merge) patches and server-side apply, and watches with ``get -w``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from edgecache_testservers.kubeapi import KubeAPIServer, objects
from edgecache_testservers.kubeapi.fixtures import kubectl_path, run_kubectl

pytestmark = pytest.mark.skipif(kubectl_path() is None, reason="kubectl is not installed")

MANIFEST = """\
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  labels: {tier: edge}
data: {mode: online}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: "nginx:1", args: [serve]}
      - {name: sidecar, image: "busybox:1"}
"""

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: datasets.data.edgecache.io}
spec:
  group: data.edgecache.io
  scope: Namespaced
  names: {plural: datasets, singular: dataset, kind: Dataset, shortNames: [dset]}
  versions:
  - name: v1alpha1
    served: true
    storage: true
    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}
    subresources: {status: {}}
    additionalPrinterColumns:
    - {name: Phase, type: string, jsonPath: .status.phase}
    - {name: Age, type: date, jsonPath: .metadata.creationTimestamp}
"""

DATASET = """\
apiVersion: data.edgecache.io/v1alpha1
kind: Dataset
metadata: {name: imagenet, labels: {pool: hangzhou}}
spec:
  mounts: [{name: train, mountPoint: "s3://bucket/imagenet"}]
"""


def test_get_prints_server_side_tables(kube_api: KubeAPIServer) -> None:
    kube_api.seed(
        [objects.pod("web-1", labels={"app": "web"}), objects.pod("db-1", labels={"app": "db"})]
    )
    lines = run_kubectl(kube_api.url, "get", "pods").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [line.split()[:3] for line in lines[1:]] == [
        ["db-1", "0/1", "Running"],
        ["web-1", "0/1", "Running"],
    ]
    assert "kube-system" in run_kubectl(kube_api.url, "get", "namespaces").stdout


def test_get_json_yaml_and_selectors(kube_api: KubeAPIServer) -> None:
    kube_api.seed(objects.pods(6, nodes=3))
    kube_api.put(objects.pod("other", labels={"app": "other"}, node_name="node-1"))
    listed = json.loads(run_kubectl(kube_api.url, "get", "pods", "-o", "json").stdout)
    assert len(listed["items"]) == 7
    one = yaml.safe_load(run_kubectl(kube_api.url, "get", "pod", "pod-00001", "-o", "yaml").stdout)
    assert one["spec"]["nodeName"] == "node-1" and one["metadata"]["resourceVersion"]
    by_label = run_kubectl(
        kube_api.url, "get", "pods", "-l", "app=pod,app notin (x)", "-o", "name"
    ).stdout
    assert by_label.split() == [f"pod/pod-{i:05d}" for i in range(6)]
    by_field = run_kubectl(
        kube_api.url, "get", "pods", "--field-selector", "spec.nodeName=node-1", "-o", "name"
    )
    assert by_field.stdout.split() == ["pod/other", "pod/pod-00001", "pod/pod-00004"]
    everywhere = run_kubectl(
        kube_api.url, "get", "pods", "-A", "--chunk-size", "2", "-o", "name"
    ).stdout
    assert len(everywhere.split()) == 7
    missing = run_kubectl(kube_api.url, "get", "pod", "nope", check=False)
    assert missing.returncode == 1 and 'pods "nope" not found' in missing.stderr


def test_apply_create_and_delete(kube_api: KubeAPIServer) -> None:
    url = kube_api.url
    created = run_kubectl(url, "apply", "--validate=false", "-f", "-", input_text=MANIFEST).stdout
    assert "configmap/settings created" in created and "deployment.apps/web created" in created
    again = run_kubectl(url, "apply", "--validate=false", "-f", "-", input_text=MANIFEST).stdout
    assert "configmap/settings unchanged" in again and "deployment.apps/web unchanged" in again
    changed = MANIFEST.replace("nginx:1", "nginx:2").replace("mode: online", "mode: offline")
    configured = run_kubectl(url, "apply", "--validate=false", "-f", "-", input_text=changed).stdout
    assert "deployment.apps/web configured" in configured
    deployment = kube_api.get("apps/v1", "Deployment", "web", "default")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert containers == [
        {"name": "web", "image": "nginx:2", "args": ["serve"]},
        {"name": "sidecar", "image": "busybox:1"},
    ]
    assert deployment["metadata"]["generation"] == 2
    assert kube_api.get("v1", "ConfigMap", "settings", "default")["data"] == {"mode": "offline"}
    server_side = run_kubectl(
        url, "apply", "--server-side", "--validate=false", "-f", "-", input_text=MANIFEST
    ).stdout
    assert "serverside-applied" in server_side
    made = yaml.safe_dump(objects.config_map("made", data={"a": "1"}))
    run_kubectl(url, "create", "--validate=false", "-f", "-", input_text=made)
    run_kubectl(url, "label", "configmap", "made", "x=y")
    assert kube_api.get("v1", "ConfigMap", "made", "default")["metadata"]["labels"] == {"x": "y"}
    run_kubectl(url, "delete", "configmap", "-l", "tier=edge")
    assert [c["metadata"]["name"] for c in kube_api.list_objects("v1", "ConfigMap", "default")] == [
        "made"
    ]
    assert (
        "deleted" in run_kubectl(url, "delete", "-f", "-", input_text=MANIFEST, check=False).stdout
    )


def test_crd_then_its_objects(kube_api: KubeAPIServer) -> None:
    url = kube_api.url
    run_kubectl(url, "create", "--validate=false", "-f", "-", input_text=CRD)
    run_kubectl(
        url,
        "wait",
        "--for",
        "condition=established",
        "crd/datasets.data.edgecache.io",
        "--timeout=10s",
    )
    run_kubectl(url, "apply", "--validate=false", "-f", "-", input_text=DATASET)
    lines = run_kubectl(url, "get", "datasets").stdout.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "AGE"] and lines[1].startswith("imagenet")
    assert run_kubectl(url, "get", "dset", "-l", "pool=hangzhou", "-o", "name").stdout.split() == [
        "dataset.data.edgecache.io/imagenet"
    ]
    resources = run_kubectl(url, "api-resources", "--api-group", "data.edgecache.io").stdout
    assert "datasets" in resources and "dset" in resources
    run_kubectl(url, "delete", "crd", "datasets.data.edgecache.io")
    gone = run_kubectl(url, "get", "datasets.data.edgecache.io", check=False)
    assert gone.returncode != 0


def test_apply_validates_against_served_openapi(kube_api: KubeAPIServer) -> None:
    url = kube_api.url
    assert "created" in run_kubectl(url, "apply", "-f", "-", input_text=MANIFEST).stdout
    assert (
        "configured"
        in run_kubectl(url, "apply", "-f", "-", input_text=MANIFEST.replace(":1", ":3")).stdout
    )
    run_kubectl(url, "apply", "-f", "-", input_text=CRD)
    assert "created" in run_kubectl(url, "apply", "-f", "-", input_text=DATASET).stdout
    validating = [r.query for r in kube_api.requests if r.method == "PATCH"]
    assert validating and all("fieldValidation=Strict" in q for q in validating)


def test_apply_refuses_fields_a_crd_schema_does_not_declare(kube_api: KubeAPIServer) -> None:
    schema = {
        "type": "object",
        "properties": {"spec": {"type": "object", "properties": {"mounts": {"type": "array"}}}},
    }
    strict = CRD.replace(
        "schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}",
        "schema: {openAPIV3Schema: " + json.dumps(schema) + "}",
    )
    run_kubectl(kube_api.url, "apply", "-f", "-", input_text=strict)
    typo = DATASET.replace("spec:\n", "spec:\n  mountz: []\n")
    refused = run_kubectl(kube_api.url, "apply", "-f", "-", input_text=typo, check=False)
    assert refused.returncode != 0 and 'unknown field "spec.mountz"' in refused.stderr
    assert "created" in run_kubectl(kube_api.url, "apply", "-f", "-", input_text=DATASET).stdout


GENERATORS = [
    ["create", "namespace", "edge"],
    ["create", "configmap", "cfg", "--from-literal=mode=offline"],
    ["create", "secret", "generic", "creds", "--from-literal=key=s3cret"],
    ["create", "serviceaccount", "agent"],
    ["create", "deployment", "web", "--image=nginx", "--port=80", "--replicas=0"],
    ["create", "deployment", "pair", "--image=nginx", "--image=redis"],
    ["create", "job", "once", "--image=busybox", "--", "echo", "hi"],
    ["create", "cronjob", "nightly", "--image=busybox", "--schedule=*/5 * * * *", "--", "date"],
    ["create", "service", "clusterip", "svc", "--tcp=80:8080"],
    ["create", "service", "nodeport", "node-svc", "--tcp=80:http"],
    ["create", "service", "externalname", "ext", "--external-name=example.com"],
    ["create", "role", "reader", "--verb=get,list", "--resource=pods,deployments.apps"],
    ["create", "clusterrole", "logs", "--verb=get", "--non-resource-url=/logs/*"],
    [
        "create",
        "rolebinding",
        "rb",
        "--role=reader",
        "--user=bob",
        "--serviceaccount=default:agent",
    ],
    ["create", "clusterrolebinding", "crb", "--clusterrole=logs", "--group=ops"],
]


def _without_empties(value: Any) -> Any:
    if isinstance(value, dict):
        pruned = {k: _without_empties(v) for k, v in value.items()}
        return {k: v for k, v in pruned.items() if v not in ({}, None, [], "")}
    if isinstance(value, list):
        return [_without_empties(v) for v in value]
    return value


def _contains(whole: Any, part: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(_contains(whole.get(k), v) for k, v in part.items())
    if isinstance(part, list):
        return (
            isinstance(whole, list) and len(whole) == len(part) and all(map(_contains, whole, part))
        )
    return bool(whole == part)


@pytest.mark.parametrize("command", GENERATORS, ids=lambda c: " ".join(c[1:3]))
def test_typed_create_commands_send_protobuf(kube_api: KubeAPIServer, command: list[str]) -> None:
    """kubectl's generators post protobuf; what is stored must be what kubectl meant to send."""
    cut = command.index("--") if "--" in command else len(command)
    rendering = [*command[:cut], "--dry-run=client", "-o", "json", *command[cut:]]
    meant = _without_empties(json.loads(run_kubectl(kube_api.url, *rendering).stdout))
    run_kubectl(kube_api.url, *command)
    namespace = (
        None if meant["kind"] in ("Namespace", "ClusterRole", "ClusterRoleBinding") else "default"
    )
    stored = kube_api.get(meant["apiVersion"], meant["kind"], meant["metadata"]["name"], namespace)
    assert _contains(stored, meant), (stored, meant)
    assert kube_api.requests[-1].status == 201


def test_generators_outside_the_decoded_kinds_are_refused(kube_api: KubeAPIServer) -> None:
    refused = run_kubectl(
        kube_api.url, "create", "priorityclass", "high", "--value=1000", check=False
    )
    assert refused.returncode != 0 and "send JSON" in refused.stderr


def test_scale_and_wide_output(kube_api: KubeAPIServer) -> None:
    url = kube_api.url
    run_kubectl(url, "apply", "-f", "-", input_text=MANIFEST)
    assert "scaled" in run_kubectl(url, "scale", "deployment", "web", "--replicas=4").stdout
    assert kube_api.get("apps/v1", "Deployment", "web", "default")["spec"]["replicas"] == 4
    kube_api.put(objects.pod("p", node_name="edge-node-1"))
    header, row = run_kubectl(url, "get", "pods", "-o", "wide").stdout.splitlines()
    assert header.split()[-2:] == ["IP", "NODE"] and row.split()[-1] == "edge-node-1"
    header, row = run_kubectl(url, "get", "deployments").stdout.splitlines()
    assert header.split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert row.split()[:2] == ["web", "0/4"]
    header, row = run_kubectl(url, "get", "configmaps", "settings").stdout.splitlines()
    assert header.split() == ["NAME", "DATA", "AGE"] and row.split()[:2] == ["settings", "1"]


def test_get_watch_streams_changes(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    kube_api.seed([objects.pod("first")])
    executable = kubectl_path()
    assert executable is not None
    connection = [
        "--server",
        kube_api.url,
        "--kubeconfig",
        "/dev/null",
        "--cache-dir",
        str(tmp_path),
    ]
    command = [executable, *connection, "get", "pods", "-w"]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().split()[0] == "NAME"
            assert process.stdout.readline().split()[0] == "first"
            kube_api.wait_for_watches(1)
            kube_api.put(objects.pod("second", phase="Succeeded"))
            assert process.stdout.readline().split()[:3] == ["second", "0/1", "Succeeded"]
        finally:
            process.terminate()
            process.wait(timeout=10)


def test_kubectl_credentials_over_tls() -> None:
    with KubeAPIServer(tokens={"t0ken": "operator"}, tls=True) as server:
        assert server.url.startswith("https://") and server.pki is not None
        ca = server.pki.ca_cert
        names = run_kubectl(
            server.url, "get", "ns", "-o", "name", token="t0ken", certificate_authority=ca
        )
        assert "namespace/default" in names.stdout.split()
        refused = run_kubectl(server.url, "get", "ns", certificate_authority=ca, check=False)
        assert refused.returncode != 0
        cert = server.pki.client_cert("system:node:edge-1", ("system:nodes",))
        run_kubectl(server.url, "get", "pods", certificate_authority=ca, client_certificate=cert)
        users = {
            (r.user, r.client_cert)
            for r in server.requests
            if r.status == 200 and r.path != "/version"
        }
        assert users == {("operator", ""), ("system:node:edge-1", "system:node:edge-1")}
        # kubectl 1.32's dispatcher asks /version first as "kubectl-dispatcher/v1.0".
        assert all(r.user_agent.startswith("kubectl") for r in server.requests)
