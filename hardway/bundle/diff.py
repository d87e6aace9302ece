"""`hardway plan` for bundles: per node, which files `bundle` would add, change or remove, and why.

The bundles are rendered in memory from the materials `pki` would produce (its assessment executed
into a copy-on-write store: keeps come from the disk, re-issues are made in memory) and compared,
member by member, with the archives on disk. Nothing is written, not even a lock.
Secrets are never shown: a changed key or kubeconfig says what changed, not the bytes.
"""

from __future__ import annotations

import base64
import difflib
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import yaml
from cryptography import x509

from ..pki.issue import key_fingerprint, san_texts
from ..plan import WORKSTATION
from ..spec import Cluster
from . import layout, privilege
from ..fsutil import read_record, record_beside
from .archive import SUFFIX, ArchiveError, archived_nodes, read_archive
from .inputs import WHY, Inputs, changed_components, read_state, unchanged



class FileStatus(StrEnum):
    """What `bundle` would do to one file of a bundle."""
    ADDED = "added"
    CHANGED = "changed"
    REMOVED = "removed"


class BundleStatus(StrEnum):
    """What `bundle` would do to one node's bundle. (Some words are FileStatus's too: report
    styles are looked up per type, never in one table.)"""
    NEW = "new"
    UNCHANGED = "unchanged"
    CHANGED = "changed"
    REMOVED = "removed"
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class FileChange:
    path: str  # the install path (or the bundle's own file: INSTALL.md, install.sh, ...)
    change: FileStatus
    why: str

    def to_dict(self) -> dict:
        return {"path": self.path, "change": self.change, "why": self.why}


@dataclass
class NodeChange:
    node: str
    status: BundleStatus
    files: list[FileChange] = field(default_factory=list)
    count: int = 0  # planned files (new bundles)
    note: str = ""

    def to_dict(self) -> dict:
        return {"node": self.node, "status": self.status, "files": [f.to_dict() for f in self.files],
                "note": self.note}


# ---------------------------------------------------------------- what pki would produce --------

def preview_materials(cluster: Cluster, store_dir: Path):
    """(actions, materials) as `hardway pki` would leave them, computed without writing
    (the PKI engine's own preview, so it cannot disagree with a real run)."""
    from ..pki import preview

    result = preview(cluster, Path(store_dir))
    return result.actions, result.materials


# ---------------------------------------------------------------- why a file changed ------------

def _short(text: str, width: int = 60) -> str:
    text = text.strip()
    return text if len(text) <= width else text[: width - 1] + "…"


def _line_change(old: str, new: str, context: int = 24, width: int = 40) -> str:
    """The changed part of a line, with a little context: "…address 10.240.0.20 → …address 10.240.0.30"."""
    old, new = old.strip(), new.strip()
    prefix = 0
    while prefix < min(len(old), len(new)) and old[prefix] == new[prefix]:
        prefix += 1
    suffix = 0
    while suffix < min(len(old), len(new)) - prefix and old[-1 - suffix] == new[-1 - suffix]:
        suffix += 1
    start = max(0, prefix - context)
    lead = "…" if start else ""
    part = lambda s: lead + _short(s[start:len(s) - suffix] + s[len(s) - suffix:][:8], width + context)  # noqa: E731
    return f"{part(old)!r} → {part(new)!r}"


def cert_change(old_pem: bytes, new_pem: bytes) -> str:
    """How two certificates differ, in words."""
    try:
        old, new = x509.load_pem_x509_certificate(old_pem), x509.load_pem_x509_certificate(new_pem)
    except ValueError:
        return "content differs"
    reasons = []
    if old.subject != new.subject:
        reasons.append(f"subject {old.subject.rfc4514_string()} → {new.subject.rfc4514_string()}")
    added, removed = san_texts(new) - san_texts(old), san_texts(old) - san_texts(new)
    if added or removed:
        reasons.append("SANs " + " ".join([f"+{s}" for s in sorted(added)] + [f"-{s}" for s in sorted(removed)]))
    if old.issuer != new.issuer:
        reasons.append(f"issuer {old.issuer.rfc4514_string()} → {new.issuer.rfc4514_string()}")
    if key_fingerprint(old.public_key()) != key_fingerprint(new.public_key()):
        reasons.append("new key")
    if not reasons:
        reasons.append(f"re-issued (valid until {new.not_valid_after_utc:%Y-%m-%d})")
    return "; ".join(reasons)


