"""The values the known tutorials get out of step, checked in the RENDERED output.

Each test parses unit command lines, YAML/JSON configs, kubeconfigs and certificates back and
compares them with each other and with the cluster spec, for every example and supported minor.
For the large example (1000 workers) a sample of nodes is rendered here; test_render_large.py
checks the rules that need every worker.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
from functools import lru_cache

import pytest

from hardway.plan import WORKSTATION, NodePlan
from hardway.render import node_plan
from test_render_helpers import (EXAMPLES, PKI, VERSIONS, at_version, cert, cluster, cn, covers,
                                 exec_start, kubeconfig_parts, materials, orgs, text, unit_flags, url_host,
                                 yaml_docs, yaml_file)

CASES = [pytest.param(e, m, id=f"{e}-{m}") for e in EXAMPLES for m in VERSIONS]


@lru_cache(maxsize=None)
def sample(example: str, minor: str) -> dict[str, NodePlan]:
    """Plans of every non-worker node, a few workers (all of them in small clusters) and the workstation."""
    c = at_version(cluster(example), minor)
    workers = [n.name for n in c.workers]
    if len(workers) > 6:
        workers = workers[:3] + workers[-2:]
    names = [n.name for n in c.nodes if not n.is_worker] + workers + [WORKSTATION]
    return {name: node_plan(c, materials(example), name) for name in names}


def setup(example: str, minor: str):
    return at_version(cluster(example), minor), sample(example, minor)


def controllers(c, plans):
    return [plans[n.name] for n in c.controllers]


def workers(c, plans):
    return [plans[n.name] for n in c.workers if n.name in plans]


@pytest.mark.parametrize("example,minor", CASES)
def test_service_cidr_is_one_range_everywhere(example, minor):
    c, plans = setup(example, minor)
    for p in controllers(c, plans):
        api = unit_flags(p, "kube-apiserver.service")
        kcm = unit_flags(p, "kube-controller-manager.service")
        assert api["service-cluster-ip-range"] == kcm["service-cluster-ip-range"] == str(c.service_cidr)
        # The `kubernetes` Service takes the range's first address: the serving certificate must name it.
        first = ipaddress.ip_network(api["service-cluster-ip-range"])[1]
        serving = cert(p.file(api["tls-cert-file"]).data)
        assert covers(serving, str(first)), f"{p.node}: kube-apiserver certificate lacks {first}"


@pytest.mark.parametrize("example,minor", CASES)
def test_pod_cidr_is_one_range_and_node_ranges_are_inside_and_disjoint(example, minor):
    c, plans = setup(example, minor)
    cluster_cidrs = {unit_flags(p, "kube-controller-manager.service")["cluster-cidr"] for p in controllers(c, plans)}
    proxy_cidrs = {yaml_file(p, "/etc/kubernetes/kube-proxy-config.yaml")["clusterCIDR"] for p in workers(c, plans)}
    assert cluster_cidrs == proxy_cidrs == {str(c.pod_cidr)}
    pod_net = ipaddress.ip_network(str(c.pod_cidr))
    ranges = {}
    for p in workers(c, plans):
        bridge = json.loads(text(p, "/etc/cni/net.d/10-bridge.conflist"))
        ipam = bridge["plugins"][0]["ipam"]
        [[subnet]] = ipam["ranges"]
        net = ipaddress.ip_network(subnet["subnet"])
        assert net.subnet_of(pod_net), f"{p.node}: {net} is outside {pod_net}"
        assert str(net) == str(c.node(p.node).pod_cidr)
        ranges[p.node] = net
    for a in ranges:
        for b in ranges:
            assert a == b or not ranges[a].overlaps(ranges[b]), f"{a} {ranges[a]} overlaps {b} {ranges[b]}"


@pytest.mark.parametrize("example,minor", CASES)
def test_controller_manager_leaves_the_static_node_ranges_alone(example, minor):
    # Node ranges come from the spec (CNI config, routes); an allocating controller-manager would hand
    # out its own ranges in registration order, which need not match.
    c, plans = setup(example, minor)
    for p in controllers(c, plans):
        kcm = unit_flags(p, "kube-controller-manager.service")
        assert kcm["allocate-node-cidrs"] == "false"
        assert "node-cidr-mask-size" not in kcm and "node-cidr-mask-size-ipv4" not in kcm


@pytest.mark.parametrize("example,minor", CASES)
def test_cluster_dns_is_a_service_ip_and_the_coredns_service(example, minor):
    c, plans = setup(example, minor)
    service_range = ipaddress.ip_network(unit_flags(controllers(c, plans)[0], "kube-apiserver.service")
                                         ["service-cluster-ip-range"])
    docs = yaml_docs(plans[WORKSTATION], "/manifests/10-coredns.yaml")
    [svc] = [d for d in docs if d["kind"] == "Service"]
    assert (svc["metadata"]["name"], svc["metadata"]["namespace"]) == ("kube-dns", "kube-system")
    dns_ip = ipaddress.ip_address(svc["spec"]["clusterIP"])
    assert dns_ip in service_range and dns_ip != service_range[1]
    for p in workers(c, plans):
        kubelet = yaml_file(p, "/etc/kubernetes/kubelet-config.yaml")
        assert kubelet["clusterDNS"] == [str(dns_ip)]
        assert kubelet["clusterDomain"] == c.cluster_domain
    [cm] = [d for d in docs if d["kind"] == "ConfigMap"]
    assert re.search(rf"^\s*kubernetes {re.escape(c.cluster_domain)} ", cm["data"]["Corefile"], re.M)
    [deploy] = [d for d in docs if d["kind"] == "Deployment"]
    selector = deploy["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["selector"] == selector == deploy["spec"]["template"]["metadata"]["labels"]


def _referenced_paths(plan: NodePlan) -> set[str]:
    """Absolute paths under /etc and /var/lib named by the node's units, configs and kubeconfigs."""
    found = set()
    for f in plan.files:
        if f.path.startswith(PKI + "/"):
            continue
        found.update(re.findall(r"(?<![\w.-])(/(?:etc|var/lib)/[\w.\-/]+[\w])", f.data.decode("utf-8")))
    return found


