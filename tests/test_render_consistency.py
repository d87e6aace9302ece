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
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization

from hardway.plan import WORKSTATION, NodePlan
from hardway.render import node_plan
from render_helpers import (EXAMPLES, PKI, VERSIONS, at_version, cert, cluster, cn, covers,
                                 exec_starts, kubeconfig_parts, materials, orgs, text, unit_flags, url_host,
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
HOST_FILES = {"/etc/resolv.conf", "/etc/hosts"}


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
        downloaded = {b["path"] for b in p.notes.binaries}
        for f in p.files:
            if f.path.startswith("/etc/systemd/system/"):
                for args in exec_starts(f.data.decode()):
                    program = args[0]
                    shipped = program in p.paths and p.file(program).mode & 0o111  # a script of the bundle
                    assert program in downloaded or shipped or program.startswith(("/usr/sbin/", "/sbin/")), \
                        (p.node, program)


_ANY_PATH = re.compile(r"(?<![\w.-])(/(?:etc|opt|run|srv|usr|var)/[\w.\-/@+]*[\w@+-])")


@pytest.mark.parametrize("example,minor", CASES)
def test_every_directory_a_node_gets_is_used(example, minor):
    """install.sh creates each planned directory (with its mode): each must hold planned files or be
    named, itself or a path inside it, by a unit or config of the same node. An unused one is
    clutter on the node, and a mode nobody relies on."""
    c, plans = setup(example, minor)
    for p in plans.values():
        named = set()
        for f in p.files:
            if f.path.startswith(PKI + "/") or f.path.endswith((".crt", ".key", ".pub", ".pem")):
                continue
            named.update(_ANY_PATH.findall(f.data.decode("utf-8")))
        for d in p.directories:
            holds = any(f.path.startswith(d.path + "/") for f in p.files)
            used = any(n == d.path or n.startswith(d.path + "/") for n in named)
            assert holds or used, f"{p.node}: {d.path} is created but holds no file and nothing of the node names it"


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


def haproxy_sections(cfg: str) -> list[tuple[list[str], list[list[str]]]]:
    """(section header words, [keyword line words]) in file order; comments and blank lines dropped."""
    sections: list[tuple[list[str], list[list[str]]]] = []
    for line in cfg.splitlines():
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if line[0].isspace():
            assert sections, f"a keyword outside any section: {line!r}"
            sections[-1][1].append(words)
        else:
            sections.append((words, []))
    return sections


def _enabled(options: list[str], name: str) -> bool:
    """HAProxy's rule for a server option: the last of `name` / `no-name` wins (default-server first)."""
    last = None
    for word in options:
        if word in (name, f"no-{name}"):
            last = word
    return last == name


def haproxy_servers(cfg: str) -> dict[str, list[tuple[str, str, list[str]]]]:
    """backend name -> [(server name, address, effective options)], the options being those of the
    `defaults` section's default-server, then the backend's default-server lines, then the server's own."""
    inherited: list[str] = []
    out: dict[str, list[tuple[str, str, list[str]]]] = {}
    for header, lines in haproxy_sections(cfg):
        if header[0] == "defaults":
            inherited = [w for words in lines if words[0] == "default-server" for w in words[1:]]
        elif header[0] in ("backend", "listen"):
            defaults = list(inherited)
            servers = out.setdefault(header[1], [])
            for words in lines:
                if words[0] == "default-server":
                    defaults += words[1:]
                elif words[0] == "server":
                    servers.append((words[1], words[2], defaults + words[3:]))
    return out


def haproxy_backend(cfg: str, name: str) -> list[list[str]]:
    """The keyword lines of the `defaults` sections before backend `name`, then its own."""
    lines: list[list[str]] = []
    for header, body in haproxy_sections(cfg):
        if header[0] == "defaults":
            lines = list(body)
        elif header[:2] in (["backend", name], ["listen", name]):
            return lines + body
    raise AssertionError(f"no backend {name}")


@pytest.mark.parametrize("example,minor", CASES)
def test_load_balancer_balances_every_controller(example, minor):
    c, plans = setup(example, minor)
    for n in c.loadbalancers:
        cfg = text(plans[n.name], "/etc/haproxy/haproxy.cfg")
        sections = haproxy_sections(cfg)
        [(_, frontend)] = [(h, body) for h, body in sections if h[0] == "frontend"]
        [[_, backend]] = [w for w in frontend if w[0] == "default_backend"]
        backends = haproxy_servers(cfg)
        assert set(backends) == {backend}, "one backend, the frontend's"
        servers = backends[backend]
        assert [(s, a) for s, a, _ in servers] == [(ctrl.name, f"{ctrl.address}:{c.api_port}") for ctrl in c.controllers]
        # Each server is health-checked (`check`), the check speaks TLS to kube-apiserver (`check-ssl`)
        # and asks GET /readyz, and only a 200 counts as healthy: a controller whose API server is not
        # ready gets no traffic. Without check-ssl the plain-HTTP check fails on every controller.
        for name, _, options in servers:
            assert _enabled(options, "check"), f"{n.name}: server {name} is not health-checked: {options}"
            assert _enabled(options, "check-ssl"), f"{n.name}: server {name}'s health check does not use TLS: {options}"
            assert not _enabled(options, "ssl"), "TLS passthrough: the traffic itself must not be re-encrypted"
        lines = haproxy_backend(cfg, backend)
        assert ["option", "httpchk", "GET", "/readyz"] in lines
        assert ["http-check", "expect", "status", "200"] in lines
        assert ["mode", "tcp"] in lines
        assert any(w[0] == "bind" and re.fullmatch(rf"\S*:{c.api_port}", w[1]) for w in frontend)


@pytest.mark.parametrize("example,minor", CASES)
def test_routes_and_hosts(example, minor):
    c, plans = setup(example, minor)
    every = {w.name: (str(w.pod_cidr), str(w.address)) for w in c.workers}
    for n in c.nodes:
        if n.name not in plans:
            continue
        p = plans[n.name]
        got = {r["node"]: (r["cidr"], r["via"]) for r in p.notes.routes}
        if n.is_loadbalancer:
            assert got == {}
        else:
            assert got == {k: v for k, v in every.items() if k != n.name}
        named = {(line.split()[0], name) for line in p.notes.hosts for name in line.split()[1:]}
        for other in c.nodes:
            assert (str(other.address), other.name) in named
            assert other.fqdn is None or (str(other.address), other.fqdn) in named
    hosts = text(plans[WORKSTATION], "/hosts").splitlines()
    assert [h for h in hosts if not h.startswith("#")] == list(plans[c.nodes[0].name].notes.hosts)
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


# ---------------------------------------------------------------- who trusts whom ----------------
#
# Every certificate or key file a flag or config field names, paired with the CA (or the other half
# of the key pair) whose flag should accept it, read from the node's own planned files. The
# expectations come from the certificates: a leaf must be signed by the CA file the other side is
# told to trust (on every node that trusts it: kube-apiserver on one controller talks to etcd on
# all), and a certificate's key must be the key file beside it.

# (node, item, label, bytes): `item` tells several files of one node apart (kubeconfigs)
Found = tuple[str, str, str, bytes]


def _flag(unit: str, flag: str):
    def find(c, plans) -> list[Found]:
        out = []
        for p in plans.values():
            if f"/etc/systemd/system/{unit}" in p.paths:
                path = unit_flags(p, unit).get(flag)
                assert isinstance(path, str) and path, f"{p.node}: {unit} has no --{flag}"
                assert path in p.paths, f"{p.node}: {unit} --{flag}={path} is not a file of the node"
                out.append((p.node, "", f"{p.node}:{unit.removesuffix('.service')} --{flag}={path}",
                            p.file(path).data))
        return out
    return find


def _field(config: str, dotted: str):
    def find(c, plans) -> list[Found]:
        out = []
        for p in plans.values():
            if config in p.paths:
                value = yaml_file(p, config)
                for key in dotted.split("."):
                    value = value[key]
                assert value in p.paths, f"{p.node}: {config} {dotted}={value} is not a file of the node"
                out.append((p.node, "", f"{p.node}:{config} {dotted}={value}", p.file(value).data))
        return out
    return find


def _kubeconfigs(part: str):
    """`ca`, `cert` or `key` of every kubeconfig of every node and of the workstation."""
    def find(c, plans) -> list[Found]:
        return [(p.node, f.path, f"{p.node}:{f.path} {part}", kubeconfig_parts(f.data)[part])
                for p in plans.values() for f in p.files if f.path.endswith(".kubeconfig")]
    return find


def api(flag: str):
    return _flag("kube-apiserver.service", flag)


def etcd(flag: str):
    return _flag("etcd.service", flag)


def kcm(flag: str):
    return _flag("kube-controller-manager.service", flag)


def kubelet(dotted: str):
    return _field("/etc/kubernetes/kubelet-config.yaml", dotted)


def _allowed_names(c, plans) -> list[tuple[str, set[str]]]:
    """--requestheader-allowed-names (names, not a file) of every kube-apiserver."""
    return [(f"{p.node}:kube-apiserver --requestheader-allowed-names",
             set(str(unit_flags(p, "kube-apiserver.service")["requestheader-allowed-names"]).split(",")))
            for p in plans.values() if "/etc/systemd/system/kube-apiserver.service" in p.paths]


# (what, the certificates, the CA files that must have issued each of them, their CN: a name or
# a function giving the names each trusting node allows)
ISSUED = [
    ("kube-apiserver's etcd client certificate, by the CA kube-apiserver checks etcd with",
     api("etcd-certfile"), api("etcd-cafile"), "kube-apiserver-etcd-client"),
    ("kube-apiserver's etcd client certificate, by the CA etcd accepts clients of",
     api("etcd-certfile"), etcd("trusted-ca-file"), "kube-apiserver-etcd-client"),
    ("etcd's serving certificate, by the CA kube-apiserver checks etcd with",
     etcd("cert-file"), api("etcd-cafile"), None),
    ("etcd's serving certificate, by etcd's own trusted CA", etcd("cert-file"), etcd("trusted-ca-file"), None),
    ("each etcd member's peer certificate, by every member's peer CA",
     etcd("peer-cert-file"), etcd("peer-trusted-ca-file"), None),
    ("the front-proxy client, by kube-apiserver's request-header CA",
     api("proxy-client-cert-file"), api("requestheader-client-ca-file"), _allowed_names),
    ("the front-proxy client, by the controller-manager's request-header CA",
     api("proxy-client-cert-file"), kcm("requestheader-client-ca-file"), None),
    ("kube-apiserver's kubelet client certificate, by every kubelet's client CA",
     api("kubelet-client-certificate"), kubelet("authentication.x509.clientCAFile"), "kube-apiserver-kubelet-client"),
    ("every kubelet's serving certificate, by the CA kube-apiserver checks kubelets with",
     kubelet("tlsCertFile"), api("kubelet-certificate-authority"), None),
    ("kube-apiserver's serving certificate, by the CA of every kubeconfig",
     api("tls-cert-file"), _kubeconfigs("ca"), None),
    ("kube-apiserver's serving certificate, by the root CA the controller-manager gives pods",
     api("tls-cert-file"), kcm("root-ca-file"), None),
    ("every kubeconfig's client certificate, by kube-apiserver's client CA",
     _kubeconfigs("cert"), api("client-ca-file"), None),
    ("every kubeconfig's client certificate, by the controller-manager's client CA",
     _kubeconfigs("cert"), kcm("client-ca-file"), None),
]

# (what, certificate or public key files, private key files, scope): "node" pairs the files of one
# node (and one kubeconfig); "cluster" pairs every node's with every node's.
KEY_PAIRS = [
    ("kube-apiserver's serving pair", api("tls-cert-file"), api("tls-private-key-file"), "node"),
    ("kube-apiserver's etcd client pair", api("etcd-certfile"), api("etcd-keyfile"), "node"),
    ("kube-apiserver's kubelet client pair", api("kubelet-client-certificate"), api("kubelet-client-key"), "node"),
    ("kube-apiserver's front-proxy client pair", api("proxy-client-cert-file"), api("proxy-client-key-file"), "node"),
    ("etcd's serving pair", etcd("cert-file"), etcd("key-file"), "node"),
    ("etcd's peer pair", etcd("peer-cert-file"), etcd("peer-key-file"), "node"),
    ("the controller-manager's signing pair", kcm("cluster-signing-cert-file"), kcm("cluster-signing-key-file"), "node"),
    ("the kubelet's serving pair", kubelet("tlsCertFile"), kubelet("tlsPrivateKeyFile"), "node"),
    ("each kubeconfig's client pair", _kubeconfigs("cert"), _kubeconfigs("key"), "node"),
    # tokens signed on one controller are verified by kube-apiserver on every controller
    ("service-account tokens kube-apiserver signs, verified by every kube-apiserver",
     api("service-account-key-file"), api("service-account-signing-key-file"), "cluster"),
    ("service-account tokens the controller-manager signs, verified by every kube-apiserver",
     api("service-account-key-file"), kcm("service-account-private-key-file"), "cluster"),
]

# (what, certificate files, CA bundle files that must contain that very certificate)
SAME_CA = [
    # kubelet client certificates the controller-manager signs from CSRs must be accepted by
    # kube-apiserver, and serving certificates it signs for kubelets verified by it
    ("the controller-manager's signing CA, among kube-apiserver's client CAs",
     kcm("cluster-signing-cert-file"), api("client-ca-file")),
    ("the controller-manager's signing CA, the CA kube-apiserver checks kubelets with",
     kcm("cluster-signing-cert-file"), api("kubelet-certificate-authority")),
]


def _certs(data: bytes) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(data)


def _issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        leaf.verify_directly_issued_by(ca)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def _public_key(data: bytes) -> bytes:
    """The SubjectPublicKeyInfo of a PEM certificate, private key or public key."""
    if b"CERTIFICATE" in data:
        key = x509.load_pem_x509_certificate(data).public_key()
    elif b"PRIVATE KEY" in data:
        key = serialization.load_pem_private_key(data, password=None).public_key()
    else:
        key = serialization.load_pem_public_key(data)
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


TRUST_CASES = [pytest.param(e, m, id=f"{e}-{m}") for e in ("kthw", "ha") for m in VERSIONS]


@pytest.mark.parametrize("example,minor", TRUST_CASES)
def test_each_certificate_is_signed_by_the_ca_its_verifier_trusts(example, minor):
    c, plans = setup(example, minor)
    for what, leaves, issuers, names in ISSUED:
        found, trusting = leaves(c, plans), issuers(c, plans)
        assert found and trusting, f"{what}: nothing to check"
        for _, _, leaf_label, leaf_pem in found:
            leaf = cert(leaf_pem)
            for _, _, ca_label, ca_pem in trusting:
                assert any(_issued_by(leaf, ca) for ca in _certs(ca_pem)), \
                    f"{what}: {leaf_label} (CN {cn(leaf)}) is not signed by {ca_label}"
            if isinstance(names, str):
                assert cn(leaf) == names, f"{what}: {leaf_label} has CN {cn(leaf)!r}, expected {names!r}"
            elif names is not None:
                for label, allowed in names(c, plans):
                    assert cn(leaf) in allowed, f"{what}: {leaf_label} has CN {cn(leaf)!r}, {label} allows {allowed}"


@pytest.mark.parametrize("example,minor", TRUST_CASES)
def test_each_certificate_flag_has_its_own_key_beside_it(example, minor):
    c, plans = setup(example, minor)
    for what, publics, privates, scope in KEY_PAIRS:
        found, keys = publics(c, plans), privates(c, plans)
        assert found and keys, f"{what}: nothing to check"
        pairs = [(a, b) for a in found for b in keys if scope == "cluster" or a[:2] == b[:2]]
        assert scope == "cluster" or len(pairs) == len(found) == len(keys), f"{what}: unpaired files"
        for (_, _, pub_label, pub), (_, _, key_label, key) in pairs:
            assert _public_key(pub) == _public_key(key), f"{what}: {key_label} is not the key of {pub_label}"
    for what, signers, bundles in SAME_CA:
        found, trusting = signers(c, plans), bundles(c, plans)
        assert found and trusting, f"{what}: nothing to check"
        for _, _, label, pem in found:
            for _, _, bundle_label, bundle in trusting:
                assert cert(pem) in _certs(bundle), f"{what}: {label} is not in {bundle_label}"
