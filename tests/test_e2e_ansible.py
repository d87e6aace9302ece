"""End to end with Ansible over real SSH: the ha example's nodes, each with Debian's sshd in its own
lab network namespace (host keys made for the test and pinned in the spec, a client key made for
the test), brought from empty to installed by the playbook `hardway ansible` wrote, run with the
real ansible-playbook from the lab's workstation namespace; then the lab starts every node from what
the playbook installed (`lab.up --network-only`, the playbook, `lab.up --installed`: as
tests/test_e2e_deploy.py does with deploy), and the lab's checks run on that cluster. Then: a re-run
changes nothing, and `hardway deploy` reads the playbook's records as its own (every node up to
date); the `api` play waits for /readyz through the load balancer and applies the manifests with
super-admin once (deploy's record on the first controller, which deploy then honours).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest
import yaml

from hardway.deploy.plan import manifests_digest
from hardway.fsutil import extract_bundle
from hardway.plan import WORKSTATION
from helpers import REPO, need_fabric
from sshd_helpers import ssh_lab
from test_ansible import _recap, ansible_env, hardway, need_ansible
from test_e2e_lab import (Env,
                          test_every_worker_is_ready_and_cluster_dns_is_where_the_spec_says as workers_ready_and_dns,
                          test_readyz_through_the_endpoint_and_on_each_controller as readyz_everywhere)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Played(Env):
    """The lab's Env, plus the playbook run from the workstation namespace."""

    spec_file = None
    tmp = None
    first = None

    def in_workstation(self, argv: list[str], env: dict | None = None, timeout: float = 900) -> subprocess.CompletedProcess:
        ws = self.lab.network.member(WORKSTATION).netns
        return subprocess.run(["ip", "netns", "exec", ws, *argv], cwd=self.out, capture_output=True, text=True,
                              timeout=timeout, env=env)

    def playbook(self, *args: str) -> subprocess.CompletedProcess:
        d = self.out / "ansible"
        return self.in_workstation([need_ansible()["ansible-playbook"], "-i", str(d / "inventory.yml"),
                                    str(d / "playbook.yml"), "-f", "10",
                                    "-e", f"hardway_root={self.lab.labdir}/{{node}}/root", *args],
                                   env=ansible_env(self.tmp))

    def deploy(self, *args: str) -> subprocess.CompletedProcess:
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1",
               "PATH": f"{self.lab.bin_dir}:{os.environ.get('PATH', '')}"}
        return self.in_workstation([sys.executable, "-m", "hardway", "deploy", "--spec", str(self.spec_file),
                                    "--out", str(self.out), "--remote-root", f"{self.lab.labdir}/{{node}}/root", *args],
                                   env=env, timeout=300)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    need_ansible()
    out = tmp_path_factory.mktemp("ansible-ha")
    with ssh_lab(out, "ha") as s:
        hardway("ansible", "--spec", str(s.spec_file), "--out", str(out), cwd=out)
        env = Played("ha", s.raw, s.cluster, s.lab, out, out / "workers")
        env.spec_file, env.tmp = s.spec_file, out
        env.first = env.playbook()
        print(env.first.stdout[-6000:], env.first.stderr[-2000:])
        assert env.first.returncode == 0, env.first.stdout[-6000:] + env.first.stderr[-2000:]
        env.lab = s.start_installed()
        for node in [n["name"] for n in s.raw["nodes"] if "worker" in n["roles"]]:
            extract_bundle(out / "bundles" / f"{node}.tar.gz", env.workers)
        yield env


def test_the_playbook_brought_every_node_from_empty_to_installed_in_order(env: Played):
    out = env.first.stdout
    names = [n["name"] for n in env.raw["nodes"]]
    for name in names:
        recap = _recap(out, name)
        assert recap["changed"] > 0 and recap["failed"] == 0 and recap["unreachable"] == 0, (name, recap)
        digest = hashlib.sha256((env.out / "bundles" / f"{name}.tar.gz").read_bytes()).hexdigest()
        assert (env.lab.root(name) / "var/lib/hardway/deploy/installed").read_text() == f"{digest} {name} installed\n"
        assert "Accepted publickey for root" in (env.out / "sshd" / name / "sshd.log").read_text()
    # the README's order: every install.sh of a phase ran before any of the next phase
    installs = [m.group(1) for m in re.finditer(
        r"TASK \[Run the bundle's install.sh\][^\n]*\n((?:(?:changed|ok): \[[^\]]+\]\n)+)", out)]
    phases = [sorted(re.findall(r"\[([^\]]+)\]", block)) for block in installs]
    assert phases == [["lb"], ["controller-0", "controller-1", "controller-2"], ["node-0", "node-1", "node-2"]], installs
    # a staging root starts nothing, so no /readyz wait and no manifests (hardway_api=true asks for them)
    assert re.search(r"TASK \[Wait until the API answers[^\n]*\nskipping: \[controller-0\]", out), out[-6000:]


