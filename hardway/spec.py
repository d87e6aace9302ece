"""Load and validate cluster.yaml into one immutable Cluster value.

Two passes: pydantic checks the shape (types, required and unknown keys), then `_build` checks what
the fields mean together (addresses, ranges, roles) and computes every derived value once. Both report
every problem they find, each as "field.path: what is wrong; what is allowed", with the line in the
file when it is known, and raise SpecError. Nothing here touches the disk except reading the spec.
"""

from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .durations import parse_duration
from .errors import SpecError
from .names import (LABEL_RULE, SUBDOMAIN_RULE, IPAddress, IPNetwork, is_dns_label, is_dns_name, is_ip,  # noqa: F401
                    host_port, not_a_label, parse_address, parse_host, parse_network, url_host)
from .versions import DEFAULT_VERSION, SUPPORTED_MINORS, KubernetesVersion, parse_version

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

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NetworkSpec(_Model):
    podCIDR: str = "10.200.0.0/16"
    nodePodCIDRSize: int | None = None  # 24 for IPv4, 64 for IPv6
    serviceCIDR: str = "10.32.0.0/24"
    clusterDomain: str = "cluster.local"
    clusterDNS: str | None = None


class ApiServerSpec(_Model):
    endpoint: str | None = None
    port: int = 6443
    extraSANs: list[str] = []


class PkiSpec(_Model):
    keyAlgorithm: str = "RSA-2048"
    caValidity: str = "10y"
    certValidity: str = "1y"


class EncryptionSpec(_Model):
    provider: str = "secretbox"


class KubeletSpec(_Model):
    resolvConf: str | None = None  # DEFAULT_RESOLV_CONF; systemd-resolved hosts: /run/systemd/resolve/resolv.conf


class NodeSpec(_Model):
    name: str
    address: str
    roles: list[str]
    fqdn: str | None = None
    podCIDR: str | None = None
    kubelet: KubeletSpec | None = None  # overrides the top-level kubelet settings on this node


class ClusterSpec(_Model):
    name: str
    kubernetesVersion: str = DEFAULT_VERSION
    network: NetworkSpec = NetworkSpec()
    apiServer: ApiServerSpec = ApiServerSpec()
    pki: PkiSpec = PkiSpec()
    encryption: EncryptionSpec = EncryptionSpec()
    kubelet: KubeletSpec = KubeletSpec()
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
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)


# ---------------------------------------------------------------- loading -----------------------

def load(path: str | Path) -> Cluster:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(str(path), ["no such file; `hardway init` writes a starter cluster.yaml"]) from None
    except (OSError, UnicodeDecodeError) as e:
        raise SpecError(str(path), [f"cannot read it: {e}"]) from None
    return loads(text, source=str(path))


def loads(text: str, source: str = "cluster.yaml") -> Cluster:
    try:
        tree, data = _parse_yaml(text)
    except yaml.MarkedYAMLError as e:
        raise SpecError(source, [_yaml_syntax_problem(e) + _tab_note(text, e)]) from None
    except yaml.YAMLError as e:
        raise SpecError(source, [f"YAML error: {e}"]) from None
    if data is None:
        raise SpecError(source, ["the file is empty; it needs at least `name` and `nodes` (`hardway init` writes a starter file)"])
    if not isinstance(data, dict):
        raise SpecError(source, [f"the file must be a mapping of keys (name, nodes, ...), not {_kind(data)}"])
    scan = _Scan(tree)
    problems = [f"line {line}: {_path(loc)}: duplicate key; the first is on line {first}, and YAML would silently keep only the last; remove one"
                for loc, first, line in scan.duplicates]
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as e:
        problems += [scan.at(loc) + msg for loc, msg in _shape_problems(e, scan.raw)]
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


