"""End to end: boot each example's control plane from its bundles in the lab, then check from the
outside (the lab's workstation namespace, or a controller's own namespace) that the cluster behaves
as its spec says.

Real programs only: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, HAProxy, kubectl
and etcdctl of the pinned version. Expected values come from the spec file itself (parsed here
with yaml/ipaddress), not from the code under test. One lab per example, up once per module
parameter and always taken down again, even when a test fails.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from hardway.fsutil import extract_bundle
from hardway import resources, spec
from hardway.lab import Lab, down, up
from hardway.lab import netns
from hardway.lab.probes import Probe
from hardway.lab.testing import need_binaries, need_haproxy, need_namespaces
from hardway.plan import WORKSTATION

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PKI = "/etc/kubernetes/pki"


@dataclass
class Env:
    name: str
    raw: dict  # the spec file, as YAML
    cluster: spec.Cluster
    lab: Lab
    out: Path
    workers: Path  # unpacked worker bundles

    @property
    def controllers(self) -> list[dict]:
        return [n for n in self.raw["nodes"] if "controller" in n["roles"]]

    @property
    def endpoint(self) -> str:
        api = self.raw.get("apiServer", {})
        return api.get("endpoint") or self.controllers[0]["address"]

    @property
    def port(self) -> int:
        return self.raw.get("apiServer", {}).get("port", 6443)

    def ws(self, name: str) -> str:
        return str(self.lab.workstation / name)

    def kubectl(self, *args: str, kubeconfig: str | None = None, node: str = WORKSTATION, timeout: float = 60):
        kc = kubeconfig or self.ws("super-admin.kubeconfig")
        return self.lab.run(node, ["kubectl", f"--kubeconfig={kc}", "--request-timeout=20s", *args], timeout=timeout)

    def worker_kubeconfig(self, node: str, name: str) -> str:
        return str(self.workers / node / "rootfs/etc/kubernetes" / name)

    def etcdctl(self, *args: str, controller: str | None = None, cert: str | None = "etcd-healthcheck-client",
                endpoints: list[str] | None = None, text: bool = True):
        """etcdctl from the workstation namespace with a controller's certificate files."""
        c = controller or self.controllers[0]["name"]
        creds = [f"--cacert={self.lab.on_host(c, f'{PKI}/etcd-ca.crt')}"]
        if cert:
            creds += [f"--cert={self.lab.on_host(c, f'{PKI}/{cert}.crt')}", f"--key={self.lab.on_host(c, f'{PKI}/{cert}.key')}"]
        eps = endpoints or [f"https://{n['address']}:2379" for n in self.controllers]
        return self.lab.run(WORKSTATION, ["etcdctl", f"--endpoints={','.join(eps)}", "--dial-timeout=3s",
                                          "--command-timeout=10s", *creds, *args], text=text)


