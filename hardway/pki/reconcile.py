"""Desired state, reconciled: compare the store with what the catalog asks for this cluster, then
create what is missing, keep what is valid, re-issue what changed.

`assess` reads and decides; `_execute` generates and writes, in an order that keeps the store
usable if the run is killed (CA keys before CA certificates, CAs before leaves, each key before its
certificate). The same two functions serve `pki`, `plan`, `renew`, `check` and the in-memory
`generate_materials`, over a DiskStore or a MemoryStore.

What is never silently replaced: a CA, the service-account key and the encryption key. When one is
present but broken, or missing while things that depend on it are present, the run stops before
writing anything, naming the file and what to do. The store records what it holds in state.json
(each CA's public-key fingerprint, the encryption keys and their providers): a CA that is not the
recorded one is refused unless imported on purpose (--import-ca); a new service-account pair or
encryption key in a store in use is made only on request (--new-secret); a changed encryption
provider gets a new key that writes, the old one kept to read until --retire-old-encryption.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ..errors import HardwayError, check_directory_path
from ..output import progress
from ..spec import ENCRYPTION_PROVIDERS, Cluster
from . import issue
from .catalog import Authority, Catalog, Desired, default_catalog, desired_leaves
from .materials import Materials
from .store import (DIR_MODE, ENCRYPTION, KEY_MODE, NODES, SA_KEY, SA_PUB, STATE, DiskStore, MemoryStore,
                    cert_rel, key_rel, leftover_temp_files, locked)

ENCRYPTION_KEY_BYTES = 32
STATE_FORMAT = 1
NEW_SECRETS = ("service-account", "encryption")  # what --new-secret may name
RETIRE_FLAG = "--retire-old-encryption"
REENCRYPT = "kubectl get secrets -A -o json | kubectl replace -f -"
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
    new_sa_key: bool = False  # a new service-account pair is made (a fresh store, or --new-secret)
    state: dict = field(default_factory=dict)  # state.json as this run leaves it (new CAs' fingerprints: by _execute)
    new_encryption: dict | None = None  # the encryption key entry to generate
    removed: list[str] = field(default_factory=list)  # encryption key files dropped from the state
    tofu_note: str | None = None  # a store without a record: what is recorded on trust
    encryption_note: str | None = None  # old encryption keys are kept: what to do next
    state_error: Action | None = None  # state.json is unreadable

    @property
    def actions(self) -> list[Action]:
        return ([self.state_error] if self.state_error else []) + (
            [ca.action for ca in self.cas.values()] + [self.service_account, self.encryption]
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

def key_fingerprint(key: issue.PrivateKey | issue.PublicKey) -> str:
    """`sha256:<hex>` of the public key's SubjectPublicKeyInfo (DER): a CA's identity, whatever its
    certificate says. The same as `openssl x509 -in CA.crt -noout -pubkey | openssl pkey -pubin
    -outform DER | sha256sum`."""
    public = key.public_key() if hasattr(key, "private_bytes") else key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(der).hexdigest()


def _fingerprint(cert: x509.Certificate) -> str:
    return key_fingerprint(cert.public_key())


def encryption_file(name: str) -> str:
    """The store file of an encryption key: key1 (the first one) is encryption.key, keyN encryption-keyN.key."""
    return ENCRYPTION if name == "key1" else f"encryption-{name}.key"


_KEY_NAME = re.compile(r"key[1-9][0-9]{0,5}")


def read_state(store, providers: Iterable[str] = ()) -> tuple[dict | None, str | None]:
    """(state.json as a dict, None), (None, None) when there is none, (None, message) when it is broken."""
    data = store.read(STATE)
    if data is None:
        return None, None
    try:
        state = json.loads(data)
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise ValueError(f"not a state file of format {STATE_FORMAT}")
        authorities = state.setdefault("authorities", {})
        if not isinstance(authorities, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and re.fullmatch(r"sha256:[0-9a-f]{64}", v)
                for k, v in authorities.items()):
            raise ValueError("'authorities' must map each CA to sha256:<64 hex digits>")
        keys = state.get("encryption")
        if keys is not None:
            if not isinstance(keys, list) or not keys or not all(
                    isinstance(e, dict) and set(e) == {"provider", "name"} and isinstance(e["name"], str)
                    and _KEY_NAME.fullmatch(e["name"]) and isinstance(e["provider"], str) for e in keys):
                raise ValueError("'encryption' must be a list of {provider, name: keyN}, the writing key first")
            if len({e["name"] for e in keys}) != len(keys):
                raise ValueError("'encryption' names a key twice")
            unknown = sorted({e["provider"] for e in keys} - set(providers)) if providers else []
            if unknown:
                raise ValueError(f"unknown encryption provider {unknown[0]!r}")
    except ValueError as e:  # json.JSONDecodeError is a ValueError
        return None, (f"{STATE}: {e}. It records the identity of each CA and the encryption keys: restore it from a "
                      "backup, or delete it (the next `hardway pki` records what the store holds, trusting it on "
                      "first use)")
    return state, None


def _state_bytes(state: dict) -> bytes:
    return (json.dumps(state, indent=2, sort_keys=True) + "\n").encode()


def _signed_leaf_files(store, cluster: Cluster, catalog: Catalog, ca_name: str) -> list[str]:
    """Leaf certificates in the store that this CA signed (or that a lost CA did)."""
    found = []
    for d in desired_leaves(cluster, catalog):
        if d.signer == ca_name and store.read(cert_rel(d.entry, d.node)) is not None:
            found.append(cert_rel(d.entry, d.node))
    return found


def _where(store) -> str:
    """The store's directory, for commands a message suggests."""
    root = getattr(store, "root", None) or getattr(getattr(store, "disk", None), "root", None)
    return f"{root}/" if root is not None else ""


