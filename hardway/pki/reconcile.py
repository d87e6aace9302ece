"""Desired state, reconciled: compare the store with what the catalog asks for this cluster, then
create what is missing, keep what is valid, re-issue what changed.

`assess` reads and decides; `_execute` generates and writes, in an order that keeps the store
usable if the run is killed (CA keys before CA certificates, CAs before leaves, each key before its
certificate). The same two functions serve `pki`, `plan`, `renew`, `check` and the in-memory
`generate_materials`, over a DiskStore or a MemoryStore.

What is never silently replaced: a CA, the service-account key and the encryption key. When one is
present but broken, or missing while things that depend on it are present, the run stops before
writing anything, naming the file and what to do.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import HardwayError
from ..output import progress
from ..spec import Cluster
from . import issue
from .catalog import Authority, Catalog, Desired, default_catalog, desired_leaves
from .materials import Materials
from .store import (DIR_MODE, ENCRYPTION, KEY_MODE, NODES, SA_KEY, SA_PUB, DiskStore, MemoryStore, cert_rel,
                    key_rel, leftover_temp_files, locked)

ENCRYPTION_KEY_BYTES = 32
CREATE, KEEP, REISSUE, ERROR = "create", "keep", "reissue", "error"


@dataclass(frozen=True)
class Action:
    """What a run does (or would do) with one store item, and why."""

    entry: str  # catalog entry, CA name, "service-account" or "encryption"
    node: str | None
    action: str  # create | keep | reissue | error
    reason: str

    def to_dict(self) -> dict:
        return {"entry": self.entry, "node": self.node, "action": self.action, "reason": self.reason}


@dataclass
class _CA:
    authority: Authority
    action: Action
    cert: x509.Certificate | None = None
    key: issue.PrivateKey | None = None
    write_key: bool = False  # key is new or imported
    write_cert: bool = False

    @property
    def usable(self) -> bool:
        return self.action.action != ERROR


@dataclass
class _Leaf:
    desired: Desired
    action: Action
    key: issue.PrivateKey | None = None  # the existing key, when it is kept
    new_key: bool = False


@dataclass
class Assessment:
    cas: dict[str, _CA]
    leaves: list[_Leaf]
    service_account: Action
    encryption: Action
    sa_key: issue.PrivateKey | None = None
    errors: list[str] = field(default_factory=list)

    @property
    def actions(self) -> list[Action]:
        return ([ca.action for ca in self.cas.values()] + [self.service_account, self.encryption]
                + [leaf.action for leaf in self.leaves])


@dataclass(frozen=True)
class ImportedCA:
    name: str
    cert: x509.Certificate
    key: issue.PrivateKey
    source: str  # "CERT,KEY" as given, for messages


@dataclass(frozen=True)
class ReconcileResult:
    actions: list[Action]
    materials: Materials | None  # None after `renew`: it touches only what was asked
    notes: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.action == action)


# ---------------------------------------------------------------- assessment --------------------

def _fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()[:16]


def _signed_leaf_files(store, cluster: Cluster, catalog: Catalog, ca_name: str) -> list[str]:
    """Leaf certificates in the store that this CA signed (or that a lost CA did)."""
    found = []
    for d in desired_leaves(cluster, catalog):
        if d.signer == ca_name and store.read(cert_rel(d.entry, d.node)) is not None:
            found.append(cert_rel(d.entry, d.node))
    return found


def _assess_ca(store, cluster: Cluster, catalog: Catalog, a: Authority, at: datetime,
               imported: ImportedCA | None, errors: list[str]) -> _CA:
    crt, key = f"{a.name}.crt", f"{a.name}.key"
    cert_b, key_b = store.read(crt), store.read(key)

    def fail(message: str) -> _CA:
        errors.append(message)
        return _CA(a, Action(a.name, None, ERROR, message))

    cert = parsed_key = None
    if cert_b is not None:
        try:
            cert = issue.load_cert(cert_b)
        except ValueError as e:
            return fail(f"{crt}: {e}. A CA is never replaced silently: restore it from a backup, "
                        f"or move {crt} and {key} away and import a CA with --import-ca {a.name}=CERT,KEY")
    if key_b is not None:
        try:
            parsed_key = issue.load_private_key(key_b)
        except ValueError as e:
            return fail(f"{key}: {e}. A CA key is never replaced silently: restore it from a backup")

    if imported is not None:
        if cert is not None and not (issue.same_public_key(cert.public_key(), imported.key)
                                     and cert.subject == imported.cert.subject):
            return fail(f"--import-ca {a.name}: the store already has a different {a.name} "
                        f"({cert.subject.rfc4514_string()}, sha256 {_fingerprint(cert)}); importing would "
                        f"invalidate every certificate it signed. To switch CAs, move {crt} and {key} out of the "
                        "store first: every certificate it signed is then re-issued by the imported CA")
        if cert is None and parsed_key is not None and not issue.same_public_key(parsed_key, imported.key):
            return fail(f"--import-ca {a.name}: the store already has a different {key}; move it away first")
        if cert is not None and parsed_key is not None and issue.same_public_key(parsed_key, imported.key):
            return _CA(a, Action(a.name, None, KEEP, f"the imported CA is already in the store (sha256 {_fingerprint(cert)})"),
                       cert=cert, key=parsed_key)
        action, why = ((CREATE, f"imported from {imported.source}") if cert is None and parsed_key is None
                       else (REISSUE, f"completed from the import ({imported.source})"))
        return _CA(a, Action(a.name, None, action, why), cert=imported.cert, key=imported.key,
                   write_key=True, write_cert=True)

    if cert is None and parsed_key is None:
        signed = _signed_leaf_files(store, cluster, catalog, a.name)
        if signed:
            return fail(f"{crt} and {key} are missing, but {len(signed)} certificate(s) signed by that CA are "
                        f"present (e.g. {signed[0]}); a new CA would invalidate a live cluster. Restore {crt} "
                        f"and {key} from a backup, or import a CA with --import-ca {a.name}=CERT,KEY (its "
                        f"certificates are then re-issued), or remove those certificates to start a new CA")
        return _CA(a, Action(a.name, None, CREATE, "missing"), write_key=True, write_cert=True)
    if cert is not None and parsed_key is None:
        return fail(f"{crt} is present but {key} is missing: nothing can be signed with this CA. Restore {key} "
                    "from a backup; a CA is never replaced silently")
    if cert is None:
        signed = _signed_leaf_files(store, cluster, catalog, a.name)
        if signed:
            return fail(f"{crt} is missing but {key} and {len(signed)} certificate(s) signed by it are present "
                        f"(e.g. {signed[0]}); restore {crt} from a backup (or from any node's "
                        f"/etc/kubernetes/pki/{crt}, if it is delivered)")
        # An interrupted first run: the key was written, the certificate not yet. Nothing depends on it.
        return _CA(a, Action(a.name, None, REISSUE, f"certificate missing; made from the existing {key} "
                                                   "(no certificate signed by it exists yet)"),
                   key=parsed_key, write_cert=True)
    problems = issue.ca_problems(cert, parsed_key, at)
    if problems:
        what = "; ".join(problems)
        return fail(f"{crt}: {what}. hardway never replaces or renews a CA by itself (see docs/pki.md, "
                    f"'Replacing a CA'); restore a good {crt}/{key} pair or import one with --import-ca")
    note = f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    algorithm = issue.key_algorithm(parsed_key)
    if algorithm != cluster.key_algorithm:
        note += f"; its key is {algorithm} (the spec's {cluster.key_algorithm} applies to new keys: a CA is never re-keyed)"
    return _CA(a, Action(a.name, None, KEEP, note), cert=cert, key=parsed_key)


def _assess_service_account(store, cluster: Cluster, errors: list[str]) -> tuple[Action, issue.PrivateKey | None]:
    name = "service-account"
    priv_b, pub_b = store.read(SA_KEY), store.read(SA_PUB)

    def fail(message):
        errors.append(message)
        return Action(name, None, ERROR, message), None

    if priv_b is None and pub_b is None:
        return Action(name, None, CREATE, "missing"), None
    if priv_b is None:
        return fail(f"{SA_KEY} is missing but {SA_PUB} is present: a new key would invalidate every "
                    f"service-account token of the cluster. Restore {SA_KEY} from a backup, or remove {SA_PUB} "
                    "to generate a new pair on purpose")
    try:
        key = issue.load_private_key(priv_b)
    except ValueError as e:
        return fail(f"{SA_KEY}: {e}. It is never replaced silently (tokens signed with it would stop working): "
                    "restore it from a backup")
    if pub_b is None:
        return Action(name, None, REISSUE, f"{SA_PUB} missing; derived from {SA_KEY}"), key
    try:
        public = serialization.load_pem_public_key(pub_b)
    except Exception:
        return fail(f"{SA_PUB}: not a readable PEM public key. Delete it: the next run derives it from {SA_KEY}")
    if not issue.same_public_key(public, key):
        return fail(f"{SA_PUB} does not match {SA_KEY}. Delete {SA_PUB}: the next run derives it from {SA_KEY}")
    note = "present"
    algorithm = issue.key_algorithm(key)
    if algorithm != cluster.key_algorithm:
        note += f"; its key is {algorithm} (never re-keyed: that would invalidate every token)"
    return Action(name, None, KEEP, note), key


def read_encryption_key(data: bytes) -> bytes:
    """The 32 raw bytes of encryption.key (base64 text); ValueError when it is not that."""
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except Exception:
        raise ValueError("not base64 text") from None
    if len(raw) != ENCRYPTION_KEY_BYTES:
        raise ValueError(f"{len(raw)} bytes, want {ENCRYPTION_KEY_BYTES}")
    return raw


def _assess_encryption(store, errors: list[str]) -> Action:
    data = store.read(ENCRYPTION)
    if data is None:
        return Action("encryption", None, CREATE, "missing")
    try:
        read_encryption_key(data)
    except ValueError as e:
        message = (f"{ENCRYPTION}: {e}. It is never replaced silently (Secrets encrypted with it would be "
                   "unreadable): restore it from a backup")
        errors.append(message)
        return Action("encryption", None, ERROR, message)
    return Action("encryption", None, KEEP, "present")


def _assess_leaf(store, cluster: Cluster, d: Desired, ca: _CA, at: datetime, thorough: bool) -> _Leaf:
    crt, key = cert_rel(d.entry, d.node), key_rel(d.entry, d.node)
    cert_b, key_b = store.read(crt), store.read(key)
    act = lambda action, reason: Action(d.entry, d.node, action, reason)  # noqa: E731
    if cert_b is None and key_b is None:
        return _Leaf(d, act(CREATE, "missing"), new_key=True)
    reasons, parsed_key, new_key = [], None, False
    if key_b is None:
        reasons.append("key missing")
        new_key = True
    else:
        try:
            parsed_key = issue.load_private_key(key_b, validate=thorough)
            algorithm = issue.key_algorithm(parsed_key)
            if algorithm != cluster.key_algorithm:
                reasons.append(f"key is {algorithm}, the spec asks for {cluster.key_algorithm}")
                parsed_key, new_key = None, True
        except ValueError as e:
            reasons.append(f"key unreadable: {e}")
            new_key = True
    if cert_b is None:
        reasons.append("certificate missing")
    else:
        try:
            cert = issue.load_cert(cert_b)
        except ValueError as e:
            reasons.append(f"certificate unreadable: {e}")
        else:
            if parsed_key is not None and not issue.same_public_key(cert.public_key(), parsed_key):
                reasons.append("certificate does not match its key")
            if ca.cert is None or not issue.signed_by(cert, ca.cert):
                reasons.append(f"not signed by the current {d.signer} CA")
            reasons += issue.differences(cert, d.identity)
            if cert.not_valid_after_utc <= at:
                reasons.append(f"expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
            elif cert.not_valid_before_utc > at + issue.BACKDATE:
                reasons.append(f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
            if not reasons:
                return _Leaf(d, act(KEEP, f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"), key=parsed_key)
    if not new_key:
        reasons.append("key kept")
    return _Leaf(d, act(REISSUE, "; ".join(reasons)), key=parsed_key, new_key=new_key)


def assess(cluster: Cluster, store, catalog: Catalog | None = None, at: datetime | None = None,
           imports: Iterable[ImportedCA] = (), thorough: bool = False) -> Assessment:
    """Decide what to do with every item of the store. `thorough` also runs OpenSSL's consistency
    check on every leaf key (check does; reconcile compares each key's public half with its
    certificate, which is what a mismatch or a swapped file breaks)."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    imports = {i.name: i for i in imports}
    errors: list[str] = []
    cas = {a.name: _assess_ca(store, cluster, catalog, a, at, imports.get(a.name), errors) for a in catalog.authorities}
    sa, sa_key = _assess_service_account(store, cluster, errors)
    encryption = _assess_encryption(store, errors)
    leaves = [_assess_leaf(store, cluster, d, cas[d.signer], at, thorough) for d in desired_leaves(cluster, catalog)
              if cas[d.signer].usable]
    return Assessment(cas=cas, leaves=leaves, service_account=sa, encryption=encryption, sa_key=sa_key, errors=errors)


