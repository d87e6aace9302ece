"""Desired state, reconciled: the PKI stage's entry points (`hardway pki`, `plan`, `renew`, `bundle`'s
preview, `generate_materials` for tests).

Each one is the same two steps over a store: `assess` (assess.py) reads the store and decides, as a
value, what to create, keep, re-issue or refuse; `execute` (execute.py) makes and writes what it
decided, in crash-safe order, and returns what it issued. Over a DiskStore (`pki`, `renew`), an
OverlayStore (`preview`: reads the disk, writes to memory) or a MemoryStore (`generate_materials`).
state.py is what the store records about itself, secrets.py the service-account pair and the
encryption keys; docs/pki.md explains the decisions.
"""

from __future__ import annotations

import gc
import os
import stat
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterable, Iterator

from cryptography.hazmat.primitives.asymmetric import rsa

from ..errors import HardwayError, check_directory_path
from ..names import first_names
from ..fsutil import chmod_nofollow, is_temp_name, linked_dir_note
from ..progress import Progress, silent
from ..spec import ENCRYPTION_PROVIDERS, Cluster
from . import issue
from .actions import CREATE, ERROR, KEEP, REISSUE, Action, ActionKind
from .assess import Assessment, ImportedCA, LeafPlan, assess
from .catalog import Catalog, Desired, default_catalog, desired_leaves
from .execute import Executed, execute
from .materials import Materials
from .record import RECORD, Vouch, digest, leaf_name, read_record, record_bytes, want_digest
from .secrets import NEW_SECRETS, read_encryption_key
from .state import EncryptionKey, read_state
from .store import (DIR_MODE, KEY_MODE, NODES, SA_KEY, SA_PUB, DiskStore, MemoryStore, OverlayStore, Store,
                    cert_rel, key_rel, locked)

__all__ = ["Action", "ActionKind", "CREATE", "ERROR", "ImportedCA", "KEEP", "REISSUE", "ReconcileResult",
           "generate_materials", "load_materials", "parse_import", "plan_actions", "plan_report", "preview",
           "reconcile", "renew"]


@dataclass(frozen=True)
class ReconcileResult:
    actions: list[Action]
    materials: Materials | None  # None after `renew`: it touches only what was asked
    notes: list[str] = field(default_factory=list)

    def count(self, action: str) -> int:
        return sum(1 for a in self.actions if a.action == action)


def _materials(cluster: Cluster, store: Store, catalog: Catalog, desired: Iterable[Desired] | None = None) -> Materials:
    """`desired`: the cluster's leaves when the caller has them already (an assessment without errors)."""
    certs, keys, missing = {}, {}, []

    def need(rel: str) -> bytes:
        data = store.read(rel)
        if data is None:
            missing.append(rel)
        return data

    for a in catalog.authorities:
        certs[(a.name, None)] = need(f"{a.name}.crt")
        keys[(a.name, None)] = need(f"{a.name}.key")
    for d in desired if desired is not None else desired_leaves(cluster, catalog):
        certs[(d.entry, d.node)] = need(cert_rel(d.entry, d.node))
        keys[(d.entry, d.node)] = need(key_rel(d.entry, d.node))
    sa_priv, sa_pub = need(SA_KEY), need(SA_PUB)
    state, error = read_state(store, ENCRYPTION_PROVIDERS)
    if error:
        raise HardwayError(f"{error}; then run `hardway pki`")
    # A store from before state.json has one key, encryption.key, for the spec's provider.
    entries = (state.encryption if state else None) or [EncryptionKey(cluster.encryption_provider, "key1")]
    encrypted = [(e, need(e.file)) for e in entries]
    if missing:
        raise HardwayError(f"the PKI store {store.root or '(memory)'} is incomplete: {len(missing)} file(s) "
                           f"missing ({first_names(missing, 4, ', ...')}); "
                           "run `hardway pki` first")
    encryption_keys = []
    for e, data in encrypted:
        try:
            encryption_keys.append((e.provider, e.name, read_encryption_key(data)))
        except ValueError as err:
            raise HardwayError(f"{e.file} in the PKI store: {err}; run `hardway pki` "
                               "(it says what to do)") from None
    return Materials(certs=certs, keys=keys, service_account_private=sa_priv, service_account_public=sa_pub,
                     encryption_key=encryption_keys[0][2], encryption_keys=tuple(encryption_keys))