def _assess_ca(store, cluster: Cluster, catalog: Catalog, a: Authority, at: datetime,
               imported: ImportedCA | None, recorded: str | None, errors: list[str]) -> _CA:
    """`recorded`: the CA's public-key fingerprint in state.json (None: not recorded yet)."""
    crt, key = f"{a.name}.crt", f"{a.name}.key"
    cert_b, key_b = store.read(crt), store.read(key)

    def fail(message: str) -> _CA:
        errors.append(message)
        return _CA(a, Action(a.name, None, ERROR, message))

    def not_recorded(found: str, subject: str) -> _CA:
        where = _where(store)
        return fail(f"{crt} and {key} are not the {a.name} CA this store recorded in {STATE}: recorded {recorded}, "
                    f"found {found}{subject}. hardway never adopts another CA silently: every certificate it signs "
                    f"would be trusted in place of the recorded CA's. Restore the original {a.name} from a backup; or, "
                    f"to adopt this one on purpose, run `hardway pki --import-ca {a.name}={where}{crt},{where}{key}` "
                    f"(every certificate the old {a.name} signed is then re-issued, and must be redeployed)")

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
        wanted = key_fingerprint(imported.key)
        if cert is not None and not (issue.same_public_key(cert.public_key(), imported.key)
                                     and cert.subject == imported.cert.subject):
            return fail(f"--import-ca {a.name}: the store already has a different {a.name} "
                        f"({cert.subject.rfc4514_string()}, {_fingerprint(cert)}); importing would "
                        f"invalidate every certificate it signed. To switch CAs, move {crt} and {key} out of the "
                        "store first: every certificate it signed is then re-issued by the imported CA")
        if cert is None and parsed_key is not None and not issue.same_public_key(parsed_key, imported.key):
            return fail(f"--import-ca {a.name}: the store already has a different {key}; move it away first")
        if cert is not None and parsed_key is not None and issue.same_public_key(parsed_key, imported.key):
            if recorded is not None and recorded != wanted:
                return _CA(a, Action(a.name, None, REISSUE, f"adopted on request (--import-ca): {wanted} replaces the "
                                                           f"recorded {recorded}"), cert=cert, key=parsed_key)
            return _CA(a, Action(a.name, None, KEEP, f"the imported CA is already in the store ({wanted})"),
                       cert=cert, key=parsed_key)
        action, why = ((CREATE, f"imported from {imported.source}") if cert is None and parsed_key is None
                       else (REISSUE, f"completed from the import ({imported.source})"))
        if recorded is not None and recorded != wanted:
            why += f"; {wanted} replaces the recorded {recorded}"
        return _CA(a, Action(a.name, None, action, why), cert=imported.cert, key=imported.key,
                   write_key=True, write_cert=True)

    if cert is None and parsed_key is None:
        signed = _signed_leaf_files(store, cluster, catalog, a.name)
        if signed:
            return fail(f"{crt} and {key} are missing, but {len(signed)} certificate(s) signed by that CA are "
                        f"present (e.g. {signed[0]}); a new CA would invalidate a live cluster. Restore {crt} "
                        f"and {key} from a backup, or import a CA with --import-ca {a.name}=CERT,KEY (its "
                        f"certificates are then re-issued), or remove those certificates to start a new CA")
        why = "missing" if recorded is None else (f"missing, and no certificate signed by it remains: a new CA "
                                                  f"(replaces the recorded {recorded})")
        return _CA(a, Action(a.name, None, CREATE, why), write_key=True, write_cert=True)
    if cert is not None and parsed_key is None:
        return fail(f"{crt} is present but {key} is missing: nothing can be signed with this CA. Restore {key} "
                    "from a backup; a CA is never replaced silently")
    if cert is None:
        if recorded is not None and key_fingerprint(parsed_key) != recorded:
            return not_recorded(key_fingerprint(parsed_key), f" (the key in {key})")
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
    if recorded is not None and key_fingerprint(parsed_key) != recorded:
        return not_recorded(key_fingerprint(parsed_key), f" ({cert.subject.rfc4514_string()})")
    note = f"valid until {cert.not_valid_after_utc:%Y-%m-%d}"
    algorithm = issue.key_algorithm(parsed_key)
    if algorithm != cluster.key_algorithm:
        note += f"; its key is {algorithm} (the spec's {cluster.key_algorithm} applies to new keys: a CA is never re-keyed)"
    return _CA(a, Action(a.name, None, KEEP, note), cert=cert, key=parsed_key)


