"""The certificate catalog (pki/catalog.yaml) as values, and the identities it asks for a cluster.

Loading checks everything kubeadm's certificate list would: each leaf names a known CA, known usages,
known SAN rules, known roles, and a subject whose only placeholder is `{node}` on per-node entries.
A broken catalog fails at load, naming the entry and what is allowed. The values only known at run
time (node names, addresses, the service IP) are filled in by the small named SAN rules below.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, NamedTuple

import yaml
from pydantic import Field

from ..errors import HardwayError
from ..names import is_ip
from ..resources import data_dir
from ..spec import Cluster, IPAddress, Node
from ..yamlshape import Scan, Strict, parse_yaml, validate, yaml_syntax_problem

PER = ("cluster", "controller", "worker")
DELIVERY_ROLES = ("controller", "worker", "workstation")  # who receives files: node roles that hold keys, and the operator
USAGES = ("serverAuth", "clientAuth")
SECRETS = ("service-account", "encryption")
_PLACEHOLDER = re.compile(r"\{([^}]*)\}")


class CatalogError(HardwayError):
    """pki/catalog.yaml is wrong: a mistake in hardway's data, or in a user's edit of it."""


@dataclass(frozen=True)
class Authority:
    name: str
    cn: str
    purpose: str
    cert_to: frozenset[str]  # roles that receive <name>.crt
    key_to: frozenset[str]  # roles that receive <name>.key (only `ca`, to controllers)


@dataclass(frozen=True)
class Leaf:
    name: str
    per: str  # cluster | controller | worker
    signer: str
    cn: str  # may hold {node}
    organizations: tuple[str, ...]
    usages: frozenset[str]
    sans: tuple[str, ...]  # SAN rule names
    deliver_to: frozenset[str]  # roles that receive <name>.crt and .key
    purpose: str

    @property
    def per_node(self) -> bool:
        return self.per != "cluster"

    def nodes(self, cluster: Cluster) -> tuple[Node, ...]:
        return {"controller": cluster.controllers, "worker": cluster.workers}[self.per]


@dataclass(frozen=True)
class Secret:
    name: str
    purpose: str
    deliver_to: frozenset[str]


@dataclass(frozen=True)
class Catalog:
    install_dir: str  # where delivered files land on a node: units/plan.yaml's paths.pki
    authorities: tuple[Authority, ...]
    leaves: tuple[Leaf, ...]
    secrets: tuple[Secret, ...]

    def authority(self, name: str) -> Authority:
        return next(a for a in self.authorities if a.name == name)

    def leaf(self, name: str) -> Leaf:
        return next(leaf for leaf in self.leaves if leaf.name == name)

    def secret(self, name: str) -> Secret:
        return next(s for s in self.secrets if s.name == name)

    @property
    def authority_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.authorities)

    @property
    def leaf_names(self) -> tuple[str, ...]:
        return tuple(leaf.name for leaf in self.leaves)


# ---------------------------------------------------------------- SAN rules ---------------------
# Each rule turns the cluster (and the node, for per-node entries) into SAN values: str for DNS
# names, IP addresses for IP SANs. One named function per rule, as kubeadm does.


def _host(value: str):
    return ipaddress.ip_address(value) if is_ip(value) else value


class SanRule(NamedTuple):
    needs_node: bool
    values: Callable[[Cluster, Node | None], Iterable[str | IPAddress]]


SAN_RULES: dict[str, SanRule] = {
    "kubernetes-service-names": SanRule(False, lambda c, n: (
        "kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{c.cluster_domain}")),
    "kubernetes-service-ip": SanRule(False, lambda c, n: (c.kubernetes_service_ip,)),
    "localhost": SanRule(False, lambda c, n: ("localhost",)),
    "ipv4-loopback": SanRule(False, lambda c, n: (ipaddress.ip_address("127.0.0.1"),)),
    "ipv6-loopback": SanRule(False, lambda c, n: (ipaddress.ip_address("::1"),)),
    "api-endpoint": SanRule(False, lambda c, n: (_host(c.api_endpoint),)),
    "extra-sans": SanRule(False, lambda c, n: tuple(_host(s) for s in c.extra_sans)),
    "node-name": SanRule(True, lambda c, n: (n.name,)),
    "node-fqdn": SanRule(True, lambda c, n: (n.fqdn,) if n.fqdn else ()),
    "node-address": SanRule(True, lambda c, n: (n.address,)),
}


# ---------------------------------------------------------------- identities --------------------

@dataclass(frozen=True)
class Identity:
    """What one certificate must say. SANs are deduplicated, in catalog order."""

    cn: str
    organizations: tuple[str, ...]
    usages: frozenset[str]
    dns_names: tuple[str, ...]
    ip_addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class Desired:
    """One leaf certificate the cluster needs: an entry, for a node (per-node entries) or not."""

    leaf: Leaf
    node: str | None
    identity: Identity

    @property
    def entry(self) -> str:
        return self.leaf.name

    @property
    def signer(self) -> str:
        return self.leaf.signer


def identity(cluster: Cluster, leaf: Leaf, node: Node | None) -> Identity:
    fill = (lambda s: s.replace("{node}", node.name)) if node else (lambda s: s)
    dns: dict[str, None] = {}
    ips: dict[IPAddress, None] = {}
    for rule in leaf.sans:
        for value in SAN_RULES[rule].values(cluster, node):
            if isinstance(value, str):
                dns[value.lower()] = None
            else:
                ips[value] = None
    return Identity(cn=fill(leaf.cn), organizations=tuple(fill(o) for o in leaf.organizations),
                    usages=leaf.usages, dns_names=tuple(dns), ip_addresses=tuple(ips))


def desired_leaves(cluster: Cluster, catalog: Catalog) -> Iterator[Desired]:
    """Every leaf certificate of the cluster: catalog order, then node order."""
    for leaf in catalog.leaves:
        if leaf.per_node:
            for node in leaf.nodes(cluster):
                yield Desired(leaf, node.name, identity(cluster, leaf, node))
        else:
            yield Desired(leaf, None, identity(cluster, leaf, None))


# ---------------------------------------------------------------- loading -----------------------

def default_path() -> Path:
    return data_dir("pki") / "catalog.yaml"


@cache
def default_catalog() -> Catalog:
    return load_catalog(default_path())


@cache
def node_path(key: str, what: str) -> str:
    """A path on a node, `paths.<key>` of units/plan.yaml: the one place it is written (the templates
    read it there too). `what` says what it is, for the message."""
    from ..render.data import PLAN_FILE, layout  # rendering reads plan.yaml; the PKI needs two of its paths
    value = layout().paths.get(key)
    if not (isinstance(value, str) and value.startswith("/")):
        raise CatalogError(f"{data_dir('units') / PLAN_FILE}: paths.{key}: {value!r} must be an absolute path ({what})")
    return value.rstrip("/") or "/"


def install_dir() -> str:
    """Where delivered PKI files land on a node."""
    return node_path("pki", "where PKI files land on a node")


def encryption_config_path() -> str:
    """Where a controller keeps the encryption config (and so the encryption keys)."""
    return node_path("encryption_config", "where a controller keeps the encryption config")


# The shape of pki/catalog.yaml, checked as cluster.yaml's is (hardway.yamlshape); what the fields
# mean together (names, signers, placeholders, SAN rules) is parse_catalog's second pass.
DeliveryRole = Literal[DELIVERY_ROLES]


class _AuthorityDeliver(Strict):
    cert: list[DeliveryRole]
    key: list[DeliveryRole]


class _AuthorityEntry(Strict):
    name: str
    cn: str
    purpose: str = ""
    deliver: _AuthorityDeliver


class _LeafEntry(Strict):
    name: str
    per: Literal[PER]
    signer: str
    cn: str
    organizations: list[str] = []
    usages: list[Literal[USAGES]]
    sans: list[str] = []
    deliver: list[DeliveryRole]
    purpose: str = ""


class _SecretEntry(Strict):
    purpose: str = ""
    deliver: list[DeliveryRole]


class _Secrets(Strict):
    service_account: _SecretEntry = Field(alias="service-account")
    encryption: _SecretEntry


class CatalogFile(Strict):
    authorities: list[_AuthorityEntry]
    certificates: list[_LeafEntry]
    secrets: _Secrets


def load_catalog(path: str | Path) -> Catalog:
    path = Path(path)
    try:
        tree, data = parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.MarkedYAMLError as e:
        raise CatalogError(f"{path}: {yaml_syntax_problem(e, 'the certificate catalog')}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CatalogError(f"{path}: cannot read the certificate catalog: {e}") from None
    return parse_catalog(data, str(path), scan=Scan(tree))


def parse_catalog(data: object, source: str = "pki/catalog.yaml", install_to: str | None = None,
                  scan: Scan | None = None) -> Catalog:
    """`install_to`: where delivered files land on a node (default: units/plan.yaml's paths.pki);
    `scan`: the file's lines, for the messages."""
    shape, problems = validate(CatalogFile, data, scan or Scan(None))
    if shape is None:
        raise CatalogError("the certificate catalog is invalid:\n" + "\n".join(f"{source}: {p}" for p in problems))

    def bad(where: str, message: str) -> None:
        problems.append(f"{source}: {where}: {message}")

    names: set[str] = set(SECRETS)

    def name_of(name: str, where: str) -> str:
        if not re.fullmatch(r"[a-z0-9][-a-z0-9]*", name):
            bad(where, f"name {name!r} must be lowercase letters, digits and '-' (it is the file's base name)")
        elif name in names:
            bad(where, f"name {name!r} is used twice (or is reserved for a secret: {', '.join(SECRETS)})")
        names.add(name)
        return name

    authorities = tuple(Authority(name=name_of(a.name, f"authorities[{i}]"), cn=a.cn, purpose=a.purpose,
                                  cert_to=frozenset(a.deliver.cert), key_to=frozenset(a.deliver.key))
                        for i, a in enumerate(shape.authorities))
    ca_names = tuple(a.name for a in authorities)
    if not authorities:
        bad("authorities", "the list is empty; at least one CA is needed")

    leaves = []
    for i, c in enumerate(shape.certificates):
        where = f"certificates[{i}] ({name_of(c.name, f'certificates[{i}]')})"
        if c.signer not in ca_names:
            bad(where, f"unknown signer {c.signer!r}; the catalog's CAs are {', '.join(ca_names)}")
        for text in [c.cn, *c.organizations]:
            for placeholder in _PLACEHOLDER.findall(text):
                if placeholder != "node":
                    bad(where, f"unknown placeholder {{{placeholder}}} in {text!r}; only {{node}} is known")
                elif c.per == "cluster":
                    bad(where, f"{{node}} in {text!r}, but the entry is per cluster; use per: controller or worker")
        if not c.usages:
            bad(where, f"usages is empty; give one or more of {', '.join(USAGES)}")
        for rule in c.sans:
            if rule not in SAN_RULES:
                bad(where, f"unknown SAN rule {rule!r}; known rules: {', '.join(SAN_RULES)}")
            elif SAN_RULES[rule].needs_node and c.per == "cluster":
                bad(where, f"SAN rule {rule!r} needs a node, but the entry is per cluster")
        if "serverAuth" in c.usages and not c.sans:
            bad(where, "a serverAuth certificate needs SANs (clients verify the server's name against them)")
        leaves.append(Leaf(name=c.name, per=c.per, signer=c.signer, cn=c.cn, organizations=tuple(c.organizations),
                           usages=frozenset(c.usages), sans=tuple(c.sans), deliver_to=frozenset(c.deliver),
                           purpose=c.purpose))

    secrets = tuple(Secret(name=name, purpose=entry.purpose, deliver_to=frozenset(entry.deliver))
                    for name, entry in zip(SECRETS, (shape.secrets.service_account, shape.secrets.encryption)))

    if problems:
        raise CatalogError("the certificate catalog is invalid:\n" + "\n".join(problems))
    return Catalog(install_dir=install_to or install_dir(), authorities=authorities,
                   leaves=tuple(leaves), secrets=secrets)
