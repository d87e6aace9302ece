"""The lab's network: one namespace per simulated node, joined by a bridge in a namespace of its own.

Nothing is added to the host's addresses, routes or interfaces: each veth pair is created inside the
bridge namespace with its peer placed straight into the node's namespace (as `eth0`), so no lab
interface ever exists in the host namespace. Deleting a node's namespace deletes its pair.
`plan_network` is pure; `create` and `destroy` run `ip`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import HardwayError
from ..plan import WORKSTATION
from ..spec import Cluster, IPAddress, IPNetwork

BRIDGE = "br0"  # inside the bridge namespace, so it cannot clash with a host interface
NODE_IFACE = "eth0"  # inside each node namespace
IFNAMSIZ = 15  # Linux interface names: at most 15 bytes


class LabError(HardwayError):
    """The lab could not be brought up, inspected or taken down."""


@dataclass(frozen=True)
class Member:
    node: str  # a node name, or WORKSTATION
    netns: str
    address: IPAddress
    peer: str  # this member's veth end in the bridge namespace

    def to_dict(self) -> dict:
        return {"node": self.node, "netns": self.netns, "address": str(self.address), "peer": self.peer}

    @classmethod
    def from_dict(cls, d: dict) -> "Member":
        return cls(d["node"], d["netns"], ipaddress.ip_address(d["address"]), d["peer"])


@dataclass(frozen=True)
class Network:
    prefix: str
    bridge_netns: str
    subnet: IPNetwork
    members: tuple[Member, ...]

    @property
    def namespaces(self) -> tuple[str, ...]:
        """Every namespace of the lab, bridge first (the order to create them)."""
        return (self.bridge_netns,) + tuple(m.netns for m in self.members)

    def member(self, node: str) -> Member:
        for m in self.members:
            if m.node == node:
                return m
        raise KeyError(node)

    def to_dict(self) -> dict:
        return {"prefix": self.prefix, "bridge_netns": self.bridge_netns, "subnet": str(self.subnet),
                "members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, d: dict) -> "Network":
        return cls(d["prefix"], d["bridge_netns"], ipaddress.ip_network(d["subnet"]),
                   tuple(Member.from_dict(m) for m in d["members"]))


def lab_prefix(labdir: Path) -> str:
    """A short name prefix unique to one lab directory, so two labs never share a namespace."""
    digest = hashlib.sha256(str(Path(labdir).resolve()).encode()).hexdigest()
    return f"hw{digest[:5]}"


def lab_subnet(addresses: list[IPAddress]) -> IPNetwork:
    """The smallest network holding every address, at least a /24 (IPv4) or /64 (IPv6)."""
    first = addresses[0]
    prefix = 24 if first.version == 4 else 64
    while True:
        net = ipaddress.ip_network(f"{first}/{prefix}", strict=False)
        if all(a in net for a in addresses):
            return net
        prefix -= 1


def free_address(subnet: IPNetwork, taken: set[IPAddress]) -> IPAddress:
    """The highest usable address of the subnet that no node uses."""
    top = subnet.num_addresses - (2 if subnet.version == 4 else 1)
    for offset in range(top, 0, -1):
        candidate = subnet.network_address + offset
        if candidate not in taken:
            return candidate
    raise LabError(f"no free address left in {subnet} for the lab's workstation namespace")


def lab_nodes(cluster: Cluster):
    """The nodes the lab simulates: all of them, each in a namespace of its own."""
    return tuple(cluster.nodes)


def plan_network(cluster: Cluster, prefix: str) -> Network:
    versions = {n.address.version for n in cluster.nodes}
    if len(versions) != 1:
        raise LabError("the lab needs every node address in one IP family (all IPv4 or all IPv6)")
    addresses = [n.address for n in cluster.nodes]
    subnet = lab_subnet(addresses)
    members = []
    for i, node in enumerate(lab_nodes(cluster)):
        members.append(Member(node.name, f"{prefix}-{node.name}", node.address, f"v{i}"))
    ws = free_address(subnet, set(addresses))
    members.append(Member(WORKSTATION, f"{prefix}-ws", ws, f"v{len(members)}"))
    for m in members:
        assert len(m.peer) <= IFNAMSIZ
    return Network(prefix, f"{prefix}-br", subnet, tuple(members))


# ---------------------------------------------------------------- side effects ------------------

def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    except FileNotFoundError:
        raise LabError("`ip` (iproute2) is not installed; `apt-get install -y iproute2`") from None
    if check and proc.returncode != 0:
        hint = "" if os.geteuid() == 0 else " (the lab needs root: run it with sudo)"
        raise LabError(f"`ip {' '.join(args)}` failed: {proc.stderr.strip() or proc.stdout.strip()}{hint}")
    return proc


def require_netns_support() -> None:
    """Raise a LabError that says what is missing when namespaces cannot be used here."""
    if os.geteuid() != 0:
        raise LabError("the lab creates network namespaces and mounts, which needs root: "
                       "run it as root, e.g. `sudo hardway lab.up`")
    for tool, package in (("ip", "iproute2"), ("unshare", "util-linux"), ("mount", "mount")):
        if shutil.which(tool) is None:
            raise LabError(f"`{tool}` is not installed; `apt-get install -y {package}`")


def existing_namespaces(prefix: str | None = None) -> list[str]:
    proc = _ip("netns", "list", check=False)
    names = [line.split()[0] for line in proc.stdout.splitlines() if line.strip()]
    return [n for n in names if prefix is None or n.startswith(prefix + "-")]


def create(network: Network, record) -> None:
    """Create the namespaces, bridge and links. `record(netns)` is called before each namespace is
    created, so a failure half-way leaves a complete list for `destroy`."""
    br = network.bridge_netns
    record(br)
    _ip("netns", "add", br)
    _ip("-n", br, "link", "set", "lo", "up")
    _ip("-n", br, "link", "add", BRIDGE, "type", "bridge")
    _ip("-n", br, "link", "set", BRIDGE, "up")
    family = "-6" if network.subnet.version == 6 else "-4"
    for m in network.members:
        record(m.netns)
        _ip("netns", "add", m.netns)
        _ip("-n", br, "link", "add", m.peer, "type", "veth", "peer", "name", NODE_IFACE, "netns", m.netns)
        _ip("-n", br, "link", "set", m.peer, "master", BRIDGE, "up")
        addr = f"{m.address}/{network.subnet.prefixlen}"
        _ip("-n", m.netns, "addr", "add", addr, "dev", NODE_IFACE, *(["nodad"] if family == "-6" else []))
        _ip("-n", m.netns, "link", "set", "lo", "up")
        _ip("-n", m.netns, "link", "set", NODE_IFACE, "up")
        # kube-apiserver looks for a default route at start; an on-link one is enough here.
        _ip("-n", m.netns, family, "route", "add", "default", "dev", NODE_IFACE)


def namespace_pids(netns: str) -> list[int]:
    proc = _ip("netns", "pids", netns, check=False)
    return [int(p) for p in proc.stdout.split() if p.isdigit()]


def destroy(names: list[str]) -> list[str]:
    """Delete the namespaces that still exist (their veths go with them); return the deleted."""
    present = set(existing_namespaces())
    deleted = []
    for name in reversed(names):
        if name in present:
            _ip("netns", "del", name)
            deleted.append(name)
    return deleted