# Files a node's own OS provides (not ours to ship).
HOST_FILES = {"/etc/resolv.conf"}


@pytest.mark.parametrize("example,minor", CASES)
def test_every_file_a_node_references_is_in_its_plan(example, minor):
    c, plans = setup(example, minor)
    for p in plans.values():
        if p.node == WORKSTATION:
            continue
        have = p.paths | {d.path for d in p.directories}
        missing = sorted(path for path in _referenced_paths(p) - HOST_FILES if path not in have)
        assert not missing, f"{p.node} references files it does not get: {missing}"
        # Every program a unit starts is either downloaded (INSTALL.md's binaries) or a system tool.
        downloaded = {b["path"] for b in p.notes["binaries"]}
        for f in p.files:
            if f.path.startswith("/etc/systemd/system/"):
                program = exec_start(f.data.decode())[0]
                assert program in downloaded or program.startswith(("/usr/sbin/", "/sbin/")), (p.node, program)


@pytest.mark.parametrize("example,minor", CASES)
def test_nodes_get_nothing_they_do_not_need(example, minor):
    c, plans = setup(example, minor)
    for n in c.nodes:
        if n.name not in plans:
            continue
        paths = plans[n.name].paths
        keys = {p for p in paths if p.endswith(".key")}
        if n.is_loadbalancer:
            assert not any(p.endswith((".key", ".crt", ".kubeconfig", ".pub")) for p in paths), n.name
            continue
        if not n.is_controller:
            # A worker: its own kubelet-serving key, nothing that signs or decrypts.
            assert keys == {f"{PKI}/kubelet-serving.key"}, (n.name, keys)
            assert not {f"{PKI}/etcd-ca.crt", f"{PKI}/service-account.pub", "/etc/kubernetes/encryption-config.yaml",
                        "/etc/kubernetes/kube-controller-manager.kubeconfig"} & paths
        if not n.is_worker:
            assert "/etc/kubernetes/kubelet.kubeconfig" not in paths
            assert f"{PKI}/kubelet-serving.key" not in paths
        for key in keys:
            assert not key.endswith(("/etcd-ca.key", "/front-proxy-ca.key")), f"{n.name} got {key}"
        assert not any("admin" in p for p in paths), f"{n.name} got an admin credential"
    ws = plans[WORKSTATION].paths
    assert not any(p.endswith(".key") for p in ws)
    assert {"/admin.kubeconfig", "/super-admin.kubeconfig", "/ca.crt"} <= ws


