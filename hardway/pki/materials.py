"""The PKI materials (every PEM and secret of a cluster, in memory) and what each node receives.

`node_files` reads the catalog's `deliver` lists: one place says which role gets which file, and
nothing else re-derives it. A per-node entry is delivered only to its own node.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from ..names import first_names
from ..plan import MODE_PUBLIC, MODE_SECRET, WORKSTATION, PlannedFile
from ..spec import Cluster
from .catalog import Catalog, default_catalog


@dataclass(frozen=True)
class Materials:
    """Certificates and keys by (entry, node); node is None for CAs and cluster-wide entries."""

    certs: Mapping[tuple[str, str | None], bytes] = field(repr=False)
    keys: Mapping[tuple[str, str | None], bytes] = field(repr=False)
    service_account_private: bytes = field(repr=False)
    service_account_public: bytes = field(repr=False)
    encryption_key: bytes = field(repr=False)  # 32 raw bytes: the key of the spec's provider, which encrypts
    # Every encryption key the apiserver is given, in the EncryptionConfiguration's order: (provider, key
    # name, 32 raw bytes), the writing one first (it is `encryption_key`), then the ones kept to read
    # Secrets written before a provider change or key rotation (docs/pki.md, 'The encryption key').
    encryption_keys: tuple[tuple[str, str, bytes], ...] = field(default=(), repr=False)

    def cert(self, entry: str, node: str | None = None) -> bytes:
        return self._get(self.certs, "certificate", entry, node)

    def key(self, entry: str, node: str | None = None) -> bytes:
        return self._get(self.keys, "key", entry, node)

    def _get(self, table, what: str, entry: str, node: str | None) -> bytes:
        try:
            return table[(entry, node)]
        except KeyError:
            nodes = sorted(n for e, n in table if e == entry and n is not None)
            if node is None and nodes:
                hint = f"{entry!r} is per node: pass node= one of {first_names(nodes, 5, ', ...')}"
            elif nodes or (entry, None) in table:
                hint = f"no {entry!r} {what} for node {node!r}"
            else:
                hint = f"no entry {entry!r}; entries: {', '.join(sorted({e for e, _ in table}))}"
            raise KeyError(hint) from None


def _roles(cluster: Cluster, node_name: str) -> frozenset[str]:
    if node_name == WORKSTATION:
        return frozenset({WORKSTATION})
    try:
        return cluster.node(node_name).roles
    except KeyError:
        raise KeyError(f"no node {node_name!r} in the cluster (nodes: {first_names((n.name for n in cluster.nodes), 5, ', ...')}"
                       f"; or {WORKSTATION!r})") from None


def node_files(cluster: Cluster, materials: Materials, node_name: str,
               catalog: Catalog | None = None) -> list[PlannedFile]:
    """The PKI files `node_name` (or WORKSTATION) receives, at their install paths, sorted by path."""
    catalog = catalog or default_catalog()
    roles = _roles(cluster, node_name)
    base = catalog.install_dir
    files: list[PlannedFile] = []

    def add(name: str, suffix: str, data: bytes, secret: bool, purpose: str, source: str) -> None:
        files.append(PlannedFile(path=f"{base}/{name}{suffix}", mode=MODE_SECRET if secret else MODE_PUBLIC,
                                 data=data, purpose=purpose, source=source))

    for ca in catalog.authorities:
        if roles & ca.cert_to:
            add(ca.name, ".crt", materials.cert(ca.name), False, f"{ca.purpose}: certificate", ca.name)
        if roles & ca.key_to:
            add(ca.name, ".key", materials.key(ca.name), True, f"{ca.purpose}: private key", ca.name)
    for leaf in catalog.leaves:
        if not roles & leaf.deliver_to:
            continue
        if leaf.per_node:
            if leaf.per not in roles:  # e.g. a workstation never gets a per-controller entry
                continue
            node = node_name
        else:
            node = None
        add(leaf.name, ".crt", materials.cert(leaf.name, node), False, f"{leaf.purpose}: certificate", leaf.name)
        add(leaf.name, ".key", materials.key(leaf.name, node), True, f"{leaf.purpose}: private key", leaf.name)
    sa = catalog.secret("service-account")
    if roles & sa.deliver_to:
        add("service-account", ".key", materials.service_account_private, True, f"{sa.purpose}: private key",
            "service-account")
        add("service-account", ".pub", materials.service_account_public, False, f"{sa.purpose}: public key",
            "service-account")
    return sorted(files, key=lambda f: f.path)
