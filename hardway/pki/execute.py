"""Execution: make and write what an assessment decided, in an order that keeps the store usable if
the run is killed at any moment (docs/pki.md, 'Crash safety and the lock'): every CA key, then every
CA certificate, then the service-account key, then the other secrets and state.json, then the
leaves, each key before its certificate. The assessment is not changed: what was issued comes back
as a new value (trustme's `issue_cert` does the same).
"""

from __future__ import annotations

import base64
import os
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509

from ..progress import Advance
from ..spec import Cluster
from . import issue
from .actions import CREATE, REISSUE
from .assess import Assessment, LeafPlan
from .issue import key_fingerprint
from .record import epoch
from .secrets import ENCRYPTION_KEY_BYTES
from .state import StoreState
from .store import SA_KEY, SA_PUB, STATE, Store


@dataclass(frozen=True)
class IssuedLeaf:
    """A leaf as issued: its plan and the new certificate's validity (epoch seconds). Not the
    certificate and key objects themselves: a 5000-worker run would hold 10000 of each to the end."""

    plan: LeafPlan
    not_before: int
    not_after: int
    new_key: bool


@dataclass(frozen=True)
class Executed:
    """What a run made: every CA as it now signs, the service-account key, the state it recorded
    (None when secrets were left alone, as `renew` does) and the leaves it issued."""

    signers: dict[str, tuple[x509.Certificate, issue.PrivateKey]]
    service_account_key: issue.PrivateKey | None
    state: StoreState | None
    leaves: tuple[IssuedLeaf, ...]


def execute(cluster: Cluster, store: Store, plan: Assessment, leaves: tuple[LeafPlan, ...], at: datetime,
            advance: Advance = lambda n=1: None, secrets_too: bool = True) -> Executed:
    """Write what the assessment decided, in crash-safe order; `leaves` are the leaves to (re)issue
    (`plan.to_issue` for a run, the selected ones for `renew`). `secrets_too=False` leaves the
    service-account pair, the encryption keys and state.json alone."""
    sa = plan.service_account
    new_keys = (sum(1 for ca in plan.authorities if ca.write_key and ca.key is None)
                + (secrets_too and sa.new) + sum(1 for leaf in leaves if leaf.new_key))
    fresh = issue.iter_new_keys(cluster.key_algorithm, new_keys)  # RSA: made across the cores, in order of need
    try:
        signers = {}
        for ca in plan.authorities:
            key = ca.key
            if ca.write_key and key is None:
                key = next(fresh)[1]
            cert = ca.cert
            if ca.write_cert and cert is None:
                cert = issue.make_ca(ca.authority.cn, key, cluster.ca_validity, at)
            if ca.write_key:
                store.write(f"{ca.name}.key", issue.private_pem(key))
            signers[ca.name] = (cert, key)
        store.flush()  # every CA key is durable before any CA certificate exists
        for ca in plan.authorities:
            if ca.write_cert:
                store.write(f"{ca.name}.crt", issue.cert_pem(signers[ca.name][0]))
        store.flush()  # ... and every CA certificate before any leaf it signs
        sa_key, state = sa.key, None
        if secrets_too:
            if sa.new:
                sa_key = next(fresh)[1]
                store.write(SA_KEY, issue.private_pem(sa_key))
                store.flush()
            if sa.action.action in (CREATE, REISSUE):
                store.write(SA_PUB, issue.public_pem(sa_key))
            if plan.encryption.new is not None:
                store.write(plan.encryption.new.file, base64.b64encode(os.urandom(ENCRYPTION_KEY_BYTES)) + b"\n")
            store.flush()  # every secret is durable before the state that names it
            state = plan.state.with_authorities((name, key_fingerprint(key)) for name, (_, key) in signers.items()
                                                if key is not None)
            data = state.to_bytes()
            if store.read(STATE) != data:
                store.write(STATE, data)
                store.flush()
            for rel in plan.encryption.removed:  # only once the state no longer names them
                store.remove(rel)

        issued = []
        signing = {name: issue.Signer(cert, key) for name, (cert, key) in signers.items()
                   if cert is not None and key is not None}
        # RSA keys come from the pool while this process waits for them: commit what is issued as it
        # goes, so the writing overlaps the waiting instead of following the last key.
        commit_every = 64 if issue.pooled(cluster.key_algorithm, new_keys) else 0
        for number, leaf in enumerate(leaves, 1):
            d = leaf.desired
            key = leaf.key
            if leaf.new_key:
                key_pem, key = next(fresh)
            cert = signing[d.signer].issue(d.identity, key.public_key(), cluster.cert_validity, at)
            crt, key_file = leaf.files()
            if leaf.new_key:
                store.write(key_file, key_pem)
            store.write(crt, issue.cert_pem(cert))
            issued.append(IssuedLeaf(leaf, epoch(cert.not_valid_before_utc), epoch(cert.not_valid_after_utc),
                                     leaf.new_key))
            advance(1)
            if commit_every and number % commit_every == 0:
                store.flush()
        store.flush()
    finally:
        fresh.close()  # stops the key pool at once if anything above failed
    return Executed(signers, sa_key, state, tuple(issued))