def _record_after(cluster: Cluster, store: Store, plan: Assessment, executed: Executed) -> bytes:
    """verified.json as this run leaves the store (record.py): the vouch of every leaf it kept after a
    check (the full one, or the record's own) under a kept CA, and one for every leaf it issued, against
    its CA's certificate as now stored."""
    vouches = {leaf_name(leaf.desired.entry, leaf.desired.node): leaf.vouch for leaf in plan.leaves
               if leaf.action.action == KEEP and leaf.vouch is not None}
    ca_digests = {ca.name: digest(data) for ca in plan.authorities if (data := store.read(f"{ca.name}.crt"))}
    for issued in executed.leaves:
        d = issued.plan.desired
        crt, key = store.read(cert_rel(d.entry, d.node)), store.read(key_rel(d.entry, d.node))
        if crt and key and d.signer in ca_digests:
            vouches[leaf_name(d.entry, d.node)] = Vouch(
                digest(crt), digest(key), want_digest(d, cluster.key_algorithm), ca_digests[d.signer],
                issued.not_before, issued.not_after)
    return record_bytes(vouches)


@contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector paused for a run (and restored after). A run makes tens of thousands of
    small objects that form no cycles, while a large spec keeps tens of thousands alive: each full
    collection rescans them all, which made a 5000-worker run grow faster than the cluster (measured:
    0.7 s of CPU without collections, 0.85 to 1.0 s with them, for a run with nothing to do)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _raise_errors(errors: Iterable[str]) -> None:
    if errors:
        raise HardwayError("the PKI store needs attention; nothing was changed:\n" + "\n".join(f"  - {e}" for e in errors))


def _store_entries(root: Path) -> list[tuple[str, os.stat_result]]:
    """Every path of the store, the root first, each with its lstat: one pass of os.scandir, descending
    into real directories only, never a link (what `Path.rglob` visits, at a fraction of its cost)."""
    top = str(root)
    try:
        entries = [(top, os.lstat(top))]
    except FileNotFoundError:
        return []
    pending = [top]
    while pending:
        directory = pending.pop()
        try:
            listing = os.scandir(directory)
        except (FileNotFoundError, NotADirectoryError):
            continue
        with listing:
            for entry in listing:
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                entries.append((entry.path, st))
                if stat.S_ISDIR(st.st_mode):
                    pending.append(entry.path)
    return entries


def _tidy(root: Path) -> list[str]:
    """Remove what an interrupted run left (its temp files), then set keys back to 0600 and
    directories to 0700 (a copy or an editor may have loosened them); a note for each.

    Never through a link: a `*.key` link to any file is left alone with a note (as root, a link to
    /etc/passwd would otherwise make it 0600). A directory of the store the operator linked (the
    store itself, `nodes`, `nodes/<node>`) is tightened, with a note; any other link is not followed."""
    notes, kept = [], []
    for path, st in _store_entries(root):
        if path != str(root) and is_temp_name(os.path.basename(path)) and (
                stat.S_ISREG(st.st_mode) or (stat.S_ISLNK(st.st_mode) and os.path.isfile(path))):
            notes.append(f"removed {path} (left by an interrupted run)")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        else:
            kept.append((path, st))
    for name, st in kept:
        if stat.S_ISLNK(st.st_mode):
            path = Path(name)
            rel = path.relative_to(root).parts
            if path.is_dir() and (not rel or rel == (NODES,) or (len(rel) == 2 and rel[0] == NODES)):
                note = linked_dir_note(path, DIR_MODE)
                if note:
                    notes.append(note)
            elif path.suffix == ".key" and path.exists() and path.stat().st_mode & 0o077:
                notes.append(f"{path} is a link to {path.resolve()}: its mode was left as it is (hardway never "
                             "changes a file reached through a link); make it 0600 yourself if it is yours")
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o777 != DIR_MODE:
            chmod_nofollow(Path(name), DIR_MODE)
            notes.append(f"{name}: directory mode {st.st_mode & 0o777:04o} set to {DIR_MODE:04o}")
        elif stat.S_ISREG(st.st_mode) and name.endswith(".key") and st.st_mode & 0o077:
            chmod_nofollow(Path(name), KEY_MODE)
            notes.append(f"{name}: key mode {st.st_mode & 0o777:04o} set to {KEY_MODE:04o}")
    return notes


