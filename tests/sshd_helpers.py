"""Real sshd servers for tests, without a cluster: one network namespace of their own, each node's
address on its loopback, one sshd per node listening there (hardway.lab.sshd). A client run
through `inside(...)` reaches them as a workstation reaches its nodes; the host never does.

    with ssh_nodes(tmp_path, {"server": "10.240.0.10", "node-0": "10.240.0.20"}) as nodes:
        nodes.servers["server"].host_keys      # pin them in a spec
        nodes.key.private                      # the client's identity
        subprocess.run(nodes.inside(["ssh", ...]))

For a lab's own namespaces (sshd beside a node's units) use hardway.lab.sshd.lab_namespaces.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from hardway.lab import sshd
from helpers import need_namespaces, need_sshd


@dataclass
class SshNodes:
    netns: str
    directory: Path
    key: sshd.ClientKey
    addresses: dict[str, str]
    servers: dict[str, sshd.Sshd] = field(default_factory=dict)

    def inside(self, argv: list[str]) -> list[str]:
        return sshd.netns_command(self.netns) + list(argv)

    def start(self, node: str, **kwargs) -> sshd.Sshd:
        """(Re)start one node's sshd; kwargs as hardway.lab.sshd.start (authorized=, die_on=)."""
        old = self.servers.get(node)
        if old is not None:
            old.stop()
        kwargs.setdefault("authorized", [self.key.public])
        server = sshd.start(self.directory / node, enter=sshd.netns_command(self.netns),
                            address=self.addresses[node], **kwargs)
        self.servers[node] = server
        return server


@contextmanager
def ssh_nodes(directory: Path, addresses: dict[str, str]) -> Iterator[SshNodes]:
    need_namespaces()
    need_sshd()
    name = f"hwssh-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        for address in addresses.values():
            bits = 128 if ":" in address else 32
            subprocess.run(["ip", "-n", name, "addr", "add", f"{address}/{bits}", "dev", "lo"]
                           + (["nodad"] if bits == 128 else []), check=True)
        nodes = SshNodes(name, Path(directory), sshd.client_key(Path(directory) / "client" / "id_ed25519"), addresses)
        try:
            for node in addresses:
                nodes.start(node)
            yield nodes
        finally:
            for server in nodes.servers.values():
                server.stop()
    finally:
        pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", name], check=True)