@pytest.mark.parametrize("example,minor", CASES)
def test_secrets_are_private_and_the_rest_readable(example, minor):
    c, plans = setup(example, minor)
    for p in plans.values():
        for f in p.files:
            secret = f.path.endswith((".key", ".kubeconfig")) or f.path.endswith("encryption-config.yaml")
            expected = 0o600 if secret else (0o755 if f.path.endswith(".sh") else 0o644)
            assert f.mode == expected, f"{p.node}:{f.path} has mode {f.mode:o}, expected {expected:o}"


@pytest.mark.parametrize("example,minor", CASES)
def test_etcd_members_are_the_same_on_every_controller(example, minor):
    c, plans = setup(example, minor)
    expected = ",".join(f"{n.name}=https://{n.url_host}:2380" for n in c.controllers)
    lists = set()
    for n in c.controllers:
        etcd = unit_flags(plans[n.name], "etcd.service")
        lists.add(etcd["initial-cluster"])
        assert etcd["name"] == n.name
        assert etcd["initial-advertise-peer-urls"] == etcd["listen-peer-urls"] == f"https://{n.url_host}:2380"
        assert f"{n.name}={etcd['initial-advertise-peer-urls']}" in etcd["initial-cluster"].split(",")
        assert etcd["advertise-client-urls"] == f"https://{n.url_host}:2379"
        assert set(etcd["listen-client-urls"].split(",")) == {f"https://{n.url_host}:2379", "https://127.0.0.1:2379"}
        assert etcd["initial-cluster-state"] == "new"
        assert etcd["client-cert-auth"] is True and etcd["peer-client-cert-auth"] is True
        assert etcd["trusted-ca-file"] == etcd["peer-trusted-ca-file"] == f"{PKI}/etcd-ca.crt"
        # The serving and peer certificates name the address the others dial.
        for flag in ("cert-file", "peer-cert-file"):
            assert covers(cert(plans[n.name].file(etcd[flag]).data), str(n.address)), (n.name, flag)
    assert lists == {expected}
    for p in controllers(c, plans):
        api = unit_flags(p, "kube-apiserver.service")
        assert api["etcd-servers"].split(",") == [f"https://{n.url_host}:2379" for n in c.controllers]
        assert api["etcd-cafile"] == f"{PKI}/etcd-ca.crt"


@pytest.mark.parametrize("example,minor", CASES)
def test_kubeconfigs_point_where_the_certificate_is_valid(example, minor):
    c, plans = setup(example, minor)
    ca = materials(example).cert("ca")
    local = {"/etc/kubernetes/kube-controller-manager.kubeconfig", "/etc/kubernetes/kube-scheduler.kubeconfig"}
    for p in plans.values():
        for f in p.files:
            if not f.path.endswith(".kubeconfig"):
                continue
            parts = kubeconfig_parts(f.data)
            assert parts["ca"] == ca
            assert parts["cluster"] == c.name
            expected = f"https://127.0.0.1:{c.api_port}" if f.path in local else c.api_url
            assert parts["server"] == expected, (p.node, f.path)
            for ctrl in controllers(c, plans):
                serving = cert(ctrl.file(f"{PKI}/kube-apiserver.crt").data)
                assert covers(serving, url_host(parts["server"])), (ctrl.node, parts["server"])
    for p in controllers(c, plans):
        assert unit_flags(p, "kube-apiserver.service")["secure-port"] == str(c.api_port)


@pytest.mark.parametrize("example,minor", CASES)
def test_names_in_flags_and_manifests_are_the_certificates_names(example, minor):
    c, plans = setup(example, minor)
    m = materials(example)
    for p in controllers(c, plans):
        api = unit_flags(p, "kube-apiserver.service")
        assert api["requestheader-allowed-names"] == cn(cert(p.file(api["proxy-client-cert-file"]).data))
        assert cert(p.file(api["kubelet-client-certificate"]).data) == cert(m.cert("apiserver-kubelet-client"))
    ws = plans[WORKSTATION]
    [kubelet_api] = yaml_docs(ws, "/manifests/00-rbac-kubelet-api.yaml")
    assert kubelet_api["roleRef"]["name"] == "system:kubelet-api-admin"
    assert [s["name"] for s in kubelet_api["subjects"]] == [cn(cert(m.cert("apiserver-kubelet-client")))]
    [admins] = yaml_docs(ws, "/manifests/01-rbac-cluster-admins.yaml")
    assert admins["roleRef"]["name"] == "cluster-admin"
    admin = cert(kubeconfig_parts(ws.file("/admin.kubeconfig").data)["cert"])
    assert [(s["kind"], s["name"]) for s in admins["subjects"]] == [("Group", g) for g in orgs(admin)]
    assert orgs(cert(kubeconfig_parts(ws.file("/super-admin.kubeconfig").data)["cert"])) == ["system:masters"]
    for p in workers(c, plans):
        kubelet = unit_flags(p, "kubelet.service")
        assert kubelet["hostname-override"] == p.node
        assert kubelet["node-ip"] == str(c.node(p.node).address)
        identity = cert(kubeconfig_parts(p.file("/etc/kubernetes/kubelet.kubeconfig").data)["cert"])
        assert cn(identity) == f"system:node:{p.node}" and orgs(identity) == ["system:nodes"]
        assert yaml_file(p, "/etc/kubernetes/kube-proxy-config.yaml")["hostnameOverride"] == p.node


