"""The cluster spec: every bad input gets a message naming the field, the value and what is allowed;
every derived value is right; the Cluster is immutable.

Each bad case is the valid BASE changed in one place, so the message has exactly one cause. The
expected fragments are facts about the input (the field path, the value written, the allowed
values from the README's spec reference, arithmetic on the CIDRs), not strings from hardway.spec.
"""

from __future__ import annotations

import copy
import dataclasses
import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from hardway import spec
from hardway.errors import HardwayError, SpecError

BASE: dict[str, Any] = {
    "name": "lab",
    "kubernetesVersion": "v1.37.2",
    "network": {"podCIDR": "10.200.0.0/16", "serviceCIDR": "10.32.0.0/24"},
    "pki": {"keyAlgorithm": "ECDSA-P256"},
    "encryption": {"provider": "secretbox"},
    "nodes": [
        {"name": "server", "address": "10.240.0.10", "roles": ["controller"]},
        {"name": "node-0", "address": "10.240.0.20", "roles": ["worker"]},
        {"name": "node-1", "address": "10.240.0.21", "roles": ["worker"]},
    ],
}

SUPPORTED_MINORS = ("1.35", "1.36", "1.37")  # README: supported minors
KEY_ALGORITHMS = ("RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256", "ECDSA-P384")
PROVIDERS = ("secretbox", "aescbc", "aesgcm")
ROLES = ("controller", "worker", "loadbalancer")


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


def changed(mutate: Callable[[dict], Any]) -> str:
    """BASE with one change, as YAML text."""
    data = copy.deepcopy(BASE)
    mutate(data)
    return dump(data)


def line_of(text: str, needle: str, last: bool = False) -> int:
    """The 1-based number of the first (or last) line holding `needle`."""
    numbers = [number for number, line in enumerate(text.splitlines(), 1) if needle in line]
    assert numbers, f"{needle!r} not in the spec text"
    return numbers[-1] if last else numbers[0]


def set_in(path: str, value: Any) -> Callable[[dict], None]:
    """set_in("nodes.2.name", "x"): one change at a dotted path (numbers index lists)."""
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]

    def mutate(data: dict) -> None:
        target = data
        for p in parents:
            target = target[p]
        target[last] = value
    return mutate


def delete(path: str) -> Callable[[dict], None]:
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]

    def mutate(data: dict) -> None:
        target = data
        for p in parents:
            target = target[p]
        del target[last]
    return mutate


def both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        for m in mutations:
            m(data)
    return mutate


def add_worker(name: str, address: str, **extra: Any) -> Callable[[dict], None]:
    return lambda data: data["nodes"].append({"name": name, "address": address, "roles": ["worker"], **extra})


def rename_key(path: str, old: str, new: str) -> Callable[[dict], None]:
    def mutate(data: dict) -> None:
        target = data
        for p in [int(p) if p.isdigit() else p for p in path.split(".") if p]:
            target = target[p]
        target[new] = target.pop(old)
    return mutate


BASE_TEXT = dump(BASE)
IPV6_BASE = {
    "name": "six",
    "network": {"podCIDR": "fd00:10:200::/56", "serviceCIDR": "fd00:10:32::/112"},
    "nodes": [
        {"name": "c0", "address": "fd00::10", "roles": ["controller"]},
        {"name": "w0", "address": "fd00::20", "roles": ["worker"]},
    ],
}


def case(id: str, text: str, *fragments: str, problems: int = 1, line: str | int | None = None):
    """One bad spec: its text, the fragments its message must hold, how many problems it has, and
    the line the message must point at (its number, or text on it)."""
    if isinstance(line, str):
        line = line_of(text, line)
    return pytest.param(text, fragments, problems, line, id=id)


DUPLICATE_NAME = changed(set_in("nodes.2.name", "node-0"))