def _kubeconfig_change(old: bytes, new: bytes) -> str | None:
    try:
        a, b = yaml.safe_load(old), yaml.safe_load(new)
    except yaml.YAMLError:
        return None
    if not (isinstance(a, dict) and isinstance(b, dict) and a.get("kind") == b.get("kind") == "Config"):
        return None
    reasons = []
    servers = lambda d: [c.get("cluster", {}).get("server") for c in d.get("clusters") or []]  # noqa: E731
    if servers(a) != servers(b):
        reasons.append(f"server {', '.join(map(str, servers(a)))} → {', '.join(map(str, servers(b)))}")
    for what, field_name in (("CA", "certificate-authority-data"),):
        if [c.get("cluster", {}).get(field_name) for c in a.get("clusters") or []] != \
           [c.get("cluster", {}).get(field_name) for c in b.get("clusters") or []]:
            reasons.append(f"{what} certificate changed")
    users = lambda d: {u.get("name"): u.get("user", {}) for u in d.get("users") or []}  # noqa: E731
    ua, ub = users(a), users(b)
    if set(ua) != set(ub):
        reasons.append(f"users {sorted(ua)} → {sorted(ub)}")
    for name in sorted(set(ua) & set(ub)):
        ca, cb = ua[name].get("client-certificate-data"), ub[name].get("client-certificate-data")
        if ca != cb and ca and cb:
            reasons.append(f"client certificate of {name}: " + cert_change(base64.b64decode(ca), base64.b64decode(cb)))
        elif ca != cb:
            reasons.append(f"client certificate of {name} changed")
        elif ua[name].get("client-key-data") != ub[name].get("client-key-data"):
            reasons.append(f"client key of {name} changed")
    if not reasons:
        reasons.append("content differs")
    return "; ".join(reasons)


def _text_change(old: bytes, new: bytes) -> str:
    a = old.decode("utf-8", "replace").splitlines()
    b = new.decode("utf-8", "replace").splitlines()
    ops = [op for op in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes() if op[0] != "equal"]
    if not ops:
        return "content differs (whitespace or line endings)"
    tag, i1, i2, j1, j2 = ops[0]
    if tag == "replace":
        first = f"line {j1 + 1}: {_line_change(a[i1], b[j1])}"
    elif tag == "insert":
        first = f"line {j1 + 1} added: {_short(b[j1])!r}"
    else:
        first = f"line {i1 + 1} removed: {_short(a[i1])!r}"
    lines = sum(max(i2 - i1, j2 - j1) for _, i1, i2, j1, j2 in ops)
    return first + (f" (+{lines - 1} more line(s))" if lines > 1 else "")


def explain(old: layout.Member, new: layout.Member, pki_reasons: dict[str, str]) -> str:
    """Why a file's planned content or mode differs from the archived one."""
    why = []
    if old.mode != new.mode:
        why.append(f"mode {old.mode:04o} → {new.mode:04o}")
    if old.data != new.data:
        reissued = []
        for pem in privilege.certificates(new.data):
            try:
                fp = privilege.cert_fingerprint(pem)
            except ValueError:
                continue
            if fp in pki_reasons and pki_reasons[fp] not in reissued:
                reissued.append(pki_reasons[fp])
        if reissued:
            why += reissued
        elif b"-----BEGIN CERTIFICATE-----" in old.data[:40] and b"-----BEGIN CERTIFICATE-----" in new.data[:40]:
            why.append(cert_change(old.data, new.data))
        elif privilege.private_keys(old.data) or privilege.private_keys(new.data):
            why.append(_kubeconfig_change(old.data, new.data) or "new key (content not shown)")
        elif (kc := _kubeconfig_change(old.data, new.data)) is not None:
            why.append(kc)
        elif new.mode & 0o077 == 0:
            why.append("content differs (a secret: not shown)")
        else:
            why.append(_text_change(old.data, new.data))
    return "; ".join(why)


# ---------------------------------------------------------------- the plan ----------------------

def _pki_reasons(actions, materials) -> dict[str, str]:
    """public-key fingerprint -> "entry re-issued: reason", for every leaf pki would (re)make."""
    out = {}
    for a in actions:
        if a.action not in ("create", "reissue"):
            continue
        try:
            fp = privilege.cert_fingerprint(materials.cert(a.entry, a.node))
        except (KeyError, ValueError):
            continue
        verb = "issued" if a.action == "create" else "re-issued"
        out[fp] = f"{a.entry}{f' of {a.node}' if a.node else ''} {verb}: {a.reason}"
    return out


