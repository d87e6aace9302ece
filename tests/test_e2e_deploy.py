"""End to end over real SSH: the ha example's nodes, each with Debian's sshd in its own lab network
namespace (host keys made for the test and pinned in the spec, a client key made for the test),
brought from empty to installed by `hardway deploy` run from the lab's workstation namespace; then
the lab starts every node from what deploy installed (`lab.up --network-only`, deploy, `lab.up
--installed`: docs/deploy.md), and the end-to-end checks of tests/test_e2e_lab.py run on that
cluster. Then: a re-run skips every node, `--manifests` waits for /readyz through the load balancer
and applies the workstation manifests once, and after a new SAN deploy touches exactly the nodes
`plan` named. One lab boot for the module. (Failures — wrong host key, refused login, a node down
mid-run — are proved without a cluster, against the same sshd, in tests/test_deploy.py.)
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import pytest
import yaml

from hardway.fsutil import extract_bundle
from hardway.plan import WORKSTATION
from helpers import REPO, need_fabric
from sshd_helpers import ssh_lab
from test_e2e_lab import (Env, run_web,
                          test_a_deployment_runs_one_pod_per_worker_in_each_workers_pod_range as one_pod_per_worker,
                          test_every_worker_is_ready_and_cluster_dns_is_where_the_spec_says as workers_ready_and_dns,
                          test_readyz_through_the_endpoint_and_on_each_controller as readyz_everywhere)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


class Deployed(Env):
    """The lab's Env, plus the spec file deploy reads and a way to run hardway in the workstation."""

    spec_file = None

    def hardway(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        ws = self.lab.network.member(WORKSTATION).netns
        env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1", "COLUMNS": "200",
               "NO_COLOR": "1", "PATH": f"{self.lab.bin_dir}:{os.environ.get('PATH', '')}"}
        return subprocess.run(["ip", "netns", "exec", ws, sys.executable, "-m", "hardway", *args],
                              cwd=self.out, capture_output=True, text=True, timeout=timeout, env=env)

    def deploy(self, *args: str) -> subprocess.CompletedProcess:
        return self.hardway("deploy", "--spec", str(self.spec_file), "--out", str(self.out),
                            "--remote-root", f"{self.lab.labdir}/{{node}}/root", *args)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    need_fabric()
    out = tmp_path_factory.mktemp("deploy-ha")
    with ssh_lab(out, "ha") as s:
        env = Deployed("ha", s.raw, s.cluster, s.lab, out, out / "workers")
        env.spec_file = s.spec_file
        first = env.deploy()
        print(first.stdout, first.stderr)
        env.first = first
        assert first.returncode == 0, first.stdout + first.stderr
        env.lab = s.start_installed()
        for node in [n["name"] for n in s.raw["nodes"] if "worker" in n["roles"]]:
            extract_bundle(out / "bundles" / f"{node}.tar.gz", env.workers)
        yield env


def test_deploy_brought_every_node_from_empty_to_installed(env: Deployed):
    got = rows_of(env.first.stdout)
    assert set(got) == {n["name"] for n in env.raw["nodes"]}
    assert all(action == "upload+install" and result.startswith("ok: ") for action, result in got.values()), got
    # the order of the README: the load balancer, then the controllers, then the workers
    order = [line.split(":")[0] for line in env.first.stderr.splitlines() if ": upload+install: " in line]
    phases = ["loadbalancer" if n == "lb" else "controller" if n.startswith("controller") else "worker" for n in order]
    assert phases == sorted(phases, key=["loadbalancer", "controller", "worker"].index), order
    for n in env.raw["nodes"]:
        digest = hashlib.sha256((env.out / "bundles" / f"{n['name']}.tar.gz").read_bytes()).hexdigest()
        installed = env.lab.root(n["name"]) / "var/lib/hardway/deploy/installed"
        assert installed.read_text() == f"{digest} {n['name']} installed\n"
    # the logins were key logins over each node's own sshd
    for n in env.raw["nodes"]:
        log = (env.out / "sshd" / n["name"] / "sshd.log").read_text()
        assert "Accepted publickey for root" in log


def rows_of(stdout: str) -> dict[str, tuple[str, str]]:
    names = {"lb", "controller-0", "controller-1", "controller-2", "node-0", "node-1", "node-2", "manifests"}
    found = {}
    for line in stdout.splitlines():
        words = line.split()
        if words and words[0] in names:
            rest = line.split(None, 1)[1].rsplit(None, 1)[0]
            for action in ("upload+install", "install", "start", "up to date", "connect", "not attempted",
                           "wait for /readyz", "apply (super-admin)"):
                if rest.startswith(action + " "):
                    found[words[0]] = (action, rest[len(action):].strip())
                    break
    return found


def test_the_cluster_started_from_what_deploy_installed_passes_the_lab_checks(env: Deployed):
    workers_ready_and_dns(env)
    readyz_everywhere(env)
    one_pod_per_worker(env, run_web(env))


def test_a_rerun_skips_every_node_and_the_manifests_go_once(env: Deployed):
    again = env.deploy()
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows_of(again.stdout) == {n["name"]: ("up to date", "skipped") for n in env.raw["nodes"]}
    # the manifests step: /readyz through the load balancer, then kubectl apply with super-admin, once
    applied = env.deploy("--manifests")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert rows_of(applied.stdout)["manifests"][1].startswith("ok: ")
    assert f"waiting for {env.cluster.api_url}/readyz" in applied.stderr
    once = env.deploy("--manifests")
    assert once.returncode == 0 and rows_of(once.stdout)["manifests"] == ("apply (super-admin)", "skipped: up to date")


def test_after_a_new_san_deploy_touches_exactly_the_nodes_plan_named(env: Deployed):
    raw = yaml.safe_load(env.spec_file.read_text())
    raw["apiServer"]["extraSANs"] = raw["apiServer"].get("extraSANs", []) + ["api.deploy.example.com"]
    env.spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    plan = env.hardway("plan", "--json", "--spec", str(env.spec_file), "--out", str(env.out))
    named = json.loads(plan.stdout)["deploy"]["nodes"]
    assert sorted(named) == ["controller-0", "controller-1", "controller-2"]
    assert env.hardway("bundle", "--spec", str(env.spec_file), "--out", str(env.out)).returncode == 0
    run = env.deploy()
    assert run.returncode == 0, run.stdout + run.stderr
    touched = sorted(n for n, (action, _) in rows_of(run.stdout).items() if action != "up to date")
    assert touched == sorted(named)
    cert = env.lab.root("controller-0") / "etc/kubernetes/pki/kube-apiserver.crt"
    assert "DNS:api.deploy.example.com" in subprocess.run(
        ["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(cert)], capture_output=True, text=True).stdout