def eventually(fn, timeout: float = 60, interval: float = 1.0):
    """Call fn until it returns without AssertionError, or re-raise after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(interval)


def ok(proc) -> str:
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr.strip()[-1500:]}"
    return proc.stdout


# The examples use secretbox; the ha lab runs aesgcm so a second provider is proved end to end.
OVERRIDES = {"kthw": {}, "ha": {"encryption": {"provider": "aesgcm"}}}


@pytest.fixture(scope="module", params=["kthw", "ha"])
def env(request, tmp_path_factory):
    name = request.param
    path = resources.example_path(name)
    raw = {**yaml.safe_load(path.read_text()), **OVERRIDES[name]}
    cluster = spec.loads(yaml.safe_dump(raw, sort_keys=False), source=str(path))
    need_namespaces()
    need_binaries(str(cluster.version))
    if cluster.loadbalancers:
        need_haproxy()
    out = tmp_path_factory.mktemp(f"lab-{name}")
    labdir = out / "lab"
    started = time.monotonic()
    try:
        lab = up(cluster, out, labdir=labdir, timeout=300, say=print)
        print(f"lab {name} up in {time.monotonic() - started:.1f}s")
        workers = out / "workers"
        for node in [n["name"] for n in raw["nodes"] if "worker" in n["roles"]]:
            extract_bundle(out / "bundles" / f"{node}.tar.gz", workers)
        yield Env(name, raw, cluster, lab, out, workers)
    finally:
        down(labdir)
        left = netns.existing_namespaces(netns.lab_prefix(labdir))
        assert left == [], f"namespaces left behind: {left}"


# ---------------------------------------------------------------- 1. etcd ----------------------

def test_etcd_members_peers_health_and_client_certificates(env: Env):
    members = json.loads(ok(env.etcdctl("member", "list", "-w", "json")))["members"]
    expected = {n["name"]: f"https://{n['address']}:2380" for n in env.controllers}
    assert {m["name"]: m["peerURLs"] for m in members} == {k: [v] for k, v in expected.items()}
    assert all(u.startswith("https://") for m in members for u in m["clientURLs"])

    health = json.loads(ok(env.etcdctl("endpoint", "health", "-w", "json")))
    assert {h["endpoint"] for h in health} == {f"https://{n['address']}:2379" for n in env.controllers}
    assert all(h["health"] for h in health), health

    refused = env.etcdctl("endpoint", "health", cert=None, endpoints=[f"https://{env.controllers[0]['address']}:2379"])
    assert refused.returncode != 0, "etcd answered a client without a certificate"
    # A client certificate of the Kubernetes CA is not one of etcd's: refused too.
    c = env.controllers[0]["name"]
    foreign = env.lab.run(WORKSTATION, [
        "etcdctl", f"--endpoints=https://{env.controllers[0]['address']}:2379", "--dial-timeout=3s", "--command-timeout=10s",
        f"--cacert={env.lab.on_host(c, f'{PKI}/etcd-ca.crt')}",
        f"--cert={env.lab.on_host(c, f'{PKI}/apiserver-kubelet-client.crt')}",
        f"--key={env.lab.on_host(c, f'{PKI}/apiserver-kubelet-client.key')}", "endpoint", "health"])
    assert foreign.returncode != 0, "etcd accepted a certificate signed by another CA"
    # etcd's own log says why it turned both away (the client's message depends on timing).
    ws = str(env.lab.network.member(WORKSTATION).address)
    rejected = [json.loads(line) for line in Path(env.lab.process(c, "etcd").log).read_text().splitlines()
                if line.startswith("{") and "rejected connection" in line]
    reasons = {r.get("error", "") for r in rejected if r.get("remote-addr", "").startswith(ws + ":")}
    assert any("didn't provide a certificate" in r for r in reasons), reasons
    assert any("signed by unknown authority" in r for r in reasons), reasons


# ---------------------------------------------------------------- 2. readyz --------------------

def test_readyz_through_the_endpoint_and_on_each_controller(env: Env):
    kc = env.ws("admin.kubeconfig")
    server = yaml.safe_load(Path(kc).read_text())["clusters"][0]["cluster"]["server"]
    assert server == f"https://{env.endpoint}:{env.port}"
    assert ok(env.kubectl("get", "--raw", "/readyz", kubeconfig=kc)).strip() == "ok"
    for n in env.controllers:
        direct = env.kubectl("get", "--raw", "/readyz", f"--server=https://{n['address']}:{env.port}", kubeconfig=kc)
        assert ok(direct).strip() == "ok", n["name"]
    # The helper the lab gives its users does the same from a shell.
    helper = subprocess.run(["sh", str(env.lab.labdir / "workstation.sh"), "kubectl", "get", "--raw", "/readyz"],
                            capture_output=True, text=True, timeout=60)
    assert helper.returncode == 0 and helper.stdout.strip() == "ok", helper.stderr


# ---------------------------------------------------------------- 3. identities ----------------

def _whoami(env: Env, kubeconfig: str, node: str = WORKSTATION) -> dict:
    info = json.loads(ok(env.kubectl("auth", "whoami", "-o", "json", kubeconfig=kubeconfig, node=node)))
    return info["status"]["userInfo"]


def test_every_kubeconfig_authenticates_as_its_identity(env: Env):
    expected = {  # kubeconfig -> (user, groups it must hold); from Kubernetes' own conventions
        ("workstation", env.ws("super-admin.kubeconfig")): ("super-admin", {"system:masters"}),
        ("workstation", env.ws("admin.kubeconfig")): ("admin", {"hardway:cluster-admins"}),
    }
    for c in env.controllers:
        expected[(c["name"], "/etc/kubernetes/kube-controller-manager.kubeconfig")] = ("system:kube-controller-manager", set())
        expected[(c["name"], "/etc/kubernetes/kube-scheduler.kubeconfig")] = ("system:kube-scheduler", set())
    for w in [n["name"] for n in env.raw["nodes"] if "worker" in n["roles"]]:
        expected[("workstation", env.worker_kubeconfig(w, "kubelet.kubeconfig"))] = (f"system:node:{w}", {"system:nodes"})
        expected[("workstation", env.worker_kubeconfig(w, "kube-proxy.kubeconfig"))] = ("system:kube-proxy", set())
    for (where, kc), (user, groups) in expected.items():
        who = _whoami(env, kc, node=where)
        assert who["username"] == user, kc
        assert groups | {"system:authenticated"} <= set(who.get("groups", [])), (kc, who)
        if user != "super-admin":
            assert "system:masters" not in who.get("groups", []), f"{kc} must not bypass RBAC"


# ---------------------------------------------------------------- 4. bootstrap manifests -------

def test_admin_gains_access_only_through_the_bootstrap_binding(env: Env):
    admin = env.ws("admin.kubeconfig")
    before = env.kubectl("get", "nodes", kubeconfig=admin)
    assert before.returncode != 0 and "forbidden" in before.stderr.lower(), before.stderr
    can = env.kubectl("auth", "can-i", "list", "namespaces", kubeconfig=admin)
    assert can.stdout.strip() == "no"

    ok(env.kubectl("apply", "-f", env.ws("manifests")))
    binding = json.loads(ok(env.kubectl("get", "clusterrolebinding", "-o", "json")))["items"]
    granted = [b for b in binding if b["roleRef"]["name"] == "cluster-admin"
               and any(s.get("kind") == "Group" and s["name"] == "hardway:cluster-admins" for s in b.get("subjects", []))]
    assert granted, "the manifests bind no cluster-admin role to hardway:cluster-admins"

    def admin_can():
        ok(env.kubectl("get", "nodes", kubeconfig=admin))
        names = ok(env.kubectl("get", "namespaces", "-o", "name", kubeconfig=admin)).split()
        assert {"namespace/default", "namespace/kube-system"} <= set(names)
    eventually(admin_can, timeout=30)


# ---------------------------------------------------------------- 5. node authorizer -----------

def _node_manifest(name: str) -> str:
    return textwrap.dedent(f"""\
        apiVersion: v1
        kind: Node
        metadata:
          name: {name}
          labels:
            kubernetes.io/hostname: {name}
        """)


def test_node_authorizer_lets_a_node_manage_only_itself(env: Env):
    workers = [n["name"] for n in env.raw["nodes"] if "worker" in n["roles"]]
    mine, other = workers[0], workers[1]
    kc_mine = env.worker_kubeconfig(mine, "kubelet.kubeconfig")
    kc_other = env.worker_kubeconfig(other, "kubelet.kubeconfig")

    def create(kc: str, name: str):
        return env.lab.run(WORKSTATION, ["kubectl", f"--kubeconfig={kc}", "create", "-f", "-"], input=_node_manifest(name))
    ok(create(kc_mine, mine))
    assert ok(env.kubectl("get", "node", mine, "-o", "name")).strip() == f"node/{mine}"

    denied = create(kc_mine, other)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
    ok(create(kc_other, other))  # its own kubelet may
    changed = env.kubectl("label", "node", other, "hardway-e2e=touched", kubeconfig=kc_mine)
    assert changed.returncode != 0 and "forbidden" in changed.stderr.lower(), changed.stderr
    labels = json.loads(ok(env.kubectl("get", "node", other, "-o", "json")))["metadata"].get("labels", {})
    assert "hardway-e2e" not in labels
    ok(env.kubectl("label", "node", mine, "hardway-e2e=mine", kubeconfig=kc_mine))  # its own: allowed


# ---------------------------------------------------------------- 6. encryption at rest --------

def test_secrets_are_encrypted_in_etcd(env: Env):
    provider = env.raw.get("encryption", {}).get("provider", "secretbox")
    secret_value = "hardway-e2e-plaintext-value"
    ok(env.kubectl("create", "secret", "generic", "e2e-encrypted", "-n", "default", f"--from-literal=k={secret_value}"))
    raw = env.etcdctl("get", "/registry/secrets/default/e2e-encrypted", "--print-value-only", cert="apiserver-etcd-client", text=False)
    assert raw.returncode == 0, raw.stderr
    assert raw.stdout.startswith(f"k8s:enc:{provider}:v1:".encode()), raw.stdout[:40]
    assert secret_value.encode() not in raw.stdout
    # ...and the API still reads it back.
    data = json.loads(ok(env.kubectl("get", "secret", "e2e-encrypted", "-n", "default", "-o", "json")))["data"]["k"]
    assert base64.b64decode(data).decode() == secret_value


# ---------------------------------------------------------------- 7. service accounts ----------

def test_service_account_token_authenticates(env: Env):
    token = eventually(lambda: ok(env.kubectl("create", "token", "default", "-n", "default")).strip(), timeout=60)
    kc = env.out / "token.kubeconfig"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "t",
        "clusters": [{"name": "c", "cluster": {"server": f"https://{env.endpoint}:{env.port}",
                                               "certificate-authority": env.ws("ca.crt")}}],
        "users": [{"name": "t", "user": {"token": token}}],
        "contexts": [{"name": "t", "context": {"cluster": "c", "user": "t"}}],
    }))
    kc.chmod(0o600)
    who = _whoami(env, str(kc))
    assert who["username"] == "system:serviceaccount:default:default"
    assert {"system:serviceaccounts", "system:serviceaccounts:default"} <= set(who["groups"])
    # The token's issuer is the one the spec implies.
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["iss"] == f"https://{env.endpoint}:{env.port}"


# ---------------------------------------------------------------- 8. leader leases, healthz ----

def test_controller_manager_and_scheduler_lead_and_answer_healthz(env: Env):
    names = {n["name"] for n in env.controllers}

    def leases():
        items = json.loads(ok(env.kubectl("get", "lease", "-n", "kube-system", "kube-controller-manager",
                                          "kube-scheduler", "-o", "json")))["items"]
        holders = {i["metadata"]["name"]: i["spec"].get("holderIdentity", "") for i in items}
        assert set(holders) == {"kube-controller-manager", "kube-scheduler"}
        for lease, holder in holders.items():
            assert holder.split("_")[0] in names, f"{lease} held by {holder!r}, not by a controller"
    eventually(leases, timeout=90, interval=2)
    for n in env.controllers:
        for component, port in (("kube-controller-manager", 10257), ("kube-scheduler", 10259)):
            ready, answer = env.lab.probe(Probe(n["name"], component, f"https://127.0.0.1:{port}/healthz", expect="ok"))
            assert ready and answer == "ok", (n["name"], component, answer)


# ---------------------------------------------------------------- 9. kubernetes Service --------

def test_kubernetes_service_has_the_first_service_address(env: Env):
    cidr = ipaddress.ip_network(env.raw.get("network", {}).get("serviceCIDR", "10.32.0.0/24"))
    ip = ok(env.kubectl("get", "service", "kubernetes", "-n", "default", "-o", "jsonpath={.spec.clusterIP}")).strip()
    assert ipaddress.ip_address(ip) == cidr.network_address + 1


# ---------------------------------------------------------------- status CLI -------------------

def test_status_reports_every_process_running_and_ready(env: Env):
    res = subprocess.run([sys.executable, "-m", "hardway", "lab.status", "--lab-dir", str(env.lab.labdir)],
                         capture_output=True, text=True, timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                                          "COLUMNS": "250"})
    assert res.returncode == 0, res.stdout + res.stderr
    for p in env.lab.processes:
        assert str(p.pid) in res.stdout and p.unit in res.stdout


# ---------------------------------------------------------------- 10. HA -----------------------

@pytest.mark.parametrize("env", ["ha"], indirect=True)  # kthw has one controller: nothing to lose
def test_api_survives_losing_a_controller(env: Env):
    assert len(env.controllers) == 3
    victim = env.controllers[0]
    env.lab.stop_unit(victim["name"], "kube-apiserver.service")
    env.lab.stop_unit(victim["name"], "etcd.service")
    direct = env.kubectl("get", "--raw", "/readyz", f"--server=https://{victim['address']}:{env.port}",
                         kubeconfig=env.ws("admin.kubeconfig"), timeout=30)
    assert direct.returncode != 0, "the stopped controller still answers"

    # Until HAProxy's health check marks the victim down, a connection may land on it; after that,
    # every request must succeed.
    def answers_five_times():
        for _ in range(5):
            assert ok(env.kubectl("get", "--raw", "/readyz", kubeconfig=env.ws("admin.kubeconfig"))).strip() == "ok"
    eventually(answers_five_times, timeout=60)
    # The cluster still writes: etcd keeps quorum with two of three members.
    ok(env.kubectl("create", "configmap", "e2e-after-failover", "-n", "default", "--from-literal=a=b"))