BAD = [
    # the file itself
    case("yaml-syntax", "name: lab\nnodes: x: y\n", "line 2, column 9", "YAML"),
    case("yaml-unclosed-flow", "name: lab\nnodes: [\n  {name: a\n", "line 4, column 1", "YAML", "line 3, column 3"),
    case("yaml-bad-indent", "name: lab\nnodes:\n  - name: a\n   address: b\n", "line 4", "column", "YAML"),
    case("empty-file", "", "empty", "name", "nodes"),
    case("comments-only", "# a spec, some day\n", "empty", "name", "nodes"),
    case("not-a-mapping-list", "- name: lab\n- name: other\n", "mapping", "list"),
    case("not-a-mapping-scalar", "lab\n", "mapping", "string"),
    case("two-documents", BASE_TEXT + "---\n" + BASE_TEXT, "document", f"line {BASE_TEXT.count(chr(10)) + 1}"),
    case("duplicate-key", BASE_TEXT + "name: other\n", "name", "duplicate", f"line {line_of(BASE_TEXT, 'name: lab')}",
         line="name: other"),
    # keys
    case("unknown-key", changed(rename_key("network", "podCIDR", "podCIRD")),
         "network.podCIRD", "'podCIRD'", "'podCIDR'", "serviceCIDR", line="podCIRD"),
    case("unknown-key-node", changed(set_in("nodes.1.fdqn", "node-0.example.com")),
         "nodes[1].fdqn", "'fqdn'", line="fdqn"),
    case("unknown-key-top", changed(rename_key("", "encryption", "encyrption")),
         "encyrption", "'encryption'", line="encyrption"),
    case("missing-name", changed(delete("name")), "name", "missing", "DNS-1123"),
    case("missing-nodes", changed(delete("nodes")), "nodes", "missing", "controller"),
    case("missing-node-address", changed(delete("nodes.1.address")), "nodes[1].address", "missing", "IP"),
    case("name-null", changed(set_in("name", None)), "name", "empty"),
    # types YAML users get wrong
    case("version-float", changed(set_in("kubernetesVersion", 1.37)),
         "kubernetesVersion", "1.37", "number", "v1.37.2", *SUPPORTED_MINORS, line="kubernetesVersion"),
    case("port-quoted", changed(set_in("apiServer", {"port": "6443"})), "apiServer.port", "'6443'", "whole number"),
    case("provider-yes", BASE_TEXT.replace("provider: secretbox", "provider: yes"),
         "encryption.provider", "yes", "boolean", line="provider: yes"),
    case("roles-not-a-list", changed(set_in("nodes.1.roles", "worker")), "nodes[1].roles", "list", "[worker]"),
    case("node-not-a-mapping", changed(set_in("nodes.1", "node-0")), "nodes[1]", "mapping", "'node-0'", "address"),
    case("duration-without-unit", changed(set_in("pki.caValidity", 10)), "pki.caValidity", "10", "10y"),
    # nodes
    case("nodes-empty", changed(set_in("nodes", [])), "nodes", "empty", "controller"),
    case("no-controller", changed(set_in("nodes.0.roles", ["worker"])), "nodes", "controller"),
    case("duplicate-name", DUPLICATE_NAME, "nodes[2].name", "'node-0'", "nodes[1]", "unique",
         line=line_of(DUPLICATE_NAME, "name: node-0", last=True)),
    case("duplicate-address", changed(set_in("nodes.2.address", "10.240.0.20")),
         "nodes[2].address", "10.240.0.20", "nodes[1]", "unique"),
    *[case(f"node-name-{why}", changed(set_in("nodes.2.name", bad)), "nodes[2].name", repr(bad), "DNS-1123", "lowercase", *extra)
      for why, bad, extra in [
          ("uppercase", "Node-1", ["uppercase"]),
          ("underscore", "node_1", ["'_'"]),
          ("dots", "node..1", ["'.'"]),
          ("slash", "node/1", ["'/'"]),
          ("64-chars", "n" * 64, ["64", "63"]),
          ("leading-dash", "-node", []),
          ("trailing-newline", "node-1\n", []),
      ]],
    case("cluster-name", changed(set_in("name", "My Lab")), "name", "'My Lab'", "DNS-1123"),
    case("reserved-name", changed(set_in("nodes.2.name", "workstation")), "nodes[2].name", "'workstation'", "reserved"),
    case("bad-address", changed(set_in("nodes.2.address", "10.240.0.300")),
         "nodes[2].address", "'10.240.0.300'", "IPv4 or IPv6"),
    case("address-with-zone", changed(set_in("nodes.2.address", "fe80::1%eth0")), "nodes[2].address", "'fe80::1%eth0'"),
    case("address-family", changed(set_in("nodes.2.address", "fd00::21")), "nodes[2].address", "fd00::21", "IPv6", "IPv4"),
    case("unknown-role", changed(set_in("nodes.1.roles", ["minion"])), "nodes[1].roles[0]", "'minion'", *ROLES),
    case("loadbalancer-plus", changed(set_in("nodes.0.roles", ["controller", "loadbalancer"])),
         "nodes[0].roles", "loadbalancer", "controller+worker"),
    case("bad-fqdn", changed(set_in("nodes.1.fqdn", "node 0.example.com")), "nodes[1].fqdn", "'node 0.example.com'", "DNS"),
    # network
    case("bad-cidr", changed(set_in("network.podCIDR", "10.200.0.0/33")), "network.podCIDR", "10.200.0.0/33", "CIDR"),
    case("cidr-without-prefix", changed(set_in("network.serviceCIDR", "10.32.0.0")), "network.serviceCIDR", "'10.32.0.0'", "/"),
    case("cidr-host-bits", changed(set_in("network.podCIDR", "10.200.0.1/16")), "network.podCIDR", "10.200.0.1/16", "10.200.0.0/16"),
    case("pod-overlaps-service", changed(set_in("network.podCIDR", "10.32.0.0/16")),
         "network.podCIDR", "10.32.0.0/16", "serviceCIDR", "10.32.0.0/24"),
    case("pod-contains-nodes", changed(set_in("network.podCIDR", "10.240.0.0/16")),
         "nodes[0].address", "10.240.0.10", "nodes[2].address", "10.240.0.21", "10.240.0.0/16", problems=3),
    case("service-contains-node", changed(set_in("network.serviceCIDR", "10.240.0.16/28")),
         "nodes[1].address", "10.240.0.20", "serviceCIDR", "10.240.0.16/28", problems=2),
    case("node-range-outside", changed(set_in("nodes.1.podCIDR", "10.201.0.0/24")),
         "nodes[1].podCIDR", "10.201.0.0/24", "10.200.0.0/16"),
    case("node-ranges-overlap", changed(both(set_in("nodes.1.podCIDR", "10.200.0.0/24"), set_in("nodes.2.podCIDR", "10.200.0.0/23"))),
         "nodes[2].podCIDR", "10.200.0.0/23", "nodes[1].podCIDR", "10.200.0.0/24", "disjoint"),
    case("node-range-not-worker", changed(set_in("nodes.0.podCIDR", "10.200.9.0/24")), "nodes[0].podCIDR", "worker"),
    # 10.200.0.0/23 holds two /24 ranges; three workers need three. A /22 holds 4, and so does /25 in the /23.
    case("too-many-workers", changed(both(set_in("network.podCIDR", "10.200.0.0/23"), add_worker("node-2", "10.240.0.22"))),
         "network.podCIDR", "10.200.0.0/23", "2 ", "/24", "3 workers", "/22", "nodePodCIDRSize", "25"),
    # same, but an explicit range takes one of the two: one is left for two workers
    case("too-many-workers-explicit", changed(both(set_in("network.podCIDR", "10.200.0.0/23"), set_in("nodes.2.podCIDR", "10.200.1.0/24"),
                                                   add_worker("node-2", "10.240.0.22"))),
         "network.podCIDR", "10.200.0.0/23", "leaves 1", "2 workers"),
    case("node-size-too-short", changed(set_in("network.nodePodCIDRSize", 16)), "network.nodePodCIDRSize", "16", "17", "30"),
    case("node-size-too-long", changed(set_in("network.nodePodCIDRSize", 31)), "network.nodePodCIDRSize", "31", "30"),
    case("dns-outside-services", changed(set_in("network.clusterDNS", "10.33.0.10")),
         "network.clusterDNS", "10.33.0.10", "10.32.0.0/24"),
    case("dns-is-first-service-ip", changed(set_in("network.clusterDNS", "10.32.0.1")),
         "network.clusterDNS", "10.32.0.1", "first service IP"),
    # kube-apiserver takes at most 20 host bits in the service range: /12 for IPv4, /108 for IPv6
    case("service-range-too-large", changed(set_in("network.serviceCIDR", "172.0.0.0/11")),
         "network.serviceCIDR", "172.0.0.0/11", "/12"),
    case("service-range-too-large-v6", dump({**IPV6_BASE, "network": {**IPV6_BASE["network"], "serviceCIDR": "fd00:10:32::/107"}}),
         "network.serviceCIDR", "fd00:10:32::/107", "/108"),
    case("mixed-families", changed(set_in("network.serviceCIDR", "fd00:10:32::/112")),
         "network.podCIDR", "serviceCIDR", "fd00:10:32::/112", "single-stack", problems=1),
    case("bad-cluster-domain", changed(set_in("network.clusterDomain", "cluster_local")), "network.clusterDomain", "'cluster_local'"),
    # API server
    case("two-controllers-no-endpoint", changed(set_in("nodes.1.roles", ["controller"])), "apiServer.endpoint", "2 controllers"),
    case("bad-endpoint", changed(set_in("apiServer", {"endpoint": "api_server"})), "apiServer.endpoint", "'api_server'"),
    case("bad-extra-san", changed(set_in("apiServer", {"extraSANs": ["ok.example.com", "not ok"]})), "apiServer.extraSANs[1]", "'not ok'"),
    case("port-out-of-range", changed(set_in("apiServer", {"port": 70000})), "apiServer.port", "70000", "65535"),
    # versions
    case("unsupported-version", changed(set_in("kubernetesVersion", "v1.30.0")), "kubernetesVersion", "v1.30.0", *SUPPORTED_MINORS),
    case("version-without-patch", changed(set_in("kubernetesVersion", "v1.37")), "kubernetesVersion", "'v1.37'", "v1.37.2"),
    # PKI
    case("unknown-key-algorithm", changed(set_in("pki.keyAlgorithm", "DSA-2048")), "pki.keyAlgorithm", "DSA-2048", *KEY_ALGORITHMS),
    case("weak-rsa", changed(set_in("pki.keyAlgorithm", "RSA-1024")), "pki.keyAlgorithm", "RSA-1024", "2048", *KEY_ALGORITHMS),
    case("ed25519", changed(set_in("pki.keyAlgorithm", "Ed25519")), "pki.keyAlgorithm", "Ed25519", "Kubernetes", "not", "ECDSA-P256"),
    case("cert-outlives-ca", changed(set_in("pki", {"caValidity": "1y", "certValidity": "2y"})),
         "pki.certValidity", "2y", "caValidity", "1y"),
    case("zero-duration", changed(set_in("pki", {"certValidity": "0d"})), "pki.certValidity", "'0d'", "zero"),
    case("negative-duration", changed(set_in("pki", {"caValidity": "-1y"})), "pki.caValidity", "'-1y'", "zero"),
    case("duration-bad-unit", changed(set_in("pki", {"certValidity": "1w"})), "pki.certValidity", "'1w'", "h", "d", "y"),
    case("duration-absurd", changed(set_in("pki", {"caValidity": "9999999999y"})), "pki.caValidity", "'9999999999y'"),
    # kubelet settings
    case("resolv-conf-relative", changed(set_in("kubelet", {"resolvConf": "resolv.conf"})), "kubelet.resolvConf",
         "'resolv.conf'", "absolute path", "/run/systemd/resolve/resolv.conf", line="resolvConf"),
    case("resolv-conf-on-a-node", changed(set_in("nodes.1.kubelet", {"resolvConf": "/etc/resolv conf"})),
         "nodes[1].kubelet.resolvConf", "'/etc/resolv conf'", line="resolvConf"),
    case("resolv-conf-typo", changed(set_in("kubelet", {"resolvconf": "/x"})), "kubelet.resolvconf",
         "did you mean 'resolvConf'?"),
    case("resolv-conf-number", changed(set_in("kubelet", {"resolvConf": 3})), "kubelet.resolvConf", "string"),
    # encryption
    case("unknown-provider", changed(set_in("encryption.provider", "kms")), "encryption.provider", "'kms'", *PROVIDERS),
]


