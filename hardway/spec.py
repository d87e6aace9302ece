"""Load and validate cluster.yaml into one immutable Cluster value.

Two passes: pydantic checks the shape (types, required and unknown keys), then `_build` checks what
the fields mean together (addresses, ranges, roles) and computes every derived value once. Both report
every problem they find, each as "field.path: what is wrong; what is allowed", with the line in the
file when it is known, and raise SpecError. Nothing here touches the disk except reading the spec.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import yaml

from .durations import parse_duration
from .errors import SpecError
from .sshspec import (SshSettings, parse_host_key, parse_identity, parse_jump, parse_port, parse_ssh_host,
                      parse_user)
from .names import (LABEL_RULE, SUBDOMAIN_RULE, IPAddress, IPNetwork, is_dns_label, is_dns_name, is_ip,  # noqa: F401
                    host_port, not_a_label, parse_address, parse_host, parse_network, url_host)
from .versions import DEFAULT_VERSION, SUPPORTED_MINORS, KubernetesVersion, parse_version
from .yamlshape import Scan, Strict, kind, parse_yaml, validate, yaml_syntax_problem
from .yamlshape import path as field_path

ROLES = ("controller", "worker", "loadbalancer")
WORKSTATION = "workstation"  # the operator's bundle; not a node name
KEY_ALGORITHMS = ("RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256", "ECDSA-P384")
ENCRYPTION_PROVIDERS = ("secretbox", "aescbc", "aesgcm")
# Providers Kubernetes does not recommend (kubernetes.io, "Encrypting Confidential Data at Rest"):
# allowed, with a warning.
PROVIDER_WARNINGS = {
    "aescbc": "not recommended by Kubernetes, vulnerable to padding-oracle attacks",
    "aesgcm": "its key must be rotated every 200k writes, not recommended without automated rotation",
}
# kube-controller-manager's --node-cidr-mask-size-ipv4/-ipv6 defaults.
DEFAULT_NODE_POD_CIDR_SIZE = {4: 24, 6: 64}
# kube-apiserver refuses a service range with more host bits than this (validateMaxCIDRRange).
MAX_SERVICE_HOST_BITS = 20
DEFAULT_RESOLV_CONF = "/etc/resolv.conf"  # the kubelet's resolvConf unless kubelet.resolvConf says otherwise



# ---------------------------------------------------------------- shape (pydantic) --------------

class NetworkSpec(Strict):
    podCIDR: str = "10.200.0.0/16"
    nodePodCIDRSize: int | None = None  # 24 for IPv4, 64 for IPv6
    serviceCIDR: str = "10.32.0.0/24"
    clusterDomain: str = "cluster.local"
    clusterDNS: str | None = None


class ApiServerSpec(Strict):
    endpoint: str | None = None
    port: int = 6443
    extraSANs: list[str] = []


class PkiSpec(Strict):
    keyAlgorithm: str = "RSA-2048"
    caValidity: str = "10y"
    certValidity: str = "1y"


class EncryptionSpec(Strict):
    provider: str = "secretbox"


class KubeletSpec(Strict):
    resolvConf: str | None = None  # DEFAULT_RESOLV_CONF; systemd-resolved hosts: /run/systemd/resolve/resolv.conf


class SshSpec(Strict):
    """How `hardway deploy` logs in (docs/deploy.md). A path to a key, never a key."""
    user: str | None = None  # default root
    port: int | None = None  # default 22
    identity: str | None = None  # a private key file on the workstation
    jump: str | None = None  # [user@]host[:port]


class NodeSshSpec(SshSpec):
    host: str | None = None  # default: the node's address
    hostKeys: list[str] = []  # pinned public host keys, 'ssh-ed25519 AAAA...'


class NodeSpec(Strict):
    name: str
    address: str
    roles: list[str]
    fqdn: str | None = None
    podCIDR: str | None = None
    kubelet: KubeletSpec | None = None  # overrides the top-level kubelet settings on this node
    ssh: NodeSshSpec | None = None  # overrides the top-level ssh settings for this node


class ClusterSpec(Strict):
    name: str
    kubernetesVersion: str = DEFAULT_VERSION
    network: NetworkSpec = NetworkSpec()
    apiServer: ApiServerSpec = ApiServerSpec()
    pki: PkiSpec = PkiSpec()
    encryption: EncryptionSpec = EncryptionSpec()
    kubelet: KubeletSpec = KubeletSpec()
    ssh: SshSpec = SshSpec()
    nodes: list[NodeSpec]


# ---------------------------------------------------------------- the value ---------------------

class _Roles:
    """is_controller, is_worker, is_loadbalancer over a `roles` set."""

    roles: frozenset[str]

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    @property
    def is_worker(self) -> bool:
        return "worker" in self.roles

    @property
    def is_loadbalancer(self) -> bool:
        return "loadbalancer" in self.roles


@dataclass(frozen=True)
class Node(_Roles):
    name: str
    address: IPAddress
    roles: frozenset[str]
    fqdn: str | None = None
    pod_cidr: IPNetwork | None = None  # workers only
    resolv_conf: str = DEFAULT_RESOLV_CONF  # the kubelet's resolvConf (kubelet.resolvConf, the node's first)
    # the node's own ssh block (hardway.deploy.targets applies the defaults); how to reach the node is
    # no part of what it gets: compare=False keeps it out of equality and the bundles' input digests
    ssh: SshSettings = field(default=SshSettings(), compare=False)

    @property
    def url_host(self) -> str:
        """The address as it appears in a URL (IPv6 in brackets)."""
        return url_host(str(self.address))

    @property
    def hostnames(self) -> tuple[str, ...]:
        return (self.name,) + ((self.fqdn,) if self.fqdn else ())


@dataclass(frozen=True)
class EtcdMember:
    name: str
    peer_url: str
    client_url: str


@dataclass(frozen=True)
class Cluster:
    """Everything downstream needs, computed once. Nothing after loading recomputes these."""

    name: str
    version: KubernetesVersion
    pod_cidr: IPNetwork
    node_pod_cidr_size: int
    service_cidr: IPNetwork
    cluster_domain: str
    cluster_dns: IPAddress
    kubernetes_service_ip: IPAddress  # the first service IP: the `kubernetes` Service
    api_endpoint: str  # a DNS name or an IP, as written (or the only controller's address)
    api_port: int
    api_url: str  # https://<endpoint>:<port>
    local_api_url: str  # https://127.0.0.1:<port>, for components on a controller
    extra_sans: tuple[str, ...]
    key_algorithm: str
    ca_validity: timedelta
    cert_validity: timedelta
    encryption_provider: str
    nodes: tuple[Node, ...]
    etcd_members: tuple[EtcdMember, ...]
    source: str = "cluster.yaml"
    ssh: SshSettings = field(default=SshSettings(), compare=False)  # the cluster-level ssh block (as Node.ssh)
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def controllers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_controller)

    @property
    def workers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_worker)

    @property
    def loadbalancers(self) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.is_loadbalancer)

    @property
    def etcd_initial_cluster(self) -> str:
        """etcd's --initial-cluster: name=peer-url for every controller."""
        return ",".join(f"{m.name}={m.peer_url}" for m in self.etcd_members)

    @property
    def etcd_servers(self) -> str:
        """kube-apiserver's --etcd-servers: every controller's client URL."""
        return ",".join(m.client_url for m in self.etcd_members)

    def node(self, name: str) -> Node:
        try:
            return self._nodes_by_name[name]
        except KeyError:
            raise KeyError(name) from None

    @cached_property
    def _nodes_by_name(self) -> dict[str, Node]:  # node() once per template of 1000 nodes: no linear scan
        return {n.name: n for n in self.nodes}


