"""Which field labels each resource accepts (edgecache/k8s/selectors.py), as the Kubernetes API
server decides them: the conversion registered for the kind, or the default one (metadata.name
and metadata.namespace), and for custom resources their CRD's ``selectableFields``. The cases
are those read in the Kubernetes sources (pkg/apis/*/v1/conversion.go); the messages are the
server's."""

from __future__ import annotations

from typing import Any

import pytest

from edgecache.k8s.selectors import (
    CustomResourceFields,
    FieldLabelsUnknownError,
    FieldSelector,
    SelectorError,
    check_field_labels,
    selector_predicate,
)

DEFAULT_REFUSAL = '"{}" is not a known field selector: only "metadata.name", "metadata.namespace"'
OWN_REFUSAL = "field label not supported: {}"


@pytest.mark.parametrize(
    ("group", "resource", "path", "refusal"),
    [
        ("", "pods", "spec.nodeName", None),
        ("", "pods", "status.nominatedNodeName", None),
        ("", "pods", "spec.nodeSelector", OWN_REFUSAL),
        ("", "pods", "spec.host", None),  # the old v1 name of spec.nodeName
        ("", "nodes", "spec.unschedulable", None),
        ("", "nodes", "metadata.namespace", OWN_REFUSAL),  # cluster-scoped, own conversion
        ("", "namespaces", "status.phase", None),
        ("", "secrets", "type", None),
        ("", "services", "spec.type", None),
        ("", "services", "spec.ports", OWN_REFUSAL),
        ("", "replicationcontrollers", "status.replicas", None),
        ("", "events", "involvedObject.uid", None),
        ("", "events", "message", OWN_REFUSAL),
        ("", "configmaps", "metadata.name", None),
        ("", "configmaps", "data.key", DEFAULT_REFUSAL),
        ("apps", "replicasets", "status.replicas", DEFAULT_REFUSAL),  # kubernetes#135136
        ("apps", "deployments", "spec.replicas", DEFAULT_REFUSAL),
        ("batch", "jobs", "status.successful", None),
        ("batch", "cronjobs", "status.successful", DEFAULT_REFUSAL),
        ("certificates.k8s.io", "certificatesigningrequests", "spec.signerName", None),
        ("resource.k8s.io", "resourceslices", "spec.driver", None),
        ("coordination.k8s.io", "leases", "spec.holderIdentity", DEFAULT_REFUSAL),
        ("events.k8s.io", "events", "regarding.kind", None),  # not pinned down: unchecked
    ],
)
def test_built_in_field_labels(group: str, resource: str, path: str, refusal: str | None) -> None:
    selector = FieldSelector.parse(f"{path}=x")
    if refusal is None:
        check_field_labels(selector, group=group, resource=resource)
    else:
        with pytest.raises(SelectorError) as caught:
            check_field_labels(selector, group=group, resource=resource)
        assert str(caught.value) == refusal.format(path)


def test_custom_resources_take_their_crd_versions_selectable_fields() -> None:
    crd = {
        "spec": {
            "scope": "Namespaced",
            "versions": [
                {"name": "v1", "selectableFields": [{"jsonPath": ".spec.tier"}]},
                {"name": "v2", "selectableFields": [{"jsonPath": ".spec.owner"}]},
                {"name": "v0", "served": False},
            ],
        }
    }
    v1 = CustomResourceFields.from_crd(crd, "v1")
    assert v1 == CustomResourceFields(frozenset({"spec.tier"}), namespaced=True)
    assert CustomResourceFields.from_crd(crd, "v0") is None  # not served
    assert CustomResourceFields.from_crd(crd, "v9") is None
    for path in ("metadata.name", "metadata.namespace", "spec.tier"):
        check_field_labels(
            FieldSelector.parse(f"{path}=x"),
            group="data.edgecache.io",
            resource="datasets",
            custom=v1,
        )
    # Per version, as the server's conversion is registered per group/version.
    with pytest.raises(SelectorError) as caught:
        check_field_labels(
            FieldSelector.parse("spec.owner=x"),
            group="data.edgecache.io",
            resource="datasets",
            custom=v1,
        )
    assert str(caught.value) == OWN_REFUSAL.format("spec.owner")
    # A cluster-scoped custom resource has no metadata.namespace (the server's crConverter).
    cluster = CustomResourceFields(frozenset(), namespaced=False)
    with pytest.raises(SelectorError, match=r"field label not supported: metadata\.namespace"):
        check_field_labels(
            FieldSelector.parse("metadata.namespace=x"),
            group="data.edgecache.io",
            resource="pools",
            custom=cluster,
        )


def test_without_the_crd_only_metadata_labels_are_known() -> None:
    check_field_labels(
        FieldSelector.parse("metadata.name=x,metadata.namespace=y"),
        group="data.edgecache.io",
        resource="datasets",
    )
    with pytest.raises(FieldLabelsUnknownError, match=r"spec\.owner"):
        check_field_labels(
            FieldSelector.parse("spec.owner=x"), group="data.edgecache.io", resource="datasets"
        )
    # A CRD in a k8s.io group (the Gateway API, snapshots) is not a built-in resource.
    with pytest.raises(FieldLabelsUnknownError):
        check_field_labels(
            FieldSelector.parse("spec.x=1"), group="gateway.networking.k8s.io", resource="gateways"
        )


def test_without_the_crd_or_any_object_the_scope_and_so_metadata_namespace_are_unknown() -> None:
    unknown_scope = CustomResourceFields(None, namespaced=None)
    with pytest.raises(FieldLabelsUnknownError, match=r"metadata\.namespace"):
        check_field_labels(
            FieldSelector.parse("metadata.namespace=x"),
            group="data.edgecache.io",
            resource="pools",
            custom=unknown_scope,
        )
    check_field_labels(
        FieldSelector.parse("metadata.name=x"),
        group="data.edgecache.io",
        resource="pools",
        custom=unknown_scope,
    )


def _matches(group: str, resource: str, selector: str, obj: dict[str, Any]) -> bool:
    fields = check_field_labels(FieldSelector.parse(selector), group=group, resource=resource)
    return selector_predicate(None, fields)(obj)


def test_values_are_the_servers_not_the_json_path() -> None:
    pod = {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"podIP": "10.0.0.1"}}
    assert _matches("", "pods", "spec.host=n1", pod)  # converted to spec.nodeName
    assert not _matches("", "pods", "spec.host=n2", pod)
    assert _matches("", "pods", "spec.host!=n2", pod)
    assert _matches("", "pods", "spec.hostNetwork=false", pod)  # omitted: Go's false
    assert _matches("", "pods", "spec.hostNetwork=true", {"spec": {"hostNetwork": True}})
    assert _matches("", "pods", "status.podIPs=", pod)  # accepted, never in the field set
    assert _matches("", "nodes", "spec.unschedulable=false", {"metadata": {"name": "n"}})
    assert _matches("batch", "jobs", "status.successful=2", {"status": {"succeeded": 2}})
    assert _matches("batch", "jobs", "status.successful=0", {"status": {}})
    assert _matches("", "replicationcontrollers", "status.replicas=0", {"status": {}})
    event = {"reportingComponent": "kubelet", "source": {}}
    assert _matches("", "events", "source=kubelet", event)  # falls back to the reporter
    assert _matches("", "events", "source=sched", {"source": {"component": "sched"}})