@pytest.mark.parametrize("text, fragments, problems, line", BAD)
def test_bad_spec_is_explained(text: str, fragments: tuple[str, ...], problems: int, line: int | None):
    with pytest.raises(SpecError) as raised:
        spec.loads(text, source="lab.yaml")
    error = raised.value
    message = str(error)
    assert isinstance(error, HardwayError) and error.exit_code != 0
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} missing from:\n{message}"
    assert len(error.problems) == problems, message
    lines = message.splitlines()
    assert len(lines) == problems
    assert all(x.startswith("lab.yaml: ") for x in lines), message
    if line is not None:
        assert f"lab.yaml: line {line}: " in message, message
    # the user's words, not Python's or pydantic's
    for leak in ("Traceback", "(top level)", "None", "True", "False", "Input should be", "pydantic", "['"):
        assert leak not in message, f"{leak!r} in:\n{message}"


def test_every_problem_is_reported_at_once():
    text = changed(both(set_in("nodes.1.address", "bad"), set_in("pki.keyAlgorithm", "Ed25519"),
                        set_in("encryption.provider", "kms")))
    with pytest.raises(SpecError) as raised:
        spec.loads(text)
    assert {p.split(": ")[1] for p in raised.value.problems} == {"nodes[1].address", "pki.keyAlgorithm", "encryption.provider"}


