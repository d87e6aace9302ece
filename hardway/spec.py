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
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from .durations import parse_duration
from .errors import SpecError
from .versions import DEFAULT_VERSION, KubernetesVersion, parse_version

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

ROLES = ("controller", "worker", "loadbalancer")
WORKSTATION = "workstation"  # the operator's bundle; not a node name
KEY_ALGORITHMS = ("RSA-2048", "RSA-3072", "RSA-4096", "ECDSA-P256", "ECDSA-P384")
ENCRYPTION_PROVIDERS = ("secretbox", "aescbc", "aesgcm")
# kube-apiserver refuses a service range with more host bits than this (validateMaxCIDRRange).
MAX_SERVICE_HOST_BITS = 20

_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_RULE = "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters"
SUBDOMAIN_RULE = "a DNS name: dot-separated DNS-1123 labels, at most 253 characters"


# ---------------------------------------------------------------- shape (pydantic) --------------

class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class NetworkSpec(_Model):
    podCIDR: str = "10.200.0.0/16"
    nodePodCIDRSize: int = 24
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


class NodeSpec(_Model):
    name: str
    address: str
    roles: list[str]
    fqdn: str | None = None
    podCIDR: str | None = None


class ClusterSpec(_Model):
    name: str
    kubernetesVersion: str = DEFAULT_VERSION
    network: NetworkSpec = NetworkSpec()
    apiServer: ApiServerSpec = ApiServerSpec()
    pki: PkiSpec = PkiSpec()
    encryption: EncryptionSpec = EncryptionSpec()
    nodes: list[NodeSpec]


# ---------------------------------------------------------------- the value ---------------------

@dataclass(frozen=True)
class Node:
    name: str
    address: IPAddress
    roles: frozenset[str]
    fqdn: str | None = None
    pod_cidr: IPNetwork | None = None  # workers only

    @property
    def is_controller(self) -> bool:
        return "controller" in self.roles

    @property
    def is_worker(self) -> bool:
        return "worker" in self.roles

    @property
    def is_loadbalancer(self) -> bool:
        return "loadbalancer" in self.roles

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


def url_host(host: str) -> str:
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


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
        tree = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = " ".join(str(x) for x in (e.context, e.problem) if x)
        raise SpecError(source, [f"{where}YAML syntax error: {problem}"]) from None
    except yaml.YAMLError as e:
        raise SpecError(source, [f"YAML error: {e}"]) from None
    if data is None:
        raise SpecError(source, ["the file is empty; it needs at least `name` and `nodes` (see `hardway init`)"])
    if not isinstance(data, dict):
        raise SpecError(source, [f"the file must be a mapping of keys (name, nodes, ...), not a {_yaml_kind(data)}"])
    lines = _line_numbers(tree)
    try:
        spec = ClusterSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(source, [_at(lines, loc) + msg for loc, msg in _shape_problems(e)]) from None
    problems: list[tuple[tuple, str]] = []
    cluster = _build(spec, problems, source)
    if problems:
        raise SpecError(source, [_at(lines, loc) + msg for loc, msg in problems])
    return cluster


def _yaml_kind(value: Any) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean"}.get(type(value), type(value).__name__)


