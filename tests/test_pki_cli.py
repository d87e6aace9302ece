"""The PKI tasks as a user runs them: `inv pki|plan|check|renew` in a subprocess. Bad input gives a
clear message, a non-zero exit, no traceback, and leaves every file as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO


def inv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "--search-root", str(REPO), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A directory with an ECDSA copy of the ha example and a reconciled store in ./out/pki."""
    d = tmp_path_factory.mktemp("cli")
    data = yaml.safe_load((REPO / "examples" / "ha.yaml").read_text())
    (d / "cluster.yaml").write_text(yaml.safe_dump(data))
    r = inv("pki", cwd=d)
    assert r.returncode == 0, r.stderr
    assert "29 created, 0 kept, 0 re-issued" in r.stdout
    assert "issuing certificates" not in r.stderr, "no progress bar when stderr is not a terminal"
    return d


def test_second_pki_run_keeps_everything(workdir):
    before = snapshot(workdir / "out" / "pki")
    r = inv("pki", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "0 created, 29 kept, 0 re-issued" in r.stdout
    assert snapshot(workdir / "out" / "pki") == before


def test_plan_on_a_fresh_directory_writes_nothing(tmp_path):
    (tmp_path / "cluster.yaml").write_text((REPO / "examples" / "kthw.yaml").read_text())
    r = inv("plan", "--out", "fresh", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert "pki: 21 to create, 0 to keep, 0 to re-issue" in r.stdout  # 3 CAs, 2 secrets, 3*1 + 2*2 + 9 leaves
    assert "kube-apiserver" in r.stdout
    assert not (tmp_path / "fresh").exists()


def test_check_json(workdir):
    r = inv("check", "--json", cwd=workdir)
    data = json.loads(r.stdout)
    pki = data["pki"]
    assert pki["ok"] is True and pki["problems"] == []
    rows = {(c["certificate"], c["node"]): c for c in pki["certificates"]}
    assert rows[("kube-apiserver", "controller-1")]["signer"] == "ca"
    assert rows[("etcd-peer", "controller-2")]["signer"] == "etcd-ca"
    assert rows[("admin", None)]["residual"] in ("364d", "365d")
    assert all(c["status"] == "ok" for c in pki["certificates"])


def test_tampered_ca_stops_pki_with_a_clear_message_and_changes_nothing(workdir, tmp_path):
    import shutil
    d = tmp_path / "w"
    shutil.copytree(workdir, d)
    store = d / "out" / "pki"
    (store / "ca.crt").write_bytes((store / "ca.crt").read_bytes()[:300])
    before = snapshot(store)
    r = inv("pki", cwd=d)
    assert r.returncode != 0
    assert "ca.crt" in r.stderr and "not a readable PEM certificate" in r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert snapshot(store) == before
    r = inv("check", "--json", cwd=d)
    assert r.returncode != 0
    assert json.loads(r.stdout)["pki"]["ok"] is False
    r = inv("plan", cwd=d)
    assert r.returncode != 0 and "error" in r.stdout
    r = inv("renew", cwd=d)
    assert r.returncode != 0 and "ca.crt" in r.stderr and "Traceback" not in r.stderr
    assert snapshot(store) == before


@pytest.mark.parametrize("args, words", [
    (["pki", "--import-ca", "rootca=a.pem,b.pem"], "unknown CA 'rootca'"),
    (["pki", "--import-ca", "ca=missing.pem,missing-key.pem"], "cannot read"),
    (["renew", "--entry", "front-proxy-ca"], "never renews a CA"),
    (["renew", "--node", "ghost"], "not a node"),
])
def test_bad_arguments(workdir, args, words):
    before = snapshot(workdir / "out" / "pki")
    r = inv(*args, cwd=workdir)
    assert r.returncode != 0
    assert words in r.stderr and "Traceback" not in r.stderr
    assert snapshot(workdir / "out" / "pki") == before


def test_renew_one_entry(workdir):
    before = snapshot(workdir / "out" / "pki")
    r = inv("renew", "--entry", "kube-scheduler", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "kube-scheduler" in r.stdout and "renewed (key kept)" in r.stdout
    after = snapshot(workdir / "out" / "pki")
    assert {k for k in before if before[k] != after[k]} == {"kube-scheduler.crt"}