def test_load_names_the_file(tmp_path: Path):
    bad = tmp_path / "mine.yaml"
    bad.write_text(changed(set_in("encryption.provider", "kms")))
    with pytest.raises(SpecError) as raised:
        spec.load(bad)
    assert str(raised.value).startswith(f"{bad}: line {line_of(bad.read_text(), 'kms')}: encryption.provider")
    with pytest.raises(SpecError, match="no such file"):
        spec.load(tmp_path / "absent.yaml")
    with pytest.raises(SpecError, match="cannot read"):
        spec.load(tmp_path)  # a directory


# ------------------------------------------------------------------ warnings --------------------

@pytest.mark.parametrize("controllers, warned", [(1, False), (2, True), (3, False), (4, True)])
def test_even_controller_count_is_allowed_with_a_warning(controllers: int, warned: bool):
    data = copy.deepcopy(BASE)
    data["apiServer"] = {"endpoint": "api.lab.example.com"}
    data["nodes"] = [{"name": f"c{i}", "address": f"10.240.0.{10 + i}", "roles": ["controller"]} for i in range(controllers)]
    cluster = spec.loads(dump(data))
    assert len(cluster.controllers) == controllers
    etcd_warnings = [w for w in cluster.warnings if "etcd" in w]
    assert bool(etcd_warnings) == warned
    if warned:
        assert str(controllers) in etcd_warnings[0] and str(controllers - 1) in etcd_warnings[0]


