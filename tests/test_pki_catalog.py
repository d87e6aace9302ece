"""The certificate catalog (pki/catalog.yaml) loads, and a broken one fails at load naming the entry
and what is allowed, as kubeadm's certificate list does for an unknown signer."""

from __future__ import annotations

import copy

import pytest
import yaml

from hardway.pki.catalog import CatalogError, default_path, desired_leaves, load_catalog, parse_catalog
from hardway.resources import data_dir

RAW = yaml.safe_load(default_path().read_text())


def broken(edit) -> str:
    data = copy.deepcopy(RAW)
    edit(data)
    with pytest.raises(CatalogError) as e:
        parse_catalog(data, "catalog.yaml")
    return str(e.value)


def leaf(data, name):
    return next(c for c in data["certificates"] if c["name"] == name)


def test_the_shipped_catalog_loads_from_the_data_dir():
    assert default_path().parent == data_dir("pki")
    catalog = load_catalog(default_path())
    assert catalog.authority_names == ("ca", "etcd-ca", "front-proxy-ca")
    assert len(catalog.leaves) == 14
    assert catalog.install_dir == "/etc/kubernetes/pki"


def test_unknown_signer_fails_at_load():
    msg = broken(lambda d: leaf(d, "etcd-peer").update(signer="etcd"))
    assert "etcd-peer" in msg and "unknown signer 'etcd'" in msg and "ca, etcd-ca, front-proxy-ca" in msg


def test_unknown_san_rule_fails_at_load():
    msg = broken(lambda d: leaf(d, "kube-apiserver")["sans"].append("pod-ip"))
    assert "kube-apiserver" in msg and "unknown SAN rule 'pod-ip'" in msg and "node-address" in msg


def test_node_rule_in_a_cluster_wide_entry_fails():
    msg = broken(lambda d: leaf(d, "admin").update(sans=["node-name"]))
    assert "needs a node" in msg


@pytest.mark.parametrize("edit, words", [
    (lambda d: leaf(d, "kubelet-client").update(cn="system:node:{name}"), "unknown placeholder {name}"),
    (lambda d: leaf(d, "admin").update(cn="admin-{node}"), "per cluster"),
    (lambda d: leaf(d, "admin").update(usages=["codeSigning"]), "unknown value 'codeSigning'"),
    (lambda d: leaf(d, "admin").update(per="node"), "per 'node' is unknown"),
    (lambda d: leaf(d, "admin").update(deliver=["loadbalancer"]), "unknown value 'loadbalancer'"),
    (lambda d: leaf(d, "admin").update(colour="blue"), "unknown key 'colour'"),
    (lambda d: leaf(d, "admin").update(name="super-admin"), "used twice"),
    (lambda d: leaf(d, "kube-apiserver").pop("sans"), "serverAuth certificate needs SANs"),
    (lambda d: d["secrets"].update(tokens={"deliver": []}), "unknown secret 'tokens'"),
    (lambda d: d.update(install_dir="/etc/pki"), "unknown key 'install_dir'"),  # units/plan.yaml's paths.pki says it
])
def test_other_catalog_mistakes(edit, words):
    assert words in broken(edit)


def test_every_problem_is_reported_at_once():
    def edit(d):
        leaf(d, "admin").update(signer="nope")
        leaf(d, "kube-proxy")["sans"] = ["bogus"]
    msg = broken(edit)
    assert "admin" in msg and "kube-proxy" in msg


def test_desired_leaves_follow_the_cluster(tmp_path):
    from hardway import spec
    from hardway.resources import example_path
    cluster = spec.load(example_path("ha"))
    found = [(d.entry, d.node) for d in desired_leaves(cluster, load_catalog(default_path()))]
    assert len(found) == len(set(found)) == 3 * 3 + 2 * 3 + 9
    assert ("kubelet-serving", "lb") not in found and ("kube-apiserver", "node-0") not in found