@pytest.mark.parametrize("example,minor", CASES)
def test_kubelet_serves_with_a_ca_signed_certificate_apiserver_verifies(example, minor):
    c, plans = setup(example, minor)
    for p in controllers(c, plans):
        api = unit_flags(p, "kube-apiserver.service")
        assert api["kubelet-certificate-authority"] == f"{PKI}/ca.crt"
    for p in workers(c, plans):
        cfg = yaml_file(p, "/etc/kubernetes/kubelet-config.yaml")
        serving = cert(p.file(cfg["tlsCertFile"]).data)
        node = c.node(p.node)
        assert covers(serving, str(node.address)) and covers(serving, node.name)
        assert serving.issuer == cert(p.file(f"{PKI}/ca.crt").data).subject
        assert cfg["authentication"]["anonymous"]["enabled"] is False
        assert cfg["authentication"]["webhook"]["enabled"] is True
        assert cfg["authentication"]["x509"]["clientCAFile"] == f"{PKI}/ca.crt"
        assert cfg["authorization"]["mode"] == "Webhook"
        assert cfg["cgroupDriver"] == "systemd"
        assert cfg["containerRuntimeEndpoint"] == "unix:///run/containerd/containerd.sock"


@pytest.mark.parametrize("example,minor", CASES)
def test_encryption_config_holds_the_key_for_the_chosen_provider(example, minor):
    c, plans = setup(example, minor)
    key = materials(example).encryption_key
    for p in controllers(c, plans):
        path = unit_flags(p, "kube-apiserver.service")["encryption-provider-config"]
        doc = yaml_file(p, path)
        assert doc["kind"] == "EncryptionConfiguration"
        [rule] = doc["resources"]
        assert rule["resources"] == ["secrets"]
        first, last = rule["providers"][0], rule["providers"][-1]
        assert list(first) == [c.encryption_provider]
        [k] = first[c.encryption_provider]["keys"]
        assert base64.b64decode(k["secret"]) == key and len(key) == 32
        assert last == {"identity": {}}
        assert p.file(path).mode == 0o600


@pytest.mark.parametrize("example,minor", CASES)
def test_apiserver_audits_with_a_policy(example, minor):
    c, plans = setup(example, minor)
    for p in controllers(c, plans):
        api = unit_flags(p, "kube-apiserver.service")
        policy = yaml_file(p, api["audit-policy-file"])
        assert policy["kind"] == "Policy" and policy["rules"], "an empty policy logs nothing"
        assert policy["rules"][-1]["level"] != "None"
        assert api["audit-log-path"].startswith("/var/log/kubernetes/")
        assert "/var/log/kubernetes" in {d.path for d in p.directories}
        assert set(api["authorization-mode"].split(",")) == {"Node", "RBAC"}
        assert "NodeRestriction" in api["enable-admission-plugins"].split(",")
        assert api["service-account-issuer"] == c.api_url
        assert api["service-account-key-file"].endswith(".pub")
        assert api["advertise-address"] == str(c.node(p.node).address)


@pytest.mark.parametrize("example,minor", CASES)
def test_load_balancer_balances_every_controller(example, minor):
    c, plans = setup(example, minor)
    for n in c.loadbalancers:
        cfg = text(plans[n.name], "/etc/haproxy/haproxy.cfg")
        servers = re.findall(r"^\s*server\s+(\S+)\s+(\S+)$", cfg, re.M)
        assert servers == [(ctrl.name, f"{ctrl.address}:{c.api_port}") for ctrl in c.controllers]
        assert re.search(rf"^\s*bind\s+\S*:{c.api_port}\b", cfg, re.M)
        assert re.search(r"^\s*option httpchk GET /readyz$", cfg, re.M)
        assert re.search(r"^\s*mode tcp$", cfg, re.M)