# ---------------------------------------------------------------- execution ---------------------

def _execute(cluster: Cluster, store, plan: Assessment, leaves: list[_Leaf], at: datetime,
             advance: Callable[[int], None], secrets_too: bool = True) -> None:
    """Write what the assessment decided, in crash-safe order. `leaves` are the leaves to (re)issue."""
    new_keys = (sum(1 for ca in plan.cas.values() if ca.write_key and ca.key is None)
                + (secrets_too and plan.service_account.action == CREATE) + sum(1 for leaf in leaves if leaf.new_key))
    fresh = issue.iter_keys(cluster.key_algorithm, new_keys)  # RSA: made across the cores, in order of need
    try:
        for ca in plan.cas.values():
            if ca.write_key and ca.key is None:
                ca.key = issue.load_private_key(next(fresh), validate=False)
            if ca.write_cert and ca.cert is None:
                ca.cert = issue.make_ca(ca.authority.cn, ca.key, cluster.ca_validity, at)
            if ca.write_key:
                store.write(f"{ca.authority.name}.key", issue.private_pem(ca.key))
        _flush(store)  # every CA key is durable before any CA certificate exists
        for ca in plan.cas.values():
            if ca.write_cert:
                store.write(f"{ca.authority.name}.crt", issue.cert_pem(ca.cert))
        _flush(store)  # ... and every CA certificate before any leaf it signs
        if secrets_too:
            if plan.service_account.action == CREATE:
                plan.sa_key = issue.load_private_key(next(fresh), validate=False)
                store.write(SA_KEY, issue.private_pem(plan.sa_key))
                _flush(store)
            if plan.service_account.action in (CREATE, REISSUE):
                store.write(SA_PUB, issue.public_pem(plan.sa_key))
            if plan.encryption.action == CREATE:
                store.write(ENCRYPTION, base64.b64encode(os.urandom(ENCRYPTION_KEY_BYTES)) + b"\n")

        for leaf in leaves:
            d = leaf.desired
            if leaf.new_key:
                key_pem = next(fresh)
                leaf.key = issue.load_private_key(key_pem, validate=False)
            ca = plan.cas[d.signer]
            cert = issue.issue(d.identity, leaf.key.public_key(), ca.cert, ca.key, cluster.cert_validity, at)
            if leaf.new_key:
                store.write(key_rel(d.entry, d.node), key_pem)
            store.write(cert_rel(d.entry, d.node), issue.cert_pem(cert))
            advance(1)
        _flush(store)
    finally:
        fresh.close()  # stops the key pool at once if anything above failed


