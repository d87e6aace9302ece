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
    (lambda d: leaf(d, "admin").update(per="node"), "per: unknown value 'node'; allowed: cluster, controller, worker"),
    (lambda d: leaf(d, "admin").update(deliver=["loadbalancer"]), "unknown value 'loadbalancer'"),
    (lambda d: leaf(d, "admin").update(colour="blue"), "unknown key 'colour'"),
    (lambda d: leaf(d, "admin").update(name="super-admin"), "used twice"),
    (lambda d: leaf(d, "kube-apiserver").pop("sans"), "serverAuth certificate needs SANs"),
    (lambda d: d["secrets"].update(tokens={"deliver": []}),
     "secrets.tokens: unknown key 'tokens'; allowed here: service-account, encryption"),
    (lambda d: d.update(install_dir="/etc/pki"), "unknown key 'install_dir'"),  # units/plan.yaml's paths.pki says it
])
def test_other_catalog_mistakes(edit, words):
    assert words in broken(edit)


def _edited_copy(tmp_path, old: str, new: str):
    text = default_path().read_text()
    assert text.count(old) >= 1, old
    copy_ = tmp_path / "catalog.yaml"
    copy_.write_text(text.replace(old, new, 1))
    line = text[:text.index(old)].count("\n") + 1
    with pytest.raises(CatalogError) as e:
        load_catalog(copy_)
    return str(e.value).splitlines()[1:], copy_, line


def test_a_typo_in_the_file_gets_the_line_the_path_and_a_guess(tmp_path):
    problems, copy_, line = _edited_copy(tmp_path, "    signer: etcd-ca", "    signr: etcd-ca")
    typo = next(p for p in problems if "signr" in p)
    assert typo.startswith(f"{copy_}: line {line}: certificates[")
    assert ".signr: unknown key 'signr'; did you mean 'signer'? allowed here: name, per, signer," in typo
    assert any(p.endswith(".signer: missing, and required") for p in problems)  # on the entry's first line


def test_a_wrong_value_in_the_file_gets_the_allowed_values(tmp_path):
    problems, copy_, line = _edited_copy(tmp_path, "deliver: [controller]", "deliver: [controler]")
    assert problems == [f"{copy_}: line {line}: certificates[0].deliver[0]: unknown value 'controler'; "
                        "allowed: controller, worker, workstation"]
    problems, copy_, line = _edited_copy(tmp_path, "    per: controller", "    per: 3")
    assert problems[0].endswith(".per: unknown value 3, which YAML reads as a number; allowed: cluster, controller, worker")
    assert problems[0].startswith(f"{copy_}: line {line}: ")


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
