"""End to end: boot each example's control plane from its bundles in the lab, then check from the
outside (the lab's workstation namespace, or a controller's own namespace) that the cluster behaves
as its spec says.

Real programs only: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, HAProxy, kubectl
and etcdctl of the pinned version; on the workers containerd, runc, the CNI plugins, kubelet,
kube-proxy and CoreDNS, running images the lab builds from the pinned pause, CoreDNS and Debian's
busybox. Expected values come from the spec file itself (parsed here
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
from hardway.lab.lab import find_lab_binaries
from hardway.lab.netns import LabError
from hardway.lab.probes import Probe
from helpers import BUILD_COMMAND, missing, need_binaries, need_haproxy, need_namespaces
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

    def kubectl(self, *args: str, kubeconfig: str | None = None, node: str = WORKSTATION, timeout: float = 60,
                input: str | None = None):
        kc = kubeconfig or self.ws("super-admin.kubeconfig")
        return self.lab.run(node, ["kubectl", f"--kubeconfig={kc}", "--request-timeout=20s", *args], timeout=timeout,
                            input=input)

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
    try:  # the workers' binaries too: containerd, runc, CNI plugins, CoreDNS, pause, busybox
        find_lab_binaries(cluster, None)
    except LabError as e:
        missing(str(e), BUILD_COMMAND)
    if cluster.loadbalancers:
        need_haproxy()
    out = tmp_path_factory.mktemp(f"lab-{name}")
    labdir = out / "lab"
    before = host_state(netns.lab_prefix(labdir), labdir)
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
        def clean():
            after = host_state(netns.lab_prefix(labdir), labdir)
            for what in before:
                new = sorted(set(after[what]) - set(before[what]))
                assert not new, f"lab.down left {what} behind on the host: {new[:10]}"
        # The kernel may take a moment to drop a deleted namespace's mount or reap an orphan.
        eventually(clean, timeout=20, interval=0.5)


def host_state(prefix: str, labdir: Path) -> dict[str, list[str]]:
    """What a lab could leave on the host: iptables rules and links of the host's namespace,
    mounts, cgroups named after the lab, worker processes, runc state."""
    def lines(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True).stdout.splitlines()
        except FileNotFoundError:
            return []
    rules = [l for l in lines(["iptables-save"]) + lines(["ip6tables-save"]) if l.startswith("-A")]
    links = [l.split(":")[1].strip() for l in lines(["ip", "-o", "link"]) if ":" in l]
    # Only this lab's: other labs (a concurrent test run) may come and go meanwhile.
    mounts = [m for m in (l.split()[4] for l in Path("/proc/self/mountinfo").read_text().splitlines())
              if prefix in m or m.startswith(str(labdir))]
    cgroups = [str(p) for p in Path("/sys/fs/cgroup").glob(f"*/{prefix}-*")]
    programs = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv0 = (proc / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            cgroup = (proc / "cgroup").read_text()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state == "Z":  # exited; only the host's init may still have to reap it
            continue
        # Only this lab's: its containers live under its kubelets' cgroup roots, named after its prefix.
        if prefix in cgroup or argv0.startswith(str(labdir)):
            programs.append(f"{proc.name} {argv0}")
    runc = [str(p) for p in (Path("/run/runc"), Path("/run/containerd")) if p.exists()]
    return {"iptables rules": rules, "network links": links, "mounts": mounts, "cgroups": cgroups,
            "processes": programs, "runc state": runc}


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
    """The lab applied the workstation manifests with super-admin (the README's order); the admin
    kubeconfig works through that binding alone: without it, it is forbidden."""
    admin = env.ws("admin.kubeconfig")
    bindings = json.loads(ok(env.kubectl("get", "clusterrolebinding", "-o", "json")))["items"]
    granted = [b["metadata"]["name"] for b in bindings if b["roleRef"]["name"] == "cluster-admin"
               and any(s.get("kind") == "Group" and s["name"] == "hardway:cluster-admins" for s in b.get("subjects", []))]
    assert len(granted) == 1, "the manifests must bind cluster-admin to hardway:cluster-admins exactly once"
    ok(env.kubectl("get", "nodes", kubeconfig=admin))

    ok(env.kubectl("delete", "clusterrolebinding", granted[0]))

    def forbidden():
        before = env.kubectl("get", "nodes", kubeconfig=admin)
        assert before.returncode != 0 and "forbidden" in before.stderr.lower(), before.stderr
        assert env.kubectl("auth", "can-i", "list", "namespaces", kubeconfig=admin).stdout.strip() == "no"
    eventually(forbidden, timeout=30)

    ok(env.kubectl("apply", "-f", env.ws("manifests")))

    def admin_can():
        ok(env.kubectl("get", "nodes", kubeconfig=admin))
        names = ok(env.kubectl("get", "namespaces", "-o", "name", kubeconfig=admin)).split()
        assert {"namespace/default", "namespace/kube-system"} <= set(names)
    eventually(admin_can, timeout=30)


# ---------------------------------------------------------------- 5. node authorizer -----------

def test_node_authorizer_lets_a_node_manage_only_itself(env: Env):
    workers = [n["name"] for n in env.raw["nodes"] if "worker" in n["roles"]]
    mine, other = workers[0], workers[1]
    kc_mine = env.worker_kubeconfig(mine, "kubelet.kubeconfig")
    kc_other = env.worker_kubeconfig(other, "kubelet.kubeconfig")
    # The real kubelets registered their nodes with these very credentials.
    for name in (mine, other):
        assert ok(env.kubectl("get", "node", name, "-o", "name")).strip() == f"node/{name}"
    changed = env.kubectl("label", "node", other, "hardway-e2e=touched", kubeconfig=kc_mine)
    assert changed.returncode != 0 and "forbidden" in changed.stderr.lower(), changed.stderr
    labels = json.loads(ok(env.kubectl("get", "node", other, "-o", "json")))["metadata"].get("labels", {})
    assert "hardway-e2e" not in labels
    ok(env.kubectl("label", "node", mine, "hardway-e2e=mine", "--overwrite", kubeconfig=kc_mine))  # its own: allowed
    ok(env.kubectl("label", "node", other, "hardway-e2e=theirs", "--overwrite", kubeconfig=kc_other))


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


# ---------------------------------------------------------------- 10. workers: the smoke test ---
# What Kubernetes the Hard Way ends with, on real kubelets, containerd, runc, CNI plugins, kube-proxy
# and CoreDNS: every worker Ready, a deployment runs, logs/exec/port-forward through the kubelet, a
# Service answers, DNS resolves, pod traffic is routed (not masqueraded) between nodes and
# masqueraded to the outside, NodePorts answer.

TEST_IMAGE = "hardway.local/busybox:lab"  # docs/lab.md: the image the lab imports for workloads
NS = "e2e"
# Each web pod serves its name, and a CGI that prints the address a request came from.
WEB_SCRIPT = textwrap.dedent("""\
    mkdir -p /www/cgi-bin
    printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho "$REMOTE_ADDR $(hostname)"\\n' > /www/cgi-bin/who
    chmod +x /www/cgi-bin/who
    echo "hello from $(hostname)" > /www/index.html
    echo "web pod $(hostname) started"
    exec httpd -f -p 8080 -h /www
    """)


def _workers(env: Env) -> list[dict]:
    return [n for n in env.raw["nodes"] if "worker" in n["roles"]]


def _web_manifest(replicas: int) -> str:
    return yaml.safe_dump_all([
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": NS},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {
                      "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                          {"topologyKey": "kubernetes.io/hostname", "labelSelector": {"matchLabels": {"app": "web"}}}]}},
                      "containers": [{"name": "web", "image": TEST_IMAGE, "command": ["sh", "-c", WEB_SCRIPT],
                                      "ports": [{"containerPort": 8080}],
                                      "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 2}}]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": NS},
         "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web-np", "namespace": NS},
         "spec": {"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]}},
    ])


@dataclass
class Web:
    pods: dict[str, dict]  # pod name -> {"node", "ip"}

    def on(self, node: str) -> str:
        return next(p for p, v in self.pods.items() if v["node"] == node)


def run_web(env: Env) -> Web:
    """Apply the web deployment (a pod per worker) and wait until every pod is Ready."""
    workers = _workers(env)
    ok(env.kubectl("apply", "-f", "-", input=_web_manifest(len(workers))))

    def ready() -> Web:
        items = json.loads(ok(env.kubectl("get", "pods", "-n", NS, "-l", "app=web", "-o", "json")))["items"]
        running = {p["metadata"]["name"]: {"node": p["spec"].get("nodeName"), "ip": p["status"].get("podIP")}
                   for p in items if any(c["type"] == "Ready" and c["status"] == "True"
                                         for c in p["status"].get("conditions", []))}
        assert len(running) == len(workers), f"{len(running)} of {len(workers)} web pods ready: {items and [i['status'] for i in items]}"
        return Web(running)
    return eventually(ready, timeout=180, interval=2)


@pytest.fixture(scope="module")
def web(env: Env) -> Web:
    return run_web(env)


def _get(host: str, port: int | str, path: str = "/") -> str:
    """Shell that prints the last line of an HTTP answer, from inside a test pod. Debian 12's static
    busybox crashes in `wget` (SIGSEGV at start, even on the host), so the request goes through nc."""
    return f"printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | nc -w 5 {host} {port} | tail -n 1"


def _addr(remote: str) -> str:
    """busybox httpd's REMOTE_ADDR as a plain address: it listens on IPv6 and shows IPv4 clients
    as `[::ffff:a.b.c.d]`."""
    return str(ipaddress.ip_address(remote.strip("[]").removeprefix("::ffff:")))


def _in_pod(env: Env, pod: str, command: str, timeout: float = 60):
    return env.kubectl("exec", "-n", NS, pod, "--", "sh", "-c", command, timeout=timeout)


def _pod_cidr(env: Env, node: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(ok(env.kubectl("get", "node", node, "-o", "jsonpath={.spec.podCIDR}")).strip() or
                                env.cluster.node(node).pod_cidr)


def test_every_worker_is_ready_and_cluster_dns_is_where_the_spec_says(env: Env):
    nodes = {n["metadata"]["name"]: n for n in json.loads(ok(env.kubectl("get", "nodes", "-o", "json")))["items"]}
    for w in _workers(env):
        node = nodes[w["name"]]
        ready = [c["status"] for c in node["status"]["conditions"] if c["type"] == "Ready"]
        assert ready == ["True"], (w["name"], node["status"]["conditions"])
        addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
        assert addresses["InternalIP"] == w["address"]
        assert node["status"]["nodeInfo"]["kubeletVersion"] == env.raw.get("kubernetesVersion", "v1.37.2")
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://")
    available = ok(env.kubectl("get", "deployment", "coredns", "-n", "kube-system", "-o",
                               'jsonpath={.status.conditions[?(@.type=="Available")].status}'))
    assert available.strip() == "True"
    net = env.raw.get("network", {})
    dns = net.get("clusterDNS") or str(ipaddress.ip_network(net.get("serviceCIDR", "10.32.0.0/24")).network_address + 10)
    assert ok(env.kubectl("get", "service", "kube-dns", "-n", "kube-system", "-o", "jsonpath={.spec.clusterIP}")).strip() == dns


def test_a_deployment_runs_one_pod_per_worker_in_each_workers_pod_range(env: Env, web: Web):
    assert sorted(v["node"] for v in web.pods.values()) == sorted(w["name"] for w in _workers(env))
    for pod, v in web.pods.items():
        assert ipaddress.ip_address(v["ip"]) in _pod_cidr(env, v["node"]), (pod, v)


def test_logs_exec_and_port_forward_go_through_the_kubelet(env: Env, web: Web):
    pod = next(iter(web.pods))
    assert f"web pod {pod} started" in ok(env.kubectl("logs", "-n", NS, pod))
    assert ok(_in_pod(env, pod, "cat /www/index.html")).strip() == f"hello from {pod}"
    port = 18081
    forward = subprocess.Popen(env.lab.command(WORKSTATION, ["kubectl", f"--kubeconfig={env.ws('admin.kubeconfig')}",
                                                            "port-forward", "-n", NS, f"pod/{pod}", f"{port}:8080"]),
                               env=env.lab.env(WORKSTATION), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def answers():
            got = env.lab.run(WORKSTATION, [sys.executable, "-c", f"import urllib.request;print(urllib.request.urlopen("
                                                                  f"'http://127.0.0.1:{port}/', timeout=5).read().decode())"])
            assert got.returncode == 0 and got.stdout.strip() == f"hello from {pod}", got.stderr[-500:]
        eventually(answers, timeout=30)
    finally:
        forward.terminate()
        forward.wait(10)


def test_dns_resolves_the_kubernetes_service_and_a_service_name(env: Env, web: Web):
    domain = env.raw.get("network", {}).get("clusterDomain", "cluster.local")
    pod = next(iter(web.pods))
    cidr = ipaddress.ip_network(env.raw.get("network", {}).get("serviceCIDR", "10.32.0.0/24"))
    web_ip = ok(env.kubectl("get", "service", "web", "-n", NS, "-o", "jsonpath={.spec.clusterIP}")).strip()
    for name, expected in ((f"kubernetes.default.svc.{domain}", str(cidr.network_address + 1)),
                           (f"web.{NS}.svc.{domain}", web_ip)):
        def resolves():
            out = ok(_in_pod(env, pod, f"nslookup {name}"))
            assert expected in out.split("Name:", 1)[-1], out
        eventually(resolves, timeout=60)


def test_a_cluster_ip_service_reaches_pods_on_other_nodes(env: Env, web: Web):
    client = next(iter(web.pods))
    # By address: busybox's nc resolves names with the C library, which a static busybox cannot use
    # in a bare image (its nslookup, used by the DNS test, speaks DNS itself).
    service = ok(env.kubectl("get", "service", "web", "-n", NS, "-o", "jsonpath={.spec.clusterIP}")).strip()
    out = ok(_in_pod(env, client, f"for i in $(seq 40); do {_get(service, 80, '/cgi-bin/who')}; done", timeout=120))
    served_by = {line.split()[1] for line in out.splitlines() if line.strip()}
    assert served_by - {client}, f"every answer came from the client's own pod: {served_by}"


def test_pod_to_pod_across_nodes_keeps_the_source_address(env: Env, web: Web):
    a, b = list(web.pods)[:2]
    assert web.pods[a]["node"] != web.pods[b]["node"]
    remote, served_by = ok(_in_pod(env, a, _get(web.pods[b]["ip"], 8080, "/cgi-bin/who"))).split()
    assert served_by == b
    assert _addr(remote) == web.pods[a]["ip"], "pod traffic between nodes must not be masqueraded"


def test_traffic_leaving_the_pod_network_is_masqueraded(env: Env, web: Web, tmp_path):
    """pod-nat.service: a server outside the pod network (the workstation) sees the node's address."""
    www = tmp_path / "www"
    (www / "cgi-bin").mkdir(parents=True)
    who = www / "cgi-bin" / "who"
    who.write_text('#!/bin/sh\necho Content-Type: text/plain\necho\necho "$REMOTE_ADDR"\n')
    who.chmod(0o755)
    busybox = env.lab.bin_dir / "busybox"
    server = subprocess.Popen(env.lab.command(WORKSTATION, [str(busybox), "httpd", "-f", "-p", "18080", "-h", str(www)]),
                              env=env.lab.env(WORKSTATION), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ws = env.lab.network.member(WORKSTATION).address
        for pod, v in web.pods.items():
            seen = eventually(lambda: ok(_in_pod(env, pod, _get(ws, 18080, "/cgi-bin/who"))).strip(), timeout=20)
            assert _addr(seen) == str(env.cluster.node(v["node"]).address), (pod, seen)
    finally:
        server.terminate()
        server.wait(10)


def test_a_node_port_answers_on_every_worker(env: Env, web: Web):
    port = ok(env.kubectl("get", "service", "web-np", "-n", NS, "-o", "jsonpath={.spec.ports[0].nodePort}")).strip()
    for w in _workers(env):
        host = f"[{w['address']}]" if ":" in w["address"] else w["address"]
        got = env.lab.run(WORKSTATION, [sys.executable, "-c", f"import urllib.request;print(urllib.request.urlopen("
                                                              f"'http://{host}:{port}/', timeout=5).read().decode())"])
        assert got.returncode == 0 and got.stdout.startswith("hello from "), (w["name"], got.stderr[-500:])


def test_a_node_reads_only_the_secrets_of_its_own_pods(env: Env, web: Web):
    """The Node authorizer with real kubelets: a Secret mounted by a pod on a node is readable with
    that node's credentials, one used only on another node is not."""
    a, b = (w["name"] for w in _workers(env)[:2])
    for node in (a, b):
        ok(env.kubectl("create", "secret", "generic", f"for-{node}", "-n", NS, "--from-literal=k=v"))
        ok(env.kubectl("apply", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"uses-{node}", "namespace": NS},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": TEST_IMAGE, "command": ["sleep", "3600"],
                                                       "volumeMounts": [{"name": "s", "mountPath": "/s"}]}],
                     "volumes": [{"name": "s", "secret": {"secretName": f"for-{node}"}}]}})))

    def running():
        for node in (a, b):
            phase = ok(env.kubectl("get", "pod", f"uses-{node}", "-n", NS, "-o", "jsonpath={.status.phase}")).strip()
            assert phase == "Running", (node, phase)
    eventually(running, timeout=120, interval=2)
    assert ok(_in_pod(env, f"uses-{a}", "cat /s/k")) == "v"
    kc = env.worker_kubeconfig(a, "kubelet.kubeconfig")
    ok(env.kubectl("get", "secret", f"for-{a}", "-n", NS, kubeconfig=kc))
    denied = env.kubectl("get", "secret", f"for-{b}", "-n", NS, kubeconfig=kc)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr


# ---------------------------------------------------------------- status CLI -------------------

def test_status_reports_every_process_running_and_ready(env: Env):
    res = subprocess.run([sys.executable, "-m", "hardway", "lab.status", "--lab-dir", str(env.lab.labdir)],
                         capture_output=True, text=True, timeout=120, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
                                                                          "COLUMNS": "250"})
    assert res.returncode == 0, res.stdout + res.stderr
    for p in env.lab.processes:
        assert str(p.pid) in res.stdout and p.unit in res.stdout


# ---------------------------------------------------------------- 11. HA -----------------------

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
    # ...and still runs new work: a pod is scheduled and started on a worker.
    ok(env.kubectl("run", "after-failover", "-n", "default", f"--image={TEST_IMAGE}", "--restart=Never",
                   "--", "sleep", "3600"))

    def runs():
        phase = ok(env.kubectl("get", "pod", "after-failover", "-n", "default", "-o", "jsonpath={.status.phase}"))
        assert phase.strip() == "Running", phase
    eventually(runs, timeout=120, interval=2)