# ---------------------------------------------------------------- loading -----------------------

def load(path: str | Path) -> Cluster:
    path = Path(path)
    try:
        text = _read_bounded(path)
    except FileNotFoundError:
        raise SpecError(str(path), ["no such file; `hardway init` writes a starter cluster.yaml"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), [f"cannot read it: {e}"]) from None
    return loads(text, source=str(path))


def loads(text: str, source: str = "cluster.yaml") -> Cluster:
    _check_bounds(text, source)
    try:
        tree, data = parse_yaml(text)
    except yaml.MarkedYAMLError as e:
        raise SpecError(source, [yaml_syntax_problem(e) + _tab_note(text, e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(source, [f"YAML error: {e}"]) from None
    if data is None:
        raise SpecError(source, ["the file is empty; it needs at least `name` and `nodes` (`hardway init` writes a starter file)"])
    if not isinstance(data, dict):
        raise SpecError(source, [f"the file must be a mapping of keys (name, nodes, ...), not {kind(data)}"])
    _check_node_count(data, source)
    scan = Scan(tree)
    spec, problems = validate(ClusterSpec, data, scan, required=_required, examples=_STRING_EXAMPLES, special=_special)
    if problems:
        raise SpecError(source, problems)
    sink: list[tuple[tuple, str]] = []
    cluster = _build(spec, sink, source)
    if sink:
        raise SpecError(source, [scan.at(loc) + msg for loc, msg in sink])
    return cluster


def _tab_note(text: str, e: yaml.MarkedYAMLError) -> str:
    """What a YAML error at a tab means: the parser's own words ("found character that cannot start any
    token") do not say that YAML forbids tabs in indentation."""
    lines = text.splitlines()
    marks = [m for m in (e.problem_mark, e.context_mark) if m is not None and m.line < len(lines)]
    if any("\t" in lines[m.line][:len(lines[m.line]) - len(lines[m.line].lstrip())] for m in marks):
        return "; tabs are not allowed for indentation in YAML: indent with spaces"
    return ""


# Bounds: whatever the input, loading costs at most about MAX_SPEC_BYTES of parsing. The YAML is
# scanned as events (no recursion, nothing built) before any tree is composed.
MAX_SPEC_BYTES = 4 * 1024 * 1024   # the 1000-worker example is 64 KiB
MAX_NODES = 10_000                 # cluster nodes (README: "supported maximum")
MAX_DEPTH = 32                     # a cluster spec nests 4 deep
MAX_SCALAR = 1024                  # characters of one value (a DNS name is at most 253)
MAX_YAML_NODES = 50 * MAX_NODES    # scalars, mappings and sequences in the whole file


def _read_bounded(path: Path) -> str:
    """The spec's text; a file (or a device) larger than MAX_SPEC_BYTES is refused, not read whole."""
    with open(path, "rb") as f:
        data = f.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(str(path), [f"larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; a cluster spec of "
                                    f"{MAX_NODES} nodes needs under 1 MiB"])
    return data.decode("utf-8")


def _check_bounds(text: str, source: str) -> None:
    """Refuse, in one line and before building anything: anchors and aliases (a spec has no use
    for them; "billion laughs"), too large a file, too deep a nesting, too long a value, too many
    values. Never echoes the value."""
    if len(text) > MAX_SPEC_BYTES:
        raise SpecError(source, [f"larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; a cluster spec of "
                                 f"{MAX_NODES} nodes needs under 1 MiB"])
    depth = count = 0
    try:
        for event in yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
            line = f"line {event.start_mark.line + 1}: " if event.start_mark else ""
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise SpecError(source, [f"{line}YAML anchors and aliases (&name, *name) are not allowed in a "
                                         "cluster spec: write each value out"])
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise SpecError(source, [f"{line}nested more than {MAX_DEPTH} levels deep; a cluster spec "
                                             "nests 4 levels"])
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
            elif isinstance(event, yaml.ScalarEvent) and len(event.value) > MAX_SCALAR:
                raise SpecError(source, [f"{line}a value of {len(event.value)} characters; at most {MAX_SCALAR} "
                                         "are allowed"])
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent, yaml.ScalarEvent)):
                count += 1
                if count > MAX_YAML_NODES:
                    raise SpecError(source, [f"{line}more than {MAX_YAML_NODES} values; a spec of {MAX_NODES} "
                                             "nodes (the supported maximum) has far fewer"])
    except yaml.YAMLError:
        return  # a syntax error: _parse_yaml says where, with the full story


def _check_node_count(data: dict, source: str) -> None:
    nodes = data.get("nodes")
    if isinstance(nodes, list) and len(nodes) > MAX_NODES:
        raise SpecError(source, [f"nodes: {len(nodes)} nodes; at most {MAX_NODES} are supported"])


def _required(loc: tuple) -> str:
    """What a required field holds, for "missing" and "empty" messages."""
    if loc == ("name",):
        return ": the cluster's name, a DNS-1123 label such as kubernetes-the-hard-way"
    return {
        "name": ": the node's name, a DNS-1123 label such as node-0",
        "nodes": ": the machines, each with name, address and roles; at least one controller",
        "address": ": the node's IPv4 or IPv6 address",
        "roles": ": one or more of " + ", ".join(ROLES) + ", e.g. [worker]",
    }.get(str(loc[-1]) if loc else "", "")


_STRING_EXAMPLES = {"caValidity": "10y", "certValidity": "1y", "keyAlgorithm": "ECDSA-P256", "provider": "secretbox"}


def _special(loc: tuple, kind: str, value: Any, got: str) -> str | None:
    if loc == ("kubernetesVersion",) and kind == "string_type" and isinstance(value, (int, float)):
        return (f"got {got}; write the full release version, e.g. kubernetesVersion: {DEFAULT_VERSION} "
                f"(supported minors: {', '.join(SUPPORTED_MINORS)})")
    return None


# ---------------------------------------------------------------- meaning -----------------------

class _Problems:
    """Collects problems; `parse` wraps a parse so one bad field does not hide the next."""

    def __init__(self, sink: list[tuple[tuple, str]]):
        self.sink = sink

    def add(self, loc: tuple, message: str) -> None:
        self.sink.append((loc, f"{field_path(loc)}: {message}"))

    def parse(self, loc: tuple, fn, value):
        try:
            return fn(value)
        except ValueError as e:
            self.add(loc, str(e))
            return None


def _key_algorithm(value: str) -> str:
    if value in KEY_ALGORITHMS:
        return value
    allowed = "allowed: " + ", ".join(KEY_ALGORITHMS)
    if value.lower().replace("-", "") == "ed25519":
        raise ValueError(
            f"{value!r}: Kubernetes does not accept Ed25519 keys (kube-apiserver signs service-account tokens "
            f"only with RSA or ECDSA keys, and kubeadm offers only those); {allowed}")
    if (m := re.fullmatch(r"rsa-?(\d+)", value.lower())) and int(m.group(1)) < 2048:
        raise ValueError(f"{value!r} is too weak: RSA keys need at least 2048 bits; {allowed}")
    close = difflib.get_close_matches(value.upper(), KEY_ALGORITHMS, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(f"unknown key algorithm {value!r}; {allowed}{hint}")


def _one_of(allowed: tuple[str, ...], what: str):
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
        return value
    return check


class PodRangeShortage(ValueError):
    """podCIDR has fewer free node ranges than there are workers without one."""

    def __init__(self, pod_cidr: IPNetwork, size: int, free: int, taken: int, workers: int, needing: int):
        self.free, self.workers, self.needing = free, workers, needing
        capacity = 2 ** (size - pod_cidr.prefixlen)
        room = f"{pod_cidr} has room for {capacity} worker pod ranges of /{size} (nodePodCIDRSize)"
        if taken:
            without = f"{needing} worker" + ("s" if needing != 1 else "")
            room += f"; explicit node podCIDRs take {taken}, which leaves {free} for the {without} without one"
        else:
            room += f", but there are {workers} workers"
        bits = math.ceil(math.log2(workers))  # enough ranges for every worker
        fixes = []
        if size - bits >= 1:
            fixes.append(f"a larger podCIDR (/{size - bits} holds {2 ** bits} ranges of /{size})")
        if pod_cidr.prefixlen + bits <= pod_cidr.max_prefixlen - 2:
            fixes.append(f"a longer nodePodCIDRSize ({pod_cidr.prefixlen + bits} cuts {pod_cidr} into {2 ** bits} ranges)")
        super().__init__(room + ("; use " + " or ".join(fixes) if fixes else "; split the workers into more than one cluster"))


def allocate_pod_ranges(pod_cidr: IPNetwork, size: int, wanted: list[IPNetwork | None]) -> list[IPNetwork]:
    """Each worker's pod range, in node order: an explicit one is kept, a None gets the lowest free
    /size range of pod_cidr that overlaps no explicit one. The explicit ranges must lie inside
    pod_cidr and be pairwise disjoint (validated before). Raises PodRangeShortage naming how many fit."""
    explicit = [r for r in wanted if r is not None]
    # a /size candidate overlaps an explicit range iff it contains it (a smaller range) or lies in it
    small = {r.supernet(new_prefix=size) for r in explicit if r.prefixlen >= size}
    large: dict[int, set[IPNetwork]] = {}
    for r in explicit:
        if r.prefixlen < size:
            large.setdefault(r.prefixlen, set()).add(r)
    taken = len(small) + sum(2 ** (size - r.prefixlen) for rs in large.values() for r in rs)
    free_count = 2 ** (size - pod_cidr.prefixlen) - taken
    needing = len(wanted) - len(explicit)
    if needing > free_count:
        raise PodRangeShortage(pod_cidr, size, free_count, taken, len(wanted), needing)

    def free() -> Iterator[IPNetwork]:
        # by index of /size range inside pod_cidr: walk the gaps between the taken intervals, so the
        # cost is the number of explicit ranges plus workers, never the size of an explicit range
        step = 2 ** (pod_cidr.max_prefixlen - size)
        base = int(pod_cidr.network_address)
        blocked = sorted({((int(r.network_address) - base) // step, 1) for r in small}
                         | {((int(r.network_address) - base) // step, 2 ** (size - r.prefixlen))
                            for rs in large.values() for r in rs})
        cursor = 0
        for start, length in blocked + [(2 ** (size - pod_cidr.prefixlen), 0)]:
            while cursor < start:
                yield type(pod_cidr)((base + cursor * step, size))
                cursor += 1
            cursor = max(cursor, start + length)

    ranges = free()
    return [r if r is not None else next(ranges) for r in wanted]


@dataclass
class _NetworkFacts:
    """What the network section gives the checks after it (None where a field is wrong)."""
    pod_cidr: IPNetwork | None = None
    service_cidr: IPNetwork | None = None
    node_pod_cidr_size: int | None = None
    pod_cidr_ok: bool = False  # podCIDR and nodePodCIDRSize fit together: ranges can be allocated
    first_service_ip: IPAddress | None = None
    cluster_dns: IPAddress | None = None


@dataclass
class _ApiFacts:
    endpoint: str | None
    extra_sans: tuple[str, ...]


@dataclass
class _PkiFacts:
    key_algorithm: str | None
    ca_validity: timedelta | None
    cert_validity: timedelta | None
    provider: str | None


@dataclass
class _NodeDraft(_Roles):
    """One node as read so far; its pod range is filled in by the allocation."""
    name: str
    address: IPAddress | None
    roles: frozenset[str]
    fqdn: str | None
    pod_cidr: IPNetwork | None


def _check_network(net: NetworkSpec, p: _Problems) -> _NetworkFacts:
    facts = _NetworkFacts()
    facts.pod_cidr = pod_cidr = p.parse(("network", "podCIDR"), parse_network, net.podCIDR)
    facts.service_cidr = service_cidr = p.parse(("network", "serviceCIDR"), parse_network, net.serviceCIDR)
    if not is_dns_name(net.clusterDomain):
        p.add(("network", "clusterDomain"), f"{net.clusterDomain!r} is not {SUBDOMAIN_RULE}")
    if service_cidr is not None:
        _check_service_range(net, service_cidr, p, facts)
    if pod_cidr is not None and service_cidr is not None:
        if pod_cidr.version != service_cidr.version:
            p.add(("network", "podCIDR"), f"{pod_cidr} and serviceCIDR {service_cidr} are of different IP families; hardway builds single-stack clusters")
        elif pod_cidr.overlaps(service_cidr):
            p.add(("network", "podCIDR"), f"{pod_cidr} overlaps serviceCIDR {service_cidr}; pod and service ranges must be disjoint")
    facts.node_pod_cidr_size = net.nodePodCIDRSize
    if pod_cidr is not None:
        _check_node_pod_cidr_size(net, pod_cidr, p, facts)
    return facts


def _check_service_range(net: NetworkSpec, service_cidr: IPNetwork, p: _Problems, facts: _NetworkFacts) -> None:
    """serviceCIDR's size, the first service IP and the cluster DNS address inside it."""
    host_bits = service_cidr.max_prefixlen - service_cidr.prefixlen
    if host_bits > MAX_SERVICE_HOST_BITS:
        p.add(("network", "serviceCIDR"),
              f"{service_cidr} is larger than kube-apiserver accepts; the prefix must be at least "
              f"/{service_cidr.max_prefixlen - MAX_SERVICE_HOST_BITS} for IPv{service_cidr.version}")
        return
    if service_cidr.num_addresses < 16:
        p.add(("network", "serviceCIDR"), f"{service_cidr} is too small; it needs room for the `kubernetes` Service and cluster DNS (at least /{service_cidr.max_prefixlen - 4})")
        return
    facts.first_service_ip = first_service_ip = service_cidr.network_address + 1
    if net.clusterDNS is None:
        facts.cluster_dns = service_cidr.network_address + 10
        return
    facts.cluster_dns = cluster_dns = p.parse(("network", "clusterDNS"), parse_address, net.clusterDNS)
    if cluster_dns is None:
        return
    if cluster_dns not in service_cidr:
        p.add(("network", "clusterDNS"), f"{cluster_dns} is outside serviceCIDR {service_cidr}; pick an address inside it (default: the 10th, {service_cidr.network_address + 10})")
    elif cluster_dns == first_service_ip:
        p.add(("network", "clusterDNS"), f"{cluster_dns} is the first service IP, which the `kubernetes` Service takes; pick another (default: {service_cidr.network_address + 10})")
    elif cluster_dns in (service_cidr.network_address, service_cidr.broadcast_address):
        p.add(("network", "clusterDNS"), f"{cluster_dns} is not a usable host address of {service_cidr}")


def _check_node_pod_cidr_size(net: NetworkSpec, pod_cidr: IPNetwork, p: _Problems, facts: _NetworkFacts) -> None:
    size = net.nodePodCIDRSize if net.nodePodCIDRSize is not None else DEFAULT_NODE_POD_CIDR_SIZE[pod_cidr.version]
    facts.node_pod_cidr_size = size
    if not (pod_cidr.prefixlen < size <= pod_cidr.max_prefixlen - 2):
        default = "" if net.nodePodCIDRSize is not None else f" (the default for IPv{pod_cidr.version}; set nodePodCIDRSize)"
        p.add(("network", "nodePodCIDRSize"),
              f"{size}{default} does not fit podCIDR {pod_cidr}: each worker's range must be smaller than podCIDR, "
              f"so the prefix length must be from {pod_cidr.prefixlen + 1} to {pod_cidr.max_prefixlen - 2}")
    else:
        facts.pod_cidr_ok = True


def _check_api(api: ApiServerSpec, p: _Problems) -> _ApiFacts:
    if not 1 <= api.port <= 65535:
        p.add(("apiServer", "port"), f"{api.port} is not a TCP port (1-65535)")
    endpoint = p.parse(("apiServer", "endpoint"), parse_host, api.endpoint) if api.endpoint is not None else None
    extra_sans = tuple(dict.fromkeys(
        s for i, v in enumerate(api.extraSANs) if (s := p.parse(("apiServer", "extraSANs", i), parse_host, v))
    ))
    return _ApiFacts(endpoint, extra_sans)


def _check_pki(spec: ClusterSpec, p: _Problems, warnings: list[str]) -> _PkiFacts:
    """The pki section and the encryption provider: what the PKI stage is asked to make."""
    key_algorithm = p.parse(("pki", "keyAlgorithm"), _key_algorithm, spec.pki.keyAlgorithm)
    ca_validity = p.parse(("pki", "caValidity"), parse_duration, spec.pki.caValidity)
    cert_validity = p.parse(("pki", "certValidity"), parse_duration, spec.pki.certValidity)
    if ca_validity and cert_validity and cert_validity > ca_validity:
        p.add(("pki", "certValidity"), f"{spec.pki.certValidity} is longer than caValidity {spec.pki.caValidity}; a certificate cannot outlive its CA")
    provider = p.parse(("encryption", "provider"), _one_of(ENCRYPTION_PROVIDERS, "encryption provider"), spec.encryption.provider)
    if provider in PROVIDER_WARNINGS:
        warnings.append(f"encryption.provider {provider}: {PROVIDER_WARNINGS[provider]}; use secretbox")
    return _PkiFacts(key_algorithm, ca_validity, cert_validity, provider)


def _check_nodes(nodes: list[NodeSpec], net: _NetworkFacts, p: _Problems) -> list[_NodeDraft]:
    """Each node on its own, and unique names and addresses across them."""
    if not nodes:
        p.add(("nodes",), "the list is empty; a cluster needs at least one controller")
    names: dict[str, int] = {}
    addresses: dict[IPAddress, int] = {}
    drafts = []
    for i, n in enumerate(nodes):
        loc = ("nodes", i)
        if not is_dns_label(n.name):
            p.add(loc + ("name",), not_a_label(n.name, node=True))
        elif n.name == WORKSTATION:
            p.add(loc + ("name",), f"{n.name!r} is reserved for the operator's bundle (admin kubeconfigs, manifests); pick another name")
        elif n.name in names:
            p.add(loc + ("name",), f"{n.name!r} is already the name of nodes[{names[n.name]}]; node names must be unique")
        else:
            names[n.name] = i
        address = p.parse(loc + ("address",), parse_address, n.address)
        if address is not None:
            if address in addresses:
                p.add(loc + ("address",), f"{address} is already the address of nodes[{addresses[address]}]; addresses must be unique")
            else:
                addresses[address] = i
            _check_node_address(loc, address, net, p)
        roles = _check_roles(loc, n.roles, p)
        if address is not None:
            _check_address_use(loc + ("address",), address, roles, p)
        if n.fqdn is not None and not is_dns_name(n.fqdn):
            p.add(loc + ("fqdn",), f"{n.fqdn!r} is not {SUBDOMAIN_RULE}")
        drafts.append(_NodeDraft(n.name, address, frozenset(roles), n.fqdn, _node_pod_cidr(loc, n, roles, net, p)))
    return drafts


def _check_node_address(loc: tuple, address: IPAddress, net: _NetworkFacts, p: _Problems) -> None:
    pod_cidr, service_cidr = net.pod_cidr, net.service_cidr
    if pod_cidr is not None and address.version != pod_cidr.version:
        p.add(loc + ("address",), f"{address} is IPv{address.version} but podCIDR {pod_cidr} is IPv{pod_cidr.version}; "
              "in a single-stack cluster the nodes use the cluster's IP family (pod routes go via node addresses)")
    elif pod_cidr is not None and address in pod_cidr:
        p.add(loc + ("address",), f"{address} is inside podCIDR {pod_cidr}; node addresses must be outside the pod range")
    if service_cidr is not None and address in service_cidr:
        p.add(loc + ("address",), f"{address} is inside serviceCIDR {service_cidr}; node addresses must be outside the service range")


def _unusable_address(address: IPAddress) -> str | None:
    """Why no machine can have `address`, or None."""
    if address.is_unspecified:
        return "the unspecified address (it means 'any', not a machine)"
    if address.version == 4 and address == ipaddress.IPv4Address("255.255.255.255"):
        return "the broadcast address"
    if address.is_multicast:
        return "a multicast address"
    return None


def _check_address_use(loc: tuple, address: IPAddress, roles: list[str], p: _Problems) -> None:
    """A node address other machines can reach: not 0.0.0.0, broadcast or multicast; a controller
    (or load balancer) not on loopback, which no other node reaches."""
    why = _unusable_address(address)
    if why:
        p.add(loc, f"{address} is {why}; give the node's own unicast address")
    elif address.is_loopback and ({"controller", "loadbalancer"} & set(roles)):
        p.add(loc, f"{address} is a loopback address, which the other nodes cannot reach; give the "
                   f"{'controller' if 'controller' in roles else 'load balancer'}'s own address")


def _check_endpoint_use(api: ApiServerSpec, p: _Problems) -> None:
    """An endpoint written as an IP address must be one clients can connect to."""
    try:
        address = ipaddress.ip_address(api.endpoint) if api.endpoint is not None else None
    except ValueError:
        return
    why = address is not None and _unusable_address(address)
    if why:
        p.add(("apiServer", "endpoint"), f"{address} is {why}; give the address or DNS name clients connect to")


def _check_roles(loc: tuple, given: list[str], p: _Problems) -> list[str]:
    roles: list[str] = []
    if not given:
        p.add(loc + ("roles",), f"the list is empty; give one or more of {', '.join(ROLES)}")
    for j, role in enumerate(given):
        if p.parse(loc + ("roles", j), _one_of(ROLES, "role"), role) and role not in roles:
            roles.append(role)
    if "loadbalancer" in roles and len(roles) > 1:
        p.add(loc + ("roles",), f"{', '.join(roles)}: a loadbalancer node takes no other role (HAProxy and kube-apiserver would both listen on the API port); only controller+worker may be combined")
    return roles


def _node_pod_cidr(loc: tuple, n: NodeSpec, roles: list[str], net: _NetworkFacts, p: _Problems) -> IPNetwork | None:
    """A worker's explicit pod range, if it is given and lies inside podCIDR."""
    if n.podCIDR is None:
        return None
    if "worker" not in roles:
        p.add(loc + ("podCIDR",), "only workers run pods; remove podCIDR or add the worker role")
        return None
    node_pod_cidr = p.parse(loc + ("podCIDR",), parse_network, n.podCIDR)
    pod_cidr = net.pod_cidr
    if node_pod_cidr is not None and pod_cidr is not None and not (
            node_pod_cidr.version == pod_cidr.version and node_pod_cidr.subnet_of(pod_cidr)):
        p.add(loc + ("podCIDR",), f"{node_pod_cidr} is outside network.podCIDR {pod_cidr}")
        return None
    return node_pod_cidr


def _check_explicit_ranges_disjoint(drafts: list[_NodeDraft], p: _Problems) -> bool:
    """False if two nodes' explicit pod ranges overlap (each such pair is a problem)."""
    ok = True
    explicit = sorted(((d.pod_cidr, i) for i, d in enumerate(drafts) if d.pod_cidr is not None),
                      key=lambda t: (t[0].network_address, t[0].prefixlen))
    for (prev, i), (cur, j) in zip(explicit, explicit[1:]):  # CIDRs nest or are disjoint, so once sorted any overlap shows between neighbours
        if cur.overlaps(prev):
            first, second = sorted((i, j))
            p.add(("nodes", second, "podCIDR"), f"{drafts[second].pod_cidr} overlaps nodes[{first}].podCIDR {drafts[first].pod_cidr}; node pod ranges must be disjoint")
            ok = False
    return ok


def _check_controllers(spec: ClusterSpec, drafts: list[_NodeDraft], p: _Problems, warnings: list[str]) -> None:
    controllers = [d for d in drafts if d.is_controller]
    if spec.nodes and not controllers:
        p.add(("nodes",), "no node has the controller role; a cluster needs at least one")
    if len(controllers) > 1 and spec.apiServer.endpoint is None:
        p.add(("apiServer", "endpoint"), f"required with {len(controllers)} controllers: the DNS name or address clients use to reach them all (a load balancer)")
    if controllers and len(controllers) % 2 == 0:
        warnings.append(f"{len(controllers)} controllers: etcd tolerates no more failures with {len(controllers)} members than with {len(controllers) - 1}; an odd number is better")


def _allocate_worker_ranges(drafts: list[_NodeDraft], net: _NetworkFacts, p: _Problems) -> None:
    """The remaining workers' pod ranges, in node order, around the explicit ones."""
    workers = [d for d in drafts if d.is_worker]
    try:
        for d, r in zip(workers, allocate_pod_ranges(net.pod_cidr, net.node_pod_cidr_size, [d.pod_cidr for d in workers])):
            d.pod_cidr = r
    except PodRangeShortage as e:
        p.add(("network", "podCIDR"), str(e))


def _build(spec: ClusterSpec, sink: list[tuple[tuple, str]], source: str) -> Cluster | None:
    p = _Problems(sink)
    warnings: list[str] = []
    if not is_dns_label(spec.name):
        p.add(("name",), not_a_label(spec.name))
    version = p.parse(("kubernetesVersion",), parse_version, spec.kubernetesVersion)
    net = _check_network(spec.network, p)
    api = _check_api(spec.apiServer, p)
    _check_endpoint_use(spec.apiServer, p)
    pki = _check_pki(spec, p, warnings)
    drafts = _check_nodes(spec.nodes, net, p)
    ranges_ok = net.pod_cidr_ok and not any(loc[-1:] == ("podCIDR",) for loc, _ in sink)
    ranges_ok = _check_explicit_ranges_disjoint(drafts, p) and ranges_ok
    _check_controllers(spec, drafts, p, warnings)
    if ranges_ok:
        _allocate_worker_ranges(drafts, net, p)
    resolv_confs = _check_kubelet(spec, p)
    ssh = _check_ssh(spec, p)
    if sink:
        return None
    return _with_ssh(_with_resolv_confs(_cluster(spec, source, version, net, api, pki, drafts, warnings), resolv_confs), ssh)


_RESOLV_CONF_HINT = ("an absolute path on the node, e.g. /run/systemd/resolve/resolv.conf on hosts running "
                     "systemd-resolved")


def _resolv_conf_problem(path: str) -> str | None:
    if not path.startswith("/") or any(ch.isspace() or not ch.isprintable() or ch in "\"'" for ch in path):
        return f"{path!r} is not {_RESOLV_CONF_HINT}"
    if len(path) > 255 or "/../" in path + "/":
        return f"{path!r}: give a plain path without '..', at most 255 characters"
    return None


def _check_kubelet(spec: ClusterSpec, p: _Problems) -> list[str]:
    """kubelet.resolvConf, and each node's override: the resolvConf of every node, in node order."""
    default = spec.kubelet.resolvConf or DEFAULT_RESOLV_CONF
    if problem := _resolv_conf_problem(default):
        p.add(("kubelet", "resolvConf"), problem)
    found = []
    for i, n in enumerate(spec.nodes):
        own = n.kubelet.resolvConf if n.kubelet else None
        if own is not None and (problem := _resolv_conf_problem(own)):
            p.add(("nodes", i, "kubelet", "resolvConf"), problem)
        found.append(own or default)
    return found


def _with_resolv_confs(cluster: Cluster, resolv_confs: list[str]) -> Cluster:
    from dataclasses import replace
    return replace(cluster, nodes=tuple(replace(n, resolv_conf=r) for n, r in zip(cluster.nodes, resolv_confs)))


def _cluster(spec: ClusterSpec, source: str, version: KubernetesVersion, net: _NetworkFacts, api: _ApiFacts,
             pki: _PkiFacts, drafts: list[_NodeDraft], warnings: list[str]) -> Cluster:
    """The value, from checks that found no problem: every derived value computed here, once."""
    nodes = tuple(Node(name=d.name, address=d.address, roles=d.roles, fqdn=d.fqdn,
                       pod_cidr=d.pod_cidr if d.is_worker else None) for d in drafts)
    ctrl = [n for n in nodes if n.is_controller]
    api_endpoint = api.endpoint or str(ctrl[0].address)
    port = spec.apiServer.port
    etcd_members = tuple(EtcdMember(n.name, f"https://{n.url_host}:2380", f"https://{n.url_host}:2379") for n in ctrl)
    return Cluster(
        name=spec.name,
        version=version,
        pod_cidr=net.pod_cidr,
        node_pod_cidr_size=net.node_pod_cidr_size,
        service_cidr=net.service_cidr,
        cluster_domain=spec.network.clusterDomain,
        cluster_dns=net.cluster_dns,
        kubernetes_service_ip=net.first_service_ip,
        api_endpoint=api_endpoint,
        api_port=port,
        api_url=f"https://{host_port(api_endpoint, port)}",
        local_api_url=f"https://127.0.0.1:{port}",
        extra_sans=api.extra_sans,
        key_algorithm=pki.key_algorithm,
        ca_validity=pki.ca_validity,
        cert_validity=pki.cert_validity,
        encryption_provider=pki.provider,
        nodes=nodes,
        etcd_members=etcd_members,
        source=source,
        warnings=tuple(warnings),
    )


def _ssh_block(block: SshSpec, loc: tuple, p: _Problems) -> SshSettings:
    """One ssh block's values, each checked on its own (None where the block does not say)."""
    user = p.parse(loc + ("user",), parse_user, block.user) if block.user is not None else None
    port = p.parse(loc + ("port",), parse_port, block.port) if block.port is not None else None
    identity = p.parse(loc + ("identity",), parse_identity, block.identity) if block.identity is not None else None
    jump = p.parse(loc + ("jump",), parse_jump, block.jump) if block.jump is not None else None
    host, keys = None, []
    if isinstance(block, NodeSshSpec):
        host = p.parse(loc + ("host",), parse_ssh_host, block.host) if block.host is not None else None
        for i, line in enumerate(block.hostKeys):
            key = p.parse(loc + ("hostKeys", i), parse_host_key, line)
            if key is not None and key in keys:
                p.add(loc + ("hostKeys", i), f"the same key as hostKeys[{keys.index(key)}]; list each key once")
            elif key is not None:
                keys.append(key)
    return SshSettings(host=host, user=user, port=port, identity=identity, jump=jump, host_keys=tuple(keys))


def _check_ssh(spec: ClusterSpec, p: _Problems) -> tuple[SshSettings, list[SshSettings]]:
    """The cluster's ssh block and each node's (docs/deploy.md); two nodes may not share host and port."""
    top = _ssh_block(spec.ssh, ("ssh",), p)
    own = [_ssh_block(n.ssh, ("nodes", i, "ssh"), p) if n.ssh else SshSettings() for i, n in enumerate(spec.nodes)]
    seen: dict[tuple[str, int], int] = {}
    for i, (n, s) in enumerate(zip(spec.nodes, own)):
        if s.host is None:
            continue  # the node's address: unique already
        where = (s.host, s.port or top.port or 22)
        if where in seen:
            p.add(("nodes", i, "ssh", "host"), f"{host_port(*where)} is already how nodes[{seen[where]}] is reached; "
                  "each node needs its own host or port")
        else:
            seen[where] = i
    return top, own


def _with_ssh(cluster: Cluster, ssh: tuple[SshSettings, list[SshSettings]]) -> Cluster:
    from dataclasses import replace
    top, own = ssh
    return replace(cluster, ssh=top, nodes=tuple(replace(n, ssh=s) for n, s in zip(cluster.nodes, own)))
