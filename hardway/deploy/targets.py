"""Who `hardway deploy` connects to: one Target per node, every default of the spec's `ssh:` blocks
applied. Pure: the Fabric edge and the Ansible inventory both start here, so they cannot disagree.

Resolution, field by field: the node's own ssh block, else the cluster's, else the default. `host`
defaults to the node's `address` (not its `fqdn`: the address is validated and is what the other
nodes use, while the fqdn may resolve only through the /etc/hosts lines the bundles install).
Host keys are pinned per node only.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..names import host_port
from ..spec import Cluster
from ..sshspec import DEFAULT_PORT, DEFAULT_USER, HostKey, Jump

ORDER = ("loadbalancer", "controller", "worker")  # the bring-up order of the workstation README


@dataclass(frozen=True)
class Target:
    node: str
    roles: frozenset[str]
    host: str
    port: int = DEFAULT_PORT
    user: str = DEFAULT_USER
    identity: str | None = None  # a private key file on the workstation; None: ssh's own (agent, ~/.ssh/id_*)
    jump: Jump | None = None
    host_keys: tuple[HostKey, ...] = ()  # pinned; empty: the user's known_hosts decides

    @property
    def address(self) -> str:
        """user@host:port, for messages."""
        return f"{self.user}@{host_port(self.host, self.port)}"

    @property
    def known_hosts_name(self) -> str:
        """The host as known_hosts names it: host, or [host]:port off port 22."""
        return self.host if self.port == 22 else f"[{self.host}]:{self.port}"

    def to_dict(self) -> dict:
        return {"node": self.node, "roles": sorted(self.roles), "host": self.host, "port": self.port,
                "user": self.user, "identity": self.identity, "jump": str(self.jump) if self.jump else None,
                "host_keys": [str(k) for k in self.host_keys]}


def targets(cluster: Cluster) -> tuple[Target, ...]:
    """Every node's connection, in spec order."""
    top = cluster.ssh
    out = []
    for n in cluster.nodes:
        own = n.ssh
        out.append(Target(
            node=n.name,
            roles=n.roles,
            host=own.host or str(n.address),
            port=own.port or top.port or DEFAULT_PORT,
            user=own.user or top.user or DEFAULT_USER,
            identity=own.identity or top.identity,
            jump=own.jump or top.jump,
            host_keys=own.host_keys,
        ))
    return tuple(out)


def phase(roles: frozenset[str]) -> str:
    """The bring-up phase of a node: loadbalancer, controller (also controller+worker) or worker."""
    return next(r for r in ORDER if r in roles)