def _flush(store) -> None:
    flush = getattr(store, "flush", None)
    if flush:
        flush()


def _materials(cluster: Cluster, store, catalog: Catalog) -> Materials:
    certs, keys, missing = {}, {}, []

    def need(rel: str) -> bytes:
        data = store.read(rel)
        if data is None:
            missing.append(rel)
        return data

    for a in catalog.authorities:
        certs[(a.name, None)] = need(f"{a.name}.crt")
        keys[(a.name, None)] = need(f"{a.name}.key")
    for d in desired_leaves(cluster, catalog):
        certs[(d.entry, d.node)] = need(cert_rel(d.entry, d.node))
        keys[(d.entry, d.node)] = need(key_rel(d.entry, d.node))
    sa_priv, sa_pub, enc = need(SA_KEY), need(SA_PUB), need(ENCRYPTION)
    if missing:
        raise HardwayError(f"the PKI store {getattr(store, 'root', '(memory)')} is incomplete: {len(missing)} file(s) "
                           f"missing ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
                           "run `hardway pki` first")
    try:
        encryption_key = read_encryption_key(enc)
    except ValueError as e:
        raise HardwayError(f"{ENCRYPTION} in the PKI store: {e}; run `hardway pki` (it says what to do)") from None
    return Materials(certs=certs, keys=keys, service_account_private=sa_priv, service_account_public=sa_pub,
                     encryption_key=encryption_key)


