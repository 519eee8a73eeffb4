"""Which field labels each resource accepts (edgecache/k8s/selectors.py), as the Kubernetes API
server decides them: the conversion registered for the kind, or the default one (metadata.name
and metadata.namespace), and for custom resources their CRD's ``selectableFields``. The cases
are those read in the Kubernetes sources (pkg/apis/*/v1/conversion.go); the messages are the
server's."""

from __future__ import annotations

import pytest

from edgecache.k8s.selectors import FieldSelector, SelectorError, check_field_labels

DEFAULT_REFUSAL = '"{}" is not a known field selector: only "metadata.name", "metadata.namespace"'
OWN_REFUSAL = "field label not supported: {}"


@pytest.mark.parametrize(
    ("group", "resource", "path", "refusal"),
    [
        ("", "pods", "spec.nodeName", None),
        ("", "pods", "status.nominatedNodeName", None),
        ("", "pods", "spec.nodeSelector", OWN_REFUSAL),
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


def test_custom_resources_take_their_selectable_fields_when_known() -> None:
    declared = frozenset({"spec.tier"})
    for path in ("metadata.name", "metadata.namespace", "spec.tier"):
        check_field_labels(
            FieldSelector.parse(f"{path}=x"),
            group="data.edgecache.io",
            resource="datasets",
            selectable_fields=declared,
        )
    with pytest.raises(SelectorError, match=r"field label not supported: spec\.owner"):
        check_field_labels(
            FieldSelector.parse("spec.owner=x"),
            group="data.edgecache.io",
            resource="datasets",
            selectable_fields=declared,
        )
    # Not knowing the CRD (the hub offline), nothing is refused.
    check_field_labels(
        FieldSelector.parse("spec.owner=x"), group="data.edgecache.io", resource="datasets"
    )