def diff_node(cluster: Cluster, plan, bundles: Path, pki_reasons: dict[str, str]) -> NodeChange:
    node = plan.node
    planned = {m.name[len(node) + 1:]: m for m in layout.members(cluster, plan) if not m.is_dir}
    path = bundles / f"{node}{SUFFIX}"
    try:
        archived = read_archive(path, node)
    except FileNotFoundError:
        return NodeChange(node, BundleStatus.NEW, count=len(plan.files), note=f"{len(plan.files)} files")
    except ArchiveError as e:
        return NodeChange(node, BundleStatus.UNREADABLE, count=len(plan.files), note=f"{path.name} {e}: it will be rewritten")
    label = lambda name: layout.install_path(node, name) or name  # noqa: E731
    changes, own = [], []
    for name in sorted(set(planned) | set(archived)):
        new, old = planned.get(name), archived.get(name)
        is_file = layout.install_path(node, name) is not None
        target = changes if is_file else own
        if old is None:
            target.append(FileChange(label(name), FileStatus.ADDED, "new file" if is_file else "new in this version of hardway"))
        elif new is None:
            target.append(FileChange(label(name), FileStatus.REMOVED, "no longer planned for this node"))
        elif old.mode != new.mode or old.data != new.data:
            target.append(FileChange(label(name), FileStatus.CHANGED, explain(old, new, pki_reasons)))
    # SHA256SUMS and install.sh follow the files: list them only when they change on their own.
    derived = (layout.SUMS, layout.INSTALL_SH)
    if changes:
        own = [c for c in own if c.path not in derived]
    files = changes + own
    return NodeChange(node, BundleStatus.CHANGED if files else BundleStatus.UNCHANGED, files=files)


def plan_bundles(cluster: Cluster, out: Path, actions=None, materials=None, plans=None) -> list[NodeChange]:
    """What `hardway bundle` would do to <out>/bundles. Computes the PKI preview unless given.

    A bundle whose recorded inputs and archive are unchanged (inputs.py) is reported unchanged
    without rendering it, as `bundle` would skip it; the others are rendered and compared file by
    file, and their note says which inputs changed."""
    if materials is None:
        actions, materials = preview_materials(cluster, out / "pki")
    bundles = out / "bundles"
    names = [n.name for n in cluster.nodes] + [WORKSTATION]
    state = read_state(bundles)
    inputs = Inputs(cluster, materials)
    wanted_inputs = {name: inputs.of(name) for name in names}
    given = plans is not None
    if plans is None:
        from ..render import iter_node_plans
        todo = [n for n in names if not unchanged(state.get(n), wanted_inputs[n], bundles / f"{n}{SUFFIX}")]
        plans = iter_node_plans(cluster, materials, only=todo) if todo else ()
    reasons = _pki_reasons(actions or [], materials)
    by_node = {}
    for plan in plans:
        change = diff_node(cluster, plan, bundles, reasons)
        if change.status in (BundleStatus.CHANGED, BundleStatus.UNCHANGED) and plan.node in wanted_inputs:
            why = changed_components(state.get(plan.node), wanted_inputs[plan.node])
            if change.status == BundleStatus.CHANGED:
                change.note = "; ".join(WHY[c] for c in why) if why else "the archive differs from what hardway recorded"
        by_node[plan.node] = change
    if given:  # exactly the plans asked about
        result = list(by_node.values())
    else:  # every bundle: the ones not rendered were unchanged
        result = [by_node.get(n, NodeChange(n, BundleStatus.UNCHANGED)) for n in names]
    wanted = {n.name for n in cluster.nodes} | {WORKSTATION}
    written = read_record(record_beside(bundles))
    for node in archived_nodes(bundles):
        if node in wanted:
            continue
        if f"{node}{SUFFIX}" in written:
            result.append(NodeChange(node, BundleStatus.REMOVED, note="no longer in the spec: `hardway bundle` deletes its bundle"))
        else:  # the same rule as `bundle`: it deletes only what it wrote
            result.append(NodeChange(node, BundleStatus.UNCHANGED, note="no longer in the spec, but hardway did not "
                                     "write it: `hardway bundle` leaves it alone"))
    return result