@pytest.mark.parametrize("provider, words", [
    ("secretbox", None),
    # kubernetes.io, "Encrypting Confidential Data at Rest": aescbc is open to padding-oracle
    # attacks; aesgcm needs its key rotated every 200k writes
    ("aescbc", ("padding-oracle",)),
    ("aesgcm", ("rotat", "200k")),
])
def test_weak_encryption_providers_are_allowed_with_a_warning(provider: str, words):
    cluster = spec.loads(changed(set_in("encryption.provider", provider)))
    assert cluster.encryption_provider == provider
    warned = [w for w in cluster.warnings if "encryption.provider" in w]
    if words is None:
        assert warned == [] and cluster.warnings == ()
    else:
        [warning] = warned
        assert provider in warning and "use secretbox" in warning
        assert all(w in warning for w in words), warning
        assert len(warning) < 130, "one short line"


# ------------------------------------------------------------------ derived values --------------

def test_defaults_of_every_field():
    minimal = {"name": "tiny", "nodes": [{"name": "server", "address": "192.168.1.10", "roles": ["controller"]},
                                         {"name": "w", "address": "192.168.1.20", "roles": ["worker"]}]}
    c = spec.loads(dump(minimal))
    assert str(c.version) == "v1.37.2"
    assert c.pod_cidr == ipaddress.ip_network("10.200.0.0/16")
    assert c.node_pod_cidr_size == 24
    assert c.service_cidr == ipaddress.ip_network("10.32.0.0/24")
    assert c.cluster_domain == "cluster.local"
    assert c.cluster_dns == ipaddress.ip_address("10.32.0.10")
    assert c.kubernetes_service_ip == ipaddress.ip_address("10.32.0.1")
    assert c.api_endpoint == "192.168.1.10"  # the only controller
    assert c.api_port == 6443
    assert c.api_url == "https://192.168.1.10:6443"
    assert c.local_api_url == "https://127.0.0.1:6443"
    assert c.extra_sans == ()
    assert c.key_algorithm == "RSA-2048"
    assert c.ca_validity == timedelta(days=3650)
    assert c.cert_validity == timedelta(days=365)
    assert c.encryption_provider == "secretbox"
    assert c.node("w").pod_cidr == ipaddress.ip_network("10.200.0.0/24")
    assert c.node("server").pod_cidr is None
    assert c.warnings == ()