def _shared_keys(cas: dict[str, _CA], errors: list[str]) -> None:
    """Two authorities with one key: a certificate either signs would be trusted as the other's."""
    by_key: dict[str, list[str]] = {}
    for name, ca in cas.items():
        if ca.usable and (ca.key is not None or ca.cert is not None):
            by_key.setdefault(key_fingerprint(ca.key if ca.key is not None else ca.cert.public_key()), []).append(name)
    for fp, names in by_key.items():
        if len(names) < 2:
            continue
        both = " and ".join(names)
        message = (f"{both} share one key ({fp}): every certificate one of them signs would be trusted as the "
                   f"other's (e.g. a Kubernetes client certificate as an etcd client). Each CA needs its own key: "
                   f"restore the original from a backup, or import a distinct CA with --import-ca NAME=CERT,KEY")
        errors.append(message)
        for name in names:
            cas[name].action = Action(name, None, ERROR, message)


_SA_BREAKS = "every service-account token signed with the old key is rejected until it is replaced"
_ENC_BREAKS = "Secrets encrypted with the old key stay unreadable"


def _assess_service_account(store, cluster: Cluster, live: bool, new: bool,
                            errors: list[str]) -> tuple[Action, issue.PrivateKey | None, bool]:
    """(action, the existing key, whether a new pair is made). `live`: the store is in use (it holds a
    certificate or a state.json); `new`: --new-secret service-account."""
    name = "service-account"
    priv_b, pub_b = store.read(SA_KEY), store.read(SA_PUB)
    on_request = f"new pair on request (--new-secret service-account): {_SA_BREAKS}"

    def fail(message):
        errors.append(message)
        return Action(name, None, ERROR, message), None, False

    if new:
        if priv_b is None and pub_b is None and not live:
            return Action(name, None, CREATE, "missing"), None, True
        return Action(name, None, CREATE if priv_b is None and pub_b is None else REISSUE, on_request), None, True
    deliberately = ("or make a new pair on purpose with `hardway pki --new-secret service-account` "
                    f"({_SA_BREAKS}; redeploy the bundles of every controller)")
    if priv_b is None and pub_b is None:
        if live:
            return fail(f"{SA_KEY} and {SA_PUB} are missing from a PKI store in use: a new pair would invalidate "
                        f"every service-account token of the cluster. Restore them from a backup (each controller "
                        f"has both in /etc/kubernetes/pki), {deliberately}")
        return Action(name, None, CREATE, "missing"), None, True
    if priv_b is None:
        return fail(f"{SA_KEY} is missing but {SA_PUB} is present: a new key would invalidate every "
                    f"service-account token of the cluster. Restore {SA_KEY} from a backup, {deliberately}")
    try:
        key = issue.load_private_key(priv_b)
    except ValueError as e:
        return fail(f"{SA_KEY}: {e}. It is never replaced silently (tokens signed with it would stop working): "
                    f"restore it from a backup, {deliberately}")
    if pub_b is None:
        return Action(name, None, REISSUE, f"{SA_PUB} missing; derived from {SA_KEY}"), key, False
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
    return Action(name, None, KEEP, note), key, False