def _raise_errors(errors: list[str]) -> None:
    if errors:
        raise HardwayError("the PKI store needs attention; nothing was changed:\n" + "\n".join(f"  - {e}" for e in errors))


def _tighten(root: Path) -> list[str]:
    """Keys back to 0600, directories to 0700 (a copy or an editor may have loosened them)."""
    notes = []
    for path in [root, *root.rglob("*")]:
        try:
            st = path.lstat()
        except FileNotFoundError:
            continue
        if path.is_dir() and st.st_mode & 0o777 != DIR_MODE:
            os.chmod(path, DIR_MODE)
            notes.append(f"{path}: directory mode {st.st_mode & 0o777:04o} set to {DIR_MODE:04o}")
        elif path.is_file() and path.suffix == ".key" and st.st_mode & 0o077:
            os.chmod(path, KEY_MODE)
            notes.append(f"{path}: key mode {st.st_mode & 0o777:04o} set to {KEY_MODE:04o}")
    return notes


def _store_root(store_dir: Path) -> Path:
    root = Path(store_dir)
    if root.exists() and not root.is_dir():
        raise HardwayError(f"the PKI store {root} is not a directory")
    return root


# ---------------------------------------------------------------- public entry points -----------

def reconcile(cluster: Cluster, store_dir: Path, import_ca: Iterable[ImportedCA] = (),
              catalog: Catalog | None = None, at: datetime | None = None) -> ReconcileResult:
    """Bring the store to the desired state; return what was done and the resulting materials."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    root = _store_root(store_dir)
    with locked(root):
        store = DiskStore(root, writable=True)
        plan = assess(cluster, store, catalog, at, import_ca)
        _raise_errors(plan.errors)
        notes = [f"removed {p} (left by an interrupted run)" for p in leftover_temp_files(root)]
        for p in leftover_temp_files(root):
            p.unlink()
        notes += _tighten(root)
        todo = [leaf for leaf in plan.leaves if leaf.action.action != KEEP]
        with progress("issuing certificates", len(todo)) as advance:
            _execute(cluster, store, plan, todo, at, advance)
        stale = sorted(set(store.node_dirs()) - {n.name for n in cluster.nodes})
        if stale:
            notes.append(f"{len(stale)} node director{'y' if len(stale) == 1 else 'ies'} in {root / NODES} for nodes no "
                         f"longer in the spec ({', '.join(stale[:5])}{', ...' if len(stale) > 5 else ''}): kept; "
                         "delete them once those nodes are gone")
        return ReconcileResult(plan.actions, _materials(cluster, store, catalog), notes)


def plan_actions(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None,
                 at: datetime | None = None) -> list[Action]:
    """What `pki` would do, without writing anything (not even the lock)."""
    return assess(cluster, DiskStore(_store_root(store_dir)), catalog, at).actions


class _Overlay(MemoryStore):
    """Reads through to a store on disk; keeps every write in memory."""

    def __init__(self, disk: DiskStore):
        super().__init__()
        self.disk = disk

    def read(self, rel: str) -> bytes | None:
        return self.files[rel] if rel in self.files else self.disk.read(rel)


def preview(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None,
            at: datetime | None = None) -> ReconcileResult:
    """What `pki` would do and the materials it would leave, computed in memory: writes nothing.
    (New keys are really generated, so this costs what the run would.) HardwayError when the store
    needs attention, as `reconcile` would raise."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    store = _Overlay(DiskStore(_store_root(store_dir)))
    plan = assess(cluster, store, catalog, at)
    _raise_errors(plan.errors)
    _execute(cluster, store, plan, [leaf for leaf in plan.leaves if leaf.action.action != KEEP], at, lambda n=1: None)
    return ReconcileResult(plan.actions, _materials(cluster, store, catalog))


