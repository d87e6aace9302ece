"""The two secrets that are not certificates: the service-account token-signing pair and the
encryption-at-rest keys. Neither is ever replaced silently (docs/pki.md, 'What is never replaced
silently'): these functions read the store and decide, as values; `execute` makes what they decide.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization

from ..spec import Cluster
from . import issue
from .actions import CREATE, ERROR, KEEP, REISSUE, Action
from .catalog import encryption_config_path
from .state import EncryptionKey, next_key_name
from .store import ENCRYPTION, SA_KEY, SA_PUB, Store

ENCRYPTION_KEY_BYTES = 32
NEW_SECRETS = ("service-account", "encryption")  # what --new-secret may name
RETIRE_FLAG = "--retire-old-encryption"
REENCRYPT = "kubectl get secrets -A -o json | kubectl replace -f -"

_SA_BREAKS = "every service-account token signed with the old key is rejected until it is replaced"
_ENC_BREAKS = "Secrets encrypted with the old key stay unreadable"


@dataclass(frozen=True)
class ServiceAccountPlan:
    action: Action
    key: issue.PrivateKey | None = None  # the existing key, when it is kept
    new: bool = False  # a new pair is made (a fresh store, or --new-secret)


def assess_service_account(store: Store, cluster: Cluster, live: bool, new: bool,
                           install_dir: str) -> ServiceAccountPlan:
    """`live`: the store is in use (it holds a certificate or a state.json); `new`: --new-secret
    service-account; `install_dir`: where controllers hold the pair (catalog.install_dir). An ERROR
    action carries the message in its reason."""
    name = "service-account"
    priv_b, pub_b = store.read(SA_KEY), store.read(SA_PUB)
    on_request = f"new pair on request (--new-secret service-account): {_SA_BREAKS}"

    def fail(message: str) -> ServiceAccountPlan:
        return ServiceAccountPlan(Action(name, None, ERROR, message))

    if new:
        if priv_b is None and pub_b is None and not live:
            return ServiceAccountPlan(Action(name, None, CREATE, "missing"), new=True)
        return ServiceAccountPlan(Action(name, None, CREATE if priv_b is None and pub_b is None else REISSUE,
                                         on_request), new=True)
    deliberately = ("or make a new pair on purpose with `hardway pki --new-secret service-account` "
                    f"({_SA_BREAKS}; redeploy the bundles of every controller)")
    if priv_b is None and pub_b is None:
        if live:
            return fail(f"{SA_KEY} and {SA_PUB} are missing from a PKI store in use: a new pair would invalidate "
                        f"every service-account token of the cluster. Restore them from a backup (each controller "
                        f"has both in {install_dir}), {deliberately}")
        return ServiceAccountPlan(Action(name, None, CREATE, "missing"), new=True)
    if priv_b is None:
        return fail(f"{SA_KEY} is missing but {SA_PUB} is present: a new key would invalidate every "
                    f"service-account token of the cluster. Restore {SA_KEY} from a backup, {deliberately}")
    try:
        key = issue.load_private_key(priv_b)
    except ValueError as e:
        return fail(f"{SA_KEY}: {e}. It is never replaced silently (tokens signed with it would stop working): "
                    f"restore it from a backup, {deliberately}")
    if pub_b is None:
        return ServiceAccountPlan(Action(name, None, REISSUE, f"{SA_PUB} missing; derived from {SA_KEY}"), key)
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
    return ServiceAccountPlan(Action(name, None, KEEP, note), key)


def read_encryption_key(data: bytes) -> bytes:
    """The 32 raw bytes of encryption.key (base64 text); ValueError when it is not that."""
    try:
        raw = base64.b64decode(data.strip(), validate=True)
    except Exception:
        raise ValueError("not base64 text") from None
    if len(raw) != ENCRYPTION_KEY_BYTES:
        raise ValueError(f"{len(raw)} bytes, want {ENCRYPTION_KEY_BYTES}")
    return raw


@dataclass(frozen=True)
class EncryptionPlan:
    action: Action  # an ERROR action carries every problem in its reason
    keys: tuple[EncryptionKey, ...]  # state.json's "encryption" as the run leaves it, the writing key first
    new: EncryptionKey | None = None  # the key to generate
    removed: tuple[str, ...] = ()  # key files no longer in the state
    tofu: bool = False  # recorded from a store that had no state: encryption.key taken as the spec's provider
    note: str | None = None
    problems: tuple[str, ...] = ()


def assess_encryption(store: Store, cluster: Cluster, recorded: tuple[EncryptionKey, ...] | None, live: bool,
                      new: bool, retire: bool) -> EncryptionPlan:
    """`recorded`: state.json's encryption keys (None: no record); `new`: --new-secret encryption;
    `retire`: --retire-old-encryption (drop every key but the writing one)."""
    name, provider = "encryption", cluster.encryption_provider
    tofu = recorded is None and store.read(ENCRYPTION) is not None
    if recorded is None:  # a store from before state.json: its one key is taken as the spec's provider's
        recorded = (EncryptionKey(provider, "key1"),) if tofu or live else ()
    entries, dropped, problems = [], [], []
    for i, e in enumerate(recorded):
        rel = e.file
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
                problems.append(f"{rel} ({e.label}) is missing from a PKI store in use: a new key would leave "
                                f"every Secret encrypted with it unreadable. Restore it from a backup (each controller "
                                f"has it in {encryption_config_path()}: the secret of {e.name}, one line of base64), "
                                f"{deliberately}")
            else:
                problems.append(f"{rel}: {problem}. It is never replaced silently (Secrets encrypted with it would be "
                                f"unreadable): restore it from a backup, {deliberately}")
        else:
            problems.append(f"{rel} ({e.label}, kept to read Secrets written before the last provider change "
                            f"or key rotation): {problem}. Restore it from a backup; or, once every Secret has been "
                            f"re-encrypted (`{REENCRYPT}`), drop it with `hardway pki {RETIRE_FLAG}`")
    if problems:
        return EncryptionPlan(Action(name, None, ERROR, "; ".join(problems)), tuple(recorded),
                              problems=tuple(problems))

    reasons, retired, fresh, note = [], [], None, None
    lost = [e for e in dropped if e == recorded[0]]  # the writing key, missing or broken: --new-secret
    if retire:
        retired, entries = entries[1:], entries[:1]
        gone = retired + [e for e in dropped if e != recorded[0]]
        if gone:
            reasons.append(f"retired {', '.join(e.label for e in gone)} ({RETIRE_FLAG})")
        else:
            note = f"{RETIRE_FLAG}: nothing to retire, the store holds one encryption key"
    if lost:
        reasons.append(f"{lost[0].label} is lost and dropped: Secrets encrypted with it stay unreadable")
    if new or not entries:
        fresh = EncryptionKey(provider, next_key_name(recorded))
        if new and entries:
            reasons.insert(0, f"new key on request (--new-secret encryption): {fresh.label} encrypts from now "
                              f"on; {entries[0].label} stays to read Secrets written before")
        elif new and live:
            reasons.insert(0, f"new key on request (--new-secret encryption): {fresh.label}")
        entries = [fresh] + entries
    elif entries[0].provider != provider:
        held = next((e for e in entries[1:] if e.provider == provider), None)
        old = entries[0]
        if held is not None:  # changed back before the old key was retired: it writes again
            entries = [held] + [e for e in entries if e != held]
            reasons.append(f"provider changed {old.provider} → {provider}: {held.label}, still held, "
                           f"encrypts again; {old.label} stays to read Secrets written before")
        else:
            fresh = EncryptionKey(provider, next_key_name(recorded))
            entries = [fresh] + entries
            reasons.append(f"provider changed {old.provider} → {provider}: a new key, {fresh.label}, "
                           f"encrypts from now on; {old.label} stays to read Secrets written before")

    if len(entries) > 1:
        if any(e.provider != entries[0].provider for e in entries[1:]):
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
        kept = f"; also kept to read Secrets written before: {', '.join(e.label for e in entries[1:])}" \
            if len(entries) > 1 else ""
        action = Action(name, None, KEEP, f"present ({entries[0].label}){kept}" if kept else "present")
    removed = tuple(e.file for e in retired + dropped if store.read(e.file) is not None)
    return EncryptionPlan(action, tuple(entries), fresh, removed, tofu, note)
