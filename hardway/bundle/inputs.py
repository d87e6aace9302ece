"""What each bundle is made from, as digests: a `bundle` with nothing to do renders and compresses nothing.

Every bundle's bytes are a function of four things, and each gets a digest (`Inputs.of(node)`):

    source  hardway itself: its version, its Python code, every template, units/plan.yaml, the
            version table (units/versions.yaml) and the certificate catalog (pki/)
    spec    the spec values the bundle can use: every cluster-wide value, the controllers and load
            balancers in full (etcd members, haproxy backends, the API endpoint), and the node's own
            entry. Another worker reaches a node's bundle only through the node table (below). The
            workstation's bundle lists every node: its spec digest covers the whole spec.
    table   the node table (render: node_table), which every node bundle carries
    pki     the store entries the bundle can embed: every cluster-wide certificate, key and secret,
            and the entries issued for this node (a per-node entry only ever goes to its own node)

`write_bundles` records, per archive, these digests and the archive's size and SHA-256 (the state
file beside the bundles directory, `<out>/.bundles.inputs`). A later run skips a bundle only if all
four digests are equal AND the archive on disk is a regular file with the recorded size and
SHA-256: a changed input always rebuilds, and an archive changed or replaced on disk is rebuilt.
`hardway check` never uses the state: it verifies every archive in full.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import stat
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..fsutil import inputs_beside
from ..plan import WORKSTATION, node_table
from ..resources import data_dir
from ..spec import Cluster

if TYPE_CHECKING:
    from ..pki.materials import Materials

COMPONENTS = ("source", "spec", "table", "pki")
WHY = {"source": "hardway, its templates or version table changed", "spec": "spec values it uses changed",
       "table": "the node table changed", "pki": "certificates, keys or secrets it carries changed"}
STATE_FORMAT = 1


def state_beside(bundles: Path) -> Path:
    return inputs_beside(bundles)


def _h(*parts: bytes) -> "hashlib._Hash":
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "big"))  # framed: no two part lists hash alike
        h.update(p)
    return h


def _short(h) -> str:
    return h.hexdigest()[:32]


@cache
def source_digest() -> str:
    """hardway's version, code and data files (templates, plan, version table, catalog)."""
    h = hashlib.sha256(f"hardway {__version__}\n".encode())
    package = Path(__file__).resolve().parent.parent
    roots = [("hardway", package, "*.py"), ("units", data_dir("units"), "*"), ("pki", data_dir("pki"), "*")]
    for label, root, pattern in roots:
        for path in sorted(p for p in root.rglob(pattern) if p.is_file() and "__pycache__" not in p.parts):
            rel = f"{label}/{path.relative_to(root).as_posix()}".encode()
            h.update(_h(rel, path.read_bytes()).digest())
    return _short(h)


def canonical(value: Any) -> Any:
    """A JSON-able form of spec values: dataclasses by field (compare=False fields left out), sets
    sorted (a frozenset's order changes with the hash seed), everything else as its text."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: canonical(getattr(value, f.name)) for f in dataclasses.fields(value) if f.compare
                and f.name != "source"}
    if isinstance(value, (frozenset, set)):
        return sorted(canonical(v) for v in value)
    if isinstance(value, (tuple, list)):
        return [canonical(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


class Inputs:
    """The input digests of every bundle of one cluster and PKI materials, computed in one pass."""

    def __init__(self, cluster: Cluster, materials: Materials):
        self.cluster = cluster
        self.source = source_digest()
        common = {k: v for k, v in canonical(cluster).items() if k != "nodes"}
        common["control_plane"] = [canonical(n) for n in cluster.nodes if n.is_controller or n.is_loadbalancer]
        self._common = _json(common)
        self._whole = _json(canonical(cluster))
        self.table = _short(_h(_json(node_table(cluster))))
        # store entries: cluster-wide ones (node None) for everyone, per-node ones only for their node
        shared = hashlib.sha256()
        per_node: dict[str, "hashlib._Hash"] = {}
        for kind, table in (("cert", materials.certs), ("key", materials.keys)):
            for (entry, node), data in sorted(table.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
                h = shared if node is None else per_node.setdefault(node, hashlib.sha256())
                h.update(_h(kind.encode(), entry.encode(), data).digest())
        shared.update(_h(b"service-account", materials.service_account_private, materials.service_account_public).digest())
        shared.update(_h(b"encryption", materials.encryption_key).digest())
        for provider, name, raw in materials.encryption_keys:
            shared.update(_h(provider.encode(), name.encode(), raw).digest())
        self._pki_shared = shared.digest()
        self._pki_node = {node: h.digest() for node, h in per_node.items()}

    def of(self, node: str) -> dict[str, str]:
        """The four digests of one bundle (a node name, or WORKSTATION)."""
        if node == WORKSTATION:
            spec = _short(_h(b"workstation", self._whole))
        else:
            spec = _short(_h(self._common, _json(canonical(self.cluster.node(node)))))
        return {"source": self.source, "spec": spec, "table": self.table,
                "pki": _short(_h(self._pki_shared, self._pki_node.get(node, b"")))}


# ---------------------------------------------------------------- the state file -----------------

def read_state(bundles: Path) -> dict[str, dict]:
    """node -> {"inputs": {...}, "size": int, "sha256": str}; empty if missing, a link, or malformed
    (then every bundle is rebuilt: the state can only ever save work, never vouch for an archive)."""
    try:
        fd = os.open(state_beside(bundles), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        with os.fdopen(fd, "rb") as f:
            raw = json.loads(f.read(64 << 20))
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT or not isinstance(raw.get("bundles"), dict):
        return {}
    out = {}
    for node, rec in raw["bundles"].items():
        if (isinstance(rec, dict) and isinstance(rec.get("inputs"), dict) and isinstance(rec.get("size"), int)
                and isinstance(rec.get("sha256"), str)):
            out[node] = rec
    return out


def state_bytes(records: dict[str, dict]) -> bytes:
    return (json.dumps({"format": STATE_FORMAT, "about": "what each bundle was made from (docs/bundles.md)",
                        "bundles": {n: records[n] for n in sorted(records)}}, indent=0, sort_keys=True) + "\n").encode()


def read_regular(path: Path) -> bytes | None:
    """The bytes of a regular file at `path` (never through a link), or None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    finally:
        os.close(fd)


def archive_digest(path: Path) -> tuple[int, str] | None:
    """(size, SHA-256) of a regular file at `path` (never through a link), or None."""
    data = read_regular(path)
    return None if data is None else (len(data), hashlib.sha256(data).hexdigest())


def unchanged(rec: dict | None, want: dict[str, str], path: Path) -> bool:
    """Whether the archive at `path` is the one recorded for exactly these inputs."""
    if not rec or rec.get("inputs") != want:
        return False
    return archive_digest(path) == (rec["size"], rec["sha256"])


def changed_components(rec: dict | None, want: dict[str, str]) -> list[str]:
    if not rec:
        return []
    old = rec.get("inputs") or {}
    return [c for c in COMPONENTS if old.get(c) != want[c]]