def _store_root(store_dir: Path) -> Path:
    root = Path(store_dir)
    check_directory_path(root, "the PKI store", "choose another --out, or move it away")
    return root


def _check_new_secrets(new_secrets: Iterable[str]) -> frozenset[str]:
    new_secrets = frozenset(new_secrets)
    for name in sorted(new_secrets):
        if name not in NEW_SECRETS:
            raise HardwayError(f"--new-secret {name!r}: choose {' or '.join(NEW_SECRETS)} (repeatable)")
    return new_secrets


# ---------------------------------------------------------------- public entry points -----------

def reconcile(cluster: Cluster, store_dir: Path, import_ca: Iterable[ImportedCA] = (),
              catalog: Catalog | None = None, at: datetime | None = None, new_secrets: Iterable[str] = (),
              retire_old_encryption: bool = False, progress: Progress = silent,
              rename_cluster: bool = False) -> ReconcileResult:
    """Bring the store to the desired state; return what was done and the resulting materials.
    `new_secrets` ("service-account", "encryption"): make that secret anew on purpose, even in a store
    in use; `retire_old_encryption`: drop the encryption keys kept only to read older Secrets;
    `progress` is told how the issuing goes (the task layer draws a bar with it)."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    new_secrets = _check_new_secrets(new_secrets)
    root = _store_root(store_dir)
    with locked(root), _no_cycle_collection():
        store = DiskStore(root, writable=True)
        plan = assess(cluster, store, catalog, at, import_ca, new_secrets=new_secrets,
                      retire_old_encryption=retire_old_encryption, rename_cluster=rename_cluster,
                      record=read_record(store.read(RECORD)))
        _raise_errors(plan.errors)
        notes = plan.notes
        notes += _tidy(root)
        with progress("issuing certificates", len(plan.to_issue)) as advance:
            executed = execute(cluster, store, plan, plan.to_issue, at, advance)
        record = _record_after(cluster, store, plan, executed)
        if store.read(RECORD) != record:  # after every leaf it names is durable; unchanged: not rewritten
            store.write(RECORD, record)
            store.flush()
        stale = sorted(set(store.node_dirs()) - {n.name for n in cluster.nodes})
        if stale:
            notes.append(f"{len(stale)} node director{'y' if len(stale) == 1 else 'ies'} in {root / NODES} for nodes no "
                         f"longer in the spec ({first_names(stale, 5, ', ...')}): kept; "
                         "delete them once those nodes are gone")
        return ReconcileResult(plan.actions, _materials(cluster, store, catalog, [leaf.desired for leaf in plan.leaves]),
                               notes)


def plan_actions(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None,
                 at: datetime | None = None) -> list[Action]:
    """What `pki` would do, without writing anything (not even the lock)."""
    return plan_report(cluster, store_dir, catalog, at).actions


def plan_report(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None,
                at: datetime | None = None) -> ReconcileResult:
    """What `pki` would do and the notes it would print (materials None), without writing anything."""
    store = DiskStore(_store_root(store_dir))
    plan = assess(cluster, store, catalog, at, record=read_record(store.read(RECORD)))
    return ReconcileResult(plan.actions, None, plan.notes)


def preview(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None,
            at: datetime | None = None) -> ReconcileResult:
    """What `pki` would do and the materials it would leave, computed in memory: writes nothing.
    (New keys are really generated, so this costs what the run would.) HardwayError when the store
    needs attention, as `reconcile` would raise."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    store = OverlayStore(DiskStore(_store_root(store_dir)))
    plan = assess(cluster, store, catalog, at, record=read_record(store.read(RECORD)))
    _raise_errors(plan.errors)
    execute(cluster, store, plan, plan.to_issue, at)
    return ReconcileResult(plan.actions, _materials(cluster, store, catalog, [leaf.desired for leaf in plan.leaves]),
                           plan.notes)


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
    execute(cluster, store, plan, plan.leaves, at)
    return _materials(cluster, store, catalog)


