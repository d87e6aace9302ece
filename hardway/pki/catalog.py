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
from typing import Callable, Iterable, Iterator, NamedTuple

import yaml

from ..errors import HardwayError
from ..resources import data_dir
from ..spec import Cluster, IPAddress, Node
from ..spec import is_ip as _is_ip

PER = ("cluster", "controller", "worker")
ROLES = ("controller", "worker", "workstation")
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
    return ipaddress.ip_address(value) if _is_ip(value) else value


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


def plan_path() -> Path:
    return data_dir("units") / "plan.yaml"


@cache
def install_dir() -> str:
    """Where delivered PKI files land on a node: `paths.pki` of units/plan.yaml, the one place it is
    written (the templates read it there too)."""
    path = plan_path()
    try:
        paths = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("paths") or {}
    except (OSError, yaml.YAMLError, AttributeError) as e:
        raise CatalogError(f"{path}: cannot read paths.pki, where PKI files land on a node: {e}") from None
    value = paths.get("pki") if isinstance(paths, dict) else None
    if not (isinstance(value, str) and value.startswith("/")):
        raise CatalogError(f"{path}: paths.pki: {value!r} must be an absolute path (where PKI files land on a node)")
    return value.rstrip("/") or "/"


def load_catalog(path: str | Path) -> Catalog:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise CatalogError(f"{path}: cannot read the certificate catalog: {e}") from None
    return parse_catalog(data, str(path))


def parse_catalog(data: object, source: str = "pki/catalog.yaml", install_to: str | None = None) -> Catalog:
    """`install_to`: where delivered files land on a node (default: units/plan.yaml's paths.pki)."""
    problems: list[str] = []

    def bad(where: str, message: str) -> None:
        problems.append(f"{source}: {where}: {message}")

    def mapping(value, where, allowed: tuple[str, ...], required: tuple[str, ...]) -> dict:
        if not isinstance(value, dict):
            bad(where, f"must be a mapping with keys {', '.join(allowed)}")
            return {}
        for key in value:
            if key not in allowed:
                bad(where, f"unknown key {key!r}; allowed: {', '.join(allowed)}")
        for key in required:
            if key not in value:
                bad(where, f"{key!r} is required")
        return value

    def str_list(value, where, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            bad(where, "must be a list of strings")
            return ()
        for v in value:
            if allowed is not None and v not in allowed:
                bad(where, f"unknown value {v!r}; allowed: {', '.join(allowed)}")
        return tuple(value)

    top = mapping(data, "(top level)", ("authorities", "certificates", "secrets"),
                  ("authorities", "certificates", "secrets"))
    names: set[str] = set(SECRETS)

    def name_of(value, where) -> str:
        name = value.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9][-a-z0-9]*", name):
            bad(where, f"name {name!r} must be lowercase letters, digits and '-' (it is the file's base name)")
            return str(name)
        if name in names:
            bad(where, f"name {name!r} is used twice (or is reserved for a secret: {', '.join(SECRETS)})")
        names.add(name)
        return name

    authorities = []
    for i, raw in enumerate(top.get("authorities") or []):
        where = f"authorities[{i}]"
        a = mapping(raw, where, ("name", "cn", "purpose", "deliver"), ("name", "cn", "deliver"))
        if not a:
            continue
        name = name_of(a, where)
        deliver = mapping(a.get("deliver", {}), f"{where} ({name}).deliver", ("cert", "key"), ("cert", "key"))
        authorities.append(Authority(
            name=name, cn=str(a.get("cn")), purpose=str(a.get("purpose", "")),
            cert_to=frozenset(str_list(deliver.get("cert"), f"{where} ({name}).deliver.cert", ROLES)),
            key_to=frozenset(str_list(deliver.get("key"), f"{where} ({name}).deliver.key", ROLES))))
    ca_names = tuple(a.name for a in authorities)
    if not authorities:
        bad("authorities", "the list is empty; at least one CA is needed")

    leaves = []
    leaf_keys = ("name", "per", "signer", "cn", "organizations", "usages", "sans", "deliver", "purpose")
    for i, raw in enumerate(top.get("certificates") or []):
        where = f"certificates[{i}]"
        c = mapping(raw, where, leaf_keys, ("name", "per", "signer", "cn", "usages", "deliver"))
        if not c:
            continue
        name = name_of(c, where)
        where = f"{where} ({name})"
        per = c.get("per")
        if per not in PER:
            bad(where, f"per {per!r} is unknown; allowed: {', '.join(PER)}")
        signer = c.get("signer")
        if signer not in ca_names:
            bad(where, f"unknown signer {signer!r}; the catalog's CAs are {', '.join(ca_names)}")
        subject = [str(c.get("cn", ""))] + list(str_list(c.get("organizations"), f"{where}.organizations"))
        for text in subject:
            for placeholder in _PLACEHOLDER.findall(text):
                if placeholder != "node":
                    bad(where, f"unknown placeholder {{{placeholder}}} in {text!r}; only {{node}} is known")
                elif per == "cluster":
                    bad(where, f"{{node}} in {text!r}, but the entry is per cluster; use per: controller or worker")
        usages = str_list(c.get("usages"), f"{where}.usages", USAGES)
        if not usages:
            bad(where, f"usages is empty; give one or more of {', '.join(USAGES)}")
        sans = str_list(c.get("sans"), f"{where}.sans")
        for rule in sans:
            if rule not in SAN_RULES:
                bad(where, f"unknown SAN rule {rule!r}; known rules: {', '.join(SAN_RULES)}")
            elif SAN_RULES[rule].needs_node and per == "cluster":
                bad(where, f"SAN rule {rule!r} needs a node, but the entry is per cluster")
        if "serverAuth" in usages and not sans:
            bad(where, "a serverAuth certificate needs SANs (clients verify the server's name against them)")
        deliver = str_list(c.get("deliver"), f"{where}.deliver", ROLES)
        leaves.append(Leaf(name=name, per=str(per), signer=str(signer), cn=str(c.get("cn")),
                           organizations=tuple(subject[1:]), usages=frozenset(usages), sans=sans,
                           deliver_to=frozenset(deliver), purpose=str(c.get("purpose", ""))))

    secrets = []
    raw_secrets = top.get("secrets") or {}
    if isinstance(raw_secrets, dict):
        for name in raw_secrets:
            if name not in SECRETS:
                bad("secrets", f"unknown secret {name!r}; known: {', '.join(SECRETS)}")
        for name in SECRETS:
            s = mapping(raw_secrets.get(name), f"secrets.{name}", ("purpose", "deliver"), ("deliver",))
            secrets.append(Secret(name=name, purpose=str(s.get("purpose", "")),
                                  deliver_to=frozenset(str_list(s.get("deliver"), f"secrets.{name}.deliver", ROLES))))
    else:
        bad("secrets", f"must be a mapping with keys {', '.join(SECRETS)}")

    if problems:
        raise CatalogError("the certificate catalog is invalid:\n" + "\n".join(problems))
    return Catalog(install_dir=install_to or install_dir(), authorities=tuple(authorities),
                   leaves=tuple(leaves), secrets=tuple(secrets))