@pytest.mark.parametrize("service_cidr, first, dns", [
    ("10.32.0.0/24", "10.32.0.1", "10.32.0.10"),
    ("10.96.0.0/12", "10.96.0.1", "10.96.0.10"),
    ("172.20.128.0/20", "172.20.128.1", "172.20.128.10"),
    ("fd00:10:96::/108", "fd00:10:96::1", "fd00:10:96::a"),
])
def test_first_service_ip_and_dns_default(service_cidr: str, first: str, dns: str):
    data = copy.deepcopy(IPV6_BASE if ":" in service_cidr else BASE)
    data["network"]["serviceCIDR"] = service_cidr
    c = spec.loads(dump(data))
    assert c.kubernetes_service_ip == ipaddress.ip_address(first)
    assert c.cluster_dns == ipaddress.ip_address(dns)


def test_explicit_cluster_dns_is_kept():
    c = spec.loads(changed(set_in("network.clusterDNS", "10.32.0.53")))
    assert c.cluster_dns == ipaddress.ip_address("10.32.0.53")


def test_pod_ranges_explicit_kept_others_in_node_order():
    data = copy.deepcopy(BASE)
    data["nodes"] = [
        {"name": "server", "address": "10.240.0.10", "roles": ["controller", "worker"]},
        {"name": "a", "address": "10.240.0.20", "roles": ["worker"], "podCIDR": "10.200.1.0/24"},
        {"name": "lb", "address": "10.240.0.9", "roles": ["loadbalancer"]},
        {"name": "b", "address": "10.240.0.21", "roles": ["worker"]},
        {"name": "c", "address": "10.240.0.22", "roles": ["worker"], "podCIDR": "10.200.2.0/25"},
        {"name": "d", "address": "10.240.0.23", "roles": ["worker"]},
        {"name": "e", "address": "10.240.0.24", "roles": ["worker"]},
    ]
    c = spec.loads(dump(data))
    ranges = {n.name: str(n.pod_cidr) if n.pod_cidr else None for n in c.nodes}
    assert ranges == {
        "server": "10.200.0.0/24",  # first in node order takes the lowest range
        "a": "10.200.1.0/24",       # explicit, kept
        "lb": None,                 # no pods
        "b": "10.200.3.0/24",       # .1 is a's, .2 holds c's /25
        "c": "10.200.2.0/25",       # explicit, kept (a different size is fine)
        "d": "10.200.4.0/24",
        "e": "10.200.5.0/24",
    }
    assert [n.name for n in c.workers] == ["server", "a", "b", "c", "d", "e"]
    assert [n.name for n in c.controllers] == ["server"]
    assert [n.name for n in c.loadbalancers] == ["lb"]


def test_api_url_brackets_an_ipv6_endpoint():
    data = copy.deepcopy(IPV6_BASE)
    data["apiServer"] = {"endpoint": "fd00::100", "port": 8443}
    c = spec.loads(dump(data))
    assert c.api_url == "https://[fd00::100]:8443"
    assert c.local_api_url == "https://127.0.0.1:8443"
    # a DNS name and an IPv4 endpoint are written as they are
    assert spec.loads(changed(set_in("apiServer", {"endpoint": "api.lab.example.com"}))).api_url == "https://api.lab.example.com:6443"
    assert spec.loads(changed(set_in("apiServer", {"endpoint": "10.240.0.5"}))).api_url == "https://10.240.0.5:6443"


def test_etcd_members(example_path):
    c = spec.load(example_path("ha"))
    raw = yaml.safe_load(example_path("ha").read_text())
    controllers = [n for n in raw["nodes"] if "controller" in n["roles"]]
    assert len(controllers) == 3
    assert c.etcd_initial_cluster == ",".join(f"{n['name']}=https://{n['address']}:2380" for n in controllers)
    assert c.etcd_servers == ",".join(f"https://{n['address']}:2379" for n in controllers)
    assert [m.name for m in c.etcd_members] == [n["name"] for n in controllers]
    assert c.api_url == f"https://{raw['apiServer']['endpoint']}:6443"