def renew(cluster: Cluster, store_dir: Path, entry: str | None = None, node: str | None = None,
          rotate_keys: bool = False, catalog: Catalog | None = None, at: datetime | None = None,
          progress: Progress = silent) -> ReconcileResult:
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
        missing = [ca.name for ca in plan.authorities if ca.action.action != KEEP]
        if missing:
            raise HardwayError(f"the store has no usable {', '.join(missing)}; run `hardway pki` first")
        def wanted(leaf) -> bool:
            return (entry is None or leaf.desired.entry == entry) and (node is None or leaf.desired.node == node)

        chosen = [leaf for leaf in plan.leaves if wanted(leaf)]
        others = [leaf.action for leaf in plan.leaves if not wanted(leaf) and leaf.action.action != KEEP]
        if not chosen:
            raise HardwayError(f"nothing to renew: no certificate matches"
                               f"{f' --entry {entry}' if entry else ''}{f' --node {node}' if node else ''}"
                               + (" (cluster-wide certificates have no node)" if node else ""))
        selected = tuple(_renewal(leaf, rotate_keys) for leaf in chosen)
        with progress("renewing certificates", len(selected)) as advance:
            execute(cluster, store, plan, selected, at, advance, secrets_too=False)
        notes = []
        if others:
            notes.append(f"{len(others)} other item(s) need `hardway pki` (e.g. {others[0].entry}"
                         f"{'@' + others[0].node if others[0].node else ''}: {others[0].reason})")
        actions = [ca.action for ca in plan.authorities] + [leaf.action for leaf in selected]
        return ReconcileResult(actions, None, notes)


def _renewal(leaf: LeafPlan, rotate_keys: bool) -> LeafPlan:
    """The leaf as `renew` re-issues it: a new value, the assessment's is not changed."""
    new_key = rotate_keys or leaf.new_key
    why = "renewed with a new key" if new_key else "renewed (key kept)"
    if leaf.action.action != KEEP:
        why += f"; was: {leaf.action.reason}"
    return replace(leaf, new_key=new_key, action=replace(leaf.action, action=REISSUE, reason=why))


MIN_RSA_BITS = 2048  # the spec refuses smaller keys for what hardway makes; an imported CA too


def _import_problems(cert, at: datetime, cert_validity: timedelta | None) -> list[str]:
    """What makes a CA unfit to adopt, beyond `issue.ca_problems`: not valid yet (every leaf would
    chain to a CA that `openssl verify` rejects), a weak RSA key, or an expiry before the leaves'."""
    problems = []
    if cert.not_valid_before_utc > at:
        problems.append(f"it is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC (check the clock "
                        "of the machine that made it)")
    public = cert.public_key()
    if isinstance(public, rsa.RSAPublicKey) and public.key_size < MIN_RSA_BITS:
        problems.append(f"its key is RSA-{public.key_size}; at least RSA-{MIN_RSA_BITS} is required")
    if cert_validity is not None and at < cert.not_valid_after_utc < at + cert_validity:
        problems.append(f"it expires on {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC, before the certificates it "
                        f"would sign now (pki.certValidity {cert_validity.days} days); use a CA valid longer, or a "
                        "shorter certValidity")
    return problems


def parse_import(arg: str, at: datetime | None = None, catalog: Catalog | None = None,
                 cert_validity: timedelta | None = None) -> ImportedCA:
    """`NAME=CERT,KEY` → a validated CA to adopt; HardwayError saying what is wrong. `cert_validity`
    (the spec's): the CA must outlive the leaves it signs now."""
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
    problems = issue.ca_problems(cert, key, at) + _import_problems(cert, at, cert_validity)
    if problems:
        raise HardwayError(f"--import-ca {name}: {cert_path} cannot be used as a CA: {'; '.join(problems)}")
    return ImportedCA(name, cert, key, f"{cert_path},{key_path}")