def read_encryption_key(data: bytes) -> bytes:
    """The 32 raw bytes of encryption.key (base64 text); ValueError when it is not that."""
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except Exception:
        raise ValueError("not base64 text") from None
    if len(raw) != ENCRYPTION_KEY_BYTES:
        raise ValueError(f"{len(raw)} bytes, want {ENCRYPTION_KEY_BYTES}")
    return raw


@dataclass
class _Encryption:
    action: Action
    keys: list[dict]  # {provider, name}, the writing key first: state.json's "encryption"
    new: dict | None = None  # the entry whose key is generated
    removed: list[str] = field(default_factory=list)  # key files no longer in the state
    tofu: bool = False  # recorded from a store that had no state: encryption.key taken as the spec's provider
    note: str | None = None


def _label_key(e: dict) -> str:
    return f"the {e['provider']} key {e['name']}"


def _next_key_name(entries: Iterable[dict]) -> str:
    return f"key{max((int(e['name'][3:]) for e in entries), default=0) + 1}"


def _assess_encryption(store, cluster: Cluster, recorded: list[dict] | None, live: bool, new: bool, retire: bool,
                       errors: list[str]) -> _Encryption:
    """`recorded`: state.json's encryption keys (None: no record); `new`: --new-secret encryption;
    `retire`: --retire-old-encryption (drop every key but the writing one)."""
    name, provider = "encryption", cluster.encryption_provider
    tofu = recorded is None and store.read(ENCRYPTION) is not None
    if recorded is None:  # a store from before state.json: its one key is taken as the spec's provider's
        recorded = [{"provider": provider, "name": "key1"}] if tofu or live else []
    entries, dropped, problems = [], [], []
    for i, e in enumerate(recorded):
        rel = encryption_file(e["name"])
        data = store.read(rel)
        problem = "missing" if data is None else None
        if data is not None:
            try:
                read_encryption_key(data)
            except ValueError as err:
                problem = str(err)
        if problem is None:
            entries.append(e)
        elif (i == 0 and new) or (i > 0 and retire):
            dropped.append(e)
        elif i == 0:
            deliberately = (f"or make a new key on purpose with `hardway pki --new-secret encryption` ({_ENC_BREAKS}; "
                            "redeploy the bundles of every controller)")
            if data is None:
                problems.append(f"{rel} ({_label_key(e)}) is missing from a PKI store in use: a new key would leave "
                                f"every Secret encrypted with it unreadable. Restore it from a backup (each controller "
                                f"has it in /etc/kubernetes/encryption-config.yaml: the secret of {e['name']}, one line of base64), "
                                f"{deliberately}")
            else:
                problems.append(f"{rel}: {problem}. It is never replaced silently (Secrets encrypted with it would be "
                                f"unreadable): restore it from a backup, {deliberately}")
        else:
            problems.append(f"{rel} ({_label_key(e)}, kept to read Secrets written before the last provider change "
                            f"or key rotation): {problem}. Restore it from a backup; or, once every Secret has been "
                            f"re-encrypted (`{REENCRYPT}`), drop it with `hardway pki {RETIRE_FLAG}`")
    if problems:
        errors.extend(problems)
        return _Encryption(Action(name, None, ERROR, "; ".join(problems)), recorded)

    reasons, retired, fresh, note = [], [], None, None
    lost = [e for e in dropped if e is recorded[0]]  # the writing key, missing or broken: --new-secret
    if retire:
        retired, entries = entries[1:], entries[:1]
        gone = retired + [e for e in dropped if e is not recorded[0]]
        if gone:
            reasons.append(f"retired {', '.join(_label_key(e) for e in gone)} ({RETIRE_FLAG})")
        else:
            note = f"{RETIRE_FLAG}: nothing to retire, the store holds one encryption key"
    if lost:
        reasons.append(f"{_label_key(lost[0])} is lost and dropped: Secrets encrypted with it stay unreadable")
    if new or not entries:
        fresh = {"provider": provider, "name": _next_key_name(recorded)}
        if new and entries:
            reasons.insert(0, f"new key on request (--new-secret encryption): {_label_key(fresh)} encrypts from now "
                              f"on; {_label_key(entries[0])} stays to read Secrets written before")
        elif new and live:
            reasons.insert(0, f"new key on request (--new-secret encryption): {_label_key(fresh)}")
        entries = [fresh] + entries
    elif entries[0]["provider"] != provider:
        held = next((e for e in entries[1:] if e["provider"] == provider), None)
        old = entries[0]
        if held is not None:  # changed back before the old key was retired: it writes again
            entries = [held] + [e for e in entries if e is not held]
            reasons.append(f"provider changed {old['provider']} → {provider}: {_label_key(held)}, still held, "
                           f"encrypts again; {_label_key(old)} stays to read Secrets written before")
        else:
            fresh = {"provider": provider, "name": _next_key_name(recorded)}
            entries = [fresh] + entries
            reasons.append(f"provider changed {old['provider']} → {provider}: a new key, {_label_key(fresh)}, "
                           f"encrypts from now on; {_label_key(old)} stays to read Secrets written before")

    if len(entries) > 1:
        if any(e["provider"] != entries[0]["provider"] for e in entries[1:]):
            note = (f"encryption provider changed: secrets written before stay readable via the old provider; "
                    f"re-encrypt with `{REENCRYPT}`, then run `hardway pki {RETIRE_FLAG}`")
        else:
            note = (f"encryption key rotated: secrets written before stay readable via the old key; "
                    f"re-encrypt with `{REENCRYPT}`, then run `hardway pki {RETIRE_FLAG}`")
    if fresh is not None and not reasons:
        action = Action(name, None, CREATE, "missing")
    elif reasons:
        action = Action(name, None, CREATE if fresh is not None and len(entries) == 1 and not retired else REISSUE,
                        "; ".join(reasons))
    else:
        kept = f"; also kept to read Secrets written before: {', '.join(_label_key(e) for e in entries[1:])}" \
            if len(entries) > 1 else ""
        action = Action(name, None, KEEP, f"present ({_label_key(entries[0])}){kept}" if kept else "present")
    removed = [encryption_file(e["name"]) for e in retired + dropped if store.read(encryption_file(e["name"])) is not None]
    return _Encryption(action, entries, fresh, removed, tofu, note)


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
           imports: Iterable[ImportedCA] = (), thorough: bool = False, new_secrets: Iterable[str] = (),
           retire_old_encryption: bool = False) -> Assessment:
    """Decide what to do with every item of the store. `thorough` also runs OpenSSL's consistency
    check on every leaf key (check does; reconcile compares each key's public half with its
    certificate, which is what a mismatch or a swapped file breaks). `new_secrets` names the secrets
    to make anew on purpose (--new-secret); `retire_old_encryption` drops the encryption keys kept
    only to read (--retire-old-encryption)."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    imports = {i.name: i for i in imports}
    new_secrets = set(new_secrets)
    errors: list[str] = []
    state, state_error = read_state(store, ENCRYPTION_PROVIDERS)
    if state_error:
        errors.append(state_error)
    recorded = (state or {}).get("authorities", {})
    cas = {a.name: _assess_ca(store, cluster, catalog, a, at, imports.get(a.name), recorded.get(a.name), errors)
           for a in catalog.authorities}
    _shared_keys(cas, errors)
    desired = list(desired_leaves(cluster, catalog))
    # In use: it holds a certificate a CA signed, or a record. A missing secret is then lost, not yet to make.
    live = store.read(STATE) is not None or any(store.read(cert_rel(d.entry, d.node)) is not None for d in desired)
    sa, sa_key, new_sa_key = _assess_service_account(store, cluster, live, "service-account" in new_secrets, errors)
    enc = _assess_encryption(store, cluster, (state or {}).get("encryption"), live, "encryption" in new_secrets,
                             retire_old_encryption, errors)
    leaves = [_assess_leaf(store, cluster, d, cas[d.signer], at, thorough) for d in desired if cas[d.signer].usable]
    authorities = {}
    for name, ca in cas.items():
        if ca.key is not None or ca.cert is not None:
            authorities[name] = key_fingerprint(ca.key if ca.key is not None else ca.cert.public_key())
    unrecorded = [name for name, ca in cas.items() if name not in recorded and ca.action.action in (KEEP, REISSUE)
                  and not ca.write_key and name not in imports]
    trusted = [f"{name} {authorities[name]}" for name in unrecorded if name in authorities]
    if enc.tofu:
        trusted.append(f"{ENCRYPTION} as {_label_key(enc.keys[-1])} (the spec's provider)")
    tofu_note = (f"{STATE}: no record of what this store holds yet (made before hardway kept one, or by an "
                 f"interrupted first run); `hardway pki` records it as found and trusts it from then on (trust on "
                 f"first use): {'; '.join(trusted)}. Check the fingerprints against your own copy of the CAs "
                 "(docs/pki.md, 'What the store records')" if trusted else None)
    return Assessment(cas=cas, leaves=leaves, service_account=sa, encryption=enc.action, sa_key=sa_key, errors=errors,
                      new_sa_key=new_sa_key,
                      state={"format": STATE_FORMAT, "authorities": authorities, "encryption": enc.keys},
                      new_encryption=enc.new, removed=enc.removed, tofu_note=tofu_note, encryption_note=enc.note,
                      state_error=Action("state", None, ERROR, state_error) if state_error else None)


# ---------------------------------------------------------------- execution ---------------------

def _execute(cluster: Cluster, store, plan: Assessment, leaves: list[_Leaf], at: datetime,
             advance: Callable[[int], None], secrets_too: bool = True) -> None:
    """Write what the assessment decided, in crash-safe order. `leaves` are the leaves to (re)issue."""
    new_keys = (sum(1 for ca in plan.cas.values() if ca.write_key and ca.key is None)
                + (secrets_too and plan.new_sa_key) + sum(1 for leaf in leaves if leaf.new_key))
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
            if plan.new_sa_key:
                plan.sa_key = issue.load_private_key(next(fresh), validate=False)
                store.write(SA_KEY, issue.private_pem(plan.sa_key))
                _flush(store)
            if plan.service_account.action in (CREATE, REISSUE):
                store.write(SA_PUB, issue.public_pem(plan.sa_key))
            if plan.new_encryption is not None:
                store.write(encryption_file(plan.new_encryption["name"]),
                            base64.b64encode(os.urandom(ENCRYPTION_KEY_BYTES)) + b"\n")
            _flush(store)  # every secret is durable before the state that names it
            for name, ca in plan.cas.items():
                if ca.key is not None:
                    plan.state["authorities"][name] = key_fingerprint(ca.key)
            state = _state_bytes(plan.state)
            if store.read(STATE) != state:
                store.write(STATE, state)
                _flush(store)
            for rel in plan.removed:  # only once the state no longer names them
                store.remove(rel)

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
    sa_priv, sa_pub = need(SA_KEY), need(SA_PUB)
    state, error = read_state(store, ENCRYPTION_PROVIDERS)
    if error:
        raise HardwayError(f"{error}; then run `hardway pki`")
    # A store from before state.json has one key, encryption.key, for the spec's provider.
    entries = (state or {}).get("encryption") or [{"provider": cluster.encryption_provider, "name": "key1"}]
    encrypted = [(e, need(encryption_file(e["name"]))) for e in entries]
    if missing:
        raise HardwayError(f"the PKI store {getattr(store, 'root', '(memory)')} is incomplete: {len(missing)} file(s) "
                           f"missing ({', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}); "
                           "run `hardway pki` first")
    encryption_keys = []
    for e, data in encrypted:
        try:
            encryption_keys.append((e["provider"], e["name"], read_encryption_key(data)))
        except ValueError as err:
            raise HardwayError(f"{encryption_file(e['name'])} in the PKI store: {err}; run `hardway pki` "
                               "(it says what to do)") from None
    return Materials(certs=certs, keys=keys, service_account_private=sa_priv, service_account_public=sa_pub,
                     encryption_key=encryption_keys[0][2], encryption_keys=tuple(encryption_keys))


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
    check_directory_path(root, "the PKI store", "choose another --out, or move it away")
    return root


def _notes(plan: Assessment) -> list[str]:
    return [n for n in (plan.tofu_note, plan.encryption_note) if n]


def _check_new_secrets(new_secrets: Iterable[str]) -> frozenset[str]:
    new_secrets = frozenset(new_secrets)
    for name in sorted(new_secrets):
        if name not in NEW_SECRETS:
            raise HardwayError(f"--new-secret {name!r}: choose {' or '.join(NEW_SECRETS)} (repeatable)")
    return new_secrets


# ---------------------------------------------------------------- public entry points -----------

def reconcile(cluster: Cluster, store_dir: Path, import_ca: Iterable[ImportedCA] = (),
              catalog: Catalog | None = None, at: datetime | None = None, new_secrets: Iterable[str] = (),
              retire_old_encryption: bool = False) -> ReconcileResult:
    """Bring the store to the desired state; return what was done and the resulting materials.
    `new_secrets` ("service-account", "encryption"): make that secret anew on purpose, even in a store
    in use; `retire_old_encryption`: drop the encryption keys kept only to read older Secrets."""
    catalog = catalog or default_catalog()
    at = at or issue.now()
    new_secrets = _check_new_secrets(new_secrets)
    root = _store_root(store_dir)
    with locked(root):
        store = DiskStore(root, writable=True)
        plan = assess(cluster, store, catalog, at, import_ca, new_secrets=new_secrets,
                      retire_old_encryption=retire_old_encryption)
        _raise_errors(plan.errors)
        notes = _notes(plan)
        notes += [f"removed {p} (left by an interrupted run)" for p in leftover_temp_files(root)]
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
    return plan_report(cluster, store_dir, catalog, at).actions


def plan_report(cluster: Cluster, store_dir: Path, catalog: Catalog | None = None,
                at: datetime | None = None) -> ReconcileResult:
    """What `pki` would do and the notes it would print (materials None), without writing anything."""
    plan = assess(cluster, DiskStore(_store_root(store_dir)), catalog, at)
    return ReconcileResult(plan.actions, None, _notes(plan))


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
    return ReconcileResult(plan.actions, _materials(cluster, store, catalog), _notes(plan))


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
