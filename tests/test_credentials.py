"""`hardway credentials`: the admin credentials merged into a kubeconfig that already holds other
clusters (a token user, certificates referenced by file), read back by the real kubectl. Everything
that is not ours must come out exactly as it went in (compared as parsed YAML)."""

from __future__ import annotations

import base64
import copy
import os
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from hardway import binaries
from helpers import missing

EXAMPLE = "kubernetes-the-hard-way"  # examples/kthw.yaml's name
OTHERS = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [
        {"name": "prod", "cluster": {"server": "https://prod.example:6443", "certificate-authority": "/etc/prod/ca.crt"}},
        {"name": "kind-dev", "cluster": {"server": "https://127.0.0.1:40001", "insecure-skip-tls-verify": True}},
    ],
    "users": [
        {"name": "admin", "user": {"client-certificate": "/etc/prod/admin.crt", "client-key": "/etc/prod/admin.key"}},
        {"name": "dev-token", "user": {"token": "abc.def"}},
    ],
    "contexts": [
        {"name": "prod", "context": {"cluster": "prod", "user": "admin", "namespace": "apps"}},
        {"name": "kind-dev", "context": {"cluster": "kind-dev", "user": "dev-token"}},
    ],
    "current-context": "prod",
    "preferences": {"colors": True},
}


def kubectl() -> str:
    version = binaries.pinned_version()
    found = binaries.find_binaries(version).get("kubectl")
    if not found:
        missing(f"kubectl {version} is not built in {binaries.cache_dir(version)}", "python -m hardway.binaries")
    return str(found)


def not_ours(config: dict) -> dict:
    """The config without the entries hardway owns."""
    rest = copy.deepcopy(config)
    for section, name in (("clusters", EXAMPLE), ("users", f"{EXAMPLE}-admin"), ("contexts", EXAMPLE)):
        rest[section] = [e for e in rest.get(section, []) if e["name"] != name]
    return rest


@pytest.fixture(scope="module")
def folder(tmp_path_factory, run_cli, example_path) -> Path:
    root = tmp_path_factory.mktemp("credentials")
    (root / "cluster.yaml").write_bytes(example_path("kthw").read_bytes())
    result = run_cli(["pki"], cwd=root)
    assert result.returncode == 0, result.stderr
    return root


def test_merge_keeps_everything_else_and_kubectl_reads_it(folder, run_cli, tmp_path):
    config = tmp_path / "config"
    config.write_text(yaml.safe_dump(OTHERS, sort_keys=False))
    config.chmod(0o640)
    result = run_cli(["credentials", "--kubeconfig", str(config)], cwd=folder)
    assert result.returncode == 0, result.stderr
    assert f"context {EXAMPLE} added in {config}:" in result.stdout, result.stdout
    merged = yaml.safe_load(config.read_text())
    assert not_ours(merged) == OTHERS, "other clusters, users, contexts and keys are untouched"
    assert merged["current-context"] == "prod", "not made current without --set-current"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640, "an existing file keeps its mode"

    env = dict(os.environ, KUBECONFIG=str(config))
    names = subprocess.run([kubectl(), "config", "get-contexts", "-o", "name"], env=env, check=True,
                           capture_output=True, text=True).stdout.split()
    assert sorted(names) == sorted(["prod", "kind-dev", EXAMPLE])
    view = yaml.safe_load(subprocess.run([kubectl(), "config", "view", "--minify", "--raw", "--context", EXAMPLE],
                                         env=env, check=True, capture_output=True, text=True).stdout)
    [cluster], [user] = view["clusters"], view["users"]
    store = folder / "out" / "pki"
    assert cluster["cluster"]["server"] == "https://server.kubernetes.local:6443"
    assert base64.b64decode(cluster["cluster"]["certificate-authority-data"]) == (store / "ca.crt").read_bytes()
    assert user["name"] == f"{EXAMPLE}-admin"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == (store / "admin.crt").read_bytes()

    result = run_cli(["credentials", "--kubeconfig", str(config), "--set-current"], cwd=folder)
    assert result.returncode == 0, result.stderr
    assert subprocess.run([kubectl(), "config", "current-context"], env=env, check=True, capture_output=True,
                          text=True).stdout.strip() == EXAMPLE
    assert not_ours(yaml.safe_load(config.read_text())) == dict(OTHERS, **{"current-context": EXAMPLE})


def test_a_rerun_after_renew_updates_in_place(folder, run_cli, tmp_path):
    config = tmp_path / "config"
    config.write_text(yaml.safe_dump(OTHERS, sort_keys=False))
    assert run_cli(["credentials", "--kubeconfig", str(config)], cwd=folder).returncode == 0
    before = config.read_bytes()
    again = run_cli(["credentials", "--kubeconfig", str(config)], cwd=folder)
    assert "unchanged" in again.stdout and config.read_bytes() == before
    assert run_cli(["renew", "--entry", "admin", "--rotate-keys"], cwd=folder).returncode == 0
    result = run_cli(["credentials", "--kubeconfig", str(config)], cwd=folder)
    assert result.returncode == 0 and "updated" in result.stdout, result.stdout + result.stderr
    merged = yaml.safe_load(config.read_text())
    assert not_ours(merged) == OTHERS
    [user] = [u for u in merged["users"] if u["name"] == f"{EXAMPLE}-admin"]
    store = folder / "out" / "pki"
    assert base64.b64decode(user["user"]["client-certificate-data"]) == (store / "admin.crt").read_bytes()
    assert base64.b64decode(user["user"]["client-key-data"]) == (store / "admin.key").read_bytes()
    assert [c["name"] for c in merged["contexts"]] == ["prod", "kind-dev", EXAMPLE], "replaced, not duplicated"


def test_a_missing_kubeconfig_is_created_0600_from_kubeconfig_env(folder, run_cli, tmp_path):
    config = tmp_path / "home" / ".kube" / "config"
    result = run_cli(["credentials"], cwd=folder, extra_env={"KUBECONFIG": f"{config}{os.pathsep}{tmp_path}/other"})
    assert result.returncode == 0, result.stderr
    assert f"added in {config} (a new file, mode 0600)" in result.stdout, result.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    out = subprocess.run([kubectl(), "config", "get-contexts", "-o", "name"], check=True, capture_output=True,
                         text=True, env=dict(os.environ, KUBECONFIG=str(config))).stdout.split()
    assert out == [EXAMPLE]


def test_a_file_that_is_not_a_kubeconfig_is_left_alone(folder, run_cli, tmp_path):
    config = tmp_path / "config"
    config.write_text("- a list\n- not a kubeconfig\n")
    result = run_cli(["credentials", "--kubeconfig", str(config)], cwd=folder)
    assert result.returncode == 1 and "not a kubeconfig" in result.stderr and "Traceback" not in result.stderr
    assert config.read_text() == "- a list\n- not a kubeconfig\n"


def test_without_a_store_it_says_to_run_pki(run_cli, example_path, tmp_path):
    (tmp_path / "cluster.yaml").write_bytes(example_path("kthw").read_bytes())
    result = run_cli(["credentials", "--kubeconfig", str(tmp_path / "k")], cwd=tmp_path)
    assert result.returncode == 1 and "hardway pki" in result.stderr, result.stderr
    assert not (tmp_path / "k").exists()
