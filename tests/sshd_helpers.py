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


@dataclass
class SshLab:
    """A lab's network with one real sshd per node in the node's namespace, every root still empty;
    the spec pins the sshd host keys and names the client key. `start_installed()` starts the nodes
    from what was installed into their roots over SSH."""

    raw: dict
    cluster: object  # hardway.spec.Cluster, read from spec_file
    spec_file: Path
    out: Path
    labdir: Path
    lab: object  # hardway.lab.Lab

    def start_installed(self):
        from hardway.lab import up
        from hardway.lab.lab import UP_INSTALLED
        self.lab = up(self.cluster, self.out, labdir=self.labdir, timeout=300, say=print, mode=UP_INSTALLED)
        return self.lab


@contextmanager
def ssh_lab(out: Path, example: str = "ha") -> Iterator[SshLab]:
    """The `example` spec with an ssh block for the lab's sshd servers, its network up (lab.up
    --network-only) and an sshd in every node's namespace; on exit the sshd servers stop, the lab goes
    down and the host is checked to hold nothing of it. The caller checks its own tool is there."""
    import time

    import yaml

    from hardway import resources, spec
    from hardway.lab import down, netns, up
    from hardway.lab.lab import UP_NETWORK, find_lab_binaries
    from hardway.lab.netns import LabError
    from helpers import BUILD_COMMAND, missing, need_binaries, need_haproxy
    from test_e2e_lab import eventually, host_state

    path = resources.example_path(example)
    need_namespaces()
    need_sshd()
    raw = yaml.safe_load(path.read_text())
    cluster = spec.loads(path.read_text(), source=str(path))
    need_binaries(str(cluster.version))
    try:
        find_lab_binaries(cluster, None)
    except LabError as e:
        missing(str(e), BUILD_COMMAND)
    need_haproxy()
    labdir = out / "lab"
    key = sshd.client_key(out / "client" / "id_ed25519")
    raw["ssh"] = {"identity": str(key.private)}
    for n in raw["nodes"]:
        n["ssh"] = {"hostKeys": sshd.host_keys(out / "sshd" / n["name"])}
    spec_file = out / "cluster.yaml"
    spec_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    cluster = spec.load(spec_file)
    before = host_state(netns.lab_prefix(labdir), labdir)
    servers: list[sshd.Sshd] = []
    started = time.monotonic()
    try:
        lab = up(cluster, out, labdir=labdir, timeout=300, say=print, mode=UP_NETWORK)
        namespaces = sshd.lab_namespaces(labdir)
        for n in cluster.nodes:
            servers.append(sshd.start(out / "sshd" / n.name, enter=sshd.netns_command(namespaces[n.name]),
                                      address=str(n.address), authorized=[key.public]))
        assert all(not any(lab.root(n.name).iterdir()) for n in cluster.nodes)  # empty roots
        yield SshLab(raw, cluster, spec_file, out, labdir, lab)
        print(f"installed over SSH and started in {time.monotonic() - started:.1f}s")
    finally:
        for s in servers:
            s.stop()
        down(labdir)
        assert netns.existing_namespaces(netns.lab_prefix(labdir)) == []

        def clean():
            after = host_state(netns.lab_prefix(labdir), labdir)
            for what in before:
                new = sorted(set(after[what]) - set(before[what]))
                assert not new, f"left {what} behind on the host: {new[:10]}"
        eventually(clean, timeout=20, interval=0.5)
