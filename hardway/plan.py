"""The node file plan: what one node (or the operator's workstation) receives.

Every stage after rendering reads these values and nothing else: the bundle writer, install.sh,
INSTALL.md, `plan`, `check` and the lab. Paths are absolute paths on the node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .spec import WORKSTATION  # noqa: F401  (the operator's bundle; the spec reserves the name)

# Modes by kind of file: secrets are readable by root only.
MODE_SECRET = 0o600
MODE_PUBLIC = 0o644
MODE_EXEC = 0o755


@dataclass(frozen=True)
class PlannedFile:
    path: str  # absolute, on the node: /etc/systemd/system/etcd.service
    mode: int
    data: bytes
    purpose: str  # one line for INSTALL.md and `plan`
    source: str = ""  # the catalog entry or template it came from
    shared: bool = False  # rendered once per run, the same bytes in every bundle that has it (node table)

    @property
    def secret(self) -> bool:
        return self.mode & 0o077 == 0


@dataclass(frozen=True)
class PlannedDir:
    path: str
    mode: int
    purpose: str = ""


@dataclass(frozen=True)
class NodeNotes:
    """What INSTALL.md tells the operator beyond the files: binaries to fetch, packages, routes, hosts."""

    binaries: tuple[dict, ...] = ()  # {name, version, path, url_hint[, package]}, in the role's order
    packages: tuple[str, ...] = ()  # Debian packages
    routes: tuple[dict, ...] = ()  # {cidr, via, node}: the other workers' pod ranges
    hosts: tuple[str, ...] = ()  # /etc/hosts lines
    file_count: int | None = None  # set in summaries whose files were dropped (hardway units)


@dataclass(frozen=True)
class NodePlan:
    node: str  # a node name, or WORKSTATION
    roles: frozenset[str]
    files: tuple[PlannedFile, ...]  # sorted by path, paths unique
    directories: tuple[PlannedDir, ...] = ()  # created by install.sh (e.g. /var/lib/etcd 0700)
    units: tuple[str, ...] = ()  # systemd units to enable and start, in dependency order
    notes: NodeNotes = field(default_factory=NodeNotes, compare=False)  # extra facts for INSTALL.md

    def file(self, path: str) -> PlannedFile:
        for f in self.files:
            if f.path == path:
                return f
        raise KeyError(path)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(f.path for f in self.files)


def hosts_markers(cluster: str) -> tuple[str, str]:
    """The lines around a cluster's /etc/hosts lines: a re-run replaces what is between them
    (INSTALL.md, the workstation's hosts file and README) instead of adding duplicates."""
    return f"# BEGIN hardway {cluster}", f"# END hardway {cluster}"


def node_table(cluster) -> tuple[tuple[str, ...], ...]:
    """The node table's rows (units/network/cluster-nodes.tsv.j2): address, pod range or -, name, more
    names; then the API endpoint's name where it is a name no node carries and resolves to a node.
    The /etc/hosts lines and the pod routes of every node come from it (docs/bundles.md)."""
    from .names import is_ip
    c = cluster
    rows = [(str(n.address), str(n.pod_cidr) if n.is_worker and n.pod_cidr else "-", n.name,
             *([n.fqdn] if n.fqdn else [])) for n in c.nodes]
    names = {h for n in c.nodes for h in n.hostnames}
    if c.api_endpoint not in names and not is_ip(c.api_endpoint):
        # Clients resolve the API endpoint's name: to the load balancer, or the only controller.
        target = (c.loadbalancers[0] if len(c.loadbalancers) == 1
                  else c.controllers[0] if len(c.controllers) == 1 and not c.loadbalancers else None)
        if target is not None:
            rows.append((str(target.address), "-", c.api_endpoint))
    return tuple(rows)