def test_the_cluster_started_from_what_the_playbook_installed_passes_the_lab_checks(env: Played):
    workers_ready_and_dns(env)
    readyz_everywhere(env)


def test_a_rerun_changes_nothing_and_deploy_reads_the_same_records(env: Played):
    again = env.playbook()
    assert again.returncode == 0, again.stdout[-4000:]
    for n in env.raw["nodes"]:
        assert _recap(again.stdout, n["name"])["changed"] == 0, again.stdout[-4000:]
    need_fabric()
    deployed = env.deploy()
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    rows = [line.split() for line in deployed.stdout.splitlines()]
    for n in env.raw["nodes"]:
        row = next((r for r in rows if r and r[0] == n["name"]), None)
        assert row is not None and " ".join(row[1:5]) == "up to date skipped", deployed.stdout


def test_the_api_play_waits_for_readyz_and_applies_the_manifests_once(env: Played):
    ws = env.lab.workstation
    kubectl = str(env.lab.bin_dir / "kubectl")

    def as_(kubeconfig: str, *args: str) -> subprocess.CompletedProcess:
        return env.lab.run(WORKSTATION, ["kubectl", f"--kubeconfig={ws / kubeconfig}", "--request-timeout=20s", *args])

    docs = yaml.safe_load_all((ws / "manifests/01-rbac-cluster-admins.yaml").read_text())
    binding = next(d["metadata"]["name"] for d in docs if d and d["kind"] == "ClusterRoleBinding")
    assert as_("super-admin.kubeconfig", "delete", "clusterrolebinding", binding).returncode == 0
    denied = as_("admin.kubeconfig", "get", "namespaces")
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()

    args = ("--tags", "api", "-e", "hardway_api=true", "-e", f"hardway_kubectl={kubectl}")
    first = env.playbook(*args)
    assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-2000:]
    out = first.stdout
    assert re.search(r"TASK \[Wait until the API answers /readyz through https://10\.240\.0\.10:6443[^\n]*\n"
                     r"ok: \[controller-0 -> localhost\]", out), out[-4000:]
    applied = re.findall(r"^(ok|changed): \[controller-0 -> localhost\] => \(item=([^)]*)\)", out, re.M)
    manifests = sorted(f"manifests/{p.name}" for p in (ws / "manifests").iterdir())
    assert [m for _, m in applied] == manifests and ("changed", "manifests/01-rbac-cluster-admins.yaml") in applied
    allowed = as_("admin.kubeconfig", "get", "namespaces")
    assert allowed.returncode == 0 and "kube-system" in allowed.stdout, allowed.stderr
    # the record is deploy's, on the first controller: the same digest deploy computes
    record = env.lab.root("controller-0") / "var/lib/hardway/deploy/manifests"
    files = [(str(p.relative_to(ws)), p.read_bytes()) for p in sorted((ws / "manifests").rglob("*")) if p.is_file()]
    assert record.read_text() == manifests_digest(files) + "\n"

    # once: a second run (even with the binding deleted again) applies nothing
    assert as_("super-admin.kubeconfig", "delete", "clusterrolebinding", binding).returncode == 0
    second = env.playbook(*args)
    assert second.returncode == 0 and _recap(second.stdout, "controller-0")["changed"] == 0, second.stdout[-4000:]
    assert re.search(r"TASK \[Apply the bootstrap manifests with super-admin\][^\n]*\nskipping", second.stdout)
    assert as_("admin.kubeconfig", "get", "namespaces").returncode != 0
    need_fabric()
    deployed = env.deploy("--manifests")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    assert re.search(r"^\s*manifests\s+apply \(super-admin\)\s+skipped: up to date", deployed.stdout, re.M), deployed.stdout
    # put the binding back for whoever uses this lab next
    assert as_("super-admin.kubeconfig", "apply", "-f", str(ws / "manifests/01-rbac-cluster-admins.yaml")).returncode == 0