def load_materials(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None) -> Materials:
    """The materials of a reconciled store; HardwayError naming what is missing otherwise."""
    root = Path(store_dir)
    if not root.is_dir():
        raise HardwayError(f"no PKI store at {root}; run `hardway pki` first")
    return _materials(cluster, DiskStore(root), catalog or default_catalog())


def generate_materials(cluster: Cluster, catalog: Catalog | None = None) -> Materials:
    """Every key, certificate and secret of the cluster, in memory (no disk): for tests."""
    catalog = catalog or default_catalog()
    at = issue.now()
    store = MemoryStore()
    plan = assess(cluster, store, catalog, at)
    _execute(cluster, store, plan, plan.leaves, at, lambda n=1: None)
    return _materials(cluster, store, catalog)


def renew(cluster: Cluster, store_dir: Path, entry: str | None = None, node: str | None = None,
          rotate_keys: bool = False, catalog: Catalog | None = None, at: datetime | None = None) -> ReconcileResult:
    """Re-issue the selected leaves with the same identity and key (new keys with rotate_keys).
    CAs, the service-account key and the encryption key are reported, never renewed."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    if entry is not None and entry not in catalog.leaf_names:
        if entry in catalog.authority_names:
            raise HardwayError(f"{entry} is a CA: hardway never renews a CA by itself (every certificate it signed "
                               "would have to be replaced too); see docs/pki.md, 'Replacing a CA'")
        raise HardwayError(f"--entry {entry!r} is not a certificate of the catalog; choose one of "
                           + ", ".join(catalog.leaf_names))
    if node is not None:
        try:
            cluster.node(node)
        except KeyError:
            raise HardwayError(f"--node {node!r} is not a node of the cluster") from None
    root = _store_root(store_dir)
    if not (root / "ca.crt").exists():
        raise HardwayError(f"no PKI store at {root} (no ca.crt); run `hardway pki` first")
    with locked(root):
        store = DiskStore(root, writable=True)
        plan = assess(cluster, store, catalog, at)
        _raise_errors(plan.errors)
        missing = [ca.authority.name for ca in plan.cas.values() if ca.action.action != KEEP]
        if missing:
            raise HardwayError(f"the store has no usable {', '.join(missing)}; run `hardway pki` first")
        selected, others = [], []
        for leaf in plan.leaves:
            d = leaf.desired
            if (entry is None or d.entry == entry) and (node is None or d.node == node):
                selected.append(leaf)
            elif leaf.action.action != KEEP:
                others.append(leaf.action)
        if not selected:
            raise HardwayError(f"nothing to renew: no certificate matches"
                               f"{f' --entry {entry}' if entry else ''}{f' --node {node}' if node else ''}"
                               + (" (cluster-wide certificates have no node)" if node else ""))
        for leaf in selected:
            new_key = rotate_keys or leaf.new_key
            why = "renewed with a new key" if new_key else "renewed (key kept)"
            if leaf.action.action != KEEP:
                why += f"; was: {leaf.action.reason}"
            leaf.new_key = new_key
            leaf.action = replace(leaf.action, action=REISSUE, reason=why)
        with progress("renewing certificates", len(selected)) as advance:
            _execute(cluster, store, plan, selected, at, advance, secrets_too=False)
        notes = []
        if others:
            notes.append(f"{len(others)} other item(s) need `hardway pki` (e.g. {others[0].entry}"
                         f"{'@' + others[0].node if others[0].node else ''}: {others[0].reason})")
        actions = [ca.action for ca in plan.cas.values()] + [leaf.action for leaf in selected]
        return ReconcileResult(actions, None, notes)


def parse_import(arg: str, at: datetime | None = None, catalog: Catalog | None = None) -> ImportedCA:
    """`NAME=CERT,KEY` → a validated CA to adopt; HardwayError saying what is wrong."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    names = ", ".join(catalog.authority_names)
    usage = f"--import-ca takes NAME=CERT,KEY with NAME one of {names}, e.g. --import-ca ca=ca.pem,ca-key.pem"
    name, sep, files = arg.partition("=")
    parts = files.split(",")
    if not sep or len(parts) != 2 or not all(parts):
        raise HardwayError(f"--import-ca {arg!r}: {usage}")
    if name not in catalog.authority_names:
        raise HardwayError(f"--import-ca {arg!r}: unknown CA {name!r}; {usage}")
    cert_path, key_path = Path(parts[0]), Path(parts[1])
    try:
        cert_b, key_b = cert_path.read_bytes(), key_path.read_bytes()
    except OSError as e:
        raise HardwayError(f"--import-ca {name}: cannot read {e.filename}: {e.strerror}") from None
    try:
        cert = issue.load_cert(cert_b)
    except ValueError as e:
        raise HardwayError(f"--import-ca {name}: {cert_path}: {e}") from None
    try:
        key = issue.load_private_key(key_b)
    except ValueError as e:
        raise HardwayError(f"--import-ca {name}: {key_path}: {e}") from None
    problems = issue.ca_problems(cert, key, at)
    if problems:
        raise HardwayError(f"--import-ca {name}: {cert_path} cannot be used as a CA: {'; '.join(problems)}")
    return ImportedCA(name, cert, key, f"{cert_path},{key_path}")
