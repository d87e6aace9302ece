"""Every rendered file parses as what it claims to be, with the parser its reader uses (or one
of the same format): YAML, JSON, TOML, sysctl and modules-load lines, shell."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib

import pytest
import yaml

from hardway.render import iter_node_plans
from render_helpers import cluster, materials, need

MANIFEST_KINDS = {
    "/manifests/00-rbac-kubelet-api.yaml": ["ClusterRoleBinding"],
    "/manifests/01-rbac-cluster-admins.yaml": ["ClusterRoleBinding"],
    "/manifests/10-coredns.yaml": ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ConfigMap", "Deployment", "Service"],
}


def _check(path: str, data: bytes) -> str:
    """Parse one file by its kind; return the kind."""
    body = data.decode("utf-8")
    if path.endswith((".yaml", ".kubeconfig")):
        docs = [d for d in yaml.safe_load_all(body) if d is not None]
        assert docs and all(isinstance(d, dict) for d in docs), path
        if path != "/etc/crictl.yaml":  # crictl's own format has no kind
            assert all(d.get("kind") and d.get("apiVersion") for d in docs), path
        return "yaml"
    if path.startswith("/etc/cni/net.d/"):
        doc = json.loads(body)
        assert doc["cniVersion"] and doc["name"], path
        return "json"
    if path.endswith(".toml"):
        tomllib.loads(body)
        return "toml"
    if path.startswith("/etc/sysctl.d/"):
        for line in body.splitlines():
            assert not line.strip() or line.startswith("#") or re.fullmatch(r"[\w.-]+ = \S+", line), line
        return "sysctl"
    if path.startswith("/etc/modules-load.d/"):
        for line in body.splitlines():
            assert not line.strip() or line.startswith("#") or re.fullmatch(r"\w+", line), line
        return "modules"
    if path.endswith(".sh"):
        result = subprocess.run([need("sh", "apt-get install dash"), "-n"], input=body, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return "sh"
    return "other"


@pytest.mark.parametrize("example", ["kthw", "ha", "six"])
def test_every_rendered_file_parses(example):
    kinds = set()
    for plan in iter_node_plans(cluster(example), materials(example)):
        for f in plan.files:
            if f.path.startswith("/etc/kubernetes/pki/") or f.path.endswith((".crt", ".key", ".pub")):
                continue
            assert f.data.endswith(b"\n") and not f.data.startswith((b"\n", b" ")), f"{plan.node}:{f.path}"
            assert b"\n\n\n" not in f.data, f"{plan.node}:{f.path}: stray blank lines from a template"
            kinds.add(_check(f.path, f.data))
            if f.path in MANIFEST_KINDS:
                docs = [d for d in yaml.safe_load_all(f.data) if d]
                assert [d["kind"] for d in docs] == MANIFEST_KINDS[f.path]
                assert all(d["apiVersion"] in ("v1", "apps/v1", "rbac.authorization.k8s.io/v1") for d in docs)
    assert {"yaml", "json", "toml", "sysctl", "modules", "sh"} <= kinds


def test_a_template_missing_a_value_is_an_error_not_an_empty_string():
    from hardway.errors import HardwayError
    from hardway.render import render_template
    with pytest.raises(HardwayError, match=r"units/config/kube-scheduler.yaml.j2: 'v' is undefined"):
        render_template("config/kube-scheduler.yaml.j2", {"paths": {"etc": "/etc/kubernetes"}})
    with pytest.raises(HardwayError, match=r"units/config/nope.j2 is missing"):
        render_template("config/nope.j2", {})