def test_ipv6_single_stack_cluster():
    data = copy.deepcopy(IPV6_BASE)
    data["nodes"].append({"name": "w1", "address": "fd00::21", "roles": ["worker"]})
    c = spec.loads(dump(data))
    assert c.pod_cidr.version == c.service_cidr.version == 6
    assert c.node_pod_cidr_size == 64  # kube-controller-manager's IPv6 default
    assert [str(n.pod_cidr) for n in c.workers] == ["fd00:10:200::/64", "fd00:10:200:1::/64"]
    assert c.kubernetes_service_ip == ipaddress.ip_address("fd00:10:32::1")
    assert c.cluster_dns == ipaddress.ip_address("fd00:10:32::a")
    assert c.api_url == "https://[fd00::10]:6443"
    assert c.etcd_initial_cluster == "c0=https://[fd00::10]:2380"
    assert c.etcd_servers == "https://[fd00::10]:2379"


def test_cluster_is_immutable():
    c = spec.loads(BASE_TEXT)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.name = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.nodes[0].address = ipaddress.ip_address("10.0.0.1")  # type: ignore[misc]
    assert isinstance(c.nodes, tuple) and isinstance(c.etcd_members, tuple) and isinstance(c.extra_sans, tuple)
    assert isinstance(c.nodes[0].roles, frozenset)
    assert hash(c.nodes[0])  # frozen values hash
    assert spec.loads(BASE_TEXT) == c  # a value: same spec, equal Cluster


@pytest.mark.parametrize("name", ["kthw", "ha", "large"])
def test_examples_load(example_path, name: str):
    path = example_path(name)
    raw = yaml.safe_load(path.read_text())
    c = spec.load(path)
    assert c.name == raw["name"]
    assert [n.name for n in c.nodes] == [n["name"] for n in raw["nodes"]]
    assert c.warnings == ()
    pods = [n.pod_cidr for n in c.workers]
    assert all(p is not None and p.subnet_of(c.pod_cidr) for p in pods)
    assert len(set(pods)) == len(pods)
    for n in raw["nodes"]:
        if "podCIDR" in n:
            assert str(c.node(n["name"]).pod_cidr) == n["podCIDR"]


def test_kthw_example_is_kthw(example_path):
    c = spec.load(example_path("kthw"))
    assert [n.name for n in c.controllers] == ["server"]
    assert [(n.name, str(n.pod_cidr)) for n in c.workers] == [("node-0", "10.200.0.0/24"), ("node-1", "10.200.1.0/24")]
    assert c.api_url == "https://server.kubernetes.local:6443"
    assert c.cluster_dns == ipaddress.ip_address("10.32.0.10")


def test_large_example_has_1000_workers(example_path):
    c = spec.load(example_path("large"))
    assert len(c.workers) == 1000
    net = ipaddress.ip_network("10.192.0.0/12")
    expected = list(net.subnets(new_prefix=24))[:1000]  # no explicit ranges: the first 1000 /24s in order
    assert [n.pod_cidr for n in c.workers] == expected


def test_readme_spec_reference_is_true(repo_root):
    """The README's annotated cluster.yaml is a valid spec, and its sample error is what a user gets."""
    readme = (repo_root / "README.md").read_text()
    reference = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    c = spec.loads(reference)
    assert c.name == "kubernetes-the-hard-way"
    sample = next(line for line in readme.splitlines() if line.startswith("cluster.yaml: line "))
    typo = reference.replace("serviceCIDR:", "servceCIDR:", 1)
    with pytest.raises(SpecError) as raised:
        spec.loads(typo)
    assert str(raised.value) == sample


def test_kubelet_resolv_conf_defaults_and_overrides_per_node():
    assert {n.resolv_conf for n in spec.loads(BASE_TEXT).nodes} == {"/etc/resolv.conf"}
    text = changed(both(set_in("kubelet", {"resolvConf": "/run/systemd/resolve/resolv.conf"}),
                        set_in("nodes.1.kubelet", {"resolvConf": "/etc/kubelet-resolv.conf"})))
    nodes = spec.loads(text).nodes
    assert nodes[1].resolv_conf == "/etc/kubelet-resolv.conf"
    assert {n.resolv_conf for i, n in enumerate(nodes) if i != 1} == {"/run/systemd/resolve/resolv.conf"}