def _parse_yaml(text: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data built from it, in one pass of the parser
    (libyaml's when available: the 1000-worker example parses in a tenth of the time)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)(text)
    try:
        tree = loader.get_single_node()
        return tree, (loader.construct_document(tree) if tree is not None else None)
    finally:
        loader.dispose()


def _yaml_syntax_problem(e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    problem = e.problem or "cannot parse it"
    context = ""
    if e.context and "single document" in e.context:
        problem, context = "a second YAML document ('---'); a cluster spec is one document", ""
    elif e.context:
        context = f" ({e.context}"
        if e.context_mark and e.problem_mark and e.context_mark.line != e.problem_mark.line:
            context += f" that starts on line {e.context_mark.line + 1}, column {e.context_mark.column + 1}"
        context += ")"
    return f"{where}YAML syntax error: {problem}{context}"


def _kind(value: Any) -> str:
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"  # dates and timestamps


class _Scan:
    """What the parsed data forgets: the line of each field, the text as written, duplicate keys."""

    def __init__(self, tree: yaml.Node | None):
        self.lines: dict[tuple, int] = {}
        self.raw: dict[tuple, str] = {}
        self.duplicates: list[tuple[tuple, int, int]] = []
        self._walk(tree, (), set())

    def _walk(self, node: yaml.Node | None, path: tuple, seen: set[int]) -> None:
        if node is None or id(node) in seen:  # an alias may point back at its parent
            return
        seen = seen | {id(node)}
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.ScalarNode):
            self.raw[path] = node.value
        elif isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in node.value:
                if not isinstance(key, yaml.ScalarNode):
                    continue
                sub = path + (key.value,)
                line = key.start_mark.line + 1
                if key.value in first:
                    self.duplicates.append((sub, first[key.value], line))
                    continue
                first[key.value] = line
                self._walk(value, sub, seen)
                self.lines[sub] = line
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._walk(item, path + (i,), seen)

    def at(self, loc: tuple) -> str:
        """'line N: ' of the field, or of the nearest enclosing one that is in the file."""
        loc = tuple(loc)
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return f"line {self.lines[loc]}: " if loc else ""


def _path(loc: Iterable) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "the top level of the file"


def _fields_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys at the mapping that holds `loc`'s last part."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field_info = model.model_fields.get(part)
        annotation = field_info.annotation if field_info else None
        args = getattr(annotation, "__args__", ()) or (annotation,)
        model = next((a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None)
        if model is None:
            return []
    return list(model.model_fields)


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


def _got(loc: tuple, value: Any, raw: dict[tuple, str]) -> str:
    """The bad value as the user wrote it, and what YAML made of it when that is the surprise."""
    if isinstance(value, (dict, list)) or value is None:
        return _kind(value)
    text = raw.get(loc)
    if isinstance(value, str) or text is None:
        shown = repr(value)
        return shown if len(shown) <= 80 else shown[:77] + "..."
    return f"{text}, which YAML reads as {_kind(value)}"


def _shape_problems(error: ValidationError, raw: dict[tuple, str]) -> Iterator[tuple[tuple, str]]:
    for e in error.errors():
        loc = tuple(e["loc"])
        kind = e["type"]
        value = e.get("input")
        key = str(loc[-1]) if loc else ""
        path = _path(loc)
        got = _got(loc, value, raw)
        if kind == "extra_forbidden":
            valid = _fields_of(ClusterSpec, loc)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            yield loc, f"{path}: unknown key '{key}'; {hint}allowed here: {', '.join(valid)}"
        elif kind == "missing":
            yield loc, f"{path}: missing, and required{_required(loc)}"
        elif loc == ("kubernetesVersion",) and kind == "string_type" and isinstance(value, (int, float)):
            yield loc, (f"{path}: got {got}; write the full release version, e.g. kubernetesVersion: {DEFAULT_VERSION} "
                        f"(supported minors: {', '.join(SUPPORTED_MINORS)})")
        elif value is None and kind in ("string_type", "int_type", "list_type", "model_type", "dict_type"):
            what = {"string_type": "a string", "int_type": "a whole number", "list_type": "a list"}.get(kind)
            what = what or f"a mapping with the keys {', '.join(_fields_of(ClusterSpec, loc + ('x',)))}"
            yield loc, f"{path}: is empty; it must be {what}{_required(loc)}"
        elif kind == "invalid_key":
            valid = _fields_of(ClusterSpec, loc)
            yield loc[:-1], f"{_path(loc[:-1])}: unknown key {raw.get(loc, key)}; allowed here: {', '.join(valid)}"
        elif kind in ("model_type", "dict_type"):
            yield loc, f"{path}: must be a mapping with the keys {', '.join(_fields_of(ClusterSpec, loc + ('x',)))}; got {got}"
        elif kind == "list_type":
            hint = f"; write {key}: [{raw[loc]}]" if isinstance(value, str) and loc in raw else ""
            yield loc, f"{path}: must be a list, got {got}{hint}"
        elif kind == "string_type":
            hint = ""
            if key in _STRING_EXAMPLES:  # quoting would not help: the value needs a unit or a name
                hint = f"; e.g. {key}: {_STRING_EXAMPLES[key]}"
            elif loc in raw:
                hint = f'; quote it: "{raw[loc]}"' if isinstance(loc[-1], int) else f'; quote it: {key}: "{raw[loc]}"'
            yield loc, f"{path}: must be a string, got {got}{hint}"
        elif kind in ("int_type", "int_parsing", "int_from_float"):
            hint = "; remove the quotes" if isinstance(value, str) and value.strip().isdigit() else ""
            yield loc, f"{path}: must be a whole number, got {got}{hint}"
        else:
            yield loc, f"{path}: {e['msg']}, got {got}"


# ---------------------------------------------------------------- meaning -----------------------

class _Problems:
    """Collects problems; `parse` wraps a parse so one bad field does not hide the next."""

    def __init__(self, sink: list[tuple[tuple, str]]):
        self.sink = sink

    def add(self, loc: tuple, message: str) -> None:
        self.sink.append((loc, f"{_path(loc)}: {message}"))

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
        for candidate in pod_cidr.subnets(new_prefix=size):
            if candidate in small or any(candidate.supernet(new_prefix=p) in rs for p, rs in large.items()):
                continue
            yield candidate

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
    pki = _check_pki(spec, p, warnings)
    drafts = _check_nodes(spec.nodes, net, p)
    ranges_ok = net.pod_cidr_ok and not any(loc[-1:] == ("podCIDR",) for loc, _ in sink)
    ranges_ok = _check_explicit_ranges_disjoint(drafts, p) and ranges_ok
    _check_controllers(spec, drafts, p, warnings)
    if ranges_ok:
        _allocate_worker_ranges(drafts, net, p)
    resolv_confs = _check_kubelet(spec, p)
    if sink:
        return None
    return _with_resolv_confs(_cluster(spec, source, version, net, api, pki, drafts, warnings), resolv_confs)


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