@pytest.mark.parametrize("example,minor", CASES)
def test_routes_and_hosts(example, minor):
    c, plans = setup(example, minor)
    every = {w.name: (str(w.pod_cidr), str(w.address)) for w in c.workers}
    for n in c.nodes:
        if n.name not in plans:
            continue
        p = plans[n.name]
        got = {r["node"]: (r["cidr"], r["via"]) for r in p.notes["routes"]}
        if n.is_loadbalancer:
            assert got == {}
        else:
            assert got == {k: v for k, v in every.items() if k != n.name}
        named = {(line.split()[0], name) for line in p.notes["hosts"] for name in line.split()[1:]}
        for other in c.nodes:
            assert (str(other.address), other.name) in named
            assert other.fqdn is None or (str(other.address), other.fqdn) in named
    hosts = text(plans[WORKSTATION], "/hosts").splitlines()
    assert [h for h in hosts if not h.startswith("#")] == plans[c.nodes[0].name].notes["hosts"]
    if not re.fullmatch(r"[\d.:]+", c.api_endpoint):
        assert any(c.api_endpoint in line.split()[1:] for line in hosts), "the API endpoint's name resolves nowhere"


@pytest.mark.parametrize("example,minor", CASES)
def test_units_to_start_are_in_the_plan_in_dependency_order(example, minor):
    c, plans = setup(example, minor)
    for p in plans.values():
        for u in p.units:
            assert f"/etc/systemd/system/{u}" in p.paths
        order = {u: i for i, u in enumerate(p.units)}
        for before, after in [("etcd.service", "kube-apiserver.service"),
                              ("kube-apiserver.service", "kube-controller-manager.service"),
                              ("containerd.service", "kubelet.service")]:
            if before in order and after in order:
                assert order[before] < order[after]
        for f in p.files:
            if f.path.startswith("/etc/systemd/system/"):
                assert f.path.rsplit("/", 1)[1] in p.units, f"{p.node}: {f.path} is shipped but never started"


@pytest.mark.parametrize("example,minor", CASES)
def test_scheduler_and_controller_manager_use_their_kubeconfigs(example, minor):
    c, plans = setup(example, minor)
    for p in controllers(c, plans):
        kcm = unit_flags(p, "kube-controller-manager.service")
        kubeconfig = "/etc/kubernetes/kube-controller-manager.kubeconfig"
        assert kcm["kubeconfig"] == kcm["authentication-kubeconfig"] == kcm["authorization-kubeconfig"] == kubeconfig
        assert cn(cert(kubeconfig_parts(p.file(kubeconfig).data)["cert"])) == "system:kube-controller-manager"
        assert kcm["cluster-signing-cert-file"] == f"{PKI}/ca.crt" and kcm["cluster-signing-key-file"] == f"{PKI}/ca.key"
        assert kcm["use-service-account-credentials"] == "true" and kcm["leader-elect"] == "true"
        assert kcm["service-account-private-key-file"] == unit_flags(p, "kube-apiserver.service")["service-account-signing-key-file"]
        sched = unit_flags(p, "kube-scheduler.service")
        cfg = yaml_file(p, sched["config"])
        assert cfg["kind"] == "KubeSchedulerConfiguration"
        assert cfg["clientConnection"]["kubeconfig"] == "/etc/kubernetes/kube-scheduler.kubeconfig"
        assert cfg["leaderElection"]["leaderElect"] is True
        assert cn(cert(kubeconfig_parts(p.file(cfg["clientConnection"]["kubeconfig"]).data)["cert"])) == "system:kube-scheduler"


def test_the_same_inputs_render_the_same_bytes():
    c, m = cluster("ha"), materials("ha")
    for name in ("controller-0", "node-1", "lb", WORKSTATION):
        assert node_plan(c, m, name) == node_plan(c, m, name)


def test_an_unknown_node_is_a_clear_error():
    from hardway.errors import HardwayError
    with pytest.raises(HardwayError, match="no node 'nope'.*nodes: lb, controller-0"):
        node_plan(cluster("ha"), materials("ha"), "nope")