def _line_numbers(node: yaml.Node | None, path: tuple = ()) -> dict[tuple, int]:
    """Map each field path to the line it starts on, to point the user at it."""
    found: dict[tuple, int] = {}
    if node is None:
        return found
    found[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = path + (key.value,)
            found.update(_line_numbers(value, sub))
            found[sub] = key.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found.update(_line_numbers(item, path + (i,)))
    return found


def _path(loc: Iterable) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _at(lines: dict[tuple, int], loc: tuple) -> str:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    line = lines.get(loc)
    return f"line {line}: " if line and loc else ""


def _fields_of(model: type[BaseModel], loc: tuple) -> list[str]:
    """The valid keys at the mapping that holds `loc`'s last part."""
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        annotation = model.model_fields[part].annotation
        args = getattr(annotation, "__args__", ()) or (annotation,)
        model = next(a for a in args if isinstance(a, type) and issubclass(a, BaseModel))
    return list(model.model_fields)


def _shape_problems(error: ValidationError) -> Iterator[tuple[tuple, str]]:
    for e in error.errors():
        loc = tuple(e["loc"])
        kind = e["type"]
        if kind == "extra_forbidden":
            valid = _fields_of(ClusterSpec, loc)
            close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'? " if close else ""
            yield loc, f"{_path(loc)}: unknown key '{loc[-1]}'; {hint}allowed here: {', '.join(valid)}"
        elif kind == "missing":
            yield loc, f"{_path(loc)}: required, and missing"
        elif kind in ("model_type", "dict_type"):
            yield loc, f"{_path(loc)}: must be a mapping of keys ({', '.join(_fields_of(ClusterSpec, loc + ('x',)))}), got {e['input']!r}"
        elif kind == "list_type":
            yield loc, f"{_path(loc)}: must be a list, got {e['input']!r}"
        elif kind == "string_type":
            yield loc, f"{_path(loc)}: must be a string, got {e['input']!r} (quote it in YAML)"
        elif kind in ("int_type", "int_parsing"):
            yield loc, f"{_path(loc)}: must be a whole number, got {e['input']!r}"
        else:
            yield loc, f"{_path(loc)}: {e['msg']}, got {e['input']!r}"


# ---------------------------------------------------------------- meaning -----------------------

class _Problems:
    """Collects problems; `check` wraps a parse so one bad field does not hide the next."""

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


def _address(value: str) -> IPAddress:
    try:
        return ipaddress.ip_address(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _network(value: str) -> IPNetwork:
    if "/" not in value:
        raise ValueError(f"{value!r} is not a CIDR; write address/prefix, e.g. 10.200.0.0/16")
    try:
        return ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            base = ipaddress.ip_network(value, strict=False)
            raise ValueError(f"{value!r} has host bits set; the network is {base}") from None
        raise ValueError(f"{value!r} is not a CIDR; write address/prefix, e.g. 10.200.0.0/16") from None


def is_dns_label(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL.match(value))


def is_dns_name(value: str) -> bool:
    return 0 < len(value) <= 253 and all(is_dns_label(p) for p in value.split("."))


def _host(value: str) -> str:
    """A DNS name or an IP address (as a SAN or an endpoint)."""
    try:
        ipaddress.ip_address(value)
        return value
    except ValueError:
        pass
    if not is_dns_name(value):
        raise ValueError(f"{value!r} is neither an IP address nor {SUBDOMAIN_RULE}")
    return value


def _key_algorithm(value: str) -> str:
    if value in KEY_ALGORITHMS:
        return value
    if value.lower().replace("-", "") == "ed25519":
        raise ValueError(
            "Ed25519 is not usable: Kubernetes components do not accept Ed25519 keys for serving "
            "certificates and service-account tokens; choose one of " + ", ".join(KEY_ALGORITHMS)
        )
    close = difflib.get_close_matches(value.upper(), KEY_ALGORITHMS, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]}?" if close else ""
    raise ValueError(f"unknown key algorithm {value!r}; allowed: {', '.join(KEY_ALGORITHMS)}{hint}")


def _one_of(allowed: tuple[str, ...], what: str):
    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
        return value
    return check


def _build(spec: ClusterSpec, sink: list[tuple[tuple, str]], source: str) -> Cluster | None:
    p = _Problems(sink)
    net = spec.network
    warnings: list[str] = []

    if not is_dns_label(spec.name):
        p.add(("name",), f"{spec.name!r} is not {LABEL_RULE}")
    version = p.parse(("kubernetesVersion",), parse_version, spec.kubernetesVersion)

    pod_cidr = p.parse(("network", "podCIDR"), _network, net.podCIDR)
    service_cidr = p.parse(("network", "serviceCIDR"), _network, net.serviceCIDR)
    if not is_dns_name(net.clusterDomain):
        p.add(("network", "clusterDomain"), f"{net.clusterDomain!r} is not {SUBDOMAIN_RULE}")

    first_service_ip = cluster_dns = None
    if service_cidr is not None:
        host_bits = service_cidr.max_prefixlen - service_cidr.prefixlen
        if host_bits > MAX_SERVICE_HOST_BITS:
            p.add(("network", "serviceCIDR"),
                  f"{service_cidr} is larger than kube-apiserver accepts; the prefix must be at least "
                  f"/{service_cidr.max_prefixlen - MAX_SERVICE_HOST_BITS} for IPv{service_cidr.version}")
        elif service_cidr.num_addresses < 16:
            p.add(("network", "serviceCIDR"), f"{service_cidr} is too small; it needs room for the `kubernetes` Service and cluster DNS (at least /{service_cidr.max_prefixlen - 4})")
        else:
            first_service_ip = service_cidr.network_address + 1
            if net.clusterDNS is None:
                cluster_dns = service_cidr.network_address + 10
            else:
                cluster_dns = p.parse(("network", "clusterDNS"), _address, net.clusterDNS)
                if cluster_dns is not None:
                    if cluster_dns not in service_cidr:
                        p.add(("network", "clusterDNS"), f"{cluster_dns} is outside serviceCIDR {service_cidr}; pick an address inside it (default: the 10th, {service_cidr.network_address + 10})")
                    elif cluster_dns == first_service_ip:
                        p.add(("network", "clusterDNS"), f"{cluster_dns} is the first service IP, which the `kubernetes` Service takes; pick another (default: {service_cidr.network_address + 10})")
                    elif cluster_dns in (service_cidr.network_address, service_cidr.broadcast_address):
                        p.add(("network", "clusterDNS"), f"{cluster_dns} is not a usable host address of {service_cidr}")

    if pod_cidr is not None and service_cidr is not None:
        if pod_cidr.version != service_cidr.version:
            p.add(("network", "podCIDR"), f"{pod_cidr} and serviceCIDR {service_cidr} are of different IP families; hardway builds single-stack clusters")
        elif pod_cidr.overlaps(service_cidr):
            p.add(("network", "podCIDR"), f"{pod_cidr} overlaps serviceCIDR {service_cidr}; pod and service ranges must be disjoint")

    size = net.nodePodCIDRSize
    if pod_cidr is not None:
        if not (pod_cidr.prefixlen < size <= pod_cidr.max_prefixlen - 2):
            p.add(("network", "nodePodCIDRSize"), f"{size} must be longer than podCIDR's prefix /{pod_cidr.prefixlen} and at most {pod_cidr.max_prefixlen - 2}")
            pod_cidr_ok = False
        else:
            pod_cidr_ok = True
    else:
        pod_cidr_ok = False

    api = spec.apiServer
    if not 1 <= api.port <= 65535:
        p.add(("apiServer", "port"), f"{api.port} is not a TCP port (1-65535)")
    endpoint = p.parse(("apiServer", "endpoint"), _host, api.endpoint) if api.endpoint is not None else None
    extra_sans = tuple(dict.fromkeys(
        s for i, v in enumerate(api.extraSANs) if (s := p.parse(("apiServer", "extraSANs", i), _host, v))
    ))

    key_algorithm = p.parse(("pki", "keyAlgorithm"), _key_algorithm, spec.pki.keyAlgorithm)
    ca_validity = p.parse(("pki", "caValidity"), parse_duration, spec.pki.caValidity)
    cert_validity = p.parse(("pki", "certValidity"), parse_duration, spec.pki.certValidity)
    if ca_validity and cert_validity and cert_validity > ca_validity:
        p.add(("pki", "certValidity"), f"{spec.pki.certValidity} is longer than caValidity {spec.pki.caValidity}; a certificate cannot outlive its CA")
    provider = p.parse(("encryption", "provider"), _one_of(ENCRYPTION_PROVIDERS, "encryption provider"), spec.encryption.provider)

    # nodes
    if not spec.nodes:
        p.add(("nodes",), "the list is empty; a cluster needs at least one controller")
    names: dict[str, int] = {}
    addresses: dict[IPAddress, int] = {}
    parsed: list[dict] = []
    for i, n in enumerate(spec.nodes):
        loc = ("nodes", i)
        if not is_dns_label(n.name):
            p.add(loc + ("name",), f"{n.name!r} is not {LABEL_RULE}")
        elif n.name == WORKSTATION:
            p.add(loc + ("name",), f"{n.name!r} is reserved for the operator's bundle (admin kubeconfigs, manifests); pick another name")
        elif n.name in names:
            p.add(loc + ("name",), f"{n.name!r} is already the name of nodes[{names[n.name]}]; node names must be unique")
        else:
            names[n.name] = i
        address = p.parse(loc + ("address",), _address, n.address)
        if address is not None:
            if address in addresses:
                p.add(loc + ("address",), f"{address} is already the address of nodes[{addresses[address]}]; addresses must be unique")
            else:
                addresses[address] = i
            if pod_cidr is not None and address in pod_cidr:
                p.add(loc + ("address",), f"{address} is inside podCIDR {pod_cidr}; node addresses must be outside the pod range")
            if service_cidr is not None and address in service_cidr:
                p.add(loc + ("address",), f"{address} is inside serviceCIDR {service_cidr}; node addresses must be outside the service range")
        roles = []
        if not n.roles:
            p.add(loc + ("roles",), f"the list is empty; give one or more of {', '.join(ROLES)}")
        for j, role in enumerate(n.roles):
            if p.parse(loc + ("roles", j), _one_of(ROLES, "role"), role) and role not in roles:
                roles.append(role)
        if "loadbalancer" in roles and len(roles) > 1:
            p.add(loc + ("roles",), f"{roles}: a loadbalancer node takes no other role (HAProxy and kube-apiserver would both listen on the API port); only controller+worker may be combined")
        if n.fqdn is not None and not is_dns_name(n.fqdn):
            p.add(loc + ("fqdn",), f"{n.fqdn!r} is not {SUBDOMAIN_RULE}")
        node_pod_cidr = None
        if n.podCIDR is not None:
            if "worker" not in roles:
                p.add(loc + ("podCIDR",), "only workers run pods; remove podCIDR or add the worker role")
            else:
                node_pod_cidr = p.parse(loc + ("podCIDR",), _network, n.podCIDR)
                if node_pod_cidr is not None and pod_cidr is not None and not (
                        node_pod_cidr.version == pod_cidr.version and node_pod_cidr.subnet_of(pod_cidr)):
                    p.add(loc + ("podCIDR",), f"{node_pod_cidr} is outside network.podCIDR {pod_cidr}")
                    node_pod_cidr = None
        parsed.append(dict(name=n.name, address=address, roles=frozenset(roles), fqdn=n.fqdn, pod_cidr=node_pod_cidr, explicit=n.podCIDR is not None))

    # explicit node ranges must be disjoint
    explicit = [(i, d["pod_cidr"]) for i, d in enumerate(parsed) if d["pod_cidr"] is not None]
    for a in range(len(explicit)):
        for b in range(a):
            if explicit[a][1].overlaps(explicit[b][1]):
                p.add(("nodes", explicit[a][0], "podCIDR"), f"{explicit[a][1]} overlaps nodes[{explicit[b][0]}].podCIDR {explicit[b][1]}; node pod ranges must be disjoint")

    controllers = [d for d in parsed if "controller" in d["roles"]]
    if spec.nodes and not controllers:
        p.add(("nodes",), "no node has the controller role; a cluster needs at least one")
    if len(controllers) > 1 and api.endpoint is None:
        p.add(("apiServer", "endpoint"), f"required with {len(controllers)} controllers: the DNS name or address clients use to reach them all (a load balancer)")
    if controllers and len(controllers) % 2 == 0:
        warnings.append(f"{len(controllers)} controllers: etcd tolerates no more failures with {len(controllers)} members than with {len(controllers) - 1}; an odd number is better")

    # allocate the remaining workers' pod ranges in node order, around the explicit ones
    if pod_cidr_ok and not sink:
        taken = [c for _, c in explicit]
        needing = [d for d in parsed if "worker" in d["roles"] and d["pod_cidr"] is None]
        capacity = 2 ** (size - pod_cidr.prefixlen)
        free = (s for s in pod_cidr.subnets(new_prefix=size) if not any(s.overlaps(t) for t in taken))
        for d in needing:
            d["pod_cidr"] = next(free, None)
        short = [d for d in needing if d["pod_cidr"] is None]
        if short:
            workers = len([d for d in parsed if "worker" in d["roles"]])
            bits = math.ceil(math.log2(workers)) if workers > 1 else 1
            p.add(("network", "podCIDR"),
                  f"{pod_cidr} holds {capacity} node ranges of /{size} but there are {workers} workers "
                  f"({len(short)} without a range); use a larger podCIDR (/{size - bits} holds {2 ** bits}) "
                  f"or a longer nodePodCIDRSize ({pod_cidr.prefixlen + bits} gives {2 ** bits} ranges)")

    if sink:
        return None

    nodes = tuple(Node(name=d["name"], address=d["address"], roles=d["roles"], fqdn=d["fqdn"],
                       pod_cidr=d["pod_cidr"] if "worker" in d["roles"] else None) for d in parsed)
    ctrl = [n for n in nodes if n.is_controller]
    api_endpoint = endpoint or str(ctrl[0].address)
    etcd_members = tuple(EtcdMember(n.name, f"https://{n.url_host}:2380", f"https://{n.url_host}:2379") for n in ctrl)
    return Cluster(
        name=spec.name,
        version=version,
        pod_cidr=pod_cidr,
        node_pod_cidr_size=size,
        service_cidr=service_cidr,
        cluster_domain=net.clusterDomain,
        cluster_dns=cluster_dns,
        kubernetes_service_ip=first_service_ip,
        api_endpoint=api_endpoint,
        api_port=api.port,
        api_url=f"https://{url_host(api_endpoint)}:{api.port}",
        local_api_url=f"https://127.0.0.1:{api.port}",
        extra_sans=extra_sans,
        key_algorithm=key_algorithm,
        ca_validity=ca_validity,
        cert_validity=cert_validity,
        encryption_provider=provider,
        nodes=nodes,
        etcd_members=etcd_members,
        source=source,
        warnings=tuple(warnings),
    )
